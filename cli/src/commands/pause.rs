//! `kiln pause` and `kiln unpause`: freeze and thaw every process of
//! running containers through their cgroup (v1 freezer, v2 cgroup.freeze),
//! as docker does.

use anyhow::{bail, Context, Result};
use clap::Args;

use crate::containers::{Container, State};
use crate::ExitStatus;

// Arguments of `kiln pause` and `kiln unpause`.
#[derive(Debug, Args)]
pub struct PauseArgs {
    /// Containers: names or ids.
    #[arg(required = true)]
    pub containers: Vec<String>,
}

/// Thaws a paused container and records it.
pub fn thaw(c: &Container, state: &mut State) -> Result<()> {
    kiln_runner::cgroup::set_frozen(&c.cgroup_path(), false)
        .with_context(|| format!("unpausing container {}", c.record.name))?;
    state.paused = false;
    c.set_state(state)
}

pub fn pause(root: &std::path::Path, args: &PauseArgs) -> Result<ExitStatus> {
    let containers = super::run::containers_of(root);
    for given in &args.containers {
        let c = containers.find(given)?;
        let mut state = c.state()?;
        if !state.is_alive() {
            bail!("container {given} is not running");
        }
        if state.paused {
            bail!("container {given} is already paused");
        }
        kiln_runner::cgroup::set_frozen(&c.cgroup_path(), true)
            .with_context(|| format!("pausing container {given}"))?;
        state.paused = true;
        c.set_state(&state)?;
        println!("{given}");
    }
    Ok(ExitStatus::SUCCESS)
}

pub fn unpause(root: &std::path::Path, args: &PauseArgs) -> Result<ExitStatus> {
    let containers = super::run::containers_of(root);
    for given in &args.containers {
        let c = containers.find(given)?;
        let mut state = c.state()?;
        if !state.is_alive() || !state.paused {
            bail!("container {given} is not paused");
        }
        thaw(&c, &mut state)?;
        println!("{given}");
    }
    Ok(ExitStatus::SUCCESS)
}
