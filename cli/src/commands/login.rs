//! `kiln login` and `kiln logout`: credentials in docker's config.json (or
//! its credential helper), shared with the docker CLI. The password is
//! never printed, logged, or put in an error.

use std::io::{BufRead, IsTerminal, Read, Write};

use anyhow::{bail, Context, Result};
use clap::Args;
use kiln_registry::{Credential, Secret, DOCKER_HUB};

use crate::args::Cli;
use crate::settings::{normalize_registry, runtime, RegistrySettings};
use crate::ExitStatus;

// Arguments of `kiln login`.
#[derive(Debug, Args)]
pub struct LoginArgs {
    /// User name (asked for on a terminal when missing).
    #[arg(short, long)]
    pub username: Option<String>,
    /// Password or token; prefer --password-stdin, which keeps it out of
    /// the process list and shell history.
    #[arg(short, long, conflicts_with = "password_stdin")]
    pub password: Option<String>,
    /// Read the password from standard input.
    #[arg(long)]
    pub password_stdin: bool,
    /// The registry, `host[:port]` (default: Docker Hub).
    pub server: Option<String>,
}

// Arguments of `kiln logout`.
#[derive(Debug, Args)]
pub struct LogoutArgs {
    /// The registry, `host[:port]` (default: Docker Hub).
    pub server: Option<String>,
}

pub fn run(cli: &Cli, args: &LoginArgs) -> Result<ExitStatus> {
    let settings = RegistrySettings::from_cli(cli);
    let registry = registry_of(args.server.as_deref());
    if args.password.is_some() {
        eprintln!("WARNING! Using --password via the CLI is insecure. Use --password-stdin.");
    }
    let username = match &args.username {
        Some(username) => username.clone(),
        None if args.password_stdin => bail!("--password-stdin needs --username"),
        None => prompt("Username: ")?,
    };
    if username.is_empty() {
        bail!("login to {registry}: a user name is required");
    }
    let password = match (&args.password, args.password_stdin) {
        (Some(password), _) => Secret::new(password.clone()),
        (None, true) => {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .context("reading the password from standard input")?;
            let trimmed = text.trim_end_matches(['\n', '\r']);
            Secret::new(trimmed)
        }
        (None, false) => prompt_hidden("Password: ")?,
    };
    if password.expose().is_empty() {
        bail!("login to {registry}: a password is required");
    }
    let credential = Credential::basic(username, password);
    let client = settings.client(None);
    runtime()?
        .block_on(client.login(&registry, &credential))
        .with_context(|| format!("logging in to {registry}"))?;
    settings
        .credentials
        .store(&registry, &credential)
        .with_context(|| format!("saving the credentials for {registry}"))?;
    println!("Login Succeeded");
    Ok(ExitStatus::SUCCESS)
}

pub fn logout(cli: &Cli, args: &LogoutArgs) -> Result<ExitStatus> {
    let settings = RegistrySettings::from_cli(cli);
    let registry = registry_of(args.server.as_deref());
    let removed = settings
        .credentials
        .erase(&registry)
        .with_context(|| format!("removing the credentials for {registry}"))?;
    if removed {
        println!("Removing login credentials for {registry}");
    } else {
        println!("Not logged in to {registry}");
    }
    Ok(ExitStatus::SUCCESS)
}

fn registry_of(server: Option<&str>) -> String {
    server.map_or_else(|| DOCKER_HUB.to_string(), normalize_registry)
}

/// Asks on the terminal; a non-interactive stdin gets an error instead.
fn prompt(question: &str) -> Result<String> {
    if !std::io::stdin().is_terminal() {
        bail!("cannot ask for the user name: standard input is not a terminal (use --username)");
    }
    eprint!("{question}");
    std::io::stderr().flush()?;
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    Ok(line.trim().to_string())
}

/// Asks on the terminal with echo turned off.
fn prompt_hidden(question: &str) -> Result<Secret> {
    use nix::sys::termios::{tcgetattr, tcsetattr, LocalFlags, SetArg};
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        bail!(
            "cannot ask for the password: standard input is not a terminal (use --password-stdin)"
        );
    }
    eprint!("{question}");
    std::io::stderr().flush()?;
    let saved = tcgetattr(&stdin).context("reading the terminal mode")?;
    let mut quiet = saved.clone();
    quiet.local_flags.remove(LocalFlags::ECHO);
    quiet.local_flags.insert(LocalFlags::ECHONL);
    tcsetattr(&stdin, SetArg::TCSANOW, &quiet).context("turning off echo")?;
    let mut line = String::new();
    let read = stdin.lock().read_line(&mut line);
    // Restore echo whatever happened to the read.
    let restored = tcsetattr(&stdin, SetArg::TCSANOW, &saved);
    read.context("reading the password")?;
    restored.context("restoring the terminal mode")?;
    Ok(Secret::new(line.trim_end_matches(['\n', '\r'])))
}
