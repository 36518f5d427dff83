//! Garbage collection and disk usage.
//!
//! Roots are image names, untagged images (unless pruned), what callers say
//! is in use (containers, build cache records) and live leases. Everything
//! else in `blobs/`, `snapshots/` and `ingest/` is garbage. Collection runs
//! under the root lock, so no name or lease changes while it marks and
//! sweeps.

use std::collections::{HashMap, HashSet};
use std::fs;

use oci_spec::image::{ImageIndex, ImageManifest};

use crate::images::{descriptor_digest, is_index, parse_json};
use crate::lease::LeaseRecord;
use crate::meta::{self, COMPRESSED, DANGLING, LEASES, NAMES};
use crate::snapshot::chain_ids;
use crate::{Digest, Error, Result, Store};

/// What `prune` should remove beyond unreachable content.
#[derive(Debug, Clone, Default)]
pub struct PruneOptions {
    /// Remove untagged images (docker's dangling images).
    pub dangling: bool,
    /// Also remove every image that nothing in `in_use` holds (docker's `-a`).
    pub all: bool,
    /// Manifest or index digests that must stay (used by containers).
    pub in_use: Vec<Digest>,
    /// Blob digests or chain ids that must stay (build cache records).
    pub extra_roots: Vec<Digest>,
}

/// What a collection removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PruneReport {
    /// Image names and untagged images removed.
    pub images_removed: Vec<String>,
    pub blobs_removed: u64,
    pub snapshots_removed: u64,
    pub temp_removed: u64,
    /// Bytes given back.
    pub bytes_freed: u64,
}

/// Space used, by kind.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DiskUsage {
    pub images: u64,
    /// Bytes of blobs reachable from images.
    pub images_bytes: u64,
    /// Bytes of blobs nothing reaches.
    pub unreferenced_bytes: u64,
    pub snapshots: u64,
    pub snapshots_bytes: u64,
    /// Snapshots no image uses.
    pub snapshots_reclaimable_bytes: u64,
    pub cache_bytes: u64,
}

struct Marked {
    blobs: HashSet<Digest>,
    chains: HashSet<Digest>,
}

impl Store {
    /// Removes what nothing references (and, per `options`, untagged or
    /// unused images).
    pub fn prune(&self, options: &PruneOptions) -> Result<PruneReport> {
        self.meta.with_writable(|db| self.prune_in(db, options))
    }

