//! `fsck`: check every blob, name, manifest and snapshot, and report each
//! problem found. Nothing is changed.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::fs::{self, File};
use std::io;

use oci_spec::image::{ImageConfiguration, ImageIndex, ImageManifest};
use rayon::prelude::*;

use crate::digest::HashingWriter;
use crate::images::{descriptor_digest, is_index, parse_json};
use crate::snapshot::chain_ids;
use crate::{Digest, Result, Store};

/// One thing wrong with the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// What is wrong (a blob, a name, a snapshot, a file).
    pub subject: String,
    /// What is wrong with it.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.subject, self.message)
    }
}

/// What `fsck` looked at and found.
#[derive(Debug, Clone, Default)]
pub struct FsckReport {
    pub blobs_checked: u64,
    pub images_checked: u64,
    pub snapshots_checked: u64,
    pub problems: Vec<Problem>,
}

impl Store {
    /// Re-hashes every blob and checks every name, manifest and snapshot.
    pub fn fsck(&self) -> Result<FsckReport> {
        let mut report = FsckReport::default();
        let problem = |subject: String, message: String| Problem { subject, message };
        let layout_path = self.root.join("oci-layout");
        match fs::read(&layout_path) {
            Ok(bytes) => {
                let ok = serde_json::from_slice::<serde_json::Value>(&bytes)
                    .ok()
                    .and_then(|v| {
                        v.get("imageLayoutVersion")
                            .and_then(|s| s.as_str())
                            .map(|s| s == "1.0.0")
                    })
                    .unwrap_or(false);
                if !ok {
                    report.problems.push(problem(
                        "oci-layout".into(),
                        "not {\"imageLayoutVersion\":\"1.0.0\"}".into(),
                    ));
                }
            }
            Err(e) => report
                .problems
                .push(problem("oci-layout".into(), e.to_string())),
        }

        // Blobs: the name is the digest of the content.
        let blobs = self.content.list()?;
        report.blobs_checked = blobs.len() as u64;
        let bad: Vec<Problem> = blobs
            .par_iter()
            .filter_map(|digest| match hash_file(&self.content.path(digest)) {
                Ok(actual) if actual == *digest => None,
                Ok(actual) => Some(Problem {
                    subject: format!("blob {digest}"),
                    message: format!("content hashes to {actual}"),
                }),
                Err(e) => Some(Problem {
                    subject: format!("blob {digest}"),
                    message: format!("unreadable: {e}"),
                }),
            })
            .collect();
        let corrupt: HashSet<Digest> = bad
            .iter()
            .filter_map(|p| {
                p.subject
                    .strip_prefix("blob ")
                    .and_then(|d| Digest::parse(d).ok())
            })
            .collect();
        report.problems.extend(bad);
        let present: HashSet<Digest> = blobs.into_iter().filter(|d| !corrupt.contains(d)).collect();

        // Names and index.json agree.
        let names = self.names()?;
        let untagged = self.untagged()?;
        match self.read_index() {
            Ok(index) => {
                let in_index: HashMap<String, String> = index
                    .manifests()
                    .iter()
                    .filter_map(|m| {
                        let name = m
                            .annotations()
                            .as_ref()?
                            .get(crate::images::IMAGE_NAME_ANNOTATION)?;
                        Some((name.clone(), m.digest().to_string()))
                    })
                    .collect();
                for (name, target, _) in &names {
                    match in_index.get(name) {
                        Some(d) if *d == target.digest().to_string() => {}
                        Some(d) => report.problems.push(problem(
                            format!("image {name}"),
                            format!("index.json points at {d}, metadata at {}", target.digest()),
                        )),
                        None => report.problems.push(problem(
                            format!("image {name}"),
                            "missing from index.json".into(),
                        )),
                    }
                }
                let known: HashSet<&String> = names.iter().map(|(n, _, _)| n).collect();
                for name in in_index.keys() {
                    if !known.contains(name) {
                        report.problems.push(problem(
                            format!("index.json entry {name}"),
                            "not in metadata".into(),
                        ));
                    }
                }
            }
            Err(e) => report
                .problems
                .push(problem("index.json".into(), e.to_string())),
        }

        // Every image: manifest, config and layers present and consistent.
        let mut wanted_chains: HashSet<Digest> = HashSet::new();
        let mut targets: Vec<(String, oci_spec::image::Descriptor)> = names
            .iter()
            .map(|(n, t, _)| (n.clone(), t.clone()))
            .collect();
        targets.extend(
            untagged
                .iter()
                .map(|t| (format!("untagged {}", t.digest()), t.clone())),
        );
        for (label, target) in targets {
            report.images_checked += 1;
            let mut found = Vec::new();
            self.check_target(&target, &present, &mut found, &mut wanted_chains, 0);
            report.problems.extend(
                found
                    .into_iter()
                    .map(|m| problem(format!("image {label}"), m)),
            );
        }

        // Snapshots: complete, self-consistent, and as recorded.
        for chain in self.snapshots()? {
            report.snapshots_checked += 1;
            let subject = format!("snapshot {chain}");
            let info = match self.snapshot_info(&chain) {
                Ok(info) => info,
                Err(e) => {
                    report
                        .problems
                        .push(problem(subject, format!("no readable info.json ({e})")));
                    continue;
                }
            };
            if info.chain_id != chain {
                report.problems.push(problem(
                    subject.clone(),
                    format!("info.json names chain {}", info.chain_id),
                ));
            }
            let expected_chain = match &info.parent {
                None => info.diff_id.clone(),
                Some(parent) => chain_ids(&[parent.clone(), info.diff_id.clone()])[1].clone(),
            };
            if expected_chain != chain {
                report.problems.push(problem(
                    subject.clone(),
                    "chain id does not follow from parent and diff id".into(),
                ));
            }
            let fs_dir = self.snapshot_fs(&chain);
            if !fs_dir.is_dir() {
                report
                    .problems
                    .push(problem(subject, "fs/ is missing".into()));
                continue;
            }
            let (bytes, entries) = crate::fsutil::tree_usage(&fs_dir);
            if bytes != info.bytes || entries != info.entries {
                report.problems.push(problem(
                    subject,
                    format!(
                        "holds {entries} entries / {bytes} bytes, recorded {} / {}",
                        info.entries, info.bytes
                    ),
                ));
            }
        }
        Ok(report)
    }

