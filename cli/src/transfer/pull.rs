//! Pull: resolve a reference, then move every missing layer through a
//! pipeline per layer — download -> ingest (hashed, committed only after the
//! stream verified) and the same bytes -> decompress -> diff-id check ->
//! snapshot — so the image is ready to run when its last byte lands. The
//! name is set last; until then a lease keeps the new content from GC.

use std::io::{self, Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::{anyhow, bail, Context, Result};
use bytes::Bytes;
use futures_util::stream::{FuturesUnordered, StreamExt};
use kiln_registry::{
    BlobStream, Client, Descriptor, Manifest, ManifestDocument, Platform, Reference,
};
use kiln_store::{BlobWriter, Digest, Image, Lease, Store};
use oci_spec::image::{ImageConfiguration, ImageManifest, MediaType};

use super::{source_name, store_digest};
use crate::progress::Progress;

/// What a pull did.
#[derive(Debug)]
pub struct Pulled {
    /// The name set in the store (`registry/repo:tag` or `registry/repo@digest`).
    pub name: String,
    /// The digest the reference resolved to (the index's when there is one).
    pub digest: String,
    /// Everything was present and the name already pointed at the image.
    pub up_to_date: bool,
    /// The pulled image.
    pub image: Image,
}

/// The platform manifest to pull, and the index it was chosen from.
struct Resolved {
    manifest_bytes: Bytes,
    manifest_digest: Digest,
    manifest_media_type: String,
    manifest: ImageManifest,
    index: Option<ManifestDocument>,
}

impl Resolved {
    fn manifest_descriptor(&self) -> Descriptor {
        kiln_store::descriptor(
            MediaType::from(self.manifest_media_type.as_str()),
            &self.manifest_digest,
            self.manifest_bytes.len() as u64,
        )
    }

    fn index_descriptor(&self) -> Result<Option<Descriptor>> {
        let Some(index) = &self.index else {
            return Ok(None);
        };
        Ok(Some(kiln_store::descriptor(
            MediaType::from(index.media_type.as_str()),
            &store_digest(&index.digest)?,
            index.bytes.len() as u64,
        )))
    }

    /// The digest `docker pull` prints.
    fn top_digest(&self) -> String {
        match &self.index {
            Some(index) => index.digest.to_string(),
            None => self.manifest_digest.to_string(),
        }
    }
}

/// Pulls `reference` for `platform` into `store` and names it.
pub async fn pull(
    store: &Store,
    client: &Client,
    reference: &Reference,
    platform: &Platform,
    progress: &Arc<Progress>,
) -> Result<Pulled> {
    let name = reference.to_string();
    let resolved = resolve(store, client, reference, platform).await?;
    progress.println(&format!(
        "{}: Pulling from {}",
        reference.manifest_reference(),
        familiar_repository(reference)
    ));

    let config_descriptor = resolved.manifest.config().clone();
    let config_digest = store_digest(config_descriptor.digest())?;
    let (config_bytes, config_is_new) = if store.content().contains(&config_digest) {
        (Bytes::from(store.content().read(&config_digest)?), false)
    } else {
        let bytes = client
            .fetch_blob_bytes(reference, &config_descriptor)
            .await?;
        (bytes, true)
    };
    let config: ImageConfiguration = serde_json::from_slice(&config_bytes)
        .with_context(|| format!("image config {config_digest} is not valid"))?;
    let diff_ids = config
        .rootfs()
        .diff_ids()
        .iter()
        .map(|d| Digest::parse(d))
        .collect::<kiln_store::Result<Vec<_>>>()
        .with_context(|| format!("image config {config_digest} has an invalid diff id"))?;
    let layers = resolved.manifest.layers();
    if diff_ids.len() != layers.len() {
        bail!(
            "manifest {} lists {} layers but its config has {} diff ids",
            resolved.manifest_digest,
            layers.len(),
            diff_ids.len()
        );
    }
    let chains = kiln_store::chain_ids(&diff_ids);
    let layer_digests = layers
        .iter()
        .map(|l| store_digest(l.digest()))
        .collect::<Result<Vec<_>>>()?;

    let target = match resolved.index_descriptor()? {
        Some(index) => index,
        None => resolved.manifest_descriptor(),
    };
    let content = store.content();
    let index_present = match &resolved.index {
        Some(index) => content.contains(&store_digest(&index.digest)?),
        None => true,
    };
    let everything_present = index_present
        && !config_is_new
        && content.contains(&resolved.manifest_digest)
        && layer_digests.iter().all(|d| content.contains(d))
        && chains.iter().all(|c| store.has_snapshot(c));
    if everything_present {
        if let Ok(current) = store.find_image(&name) {
            if current.target.digest() == target.digest() {
                return Ok(Pulled {
                    name,
                    digest: resolved.top_digest(),
                    up_to_date: true,
                    image: current,
                });
            }
        }
    }

    let lease = Arc::new(store.lease()?);
    let cancel = Arc::new(AtomicBool::new(false));
    let mut jobs = FuturesUnordered::new();
    for (i, layer) in layers.iter().enumerate() {
        let digest = &layer_digests[i];
        let has_blob = content.contains(digest);
        let has_snapshot = store.has_snapshot(&chains[i]);
        let text = digest.to_string();
        if has_blob && has_snapshot {
            progress.add(&text, layer.size(), "Already exists");
            continue;
        }
        progress.add(&text, layer.size(), "Pulling fs layer");
        let job = LayerJob {
            store: store.clone(),
            lease: lease.clone(),
            progress: progress.clone(),
            cancel: cancel.clone(),
            digest: digest.clone(),
            size: layer.size(),
            chain_id: chains[i].clone(),
            parent: i.checked_sub(1).map(|p| chains[p].clone()),
            diff_id: diff_ids[i].clone(),
            make_snapshot: !has_snapshot,
            download: (!has_blob).then(|| client.fetch_blob(reference, layer)),
        };
        let handle = tokio::runtime::Handle::current();
        jobs.push(tokio::task::spawn_blocking(move || job.run(handle)));
    }
    // The first failure cancels the other layers; all are awaited so no
    // thread still writes into the store when this returns.
    let mut failure: Option<anyhow::Error> = None;
    while let Some(joined) = jobs.next().await {
        let result = joined.map_err(|e| anyhow!("a layer task failed: {e}"))?;
        if let Err(error) = result {
            cancel.store(true, Ordering::SeqCst);
            failure.get_or_insert(error);
        }
    }
    if let Some(error) = failure {
        progress.finish();
        return Err(error);
    }

    if config_is_new {
        let written = store.write_leased(&config_bytes, &lease)?;
        debug_assert_eq!(written, config_digest);
    }
    store.write_leased(&resolved.manifest_bytes, &lease)?;
    if let Some(index) = &resolved.index {
        store.write_leased(&index.bytes, &lease)?;
    }
    let mut blobs = layer_digests.clone();
    blobs.push(config_digest);
    store.record_blob_sources(&blobs, &source_name(reference))?;

    // Name the index when the store picks this very manifest from it (the
    // host platform), so a later pull checks one document; else the manifest.
    let target = match resolved.index_descriptor()? {
        Some(index)
            if store.platform_manifest(&index).ok().map(|(d, _)| d)
                == Some(resolved.manifest_digest.clone()) =>
        {
            index
        }
        _ => resolved.manifest_descriptor(),
    };
    store.set_name(&name, &target)?;
    drop(lease);
    let image = store.load_image(&target, vec![name.clone()])?;
    Ok(Pulled {
        name,
        digest: resolved.top_digest(),
        up_to_date: false,
        image,
    })
}

/// `library/busybox` for Docker Hub, `host:port/repo` elsewhere, as docker
/// prints it in "Pulling from".
fn familiar_repository(reference: &Reference) -> String {
    if reference.registry() == kiln_registry::DOCKER_HUB {
        reference.repository().to_string()
    } else {
        reference.name()
    }
}

/// Fetches the manifest `reference` names and, for an index, the entry for
/// `platform` — read from the store when it is there already, so pulling an
/// image that is present costs one request.
async fn resolve(
    store: &Store,
    client: &Client,
    reference: &Reference,
    platform: &Platform,
) -> Result<Resolved> {
    let top = client.get_manifest(reference).await?;
    let index = match &top.manifest {
        Manifest::Image(manifest) => {
            return Ok(Resolved {
                manifest_digest: store_digest(&top.digest)?,
                manifest_bytes: top.bytes.clone(),
                manifest_media_type: top.media_type.clone(),
                manifest: (**manifest).clone(),
                index: None,
            });
        }
        Manifest::Index(index) => index.clone(),
    };
    let chosen = platform.select(&index).ok_or_else(|| {
        let available: Vec<String> = index
            .manifests()
            .iter()
            .filter_map(|m| m.platform().as_ref())
            .map(|p| format!("{}/{}", p.os(), p.architecture()))
            .collect();
        anyhow!(
            "no manifest for platform {platform} in {reference} (it has: {})",
            available.join(", ")
        )
    })?;
    let child_digest = store_digest(chosen.digest())?;
    let media_type = chosen.media_type().to_string();
    if store.content().contains(&child_digest) {
        let bytes = store.content().read(&child_digest)?;
        let manifest: ImageManifest = serde_json::from_slice(&bytes)
            .with_context(|| format!("stored manifest {child_digest} is not valid"))?;
        return Ok(Resolved {
            manifest_bytes: Bytes::from(bytes),
            manifest_digest: child_digest,
            manifest_media_type: media_type,
            manifest,
            index: Some(top),
        });
    }
    let child = client
        .get_manifest(&reference.with_digest(chosen.digest().clone()))
        .await?;
    if child.bytes.len() as u64 != chosen.size() {
        bail!(
            "manifest {}@{} is {} bytes, the index says {}",
            reference.name(),
            chosen.digest(),
            child.bytes.len(),
            chosen.size()
        );
    }
    let Manifest::Image(manifest) = &child.manifest else {
        bail!(
            "{}@{} is a nested index, not an image manifest",
            reference.name(),
            chosen.digest()
        );
    };
    Ok(Resolved {
        manifest_digest: child_digest,
        manifest_bytes: child.bytes.clone(),
        manifest_media_type: child.media_type.clone(),
        manifest: (**manifest).clone(),
        index: Some(top),
    })
}

/// One layer's work, run on a blocking thread.
struct LayerJob {
    store: Store,
    lease: Arc<Lease>,
    progress: Arc<Progress>,
    cancel: Arc<AtomicBool>,
    digest: Digest,
    size: u64,
    chain_id: Digest,
    parent: Option<Digest>,
    diff_id: Digest,
    make_snapshot: bool,
    /// The download, when the blob is not in the store.
    download: Option<BlobStream>,
}

impl LayerJob {
    fn run(self, handle: tokio::runtime::Handle) -> Result<()> {
        let text = self.digest.to_string();
        let result = match self.download {
            None => {
                self.progress.status(&text, "Extracting", false);
                self.lease.protect(&self.chain_id)?;
                let blob = self.store.content().open(&self.digest)?;
                self.store
                    .create_snapshot(&self.chain_id, self.parent.clone(), &self.diff_id, blob)
                    .with_context(|| format!("unpacking layer {}", self.digest))
            }
            Some(stream) => {
                let mut tee = Tee {
                    reader: stream.into_blocking_reader(handle),
                    writer: self.store.content().writer()?,
                    failure: None,
                    cancel: self.cancel.clone(),
                };
                download(
                    &self.store,
                    &self.lease,
                    &mut tee,
                    self.make_snapshot
                        .then_some((&self.chain_id, &self.parent, &self.diff_id)),
                )
                .and_then(|()| {
                    let Tee { writer, .. } = tee;
                    writer.commit_leased(&self.lease, Some(&self.digest), Some(self.size))?;
                    Ok(())
                })
            }
        };
        if result.is_ok() {
            self.progress.status(&text, "Pull complete", true);
        }
        result
    }
}

/// Feeds the download through the snapshot (when one is to be made), then
/// reads what the unpacker left (padding after the tar's end) so the blob is
/// whole. A download failure wins over what it caused downstream.
fn download(
    store: &Store,
    lease: &Lease,
    tee: &mut Tee,
    snapshot: Option<(&Digest, &Option<Digest>, &Digest)>,
) -> Result<()> {
    if let Some((chain_id, parent, diff_id)) = snapshot {
        lease.protect(chain_id)?;
        let made = store.create_snapshot(chain_id, parent.clone(), diff_id, &mut *tee);
        if let Err(error) = made {
            // Broken bytes (a flipped byte fails to decompress before the
            // digest is known): read on, to report the digest mismatch.
            if tee.failure.is_none() && !tee.cancel.load(Ordering::SeqCst) {
                let _ = io::copy(&mut *tee, &mut io::sink());
            }
            return Err(match tee.failure.take() {
                Some(failure) => failure,
                None => anyhow::Error::new(error).context(format!("unpacking layer {}", diff_id)),
            });
        }
    }
    if let Err(error) = io::copy(&mut *tee, &mut io::sink()) {
        return Err(tee.failure.take().unwrap_or_else(|| error.into()));
    }
    Ok(())
}

/// Reads the download and writes every byte read into the ingest file too.
struct Tee {
    reader: kiln_registry::BlockingBlobReader,
    writer: BlobWriter,
    /// The download's own error, kept whole for the report.
    failure: Option<anyhow::Error>,
    cancel: Arc<AtomicBool>,
}

impl Read for Tee {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.cancel.load(Ordering::Relaxed) {
            return Err(io::Error::other("cancelled: another layer failed"));
        }
        match self.reader.read(buf) {
            Ok(n) => {
                self.writer.write_all(&buf[..n])?;
                Ok(n)
            }
            Err(error) => {
                let text = error.to_string();
                self.failure = Some(registry_error(error));
                Err(io::Error::other(text))
            }
        }
    }
}

/// The registry client's error inside an I/O error, when it is one.
fn registry_error(error: io::Error) -> anyhow::Error {
    if error
        .get_ref()
        .is_some_and(|inner| inner.is::<kiln_registry::Error>())
    {
        let inner = error.into_inner().expect("checked above");
        match inner.downcast::<kiln_registry::Error>() {
            Ok(registry) => return anyhow::Error::new(*registry),
            Err(other) => return anyhow!("{other}"),
        }
    }
    error.into()
}
