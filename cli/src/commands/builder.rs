//! `kiln builder du` and `kiln builder prune`: the build cache (cache
//! records and `RUN --mount=type=cache` directories).

use std::collections::HashSet;
use std::time::SystemTime;

use anyhow::Result;
use clap::{Args, Subcommand};
use kiln_builder::solve::cachemount::{self, CacheMountInfo};
use kiln_store::{PruneOptions, Store};

use crate::output::{human_since, human_size, write_table};
use crate::ExitStatus;

// Arguments of `kiln builder`.
#[derive(Debug, Args)]
pub struct BuilderArgs {
    #[command(subcommand)]
    pub command: BuilderCommand,
}

#[derive(Debug, Subcommand)]
pub enum BuilderCommand {
    /// Show the build cache: records and cache mounts, their size and last use.
    Du,
    /// Remove build cache (least recently used first), then what nothing
    /// else references.
    Prune(BuilderPruneArgs),
}

/// Arguments of `kiln builder prune`.
#[derive(Debug, Args)]
pub struct BuilderPruneArgs {
    /// Remove all build cache (the default when --keep-storage is not given).
    #[arg(short, long)]
    pub all: bool,
    /// Keep this much build cache (e.g. 500mb, 2gb), removing least recently used first.
    #[arg(long, value_name = "SIZE")]
    pub keep_storage: Option<String>,
    /// Do not ask for confirmation (kiln never asks; accepted for docker's scripts).
    #[arg(short, long)]
    pub force: bool,
}

/// One entry of the build cache.
enum Item {
    Record { key: String },
    Mount(CacheMountInfo),
}

struct Entry {
    item: Item,
    size: u64,
    last_used: SystemTime,
    in_use: bool,
}

fn entries(store: &Store) -> Result<Vec<Entry>> {
    let mut records = store.cache_records()?;
    records.sort_by_key(|(_, r)| r.created);
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for (key, record) in records {
        // A record's own bytes: its top layer, counted once.
        let size = match record.layers.last() {
            Some(top) if seen.insert(top.diff_id.clone()) => top.descriptor.size(),
            _ => 0,
        };
        let last_used = kiln_builder::solve::cache_record_last_used(store, &key).unwrap_or(
            SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(record.created.max(0) as u64),
        );
        out.push(Entry {
            item: Item::Record { key },
            size,
            last_used,
            in_use: false,
        });
    }
    for mount in cachemount::list(store) {
        out.push(Entry {
            size: mount.size,
            last_used: mount.last_used,
            in_use: mount.in_use,
            item: Item::Mount(mount),
        });
    }
    Ok(out)
}

/// A size as docker's --keep-storage takes it: a number with an optional
/// b, k, m, g or t suffix (powers of 1024).
fn parse_size(text: &str) -> Result<u64> {
    let lower = text.trim().to_ascii_lowercase();
    let (number, unit) = match lower.find(|c: char| !c.is_ascii_digit() && c != '.') {
        Some(i) => lower.split_at(i),
        None => (lower.as_str(), ""),
    };
    let unit = unit.trim();
    let unit = unit
        .strip_suffix("ib")
        .or_else(|| unit.strip_suffix('b'))
        .unwrap_or(unit);
    let factor: f64 = match unit {
        "" => 1.0,
        "k" => 1024.0,
        "m" => 1024f64.powi(2),
        "g" => 1024f64.powi(3),
        "t" => 1024f64.powi(4),
        _ => anyhow::bail!("invalid --keep-storage {text:?}: use a number with b, k, m, g or t"),
    };
    let value: f64 = number
        .parse()
        .map_err(|_| anyhow::anyhow!("invalid --keep-storage {text:?}: not a size"))?;
    Ok((value * factor) as u64)
}

fn seconds_ago(time: SystemTime) -> i64 {
    SystemTime::now()
        .duration_since(time)
        .map_or(0, |d| d.as_secs() as i64)
}

pub fn run(store: &Store, args: &BuilderArgs) -> Result<ExitStatus> {
    match &args.command {
        BuilderCommand::Du => {
            let mut all = entries(store)?;
            all.sort_by_key(|e| std::cmp::Reverse(e.last_used));
            let mut rows = vec![["ID", "TYPE", "RECLAIMABLE", "SIZE", "LAST ACCESSED"]
                .map(String::from)
                .to_vec()];
            let (mut total, mut reclaimable) = (0u64, 0u64);
            for entry in &all {
                total += entry.size;
                if !entry.in_use {
                    reclaimable += entry.size;
                }
                let (id, kind) = match &entry.item {
                    Item::Record { key } => (
                        key.trim_start_matches("sha256:").chars().take(25).collect(),
                        "regular",
                    ),
                    Item::Mount(m) => (format!("cache mount {}", m.id), "exec.cachemount"),
                };
                rows.push(vec![
                    id,
                    kind.to_string(),
                    (!entry.in_use).to_string(),
                    human_size(entry.size),
                    human_since(seconds_ago(entry.last_used)),
                ]);
            }
            let mut out = std::io::stdout().lock();
            write_table(&mut out, &rows)?;
            use std::io::Write as _;
            writeln!(out, "Reclaimable:\t{}", human_size(reclaimable))?;
            writeln!(out, "Total:\t\t{}", human_size(total))?;
        }
        BuilderCommand::Prune(prune) => {
            let keep = prune.keep_storage.as_deref().map(parse_size).transpose()?;
            let mut all = entries(store)?;
            // Least recently used first.
            all.sort_by_key(|e| e.last_used);
            let mut total: u64 = all.iter().map(|e| e.size).sum();
            let (mut records, mut mounts, mut mount_bytes) = (0usize, 0usize, 0u64);
            for entry in &all {
                // Records sharing a layer count it once, so some weigh 0 B:
                // keeping nothing removes those too.
                if keep.is_some_and(|k| k > 0 && total <= k) && !prune.all {
                    break;
                }
                if entry.in_use {
                    continue;
                }
                let removed = match &entry.item {
                    Item::Record { key } => {
                        let removed = store.remove_cache_record(key)?;
                        kiln_builder::solve::forget_cache_record_use(store, key);
                        records += usize::from(removed);
                        removed
                    }
                    Item::Mount(m) => {
                        let removed = cachemount::remove(&m.path);
                        if removed {
                            mounts += 1;
                            mount_bytes += entry.size;
                        }
                        removed
                    }
                };
                if removed {
                    total = total.saturating_sub(entry.size);
                }
            }
            if keep.is_none() || prune.all {
                // Step records (miss reasons) and the context stat cache.
                for name in ["steps", "context-stat.bin", "context-stat.json", "used"] {
                    let path = store.cache_dir().join(name);
                    let _ = if path.is_dir() {
                        std::fs::remove_dir_all(&path)
                    } else {
                        std::fs::remove_file(&path)
                    };
                }
            }
            let report = store.prune(&PruneOptions::default())?;
            println!(
                "Deleted {records} cache records and {mounts} cache mounts; total reclaimed space: {} ({} blobs, {} snapshots)",
                human_size(report.bytes_freed + mount_bytes),
                report.blobs_removed,
                report.snapshots_removed
            );
        }
    }
    Ok(ExitStatus::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keep_storage_sizes() {
        assert_eq!(parse_size("0").unwrap(), 0);
        assert_eq!(parse_size("10k").unwrap(), 10 * 1024);
        assert_eq!(parse_size("1.5MB").unwrap(), 3 * 512 * 1024);
        assert_eq!(parse_size("2GiB").unwrap(), 2 << 30);
        assert!(parse_size("lots").is_err());
    }
}
