//! `kiln rename`: give a container another name, as `docker rename` does.

use anyhow::{bail, Context, Result};
use clap::Args;

use crate::containers::names::is_valid;
use crate::ExitStatus;

// Arguments of `kiln rename`.
#[derive(Debug, Args)]
pub struct RenameArgs {
    /// Container: name or id.
    pub container: String,
    /// Its new name.
    pub new_name: String,
}

pub fn run(root: &std::path::Path, args: &RenameArgs) -> Result<ExitStatus> {
    let new = args.new_name.trim_start_matches('/');
    if !is_valid(new) {
        bail!("invalid container name {new:?}: only [a-zA-Z0-9][a-zA-Z0-9_.-]+ are allowed");
    }
    let containers = super::run::containers_of(root);
    // Creating, renaming and removing take turns: names stay unique.
    let _lock = containers.lock()?;
    let mut container = containers.find(&args.container)?;
    if container.record.name == new {
        bail!("container {} is already called {new}", args.container);
    }
    if containers.list()?.iter().any(|c| c.record.name == new) {
        bail!("the container name \"{new}\" is already in use");
    }
    container.record.name = new.to_string();
    crate::containers::write_atomic(
        &container.dir.join("config.json"),
        &serde_json::to_vec_pretty(&container.record)?,
    )
    .with_context(|| format!("renaming container {}", args.container))?;
    // A running container's networks resolve the new name from now on.
    if container.state()?.effective().is_alive() {
        kiln_runner::network::rename(&container.record.id, new)
            .with_context(|| format!("renaming container {} on its networks", args.container))?;
    }
    Ok(ExitStatus::SUCCESS)
}