    fn check_target(
        &self,
        target: &oci_spec::image::Descriptor,
        present: &HashSet<Digest>,
        found: &mut Vec<String>,
        chains: &mut HashSet<Digest>,
        depth: usize,
    ) {
        let digest = match descriptor_digest(target) {
            Ok(d) => d,
            Err(e) => return found.push(e.to_string()),
        };
        if !present.contains(&digest) {
            return found.push(format!("manifest {digest} is missing or corrupt"));
        }
        let bytes = match self.content.read(&digest) {
            Ok(b) => b,
            Err(e) => return found.push(e.to_string()),
        };
        if bytes.len() as u64 != target.size() {
            found.push(format!(
                "{digest} is {} bytes, descriptor says {}",
                bytes.len(),
                target.size()
            ));
        }
        if is_index(target.media_type()) {
            match parse_json::<ImageIndex>("image index", &bytes) {
                Ok(index) if depth < 4 => {
                    for m in index.manifests() {
                        if let Ok(d) = descriptor_digest(m) {
                            // An index may list platforms that were not copied; only
                            // the present ones must be whole.
                            if present.contains(&d) {
                                self.check_target(m, present, found, chains, depth + 1);
                            }
                        }
                    }
                }
                Ok(_) => found.push(format!("index {digest} nests too deep")),
                Err(e) => found.push(e.to_string()),
            }
            return;
        }
        let manifest = match parse_json::<ImageManifest>("image manifest", &bytes) {
            Ok(m) => m,
            Err(e) => return found.push(e.to_string()),
        };
        let config_digest = match descriptor_digest(manifest.config()) {
            Ok(d) => d,
            Err(e) => return found.push(e.to_string()),
        };
        if !present.contains(&config_digest) {
            return found.push(format!("config {config_digest} is missing or corrupt"));
        }
        let config = match self
            .content
            .read(&config_digest)
            .and_then(|b| parse_json::<ImageConfiguration>("image config", &b))
        {
            Ok(c) => c,
            Err(e) => return found.push(e.to_string()),
        };
        for layer in manifest.layers() {
            match descriptor_digest(layer) {
                Ok(d) if present.contains(&d) => {}
                // Foreign layers (with urls) need not be stored (image-spec descriptor.md).
                Ok(_) if layer.urls().as_ref().is_some_and(|u| !u.is_empty()) => {}
                Ok(d) => found.push(format!("layer {d} is missing or corrupt")),
                Err(e) => found.push(e.to_string()),
            }
        }
        let diff_ids = crate::images::config_diff_ids(&config);
        if diff_ids.len() != manifest.layers().len() {
            found.push(format!(
                "manifest lists {} layers, config {} diff ids",
                manifest.layers().len(),
                diff_ids.len()
            ));
        }
        chains.extend(chain_ids(&diff_ids));
    }
}

fn hash_file(path: &std::path::Path) -> io::Result<Digest> {
    let mut file = File::open(path)?;
    let mut hasher = HashingWriter::new(io::sink());
    io::copy(&mut file, &mut hasher)?;
    Ok(hasher.finish().1)
}
