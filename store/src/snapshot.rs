//! Snapshots: each layer unpacked once into `snapshots/<chain-id>/fs`, to be
//! stacked as overlayfs lower directories. `snapshots/<chain-id>/info.json`
//! records what the snapshot holds so `fsck` can check it.
//!
//! A snapshot is made in `snapshots/tmp-<pid>-<rand>/` and renamed into place
//! only when complete, so a killed process leaves no half-made snapshot
//! under a chain id.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::images::Image;
use crate::{Digest, Error, Result, Store};

/// What a snapshot holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotInfo {
    /// Its chain id (image-spec config.md, "Layer ChainID").
    pub chain_id: Digest,
    /// The chain id of the snapshot below, if any.
    pub parent: Option<Digest>,
    /// The uncompressed digest of the layer it was made from.
    pub diff_id: Digest,
    /// Number of entries below `fs/`.
    pub entries: u64,
    /// Bytes of regular files below `fs/`.
    pub bytes: u64,
}

/// Chain ids of a stack of layers: ChainID(L0) = DiffID(L0),
/// ChainID(L0..n) = sha256(ChainID(L0..n-1) + " " + DiffID(Ln)).
pub fn chain_ids(diff_ids: &[Digest]) -> Vec<Digest> {
    let mut out: Vec<Digest> = Vec::with_capacity(diff_ids.len());
    for diff_id in diff_ids {
        let next = match out.last() {
            None => diff_id.clone(),
            Some(parent) => {
                let text = format!("{parent} {diff_id}");
                Digest::of(text.as_bytes())
            }
        };
        out.push(next);
    }
    out
}

impl Store {
    /// The directory of a snapshot (holding `fs/` and `info.json`).
    pub fn snapshot_dir(&self, chain_id: &Digest) -> PathBuf {
        self.root.join("snapshots").join(chain_id.hex())
    }

    /// The unpacked tree of a snapshot: an overlayfs lower directory.
    pub fn snapshot_fs(&self, chain_id: &Digest) -> PathBuf {
        self.snapshot_dir(chain_id).join("fs")
    }

    /// True when the snapshot exists and is complete.
    pub fn has_snapshot(&self, chain_id: &Digest) -> bool {
        self.snapshot_dir(chain_id).join("info.json").is_file()
    }

    /// Reads a snapshot's record.
    pub fn snapshot_info(&self, chain_id: &Digest) -> Result<SnapshotInfo> {
        let path = self.snapshot_dir(chain_id).join("info.json");
        let bytes = fs::read(&path).map_err(Error::io(&path))?;
        crate::images::parse_json("snapshot info", &bytes)
    }

    /// The image's size as docker reports it: the unpacked bytes of its
    /// layers (from their snapshots), or a layer's stored size where it has
    /// no snapshot yet.
    pub fn unpacked_size(&self, image: &crate::Image) -> u64 {
        self.layer_sizes(image).iter().sum()
    }

    /// Each layer's size, bottom first, as [`Store::unpacked_size`] counts it.
    pub fn layer_sizes(&self, image: &crate::Image) -> Vec<u64> {
        let layers = image.manifest.layers();
        let Ok(diff_ids) = image.diff_ids() else {
            return layers.iter().map(|l| l.size()).collect();
        };
        chain_ids(&diff_ids)
            .iter()
            .enumerate()
            .map(|(i, chain)| match self.snapshot_info(chain) {
                Ok(info) => info.bytes,
                Err(_) => layers.get(i).map_or(0, |l| l.size()),
            })
            .collect()
    }

    /// Every complete snapshot's chain id.
    pub fn snapshots(&self) -> Result<Vec<Digest>> {
        crate::fsutil::digests_in(&self.root.join("snapshots"))
    }

