//! Push: local layers are stored uncompressed, so each gets its gzip twin
//! (made once, remembered by the store) and the pushed manifest lists the
//! twins — as docker does, its digest then differs from the local one. An
//! image whose layers are compressed already (pulled from a registry) goes
//! up with its exact manifest bytes. Blobs move in parallel (HEAD first,
//! mount from another repository of the same registry when the store knows
//! one), the manifest last.

use std::collections::HashMap;
use std::sync::Arc;

use anyhow::{anyhow, Context, Result};
use bytes::Bytes;
use futures_util::future::try_join_all;
use kiln_registry::{BlobSource, Client, Descriptor, PushOutcome, Reference, OCI_MANIFEST};
use kiln_store::{Compression, Digest, Image, Lease, Store};
use oci_spec::image::MediaType;

use super::{source_name, store_digest};
use crate::progress::Progress;

/// What a push did.
#[derive(Debug)]
pub struct Pushed {
    /// The digest of the manifest in the registry.
    pub digest: String,
    /// Its size in bytes.
    pub size: u64,
}

/// Pushes `image` as `reference` (a tag in the target repository).
pub async fn push(
    store: &Store,
    client: &Client,
    reference: &Reference,
    image: &Image,
    progress: &Arc<Progress>,
) -> Result<Pushed> {
    progress.println(&format!(
        "The push refers to repository [{}]",
        reference.name()
    ));
    if kiln_store::is_index(image.target.media_type()) {
        match complete_index(store, &image.target)? {
            Some(children) => {
                return push_index(store, client, reference, image, &children, progress).await
            }
            None => progress.println(&format!(
                "pushing only the {} manifest: the store does not hold every platform of this image",
                platform_of(image)
            )),
        }
    }
    let layers = image.manifest.layers();
    let uncompressed = layers
        .iter()
        .any(|l| Compression::from_media_type(l.media_type().as_ref()) == Some(Compression::None));
    // Metadata reads are batched: a push with nothing to move should cost
    // a few store reads and one HEAD per blob.
    let known = store.known_compressed_layers(layers)?;
    let lease = if known.iter().any(Option::is_none) {
        Some(Arc::new(store.lease()?))
    } else {
        None
    };
    let config = image.manifest.config().clone();
    let mut known_blobs = vec![store_digest(config.digest())?];
    for twin in known.iter().flatten() {
        known_blobs.push(store_digest(twin.digest())?);
    }
    let sources: HashMap<Digest, Vec<String>> = known_blobs
        .iter()
        .cloned()
        .zip(store.blob_sources_of(&known_blobs)?)
        .collect();
    let sources = Arc::new(sources);

    // Layers, top first as docker lists them; each compresses (when needed)
    // and uploads on its own, so compression and upload overlap.
    let layer_pushes = layers.iter().zip(known).rev().map(|(layer, twin)| {
        let store = store.clone();
        let lease = lease.clone();
        let client = client.clone();
        let reference = reference.clone();
        let progress = progress.clone();
        let sources = sources.clone();
        let layer = layer.clone();
        async move {
            let layer_digest = layer.digest().to_string();
            progress.add(&layer_digest, layer.size(), "Preparing");
            let pushed = match (twin, lease) {
                (Some(twin), _) => twin,
                (None, Some(lease)) => tokio::task::spawn_blocking({
                    let store = store.clone();
                    let layer = layer.clone();
                    move || compressed(&store, &layer, &lease)
                })
                .await
                .map_err(|e| anyhow!("compressing a layer failed: {e}"))??,
                (None, None) => unreachable!("a lease is taken when a layer needs compressing"),
            };
            if pushed.digest() != layer.digest() {
                progress.rename(&layer_digest, pushed.digest().as_ref(), pushed.size());
            }
            push_blob(&store, &client, &reference, &pushed, &sources, &progress).await?;
            Ok::<Descriptor, anyhow::Error>(pushed)
        }
    });
    let config_push = push_blob(store, client, reference, &config, &sources, progress);
    let (mut pushed_layers, ()) =
        futures_util::future::try_join(try_join_all(layer_pushes), config_push).await?;
    pushed_layers.reverse();

    let (bytes, media_type) = if uncompressed {
        let mut manifest = image.manifest.clone();
        manifest.set_media_type(Some(MediaType::ImageManifest));
        manifest.set_layers(pushed_layers.clone());
        let bytes = serde_json::to_vec(&manifest).context("serializing the manifest")?;
        (Bytes::from(bytes), OCI_MANIFEST.to_string())
    } else {
        let bytes = store.content().read(&image.manifest_digest)?;
        let media_type = image
            .manifest
            .media_type()
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_else(|| OCI_MANIFEST.to_string());
        (Bytes::from(bytes), media_type)
    };
    let size = bytes.len() as u64;
    let digest = client.push_manifest(reference, &media_type, bytes).await?;

    // Remember where the blobs are now; a push that moved nothing writes nothing.
    let repository = source_name(reference);
    let mut unrecorded = Vec::new();
    for blob in std::iter::once(&config).chain(&pushed_layers) {
        let digest = store_digest(blob.digest())?;
        if !sources
            .get(&digest)
            .is_some_and(|known| known.contains(&repository))
        {
            unrecorded.push(digest);
        }
    }
    store.record_blob_sources(&unrecorded, &repository)?;
    drop(lease);
    Ok(Pushed {
        digest: digest.to_string(),
        size,
    })
}

