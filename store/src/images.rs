//! Image records: names, untagged ("dangling") images, resolution of a name
//! or id to a manifest and config, and the OCI `index.json` that mirrors the
//! names so OCI tools can read the root (image-spec image-layout.md).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs;

use oci_spec::image::{
    Arch, Descriptor, ImageConfiguration, ImageIndex, ImageIndexBuilder, ImageManifest, MediaType,
    Os,
};
use serde::{Deserialize, Serialize};

use crate::meta::{self, DANGLING, NAMES};
use crate::{Digest, Error, Result, Store};

/// OCI annotation holding the name OCI tools look an image up by.
pub const REF_NAME_ANNOTATION: &str = "org.opencontainers.image.ref.name";
/// Annotation holding the full, normalized image name (as containerd writes it).
pub const IMAGE_NAME_ANNOTATION: &str = "io.containerd.image.name";

/// What a name points at: a manifest or an index, and when it was set.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct NameRecord {
    target: Descriptor,
    /// Unix seconds when the name was set.
    tagged_at: i64,
}

/// One image: a platform manifest and its config, with every name it has.
#[derive(Debug, Clone)]
pub struct Image {
    /// What the names point at (a manifest, or an index holding it).
    pub target: Descriptor,
    /// The digest of the platform manifest.
    pub manifest_digest: Digest,
    /// The platform manifest.
    pub manifest: ImageManifest,
    /// The image config's digest: the image id, as docker shows it.
    pub config_digest: Digest,
    /// The image config.
    pub config: ImageConfiguration,
    /// Every name that points at this image, sorted.
    pub names: Vec<String>,
}

impl NameRecord {
    pub(crate) fn target(&self) -> &Descriptor {
        &self.target
    }
}

impl Image {
    /// The image id: the config digest.
    pub fn id(&self) -> &Digest {
        &self.config_digest
    }

    /// Bytes of all layers as stored.
    pub fn size(&self) -> u64 {
        self.manifest.layers().iter().map(|l| l.size()).sum()
    }

    /// The layers' uncompressed digests, from the config's rootfs.
    pub fn diff_ids(&self) -> Result<Vec<Digest>> {
        self.config
            .rootfs()
            .diff_ids()
            .iter()
            .map(|d| Digest::parse(d))
            .collect()
    }

    /// The layer blob digests, in order.
    pub fn layer_digests(&self) -> Result<Vec<Digest>> {
        self.manifest
            .layers()
            .iter()
            .map(descriptor_digest)
            .collect()
    }
}

/// The layers' uncompressed digests a config lists; malformed entries are skipped.
pub(crate) fn config_diff_ids(config: &ImageConfiguration) -> Vec<Digest> {
    config
        .rootfs()
        .diff_ids()
        .iter()
        .filter_map(|d| Digest::parse(d).ok())
        .collect()
}

/// The digest a descriptor names.
pub fn descriptor_digest(descriptor: &Descriptor) -> Result<Digest> {
    Digest::parse(descriptor.digest().as_ref())
}

/// A descriptor for `digest` of `size` bytes and `media_type`.
pub fn descriptor(media_type: MediaType, digest: &Digest, size: u64) -> Descriptor {
    let oci_digest: oci_spec::image::Digest = digest
        .to_string()
        .parse()
        .expect("a kiln Digest is always a valid OCI digest");
    Descriptor::new(media_type, size, oci_digest)
}

/// The host's platform in OCI terms (image-spec image-index.md, "platform").
pub fn host_platform() -> (Arch, Os) {
    let arch = match std::env::consts::ARCH {
        "x86_64" => Arch::Amd64,
        "aarch64" => Arch::ARM64,
        "x86" => Arch::i386,
        "arm" => Arch::ARM,
        "powerpc64" => Arch::PowerPC64le,
        "s390x" => Arch::s390x,
        "riscv64" => Arch::RISCV64,
        other => Arch::Other(other.to_string()),
    };
    (arch, Os::Linux)
}

/// The short form users type: `docker.io/library/busybox:latest` -> `busybox:latest`.
pub fn familiar_name(name: &str) -> &str {
    name.strip_prefix("docker.io/library/")
        .or_else(|| name.strip_prefix("docker.io/"))
        .unwrap_or(name)
}

/// Is this media type an image index or a Docker manifest list?
pub fn is_index(media_type: &MediaType) -> bool {
    match media_type {
        MediaType::ImageIndex => true,
        MediaType::Other(t) => t == "application/vnd.docker.distribution.manifest.list.v2+json",
        _ => false,
    }
}

