//! `kiln inspect`: an image's record as JSON.

use std::io::Write;

use anyhow::Result;
use clap::Args;
use kiln_store::Store;
use serde_json::json;

use crate::ExitStatus;

/// Arguments of `kiln inspect`.
#[derive(Debug, Args)]
pub struct InspectArgs {
    /// Images: names or ids.
    #[arg(required = true)]
    pub names: Vec<String>,
}

pub fn run(store: &Store, args: &InspectArgs) -> Result<ExitStatus> {
    let mut records = Vec::new();
    for given in &args.names {
        let image = crate::commands::find_image(store, given)?;
        let config = serde_json::to_value(&image.config)?;
        let repo_tags: Vec<&str> = image
            .names
            .iter()
            .map(|n| kiln_store::familiar_name(n))
            .collect();
        records.push(json!({
            "Id": image.id().to_string(),
            "RepoTags": repo_tags,
            "ManifestDigest": image.manifest_digest.to_string(),
            "Target": image.target,
            "Created": image.config.created(),
            "Architecture": config.get("architecture"),
            "Os": config.get("os"),
            "Config": config.get("config"),
            "RootFS": config.get("rootfs"),
            "History": config.get("history"),
            "Layers": image.manifest.layers(),
            "Size": image.size(),
        }));
    }
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, &records)?;
    writeln!(out)?;
    Ok(ExitStatus::SUCCESS)
}