/// A child manifest of an index: its descriptor and exact bytes.
type Child = (Descriptor, Vec<u8>);

/// Each child manifest of the index `target` with its exact bytes, when the
/// store holds every child and every blob they list; `None` otherwise.
fn complete_index(store: &Store, target: &Descriptor) -> Result<Option<Vec<Child>>> {
    let bytes = store.content().read(&store_digest(target.digest())?)?;
    let index: oci_spec::image::ImageIndex =
        serde_json::from_slice(&bytes).context("reading the image index")?;
    let mut children = Vec::new();
    for child in index.manifests() {
        let digest = store_digest(child.digest())?;
        if kiln_store::is_index(child.media_type()) || !store.content().contains(&digest) {
            return Ok(None);
        }
        let child_bytes = store.content().read(&digest)?;
        let manifest: oci_spec::image::ImageManifest =
            serde_json::from_slice(&child_bytes).context("reading a child manifest")?;
        for blob in std::iter::once(manifest.config()).chain(manifest.layers()) {
            if !store.content().contains(&store_digest(blob.digest())?) {
                return Ok(None);
            }
        }
        children.push((child.clone(), child_bytes));
    }
    Ok(Some(children))
}

/// Pushes every child of a multi-platform image (blobs, then each manifest
/// by digest) and then the index itself under the tag, all with their exact
/// bytes, so every digest stays as it was.
async fn push_index(
    store: &Store,
    client: &Client,
    reference: &Reference,
    image: &Image,
    children: &[Child],
    progress: &Arc<Progress>,
) -> Result<Pushed> {
    let no_sources = HashMap::new();
    for (child, bytes) in children {
        let manifest: oci_spec::image::ImageManifest = serde_json::from_slice(bytes)?;
        let blobs: Vec<Descriptor> = std::iter::once(manifest.config().clone())
            .chain(manifest.layers().iter().cloned())
            .collect();
        for blob in &blobs {
            progress.add(blob.digest().as_ref(), blob.size(), "Preparing");
        }
        try_join_all(
            blobs
                .iter()
                .map(|blob| push_blob(store, client, reference, blob, &no_sources, progress)),
        )
        .await?;
        client
            .push_manifest(
                &reference.with_digest(child.digest().clone()),
                child.media_type().as_ref(),
                Bytes::from(bytes.clone()),
            )
            .await?;
    }
    let index_bytes = store
        .content()
        .read(&store_digest(image.target.digest())?)?;
    let size = index_bytes.len() as u64;
    let digest = client
        .push_manifest(
            reference,
            image.target.media_type().as_ref(),
            Bytes::from(index_bytes),
        )
        .await?;
    Ok(Pushed {
        digest: digest.to_string(),
        size,
    })
}

/// `os/arch` of the image's config, for messages.
fn platform_of(image: &Image) -> String {
    format!("{}/{}", image.config.os(), image.config.architecture())
}

/// The gzip twin of a local layer (made once; see `Store::compressed_layer`).
fn compressed(store: &Store, layer: &Descriptor, lease: &Lease) -> Result<Descriptor> {
    store
        .compressed_layer(layer, lease)
        .with_context(|| format!("compressing layer {}", layer.digest()))
}

/// Pushes one blob from the store, mounting it from another repository of
/// the same registry when the store knows one that holds it.
async fn push_blob(
    store: &Store,
    client: &Client,
    reference: &Reference,
    descriptor: &Descriptor,
    sources: &HashMap<Digest, Vec<String>>,
    progress: &Arc<Progress>,
) -> Result<()> {
    let digest: Digest = store_digest(descriptor.digest())?;
    let prefix = format!("{}/", reference.registry());
    let mount_from = sources
        .get(&digest)
        .into_iter()
        .flatten()
        .filter_map(|source| source.strip_prefix(&prefix).map(str::to_string))
        .rfind(|repository| repository != reference.repository());
    let source = BlobSource::File(store.content().path(&digest));
    let text = digest.to_string();
    let outcome = client
        .push_blob(reference, descriptor, &source, mount_from.as_deref())
        .await?;
    let status = match outcome {
        PushOutcome::Existed => "Layer already exists".to_string(),
        PushOutcome::Mounted => format!(
            "Mounted from {}",
            mount_from.as_deref().unwrap_or("another repository")
        ),
        PushOutcome::Uploaded => "Pushed".to_string(),
        PushOutcome::SkippedNonDistributable => "Skipped foreign layer".to_string(),
    };
    progress.status(&text, &status, true);
    Ok(())
}