impl Store {
    /// Points `name` at `target` (a manifest or index already in the store).
    ///
    /// An image that loses its last name this way becomes dangling (listed
    /// as `<none>`), as a re-tagged image does in docker.
    /// What `name` (as stored, normalized) points at, if anything; a read.
    pub fn name_target(&self, name: &str) -> Result<Option<Descriptor>> {
        let current = self
            .meta
            .read(|txn| meta::read_one(&self.meta, txn, NAMES, name))?;
        current
            .map(|bytes| parse_json::<NameRecord>("name record", &bytes).map(|r| r.target))
            .transpose()
    }

    pub fn set_name(&self, name: &str, target: &Descriptor) -> Result<()> {
        validate_name(name)?;
        // Naming an image what it is already called (every cached rebuild
        // does) changes nothing: a read, no write, no index.json rewrite.
        if self.name_target(name)?.as_ref() == Some(target) {
            return Ok(());
        }
        let record = NameRecord {
            target: target.clone(),
            tagged_at: chrono::Utc::now().timestamp(),
        };
        let bytes = serde_json::to_vec(&record).expect("a name record serializes");
        self.meta.write(|txn| {
            let previous = meta::get(&self.meta, txn, NAMES, name)?;
            meta::put(&self.meta, txn, NAMES, name, &bytes)?;
            let target_digest = descriptor_digest(target)?.to_string();
            meta::remove(&self.meta, txn, DANGLING, &target_digest)?;
            if let Some(previous) = previous {
                let previous: NameRecord = parse_json("name record", &previous)?;
                let previous_digest = descriptor_digest(&previous.target)?.to_string();
                if previous_digest != target_digest && !self.is_named_in(txn, &previous_digest)? {
                    meta::put(
                        &self.meta,
                        txn,
                        DANGLING,
                        &previous_digest,
                        &serde_json::to_vec(&previous).expect("serializes"),
                    )?;
                }
            }
            self.write_index_in(txn)
        })
    }

    /// Keeps `target` as an untagged image (as `docker load` does for an
    /// archive without names), unless a name already points at it.
    pub fn keep_untagged(&self, target: &Descriptor) -> Result<()> {
        let record = NameRecord {
            target: target.clone(),
            tagged_at: chrono::Utc::now().timestamp(),
        };
        let key = descriptor_digest(target)?.to_string();
        self.meta.write(|txn| {
            if !self.is_named_in(txn, &key)? {
                let bytes = serde_json::to_vec(&record).expect("serializes");
                meta::put(&self.meta, txn, DANGLING, &key, &bytes)?;
                self.write_index_in(txn)?;
            }
            Ok(())
        })
    }

    /// Removes one name. Returns the descriptor it pointed at.
    pub fn remove_name(&self, name: &str) -> Result<Descriptor> {
        self.meta.write(|txn| {
            let Some(previous) = meta::get(&self.meta, txn, NAMES, name)? else {
                return Err(Error::ImageNotFound {
                    name: name.to_string(),
                });
            };
            meta::remove(&self.meta, txn, NAMES, name)?;
            self.write_index_in(txn)?;
            let record: NameRecord = parse_json("name record", &previous)?;
            Ok(record.target)
        })
    }

    /// Removes an untagged image record.
    pub fn remove_untagged(&self, target: &Digest) -> Result<bool> {
        self.meta.write(|txn| {
            let removed = meta::remove(&self.meta, txn, DANGLING, &target.to_string())?;
            if removed {
                self.write_index_in(txn)?;
            }
            Ok(removed)
        })
    }

    /// Every name with its target, sorted by name.
    pub fn names(&self) -> Result<Vec<(String, Descriptor, i64)>> {
        let rows = self
            .meta
            .read(|txn| meta::read_all(&self.meta, txn, NAMES))?;
        parse_names(rows)
    }

    /// Every untagged image's target.
    pub fn untagged(&self) -> Result<Vec<Descriptor>> {
        let rows = self
            .meta
            .read(|txn| meta::read_all(&self.meta, txn, DANGLING))?;
        parse_untagged(rows)
    }

    /// Names and untagged images, in one metadata read.
    fn image_records(&self) -> Result<ImageRecords> {
        self.meta.read(|txn| self.image_records_in(txn))
    }

    /// Names and untagged images, read in `txn`.
    pub(crate) fn image_records_in(&self, txn: &redb::ReadTransaction) -> Result<ImageRecords> {
        Ok(ImageRecords {
            names: parse_names(meta::read_all(&self.meta, txn, NAMES)?)?,
            untagged: parse_untagged(meta::read_all(&self.meta, txn, DANGLING)?)?,
        })
    }