    /// [`Store::prune`] with the database open (and the root lock held)
    /// from the first read to the last removal.
    fn prune_in(&self, db: &redb::Database, options: &PruneOptions) -> Result<PruneReport> {
        let mut report = PruneReport::default();
        let txn = db.begin_write().map_err(|e| self.meta.error(e))?;
        let in_use: HashSet<String> = options.in_use.iter().map(|d| d.to_string()).collect();
        for (key, _) in meta::all_in_write(&self.meta, &txn, DANGLING)? {
            if (options.dangling || options.all) && !in_use.contains(&key) {
                meta::remove(&self.meta, &txn, DANGLING, &key)?;
                report.images_removed.push(key);
            }
        }
        if options.all {
            for (name, bytes) in meta::all_in_write(&self.meta, &txn, NAMES)? {
                let record: crate::images::NameRecord = parse_json("name record", &bytes)?;
                let digest = descriptor_digest(record.target())?.to_string();
                if !in_use.contains(&digest) {
                    meta::remove(&self.meta, &txn, NAMES, &name)?;
                    report.images_removed.push(name);
                }
            }
        }
        let mut roots: Vec<Digest> = options.in_use.clone();
        for table in [NAMES, DANGLING] {
            for (_, bytes) in meta::all_in_write(&self.meta, &txn, table)? {
                let record: crate::images::NameRecord = parse_json("name record", &bytes)?;
                roots.push(descriptor_digest(record.target())?);
            }
        }
        let mut protected: HashSet<Digest> = options.extra_roots.iter().cloned().collect();
        protected.extend(crate::cache::roots_in(&self.meta, &txn)?);
        for (id, bytes) in meta::all_in_write(&self.meta, &txn, LEASES)? {
            let lease: LeaseRecord = parse_json("lease", &bytes)?;
            if lease.is_alive() {
                protected.extend(lease.digests);
            } else {
                meta::remove(&self.meta, &txn, LEASES, &id)?;
            }
        }
        if !report.images_removed.is_empty() {
            self.write_index_in(&txn)?;
        }
        let twins = twins_of(&meta::all_in_write(&self.meta, &txn, COMPRESSED)?);
        let marked = self.mark(&roots, &twins)?;
        txn.commit().map_err(|e| self.meta.error(e))?;

        for digest in self.content.list()? {
            if !marked.blobs.contains(&digest) && !protected.contains(&digest) {
                report.bytes_freed += self.content.size(&digest).unwrap_or(0);
                self.content.remove(&digest)?;
                report.blobs_removed += 1;
            }
        }
        for chain in self.snapshots()? {
            if !marked.chains.contains(&chain) && !protected.contains(&chain) {
                let dir = self.snapshot_dir(&chain);
                report.bytes_freed += crate::fsutil::tree_usage(&dir).0;
                fs::remove_dir_all(&dir).map_err(Error::io(&dir))?;
                report.snapshots_removed += 1;
            }
        }
        // Kept lookup answers are a cache: stale ones (of names gone since)
        // go with the rest.
        let _ = fs::remove_dir_all(self.root.join("meta.memo"));
        for dir in [
            self.content.ingest_dir().to_path_buf(),
            self.root.join("snapshots"),
        ] {
            for entry in fs::read_dir(&dir).map_err(Error::io(&dir))?.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if Digest::from_hex(&name).is_ok() {
                    continue;
                }
                let dead = crate::fsutil::temp_owner(&name)
                    .is_none_or(|pid| !crate::fsutil::pid_alive(pid));
                if dead {
                    let path = entry.path();
                    report.bytes_freed += crate::fsutil::tree_usage(&path).0
                        + entry
                            .metadata()
                            .map(|m| if m.is_file() { m.len() } else { 0 })
                            .unwrap_or(0);
                    let removed = if path.is_dir() {
                        fs::remove_dir_all(&path)
                    } else {
                        fs::remove_file(&path)
                    };
                    removed.map_err(Error::io(&path))?;
                    report.temp_removed += 1;
                }
            }
        }
        Ok(report)
    }

    /// Space used by images, snapshots and the build cache.
    pub fn disk_usage(&self) -> Result<DiskUsage> {
        let (records, compressed) = self.meta.read(|txn| {
            Ok((
                self.image_records_in(txn)?,
                meta::read_all(&self.meta, txn, COMPRESSED)?,
            ))
        })?;
        let mut roots = Vec::new();
        for (_, target, _) in &records.names {
            roots.push(descriptor_digest(target)?);
        }
        for target in &records.untagged {
            roots.push(descriptor_digest(target)?);
        }
        let mut usage = DiskUsage {
            images: roots.iter().collect::<HashSet<_>>().len() as u64,
            ..DiskUsage::default()
        };
        let twins = twins_of(&compressed);
        let marked = self.mark(&roots, &twins)?;
        for digest in self.content.list()? {
            let size = self.content.size(&digest).unwrap_or(0);
            if marked.blobs.contains(&digest) {
                usage.images_bytes += size;
            } else {
                usage.unreferenced_bytes += size;
            }
        }
        for chain in self.snapshots()? {
            let bytes = self.snapshot_info(&chain).map(|i| i.bytes).unwrap_or(0);
            usage.snapshots += 1;
            usage.snapshots_bytes += bytes;
            if !marked.chains.contains(&chain) {
                usage.snapshots_reclaimable_bytes += bytes;
            }
        }
        usage.cache_bytes = crate::fsutil::tree_usage(&self.cache_dir()).0;
        Ok(usage)
    }

    /// Everything reachable from `roots` (manifest or index digests).
    /// Missing blobs are skipped here; fsck reports them.
    fn mark(&self, roots: &[Digest], twins: &HashMap<Digest, Digest>) -> Result<Marked> {
        let mut marked = Marked {
            blobs: HashSet::new(),
            chains: HashSet::new(),
        };
        let mut stack: Vec<Digest> = roots.to_vec();
        while let Some(digest) = stack.pop() {
            if !marked.blobs.insert(digest.clone()) {
                continue;
            }
            let Ok(bytes) = self.content.read(&digest) else {
                continue;
            };
            let media: serde_json::Value = match serde_json::from_slice(&bytes) {
                Ok(v) => v,
                Err(_) => continue,
            };
            if media.get("manifests").is_some() {
                let index: ImageIndex = parse_json("image index", &bytes)?;
                for m in index.manifests() {
                    if is_index(m.media_type()) || m.media_type().to_string().contains("manifest") {
                        stack.push(descriptor_digest(m)?);
                    } else {
                        marked.blobs.insert(descriptor_digest(m)?);
                    }
                }
            } else if media.get("layers").is_some() {
                let manifest: ImageManifest = parse_json("image manifest", &bytes)?;
                let config = descriptor_digest(manifest.config())?;
                marked.blobs.insert(config.clone());
                for layer in manifest.layers() {
                    let digest = descriptor_digest(layer)?;
                    // A reachable layer keeps its compressed twin, made for pushes.
                    if let Some(twin) = twins.get(&digest) {
                        marked.blobs.insert(twin.clone());
                    }
                    marked.blobs.insert(digest);
                }
                if let Ok(config_bytes) = self.content.read(&config) {
                    if let Ok(config) =
                        serde_json::from_slice::<oci_spec::image::ImageConfiguration>(&config_bytes)
                    {
                        marked
                            .chains
                            .extend(chain_ids(&crate::images::config_diff_ids(&config)));
                    }
                }
            }
        }
        Ok(marked)
    }
}

/// uncompressed layer -> its compressed twin, from the COMPRESSED table.
fn twins_of(rows: &[(String, Vec<u8>)]) -> HashMap<Digest, Digest> {
    rows.iter()
        .filter_map(|(key, bytes)| {
            let layer = Digest::parse(key).ok()?;
            let twin: oci_spec::image::Descriptor = serde_json::from_slice(bytes).ok()?;
            Some((layer, descriptor_digest(&twin).ok()?))
        })
        .collect()
}
