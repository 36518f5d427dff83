//! Reading image archives: docker-archive (`docker save`, `skopeo copy ...
//! docker-archive:`) and OCI archives (`skopeo copy ... oci-archive:`), the
//! archive itself plain, gzip or zstd, layers any of the three.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read};
use std::path::{Component, Path, PathBuf};

use oci_spec::image::{Descriptor, ImageConfiguration, ImageIndex, ImageManifest, MediaType};
use serde::Deserialize;

use crate::commit::layer_media_type;
use crate::images::{
    descriptor, descriptor_digest, is_index, parse_json, IMAGE_NAME_ANNOTATION, REF_NAME_ANNOTATION,
};
use crate::layer::Compression;
use crate::{Digest, Error, Lease, Result, Store};

/// Files an archive keeps its metadata in; they are read into memory and
/// not stored as blobs.
const METADATA_FILES: [&str; 4] = ["manifest.json", "index.json", "oci-layout", "repositories"];

/// An image an archive held.
#[derive(Debug, Clone)]
pub struct LoadedImage {
    /// What was stored (a manifest, or an index).
    pub target: Descriptor,
    /// Names given to it (normalized by the caller's function).
    pub names: Vec<String>,
    /// The image id (config digest), when the target is a manifest.
    pub id: Option<Digest>,
}

#[derive(Deserialize)]
struct DockerManifestEntry {
    #[serde(rename = "Config")]
    config: String,
    #[serde(rename = "RepoTags", default)]
    repo_tags: Option<Vec<String>>,
    #[serde(rename = "Layers")]
    layers: Vec<String>,
}

/// What a pass over the archive found.
#[derive(Default)]
struct Contents {
    /// Archive path -> stored digest.
    files: HashMap<PathBuf, Digest>,
    /// Archive path of a symlink -> the path it points at.
    links: HashMap<PathBuf, PathBuf>,
    /// Metadata files, by name.
    metadata: HashMap<String, Vec<u8>>,
}

impl Contents {
    fn resolve(&self, path: &str) -> Option<&Digest> {
        let mut current = clean(Path::new(path));
        for _ in 0..16 {
            if let Some(d) = self.files.get(&current) {
                return Some(d);
            }
            current = self.links.get(&current)?.clone();
        }
        None
    }
}

impl Store {
    /// Loads every image of an archive; `normalize` turns a name as written
    /// in the archive into the store's form (or rejects it).
    ///
    /// Blobs are verified (a `blobs/sha256/<hex>` entry must hash to its
    /// name); nothing is named unless every blob an image needs is present.
    pub fn load(
        &self,
        input: impl Read,
        normalize: &dyn Fn(&str) -> std::result::Result<String, String>,
    ) -> Result<Vec<LoadedImage>> {
        let lease = self.lease()?;
        let contents = self.ingest_archive(input, &lease)?;
        let images = if contents.metadata.contains_key("index.json") {
            self.oci_images(&contents, normalize)?
        } else if contents.metadata.contains_key("manifest.json") {
            self.docker_images(&contents, &lease, normalize)?
        } else {
            return Err(Error::Archive {
                reason: "neither manifest.json nor index.json found: not an image archive".into(),
            });
        };
        for image in &images {
            self.check_loadable(&image.target)?;
        }
        for image in &images {
            if image.names.is_empty() {
                self.keep_untagged(&image.target)?;
            }
            for name in &image.names {
                self.set_name(name, &image.target)?;
            }
        }
        Ok(images)
    }