    /// Every image (named and untagged), one entry per target, names grouped.
    pub fn images(&self) -> Result<Vec<Image>> {
        let records = self.image_records()?;
        self.images_of(records)
    }

    fn images_of(&self, records: ImageRecords) -> Result<Vec<Image>> {
        let mut by_target: BTreeMap<String, (Descriptor, Vec<String>)> = BTreeMap::new();
        for (name, target, _) in records.names {
            let key = descriptor_digest(&target)?.to_string();
            by_target
                .entry(key)
                .or_insert_with(|| (target, Vec::new()))
                .1
                .push(name);
        }
        for target in records.untagged {
            let key = descriptor_digest(&target)?.to_string();
            by_target.entry(key).or_insert_with(|| (target, Vec::new()));
        }
        by_target
            .into_values()
            .map(|(target, mut names)| {
                names.sort();
                self.load_image(&target, names)
            })
            .collect()
    }

    /// Finds an image by name, full or short id (config digest, with or
    /// without `sha256:`), or manifest digest.
    pub fn find_image(&self, name_or_id: &str) -> Result<Image> {
        // A name's target and its fellow names, as the last lookup of this
        // name in this database state found them (see [`crate::memo`]).
        let memo = crate::memo::Memo::new(&self.root);
        let key = format!("image name\n{name_or_id}");
        if let Some((target, all)) = memo.get::<(Descriptor, Vec<String>)>(&self.meta, &key) {
            return self.load_image(&target, all);
        }
        let (records, state) = self.meta.read_tagged(|txn| self.image_records_in(txn))?;
        let names = &records.names;
        if let Some((_, target, _)) = names.iter().find(|(n, _, _)| n == name_or_id) {
            let all: Vec<String> = names_pointing_at(names, target)?;
            if let Some(state) = state {
                memo.put(&key, &state, &(target, &all));
            }
            return self.load_image(target, all);
        }
        let wanted = name_or_id.strip_prefix("sha256:").unwrap_or(name_or_id);
        let looks_like_id = !wanted.is_empty()
            && wanted.len() <= 64
            && wanted
                .bytes()
                .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        if !looks_like_id {
            return Err(Error::ImageNotFound {
                name: name_or_id.to_string(),
            });
        }
        let mut found: Vec<Image> = Vec::new();
        for image in self.images_of(records)? {
            let hit = image.config_digest.hex().starts_with(wanted)
                || image.manifest_digest.hex() == wanted
                || descriptor_digest(&image.target)?.hex() == wanted;
            if hit
                && !found
                    .iter()
                    .any(|f| f.config_digest == image.config_digest && f.target == image.target)
            {
                found.push(image);
            }
        }
        match found.len() {
            0 => Err(Error::ImageNotFound {
                name: name_or_id.to_string(),
            }),
            1 => Ok(found.pop().expect("one element")),
            _ => Err(Error::Conflict {
                id: name_or_id.to_string(),
                reason: format!("{} images match this id prefix", found.len()),
            }),
        }
    }

    /// Reads the manifest (choosing the host platform from an index) and
    /// config behind `target`.
    pub fn load_image(&self, target: &Descriptor, names: Vec<String>) -> Result<Image> {
        let (manifest_digest, manifest) = self.platform_manifest(target)?;
        let config_digest = descriptor_digest(manifest.config())?;
        let config_bytes = self.content.read(&config_digest)?;
        let config: ImageConfiguration = parse_json("image config", &config_bytes)?;
        Ok(Image {
            target: target.clone(),
            manifest_digest,
            manifest,
            config_digest,
            config,
            names,
        })
    }

    /// Resolves a manifest or index descriptor to the host platform's manifest.
    pub fn platform_manifest(&self, target: &Descriptor) -> Result<(Digest, ImageManifest)> {
        let mut current = target.clone();
        // An index may nest another index; three levels is more than any tool writes.
        for _ in 0..4 {
            let digest = descriptor_digest(&current)?;
            let bytes = self.content.read(&digest)?;
            if is_index(current.media_type()) {
                let index: ImageIndex = parse_json("image index", &bytes)?;
                current = choose_platform(&index).ok_or_else(|| Error::ImageNotFound {
                    name: format!("{digest} (no manifest for this platform)"),
                })?;
                continue;
            }
            let manifest: ImageManifest = parse_json("image manifest", &bytes)?;
            return Ok((digest, manifest));
        }
        Err(Error::ImageNotFound {
            name: format!("{} (index nesting too deep)", target.digest()),
        })
    }

