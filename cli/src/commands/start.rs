//! `kiln start`: start created or exited containers in the background.

use anyhow::{bail, Result};
use clap::Args;

use crate::containers::Status;
use crate::ExitStatus;

/// Arguments of `kiln start`.
#[derive(Debug, Args)]
pub struct StartArgs {
    /// Stay attached: print the container's output until it exits, then
    /// exit with its code (output only; stdin is not forwarded).
    #[arg(short, long)]
    pub attach: bool,
    /// Containers: names or ids.
    #[arg(required = true)]
    pub containers: Vec<String>,
}

pub fn run(root: &std::path::Path, args: &StartArgs) -> Result<ExitStatus> {
    let containers = super::run::containers_of(root);
    for given in &args.containers {
        let container = containers.find(given)?;
        let state = container.state()?.effective();
        if state.status == Status::Running {
            println!("{given}");
            continue;
        }
        if state.status == Status::Running || state.is_alive() {
            bail!("container {given} is still running");
        }
        let offset = std::fs::metadata(container.log_path()).map_or(0, |m| m.len());
        if let Err(err) = super::run::start_detached(root, &container) {
            let code = super::run::start_exit_code(&err);
            eprintln!("kiln: starting container {given}: {err:#}");
            return Ok(ExitStatus(code));
        }
        if args.attach {
            super::logs::follow(&container, offset, false)?;
            let state = container.wait_stopped(None)?.unwrap_or_default();
            return Ok(ExitStatus(state.exit_code.unwrap_or(255) as u8));
        }
        println!("{given}");
    }
    Ok(ExitStatus::SUCCESS)
}
