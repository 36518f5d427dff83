//! `kiln rm`: remove containers (their rw layer, mounts and cgroups; named
//! volumes stay, anonymous ones go with `-v`).

use std::time::Duration;

use anyhow::{bail, Result};
use clap::Args;
use kiln_runner::Signal;

use crate::containers::Status;
use crate::ExitStatus;

// Arguments of `kiln rm`.
#[derive(Debug, Args)]
pub struct RmArgs {
    /// Kill a running container first.
    #[arg(short, long)]
    pub force: bool,
    /// Also remove the container's anonymous volumes.
    #[arg(short, long)]
    pub volumes: bool,
    /// Containers: names or ids.
    #[arg(required = true)]
    pub containers: Vec<String>,
}

/// Kills a running container for `rm -f` (and keeps its monitor from
/// restarting it); refuses without `force`. True when it was running.
fn kill_if_running(
    container: &crate::containers::Container,
    given: &str,
    force: bool,
) -> Result<bool> {
    if container.state()?.effective().status != Status::Running {
        return Ok(false);
    }
    if !force {
        bail!("cannot remove running container {given}: stop it first or use rm -f");
    }
    container.request_stop()?;
    super::stop::signal(container, Signal::SIGKILL)?;
    container.wait_stopped(Some(Duration::from_secs(30)))?;
    Ok(true)
}

pub fn run(root: &std::path::Path, args: &RmArgs) -> Result<ExitStatus> {
    let _ = kiln_runner::network::reap();
    let containers = super::run::containers_of(root);
    for given in &args.containers {
        let container = containers.find(given)?;
        if !kill_if_running(&container, given, args.force)? && args.force {
            // A --restart monitor waiting to start it again.
            container.request_stop()?;
        }
        let _lock = containers.lock()?;
        // Its monitor may have restarted it meanwhile (--restart).
        kill_if_running(&container, given, args.force)?;
        if args.volumes {
            containers.remove_with_volumes(&container)?;
        } else {
            containers.remove(&container)?;
        }
        println!("{given}");
    }
    Ok(ExitStatus::SUCCESS)
}