    fn is_named_in(&self, txn: &redb::WriteTransaction, digest: &str) -> Result<bool> {
        for (_, bytes) in meta::all_in_write(&self.meta, txn, NAMES)? {
            let record: NameRecord = parse_json("name record", &bytes)?;
            if descriptor_digest(&record.target)?.to_string() == digest {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Rewrites `index.json` from the metadata, atomically, inside the
    /// metadata transaction (so it is written under the root lock).
    pub(crate) fn write_index_in(&self, txn: &redb::WriteTransaction) -> Result<()> {
        let mut manifests = Vec::new();
        let mut seen = BTreeSet::new();
        for (name, bytes) in meta::all_in_write(&self.meta, txn, NAMES)? {
            let record: NameRecord = parse_json("name record", &bytes)?;
            let mut desc = record.target;
            let mut annotations: HashMap<String, String> =
                desc.annotations().clone().unwrap_or_default();
            annotations.insert(
                REF_NAME_ANNOTATION.to_string(),
                familiar_name(&name).to_string(),
            );
            annotations.insert(IMAGE_NAME_ANNOTATION.to_string(), name.clone());
            desc.set_annotations(Some(annotations));
            seen.insert(desc.digest().to_string());
            manifests.push(desc);
        }
        for (_, bytes) in meta::all_in_write(&self.meta, txn, DANGLING)? {
            let record: NameRecord = parse_json("untagged record", &bytes)?;
            if seen.insert(record.target.digest().to_string()) {
                manifests.push(record.target);
            }
        }
        let index = ImageIndexBuilder::default()
            .schema_version(2u32)
            .media_type(MediaType::ImageIndex)
            .manifests(manifests)
            .build()
            .expect("an index with schema version and manifests builds");
        let bytes = serde_json::to_vec_pretty(&index).expect("an index serializes");
        crate::fsutil::write_atomic(&self.root.join("index.json"), &bytes)
    }

    /// Rewrites `index.json` from the metadata (used by fsck repair paths and tests).
    pub fn rewrite_index(&self) -> Result<()> {
        self.meta.write(|txn| self.write_index_in(txn))
    }

    /// Reads `index.json` as OCI tools see it.
    pub fn read_index(&self) -> Result<ImageIndex> {
        let path = self.root.join("index.json");
        let bytes = fs::read(&path).map_err(Error::io(&path))?;
        parse_json("index.json", &bytes)
    }
}

/// The image tables as read in one transaction.
pub(crate) struct ImageRecords {
    pub names: Vec<(String, Descriptor, i64)>,
    pub untagged: Vec<Descriptor>,
}

fn parse_names(rows: Vec<(String, Vec<u8>)>) -> Result<Vec<(String, Descriptor, i64)>> {
    rows.into_iter()
        .map(|(name, bytes)| {
            let record: NameRecord = parse_json("name record", &bytes)?;
            Ok((name, record.target, record.tagged_at))
        })
        .collect()
}

fn parse_untagged(rows: Vec<(String, Vec<u8>)>) -> Result<Vec<Descriptor>> {
    rows.into_iter()
        .map(|(_, bytes)| Ok(parse_json::<NameRecord>("untagged record", &bytes)?.target))
        .collect()
}

fn names_pointing_at(
    names: &[(String, Descriptor, i64)],
    target: &Descriptor,
) -> Result<Vec<String>> {
    let want = descriptor_digest(target)?;
    let mut out = Vec::new();
    for (name, desc, _) in names {
        if descriptor_digest(desc)? == want {
            out.push(name.clone());
        }
    }
    out.sort();
    Ok(out)
}

/// Picks the host platform's manifest from an index.
pub fn choose_platform(index: &ImageIndex) -> Option<Descriptor> {
    let (arch, os) = host_platform();
    let manifests = index.manifests();
    manifests
        .iter()
        .find(|m| {
            m.platform()
                .as_ref()
                .is_some_and(|p| *p.architecture() == arch && *p.os() == os)
        })
        .or_else(|| manifests.iter().find(|m| m.platform().is_none()))
        .cloned()
}

/// Names are `[host[:port]/]path[:tag]` in lower case; the cli normalizes them.
fn validate_name(name: &str) -> Result<()> {
    let bad = |reason| Error::InvalidName {
        text: name.to_string(),
        reason,
    };
    if name.is_empty() {
        return Err(bad("empty"));
    }
    if name.len() > 255 {
        return Err(bad("longer than 255 characters"));
    }
    if name.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(bad("contains white space"));
    }
    Ok(())
}

pub(crate) fn parse_json<T: serde::de::DeserializeOwned>(
    what: &'static str,
    bytes: &[u8],
) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|source| Error::Json {
        what,
        text: String::from_utf8_lossy(&bytes[..bytes.len().min(80)]).into_owned(),
        source,
    })
}
