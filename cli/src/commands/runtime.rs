//! `kiln runtime`: run an OCI bundle directly, as `runc run` does (hidden;
//! used by tests and benchmarks), and print the default spec.

use std::io::Write;
use std::os::fd::AsFd;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};
use kiln_runner::{Container, Spec};

use crate::ExitStatus;

// Arguments of `kiln runtime`.
#[derive(Debug, Args)]
pub struct RuntimeArgs {
    #[command(subcommand)]
    pub command: RuntimeCommand,
}

// Subcommands of `kiln runtime`.
#[derive(Debug, Subcommand)]
pub enum RuntimeCommand {
    /// Run a bundle in the foreground and exit with the container's code.
    Run(RunArgs),
    /// Print a spec with docker's defaults (write it with --bundle).
    Spec(SpecArgs),
    /// Run a command inside a running container (joins its namespaces and
    /// cgroup; user, env, cwd, capabilities and seccomp from the bundle).
    Exec(ExecArgs),
}

/// Arguments of `kiln runtime exec`.
#[derive(Debug, Args)]
pub struct ExecArgs {
    /// Bundle directory the container was started from.
    #[arg(long, short = 'b', default_value = ".")]
    pub bundle: PathBuf,
    /// Host pid of the container's first process (see `run --pid-file`).
    #[arg(long)]
    pub pid: i32,
    /// The command and its arguments.
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

/// Arguments of `kiln runtime run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Bundle directory holding config.json and the root filesystem.
    #[arg(long, short = 'b', default_value = ".")]
    pub bundle: PathBuf,
    /// Give the container a terminal (as if process.terminal were true).
    #[arg(long)]
    pub console: bool,
    /// Run kiln's tiny init as PID 1 (forwards signals, reaps zombies).
    #[arg(long)]
    pub init: bool,
    /// cgroup path below the cgroup root; default linux.cgroupsPath, else kiln/ID.
    #[arg(long)]
    pub cgroup: Option<PathBuf>,
    /// Write the container's host pid to this file once it runs.
    #[arg(long)]
    pub pid_file: Option<PathBuf>,
    /// Container id.
    pub id: String,
}

/// Arguments of `kiln runtime spec`.
#[derive(Debug, Args)]
pub struct SpecArgs {
    /// Write BUNDLE/config.json instead of printing.
    #[arg(long, short = 'b')]
    pub bundle: Option<PathBuf>,
}

pub fn run(_global: &crate::args::Cli, args: &RuntimeArgs) -> anyhow::Result<ExitStatus> {
    match &args.command {
        RuntimeCommand::Run(a) => run_bundle(a),
        RuntimeCommand::Spec(a) => print_spec(a),
        RuntimeCommand::Exec(a) => exec_in(a),
    }
}

fn print_spec(args: &SpecArgs) -> anyhow::Result<ExitStatus> {
    let spec = kiln_runner::default_spec();
    let mut text = serde_json::to_string_pretty(&spec).context("serializing the default spec")?;
    text.push('\n');
    match &args.bundle {
        Some(dir) => {
            let path = dir.join("config.json");
            std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        }
        None => std::io::stdout().write_all(text.as_bytes())?,
    }
    Ok(ExitStatus::SUCCESS)
}

fn run_bundle(args: &RunArgs) -> anyhow::Result<ExitStatus> {
    let config = args.bundle.join("config.json");
    let mut spec = Spec::load(&config).with_context(|| format!("reading {}", config.display()))?;
    let root = spec
        .root()
        .as_ref()
        .map(|r| r.path().clone())
        .unwrap_or_else(|| PathBuf::from("rootfs"));
    let rootfs = args.bundle.join(root);
    if args.console {
        if let Some(process) = spec.process_mut() {
            process.set_terminal(Some(true));
        }
    }
    let terminal = spec
        .process()
        .as_ref()
        .and_then(|p| p.terminal())
        .unwrap_or(false);
    let cgroup = args
        .cgroup
        .clone()
        .or_else(|| spec.linux().as_ref().and_then(|l| l.cgroups_path().clone()))
        .unwrap_or_else(|| PathBuf::from("kiln").join(&args.id));
    let started = Container::builder(spec, rootfs)
        .cgroup(cgroup)
        .init(args.init)
        .spawn();
    let mut child = match started {
        Ok(child) => child,
        Err(err) => {
            let code = err.exit_code();
            let err = anyhow::Error::new(err).context(format!("starting container {}", args.id));
            let _ = writeln!(std::io::stderr(), "kiln: {err:#}");
            return Ok(ExitStatus(code));
        }
    };
    if let Some(pid_file) = &args.pid_file {
        std::fs::write(pid_file, child.pid().to_string())
            .with_context(|| format!("writing {}", pid_file.display()))?;
    }
    let forwarder = kiln_runner::forward_signals(child.pid()).context("forwarding signals")?;
    if terminal {
        if let Some(master) = child.pty.take() {
            let stdin = std::io::stdin();
            let stdout = std::io::stdout();
            let raw = kiln_runner::pty::RawMode::enable(stdin.as_fd()).ok();
            let host_terminal = raw.as_ref().map(|_| stdin.as_fd());
            let proxied =
                kiln_runner::pty::proxy(&master, stdin.as_fd(), stdout.as_fd(), host_terminal);
            drop(raw);
            proxied.context("copying the container terminal")?;
        }
    }
    let status = child
        .wait()
        .with_context(|| format!("waiting for container {}", args.id))?;
    drop(forwarder);
    Ok(ExitStatus(status.code()))
}

fn exec_in(args: &ExecArgs) -> anyhow::Result<ExitStatus> {
    let config = args.bundle.join("config.json");
    let spec = Spec::load(&config).with_context(|| format!("reading {}", config.display()))?;
    let mut process = spec
        .process()
        .clone()
        .context("the bundle's spec has no process")?;
    process.set_args(Some(args.command.clone()));
    process.set_terminal(Some(false));
    let seccomp = spec.linux().as_ref().and_then(|l| l.seccomp().clone());
    let join = kiln_runner::JoinInfo { pid: args.pid };
    let mut child = match kiln_runner::exec(join, process).seccomp(seccomp).spawn() {
        Ok(child) => child,
        Err(err) => {
            let code = err.exit_code();
            let err =
                anyhow::Error::new(err).context(format!("exec in container pid {}", args.pid));
            let _ = writeln!(std::io::stderr(), "kiln: {err:#}");
            return Ok(ExitStatus(code));
        }
    };
    let forwarder = kiln_runner::forward_signals(child.pid()).context("forwarding signals")?;
    let status = child.wait().context("waiting for the exec'd process")?;
    drop(forwarder);
    Ok(ExitStatus(status.code()))
}
