//! `kiln kill`: send a signal (default SIGKILL) to running containers.

use anyhow::{bail, Result};
use clap::Args;

use crate::ExitStatus;

/// Arguments of `kiln kill`.
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
        if !super::stop::signal(&container, signal)? {
            bail!("container {given} is not running");
        }
        println!("{given}");
    }
    Ok(ExitStatus::SUCCESS)
}
