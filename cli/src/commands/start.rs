//! `kiln start`: start created or exited containers in the background, or
//! attached (`-a`, `-i`) to this terminal through the monitor.

use anyhow::{bail, Result};
use clap::Args;

use crate::containers::attach;
use crate::containers::Status;
use crate::ExitStatus;

// Arguments of `kiln start`.
#[derive(Debug, Args)]
pub struct StartArgs {
    /// Stay attached: print the container's output until it exits, then
    /// exit with its code.
    #[arg(short, long)]
    pub attach: bool,
    /// Attach stdin too (implies --attach).
    #[arg(short, long)]
    pub interactive: bool,
    /// Keys that detach and leave the container running.
    #[arg(long, default_value = "ctrl-p,ctrl-q")]
    pub detach_keys: String,
    /// Containers: names or ids.
    #[arg(required = true)]
    pub containers: Vec<String>,
}

pub fn run(root: &std::path::Path, args: &StartArgs) -> Result<ExitStatus> {
    let containers = super::run::containers_of(root);
    let attached = args.attach || args.interactive;
    let detach_keys = attach::parse_detach_keys(&args.detach_keys)?;
    if attached && args.containers.len() > 1 {
        bail!("you cannot start and attach multiple containers at once");
    }
    for given in &args.containers {
        let container = containers.find(given)?;
        let state = container.state()?.effective();
        if state.status == Status::Running || state.is_alive() {
            if attached {
                bail!("container {given} is already running: use kiln attach");
            }
            println!("{given}");
            continue;
        }
        if attached {
            let stdin = args.interactive && (container.record.open_stdin || container.record.tty());
            let stream = match super::run::start_attached(root, &container, stdin) {
                Ok(s) => s,
                Err(err) => {
                    let code = super::run::start_exit_code(&err);
                    eprintln!("kiln: starting container {given}: {err:#}");
                    return Ok(ExitStatus(code));
                }
            };
            let options = attach::ClientOptions {
                stdin,
                tty: container.record.tty(),
                detach_keys,
                signal_pid: container.state().ok().map(|s| s.pid).filter(|p| *p > 0),
            };
            let outcome = attach::session(stream, &options)?;
            return super::run::attach_outcome(&container, outcome);
        }
        if let Err(err) = super::run::start_detached(root, &container) {
            let code = super::run::start_exit_code(&err);
            eprintln!("kiln: starting container {given}: {err:#}");
            return Ok(ExitStatus(code));
        }
        println!("{given}");
    }
    Ok(ExitStatus::SUCCESS)
}
