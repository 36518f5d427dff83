//! `kiln system df` and `kiln system prune`.

use anyhow::Result;
use clap::{Args, Subcommand};
use kiln_store::{PruneOptions, Store};

use crate::output::{human_size, write_table};
use crate::ExitStatus;

// Arguments of `kiln system`.
#[derive(Debug, Args)]
pub struct SystemArgs {
    #[command(subcommand)]
    pub command: SystemCommand,
}

#[derive(Debug, Subcommand)]
pub enum SystemCommand {
    /// Show space used by images, snapshots and the build cache.
    Df,
    /// Remove untagged images and everything nothing references.
    Prune(PruneArgs),
}

/// Arguments of `kiln system prune`.
#[derive(Debug, Args)]
pub struct PruneArgs {
    /// Also remove every image no container uses.
    #[arg(short, long)]
    pub all: bool,
    /// Do not ask for confirmation (kiln never asks; accepted for docker's scripts).
    #[arg(short, long)]
    pub force: bool,
}

pub fn run(store: &Store, args: &SystemArgs) -> Result<ExitStatus> {
    match &args.command {
        SystemCommand::Df => {
            let usage = store.disk_usage()?;
            let rows = vec![
                ["TYPE", "TOTAL", "SIZE", "RECLAIMABLE"]
                    .map(String::from)
                    .to_vec(),
                vec![
                    "Images".into(),
                    usage.images.to_string(),
                    human_size(usage.images_bytes + usage.unreferenced_bytes),
                    human_size(usage.unreferenced_bytes),
                ],
                vec![
                    "Snapshots".into(),
                    usage.snapshots.to_string(),
                    human_size(usage.snapshots_bytes),
                    human_size(usage.snapshots_reclaimable_bytes),
                ],
                vec![
                    "Build Cache".into(),
                    "-".into(),
                    human_size(usage.cache_bytes),
                    human_size(usage.cache_bytes),
                ],
            ];
            write_table(&mut std::io::stdout().lock(), &rows)?;
        }
        SystemCommand::Prune(prune) => {
            // Images that containers use stay, with their snapshots.
            let containers =
                crate::containers::Containers::new(store.containers_dir().to_path_buf());
            let in_use = containers
                .image_digests()?
                .iter()
                .filter_map(|d| d.parse().ok())
                .collect();
            let report = store.prune(&PruneOptions {
                dangling: true,
                all: prune.all,
                in_use,
                ..PruneOptions::default()
            })?;
            for name in &report.images_removed {
                println!("Deleted: {}", kiln_store::familiar_name(name));
            }
            println!(
                "Total reclaimed space: {} ({} blobs, {} snapshots, {} leftovers)",
                human_size(report.bytes_freed),
                report.blobs_removed,
                report.snapshots_removed,
                report.temp_removed
            );
        }
    }
    Ok(ExitStatus::SUCCESS)
}
