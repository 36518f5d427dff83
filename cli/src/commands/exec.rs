//! `kiln exec`: run a command inside a running container.

use std::io::Write;
use std::os::fd::AsFd;

use anyhow::{bail, Context, Result};
use clap::Args;
use kiln_runner::oci_spec::runtime::UserBuilder;
use kiln_runner::{JoinInfo, Stdio};

use crate::containers::spec::{resolve_user, Accounts};
use crate::ExitStatus;

// Arguments of `kiln exec`.
#[derive(Debug, Args)]
pub struct ExecArgs {
    /// Keep stdin open.
    #[arg(short, long)]
    pub interactive: bool,
    /// Give the command a terminal.
    #[arg(short, long)]
    pub tty: bool,
    /// Set an environment variable (KEY=VALUE).
    #[arg(short, long = "env")]
    pub env: Vec<String>,
    /// Working directory inside the container.
    #[arg(short, long)]
    pub workdir: Option<String>,
    /// User (name or uid), optionally :group.
    #[arg(short, long)]
    pub user: Option<String>,
    /// Container: name or id.
    pub container: String,
    /// The command and its arguments.
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

pub fn run(root: &std::path::Path, args: &ExecArgs) -> Result<ExitStatus> {
    match exec(root, args) {
        Ok(status) => Ok(status),
        Err(err) => {
            let _ = writeln!(std::io::stderr(), "kiln: {err:#}");
            Ok(ExitStatus(crate::containers::supervise::exit_code_of(&err)))
        }
    }
}

fn exec(root: &std::path::Path, args: &ExecArgs) -> Result<ExitStatus> {
    let container = super::run::containers_of(root).find(&args.container)?;
    let state = container.state()?;
    if !state.is_alive() {
        bail!("container {} is not running", args.container);
    }
    if state.paused {
        bail!(
            "container {} is paused, unpause the container before exec",
            args.container
        );
    }
    let spec = &container.record.spec;
    let mut process = spec
        .process()
        .clone()
        .context("the container has no process")?;
    process.set_args(Some(args.command.clone()));
    process.set_terminal(Some(args.tty));
    let mut env = process.env().clone().unwrap_or_default();
    for e in &args.env {
        let key = e.split_once('=').map_or(e.as_str(), |(k, _)| k);
        env.retain(|x| x.split_once('=').map_or(x.as_str(), |(k, _)| k) != key);
        env.push(e.clone());
    }
    process.set_env(Some(env));
    if let Some(dir) = &args.workdir {
        process.set_cwd(dir.into());
    }
    if let Some(user) = &args.user {
        let rootfs = container.rootfs();
        let accounts = Accounts {
            passwd: std::fs::read_to_string(rootfs.join("etc/passwd")).unwrap_or_default(),
            group: std::fs::read_to_string(rootfs.join("etc/group")).unwrap_or_default(),
        };
        let user = resolve_user(user, &accounts)?;
        process.set_user(
            UserBuilder::default()
                .uid(user.uid)
                .gid(user.gid)
                .additional_gids(user.additional_gids)
                .build()?,
        );
    }
    let seccomp = spec.linux().as_ref().and_then(|l| l.seccomp().clone());
    let stdin = if args.interactive {
        Stdio::Inherit
    } else {
        Stdio::Null
    };
    let mut child = kiln_runner::exec(JoinInfo { pid: state.pid }, process)
        .seccomp(seccomp)
        .stdin(stdin)
        .spawn()
        .with_context(|| format!("exec in container {}", args.container))?;
    let forwarder = kiln_runner::forward_signals(child.pid()).context("forwarding signals")?;
    if let Some(master) = child.pty.take() {
        let host_stdin = std::io::stdin();
        let null = std::fs::File::open("/dev/null")?;
        let input = if args.interactive {
            host_stdin.as_fd()
        } else {
            null.as_fd()
        };
        let raw = if args.interactive {
            kiln_runner::pty::RawMode::enable(host_stdin.as_fd()).ok()
        } else {
            None
        };
        let host_terminal = raw.as_ref().map(|_| host_stdin.as_fd());
        let proxied =
            kiln_runner::pty::proxy(&master, input, std::io::stdout().as_fd(), host_terminal);
        drop(raw);
        if let Err(e) = proxied {
            tracing::warn!("copying the exec terminal: {e}");
        }
    }
    let status = child.wait().context("waiting for the exec'd process")?;
    drop(forwarder);
    Ok(ExitStatus(status.code()))
}
