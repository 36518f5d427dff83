//! `kiln kill`: send a signal (default SIGKILL) to running containers.

use anyhow::{bail, Result};
use clap::Args;

use crate::ExitStatus;

// Arguments of `kiln kill`.
#[derive(Debug, Args)]
pub struct KillArgs {
    /// Signal: name (KILL, SIGTERM) or number.
    #[arg(short, long, default_value = "KILL")]
    pub signal: String,
    /// Containers: names or ids.
    #[arg(required = true)]
    pub containers: Vec<String>,
}

pub fn run(root: &std::path::Path, args: &KillArgs) -> Result<ExitStatus> {
    let signal = super::stop::parse_signal(&args.signal)?;
    let containers = super::run::containers_of(root);
    for given in &args.containers {
        let container = containers.find(given)?;
        // docker: SIGKILL and the stop signal turn the restart policy off
        // until the next start; other signals leave it.
        let stop_signal = match &container.record.stop_signal {
            Some(s) => super::stop::parse_signal(s)?,
            None => kiln_runner::Signal::SIGTERM,
        };
        if signal == kiln_runner::Signal::SIGKILL || signal == stop_signal {
            let _lock = containers.lock()?;
            container.request_stop()?;
        }
        if !super::stop::signal(&container, signal)? {
            bail!("container {given} is not running");
        }
        println!("{given}");
    }
    Ok(ExitStatus::SUCCESS)
}
