//! `kiln volume`: named volumes, directories under `$ROOT/volumes/<name>/_data`
//! that containers mount with `-v NAME:DIR` and that outlive them.

use std::io::Write;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use serde_json::json;

use crate::containers::{names, Containers};
use crate::output::write_table;
use crate::ExitStatus;

// Arguments of `kiln volume`.
#[derive(Debug, Args)]
pub struct VolumeArgs {
    #[command(subcommand)]
    pub command: VolumeCommand,
}

#[derive(Debug, Subcommand)]
pub enum VolumeCommand {
    /// Create a volume (a random name when none is given).
    Create { name: Option<String> },
    /// List volumes.
    Ls {
        /// Only print names.
        #[arg(short, long)]
        quiet: bool,
    },
    /// Remove volumes no container uses.
    Rm {
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Show volumes as JSON.
    Inspect {
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Remove every volume no container uses.
    Prune {
        /// Accepted for docker's scripts; kiln never asks.
        #[arg(short, long)]
        force: bool,
    },
}

fn list(containers: &Containers) -> Result<Vec<String>> {
    let dir = containers.volumes_dir();
    let mut out = Vec::new();
    match std::fs::read_dir(&dir) {
        Ok(entries) => {
            for entry in entries {
                if let Some(name) = entry?.file_name().to_str() {
                    if names::is_valid(name) {
                        out.push(name.to_string());
                    }
                }
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).context(format!("reading {}", dir.display())),
    }
    out.sort();
    Ok(out)
}

fn in_use(containers: &Containers) -> Result<Vec<String>> {
    Ok(containers
        .list()?
        .into_iter()
        .flat_map(|c| {
            c.record
                .volumes
                .into_iter()
                .chain(c.record.anonymous_volumes)
        })
        .collect())
}

fn remove(containers: &Containers, name: &str, used: &[String]) -> Result<()> {
    if used.iter().any(|u| u == name) {
        bail!("volume {name} is in use by a container");
    }
    let dir = containers.volumes_dir().join(name);
    std::fs::remove_dir_all(&dir).with_context(|| format!("removing volume {name}"))
}

pub fn run(root: &std::path::Path, args: &VolumeArgs) -> Result<ExitStatus> {
    let containers = super::run::containers_of(root);
    let mut out = std::io::stdout().lock();
    match &args.command {
        VolumeCommand::Create { name } => {
            let name = name.clone().unwrap_or_else(crate::containers::new_id);
            if !names::is_valid(&name) {
                bail!("invalid volume name {name:?}: use [a-zA-Z0-9][a-zA-Z0-9_.-]+");
            }
            let dir = containers.volumes_dir().join(&name).join("_data");
            std::fs::create_dir_all(&dir).with_context(|| format!("creating volume {name}"))?;
            writeln!(out, "{name}")?;
        }
        VolumeCommand::Ls { quiet } => {
            let volumes = list(&containers)?;
            if *quiet {
                for v in volumes {
                    writeln!(out, "{v}")?;
                }
            } else {
                let mut rows = vec![vec!["DRIVER".to_string(), "VOLUME NAME".to_string()]];
                rows.extend(volumes.into_iter().map(|v| vec!["local".to_string(), v]));
                write_table(&mut out, &rows)?;
            }
        }
        VolumeCommand::Rm { names } => {
            let _lock = containers.lock()?;
            let used = in_use(&containers)?;
            for name in names {
                remove(&containers, name, &used)?;
                writeln!(out, "{name}")?;
            }
        }
        VolumeCommand::Inspect { names } => {
            let all = list(&containers)?;
            let mut records = Vec::new();
            for name in names {
                if !all.contains(name) {
                    bail!("no such volume: {name}");
                }
                records.push(json!({
                    "Name": name,
                    "Driver": "local",
                    "Mountpoint": containers.volumes_dir().join(name).join("_data"),
                    "Scope": "local",
                }));
            }
            serde_json::to_writer_pretty(&mut out, &records)?;
            writeln!(out)?;
        }
        VolumeCommand::Prune { .. } => {
            let _lock = containers.lock()?;
            let used = in_use(&containers)?;
            for name in list(&containers)? {
                if !used.contains(&name) {
                    remove(&containers, &name, &used)?;
                    writeln!(out, "Deleted: {name}")?;
                }
            }
        }
    }
    Ok(ExitStatus::SUCCESS)
}