    /// Unpacks every layer of `image` that has no snapshot yet (in parallel)
    /// and returns the snapshot `fs/` directories, lowest layer first.
    pub fn ensure_snapshots(&self, image: &Image) -> Result<Vec<PathBuf>> {
        let diff_ids = image.diff_ids()?;
        let layers = image.layer_digests()?;
        if diff_ids.len() != layers.len() {
            return Err(Error::Conflict {
                id: image.manifest_digest.to_string(),
                reason: format!(
                    "manifest has {} layers but config has {} diff ids",
                    layers.len(),
                    diff_ids.len()
                ),
            });
        }
        let chains = chain_ids(&diff_ids);
        let missing: Vec<usize> = (0..chains.len())
            .filter(|&i| !self.has_snapshot(&chains[i]))
            .collect();
        if missing.is_empty() {
            return Ok(chains.iter().map(|c| self.snapshot_fs(c)).collect());
        }
        // One lease write for every snapshot about to be made.
        let lease = self.lease()?;
        let protect: Vec<Digest> = missing.iter().map(|&i| chains[i].clone()).collect();
        lease.protect_all(&protect)?;
        missing.into_par_iter().try_for_each(|i| {
            let blob = self.content.open(&layers[i])?;
            let parent = i.checked_sub(1).map(|p| chains[p].clone());
            self.create_snapshot(&chains[i], parent, &diff_ids[i], blob)
        })?;
        Ok(chains.iter().map(|c| self.snapshot_fs(c)).collect())
    }

    /// Unpacks one layer stream (any compression) into the snapshot
    /// `chain_id`, checking that its uncompressed digest is `diff_id`.
    pub fn create_snapshot(
        &self,
        chain_id: &Digest,
        parent: Option<Digest>,
        diff_id: &Digest,
        layer: impl Read,
    ) -> Result<()> {
        let temp = self.snapshot_temp_dir()?;
        let result = (|| {
            let fs_dir = temp.join("fs");
            fs::create_dir(&fs_dir).map_err(Error::io(&fs_dir))?;
            // Hash the uncompressed stream on its way to apply: the diff id.
            let (plain, _) =
                crate::layer::decoder(layer).map_err(|source| Error::LayerRead { source })?;
            let mut hashing = crate::HashingReader::new(plain);
            crate::layer::apply(&mut hashing, &fs_dir)?;
            let (_, actual, _) = hashing.finish();
            if actual != *diff_id {
                return Err(Error::DigestMismatch {
                    expected: diff_id.clone(),
                    actual,
                });
            }
            self.finish_snapshot(&temp, chain_id, parent, diff_id, None)
        })();
        if result.is_err() {
            let _ = fs::remove_dir_all(&temp);
        }
        result
    }

    /// A fresh temporary snapshot directory (its `fs/` is not yet made).
    pub(crate) fn snapshot_temp_dir(&self) -> Result<PathBuf> {
        let temp = self
            .root
            .join("snapshots")
            .join(format!("tmp-{}", crate::fsutil::temp_suffix()));
        fs::create_dir(&temp).map_err(Error::io(&temp))?;
        Ok(temp)
    }

    /// Records `info.json` in a complete temporary snapshot and renames it
    /// into place. Another process finishing the same snapshot first is fine.
    pub(crate) fn finish_snapshot(
        &self,
        temp: &Path,
        chain_id: &Digest,
        parent: Option<Digest>,
        diff_id: &Digest,
        usage: Option<(u64, u64)>,
    ) -> Result<()> {
        let (bytes, entries) = usage.unwrap_or_else(|| crate::fsutil::tree_usage(&temp.join("fs")));
        let info = SnapshotInfo {
            chain_id: chain_id.clone(),
            parent,
            diff_id: diff_id.clone(),
            entries,
            bytes,
        };
        let info_path = temp.join("info.json");
        fs::write(
            &info_path,
            serde_json::to_vec_pretty(&info).expect("serializes"),
        )
        .map_err(Error::io(&info_path))?;
        let target = self.snapshot_dir(chain_id);
        match fs::rename(temp, &target) {
            Ok(()) => {}
            // ENOTEMPTY/EEXIST: the same snapshot was finished by someone else.
            Err(_) if self.has_snapshot(chain_id) => {
                let _ = fs::remove_dir_all(temp);
            }
            Err(e) => return Err(Error::io(&target)(e)),
        }
        let parent_dir = self.root.join("snapshots");
        crate::fsutil::sync_dir(&parent_dir).map_err(Error::io(&parent_dir))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_ids_follow_the_spec() {
        let a = Digest::of(b"a");
        let b = Digest::of(b"b");
        let chains = chain_ids(&[a.clone(), b.clone()]);
        assert_eq!(chains[0], a);
        assert_eq!(chains[1], Digest::of(format!("{a} {b}").as_bytes()));
    }
}
