//! `kiln builder du` and `kiln builder prune`: the build cache.

use std::collections::HashSet;

use anyhow::Result;
use clap::{Args, Subcommand};
use kiln_store::{PruneOptions, Store};

use crate::output::{human_size, write_table};
use crate::ExitStatus;

/// Arguments of `kiln builder`.
#[derive(Debug, Args)]
pub struct BuilderArgs {
    #[command(subcommand)]
    pub command: BuilderCommand,
}

#[derive(Debug, Subcommand)]
pub enum BuilderCommand {
    /// Show the build cache: records and the layer bytes they hold.
    Du,
    /// Remove every build cache record, then what nothing else references.
    Prune(BuilderPruneArgs),
}

/// Arguments of `kiln builder prune`.
#[derive(Debug, Args)]
pub struct BuilderPruneArgs {
    /// Do not ask for confirmation (kiln never asks; accepted for docker's scripts).
    #[arg(short, long)]
    pub force: bool,
}

pub fn run(store: &Store, args: &BuilderArgs) -> Result<ExitStatus> {
    match &args.command {
        BuilderCommand::Du => {
            let records = store.cache_records()?;
            let mut seen = HashSet::new();
            let mut bytes = 0u64;
            for (_, record) in &records {
                for layer in &record.layers {
                    if seen.insert(layer.diff_id.clone()) {
                        bytes += layer.descriptor.size();
                    }
                }
            }
            let rows = vec![
                ["RECORDS", "LAYERS", "LAYER BYTES"]
                    .map(String::from)
                    .to_vec(),
                vec![
                    records.len().to_string(),
                    seen.len().to_string(),
                    human_size(bytes),
                ],
            ];
            write_table(&mut std::io::stdout().lock(), &rows)?;
        }
        BuilderCommand::Prune(_) => {
            let records = store.cache_records()?;
            for (key, _) in &records {
                store.remove_cache_record(key)?;
            }
            // Step records (miss reasons) and the context stat cache.
            for name in ["steps", "context-stat.json"] {
                let path = store.cache_dir().join(name);
                let _ = if path.is_dir() {
                    std::fs::remove_dir_all(&path)
                } else {
                    std::fs::remove_file(&path)
                };
            }
            let report = store.prune(&PruneOptions::default())?;
            println!(
                "Deleted {} cache records; total reclaimed space: {} ({} blobs, {} snapshots)",
                records.len(),
                human_size(report.bytes_freed),
                report.blobs_removed,
                report.snapshots_removed
            );
        }
    }
    Ok(ExitStatus::SUCCESS)
}