    fn ingest_archive(&self, input: impl Read, lease: &Lease) -> Result<Contents> {
        let mut buffered = BufReader::with_capacity(1 << 20, input);
        let head = buffered
            .fill_buf()
            .map_err(|source| Error::LayerRead { source })?;
        let reader: Box<dyn Read> = match Compression::detect(head) {
            Compression::None => Box::new(buffered),
            Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(buffered)),
            Compression::Zstd => Box::new(
                zstd::Decoder::with_buffer(buffered)
                    .map_err(|source| Error::LayerRead { source })?,
            ),
        };
        let mut archive = tar::Archive::new(reader);
        let mut contents = Contents::default();
        let entries = archive
            .entries()
            .map_err(|source| Error::LayerRead { source })?;
        for entry in entries {
            let mut entry = entry.map_err(|source| Error::LayerRead { source })?;
            let raw = entry
                .path()
                .map_err(|source| Error::LayerRead { source })?
                .into_owned();
            let path = clean(&raw);
            let name = path.to_string_lossy().into_owned();
            match entry.header().entry_type() {
                tar::EntryType::Regular | tar::EntryType::Continuous => {
                    if METADATA_FILES.contains(&name.as_str()) {
                        let mut bytes = Vec::new();
                        entry
                            .by_ref()
                            .take(16 << 20)
                            .read_to_end(&mut bytes)
                            .map_err(|source| Error::Entry {
                                entry: name.clone(),
                                source,
                            })?;
                        contents.metadata.insert(name, bytes);
                        continue;
                    }
                    // `blobs/sha256/<hex>` must hold what its name says.
                    let expected = name
                        .strip_prefix("blobs/sha256/")
                        .and_then(|hex| Digest::from_hex(hex).ok());
                    let size = entry.header().size().ok();
                    let digest = if let Some(d) =
                        expected.as_ref().filter(|d| self.content.contains(d))
                    {
                        lease.protect(d)?;
                        d.clone()
                    } else {
                        let mut writer = self.content.writer()?;
                        std::io::copy(&mut entry, &mut writer).map_err(|source| Error::Entry {
                            entry: name.clone(),
                            source,
                        })?;
                        writer.commit_leased(lease, expected.as_ref(), size)?
                    };
                    contents.files.insert(path, digest);
                }
                tar::EntryType::Symlink | tar::EntryType::Link => {
                    if let Some(target) = entry
                        .link_name()
                        .map_err(|source| Error::LayerRead { source })?
                    {
                        let resolved = if entry.header().entry_type() == tar::EntryType::Symlink {
                            clean(&path.parent().unwrap_or(Path::new("")).join(target))
                        } else {
                            clean(&target)
                        };
                        contents.links.insert(path, resolved);
                    }
                }
                _ => {}
            }
        }
        Ok(contents)
    }

    fn oci_images(
        &self,
        contents: &Contents,
        normalize: &dyn Fn(&str) -> std::result::Result<String, String>,
    ) -> Result<Vec<LoadedImage>> {
        let index: ImageIndex = parse_json("index.json", &contents.metadata["index.json"])?;
        // docker's manifest.json, when present, names images whose index
        // entry carries only a tag.
        let repo_tags: HashMap<Digest, Vec<String>> = match contents.metadata.get("manifest.json") {
            Some(bytes) => parse_json::<Vec<DockerManifestEntry>>("manifest.json", bytes)?
                .into_iter()
                .filter_map(|e| {
                    Some((
                        contents.resolve(&e.config)?.clone(),
                        e.repo_tags.unwrap_or_default(),
                    ))
                })
                .collect(),
            None => HashMap::new(),
        };
        let mut by_target: Vec<LoadedImage> = Vec::new();
        for entry in index.manifests() {
            let digest = descriptor_digest(entry)?;
            let annotations = entry.annotations().clone().unwrap_or_default();
            let mut target = entry.clone();
            target.set_annotations(None);
            let id = if is_index(entry.media_type()) {
                None
            } else {
                let manifest: ImageManifest =
                    parse_json("image manifest", &self.content.read(&digest)?)?;
                Some(descriptor_digest(manifest.config())?)
            };
            let mut raw_names = Vec::new();
            if let Some(full) = annotations.get(IMAGE_NAME_ANNOTATION) {
                raw_names.push(full.clone());
            } else if let Some(reference) = annotations.get(REF_NAME_ANNOTATION) {
                // A bare tag names nothing by itself (docker writes `latest`
                // here and the repository in manifest.json).
                if reference.contains(':') || reference.contains('/') {
                    raw_names.push(reference.clone());
                }
            }
            if raw_names.is_empty() {
                if let Some(tags) = id.as_ref().and_then(|i| repo_tags.get(i)) {
                    raw_names.extend(tags.iter().cloned());
                }
            }
            let names = normalize_all(&raw_names, normalize)?;
            match by_target
                .iter_mut()
                .find(|l| l.target.digest() == target.digest())
            {
                Some(existing) => existing.names.extend(names),
                None => by_target.push(LoadedImage { target, names, id }),
            }
        }
        Ok(by_target)
    }

    fn docker_images(
        &self,
        contents: &Contents,
        lease: &Lease,
        normalize: &dyn Fn(&str) -> std::result::Result<String, String>,
    ) -> Result<Vec<LoadedImage>> {
        let entries: Vec<DockerManifestEntry> =
            parse_json("manifest.json", &contents.metadata["manifest.json"])?;
        let missing = |path: &str| Error::Archive {
            reason: format!("manifest.json names {path:?}, which the archive does not hold"),
        };
        let mut out = Vec::new();
        for entry in entries {
            let config_digest = contents
                .resolve(&entry.config)
                .ok_or_else(|| missing(&entry.config))?
                .clone();
            let config_bytes = self.content.read(&config_digest)?;
            let config: ImageConfiguration = parse_json("image config", &config_bytes)?;
            let diff_ids = config.rootfs().diff_ids();
            if diff_ids.len() != entry.layers.len() {
                return Err(Error::Archive {
                    reason: format!(
                        "config {config_digest} lists {} diff ids but manifest.json {} layers",
                        diff_ids.len(),
                        entry.layers.len()
                    ),
                });
            }
            let mut layers = Vec::new();
            for (path, diff_id) in entry.layers.iter().zip(diff_ids) {
                let digest = contents.resolve(path).ok_or_else(|| missing(path))?.clone();
                let mut head = [0u8; 8];
                let n = self
                    .content
                    .open(&digest)?
                    .read(&mut head)
                    .map_err(Error::io(self.content.path(&digest)))?;
                let compression = Compression::detect(&head[..n]);
                if compression == Compression::None && digest.to_string() != *diff_id {
                    return Err(Error::DigestMismatch {
                        expected: Digest::parse(diff_id)?,
                        actual: digest,
                    });
                }
                layers.push(descriptor(
                    layer_media_type(compression),
                    &digest,
                    self.content.size(&digest)?,
                ));
            }
            let config = descriptor(
                MediaType::ImageConfig,
                &config_digest,
                config_bytes.len() as u64,
            );
            let target = self.write_manifest(config, &layers, lease)?;
            let names = normalize_all(&entry.repo_tags.unwrap_or_default(), normalize)?;
            out.push(LoadedImage {
                target,
                names,
                id: Some(config_digest),
            });
        }
        Ok(out)
    }

    /// Every blob the target needs for this platform is present.
    fn check_loadable(&self, target: &Descriptor) -> Result<()> {
        let (_, manifest) = self.platform_manifest(target)?;
        for blob in std::iter::once(manifest.config()).chain(manifest.layers()) {
            let digest = descriptor_digest(blob)?;
            if !self.content.contains(&digest) {
                return Err(Error::Archive {
                    reason: format!(
                        "image {} needs blob {digest}, which the archive does not hold",
                        target.digest()
                    ),
                });
            }
        }
        Ok(())
    }
}

fn normalize_all(
    names: &[String],
    normalize: &dyn Fn(&str) -> std::result::Result<String, String>,
) -> Result<Vec<String>> {
    names
        .iter()
        .map(|n| {
            normalize(n).map_err(|reason| Error::Archive {
                reason: format!("image name {n:?} in the archive is invalid: {reason}"),
            })
        })
        .collect()
}

/// Normalizes an archive path: no `.`, no leading `/`, `..` resolved.
fn clean(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::Normal(c) => out.push(c),
            Component::ParentDir => {
                out.pop();
            }
            _ => {}
        }
    }
    out
}
