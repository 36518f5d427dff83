//! `kiln tag SOURCE TARGET`.

use anyhow::{Context, Result};
use clap::Args;
use kiln_store::Store;

use crate::ExitStatus;

// Arguments of `kiln tag`.
#[derive(Debug, Args)]
pub struct TagArgs {
    /// The image to tag: a name or an id.
    pub source: String,
    /// The new name, `[REGISTRY/]REPOSITORY[:TAG]`.
    pub target: String,
}

pub fn run(store: &Store, args: &TagArgs) -> Result<ExitStatus> {
    let image = crate::commands::find_image(store, &args.source)?;
    let name = crate::names::normalize(&args.target)?;
    if name.contains('@') {
        anyhow::bail!("tag {}: a tag cannot hold a digest", args.target);
    }
    store
        .set_name(&name, &image.target)
        .with_context(|| format!("tagging {} as {}", args.source, args.target))?;
    Ok(ExitStatus::SUCCESS)
}
