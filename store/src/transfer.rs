//! What the store remembers for moving images between machines: the
//! compressed twin of each local (uncompressed) layer, made once and reused
//! by every later push or save, and the repositories a blob is known to
//! exist in, so a push can ask a registry to mount it instead of uploading.

use std::io::{self, Write};

use oci_spec::image::Descriptor;

use crate::commit::layer_media_type;
use crate::images::{descriptor, descriptor_digest, parse_json};
use crate::layer::Compression;
use crate::meta::{self, BLOB_SOURCES, COMPRESSED};
use crate::{Error, Lease, Result, Store};

impl Store {
    /// The gzip-compressed twin of an uncompressed layer blob, made on first
    /// use (in parallel, deterministic) and recorded so it is made once.
    /// A layer that is already compressed is returned unchanged.
    pub fn compressed_layer(&self, layer: &Descriptor, lease: &Lease) -> Result<Descriptor> {
        let media = layer.media_type().to_string();
        if Compression::from_media_type(&media) != Some(Compression::None) {
            return Ok(layer.clone());
        }
        let digest = descriptor_digest(layer)?;
        let key = digest.to_string();
        if let Some(twin) = self.known_compressed_layer(layer)? {
            lease.protect(&descriptor_digest(&twin)?)?;
            return Ok(twin);
        }
        let mut source = self.content.open(&digest)?;
        let mut writer = self.content.writer()?;
        {
            let mut encoder = crate::layer::gzip_writer(&mut writer);
            io::copy(&mut source, &mut encoder).map_err(|source| Error::LayerWrite { source })?;
            encoder
                .finish()
                .map_err(|source| Error::LayerWrite { source })?;
        }
        writer.flush().map_err(writer.io_error())?;
        let size = writer.written();
        let twin_digest = writer.commit_leased(lease, None, Some(size))?;
        let twin = descriptor(layer_media_type(Compression::Gzip), &twin_digest, size);
        let record = serde_json::to_vec(&twin).expect("a descriptor serializes");
        self.meta
            .write(|txn| meta::put(&self.meta, txn, COMPRESSED, &key, &record))?;
        Ok(twin)
    }

    /// The gzip twin of an uncompressed layer when it was made before and
    /// is present; a read only, taking no lease (collection keeps the twins
    /// of named images' layers). A compressed layer is returned unchanged.
    pub fn known_compressed_layer(&self, layer: &Descriptor) -> Result<Option<Descriptor>> {
        Ok(self
            .known_compressed_layers(std::slice::from_ref(layer))?
            .pop()
            .flatten())
    }

    /// [`Store::known_compressed_layer`] for many layers in one metadata read.
    pub fn known_compressed_layers(
        &self,
        layers: &[Descriptor],
    ) -> Result<Vec<Option<Descriptor>>> {
        let records = self.meta.read(|txn| {
            layers
                .iter()
                .map(|layer| {
                    let media = layer.media_type().to_string();
                    if Compression::from_media_type(&media) != Some(Compression::None) {
                        return Ok(Some(
                            serde_json::to_vec(layer).expect("a descriptor serializes"),
                        ));
                    }
                    let key = descriptor_digest(layer)?.to_string();
                    meta::read_one(&self.meta, txn, COMPRESSED, &key)
                })
                .collect::<Result<Vec<_>>>()
        })?;
        records
            .into_iter()
            .map(|record| {
                let Some(bytes) = record else {
                    return Ok(None);
                };
                let twin: Descriptor = parse_json("compressed layer record", &bytes)?;
                let present = self.content.contains(&descriptor_digest(&twin)?);
                Ok(present.then_some(twin))
            })
            .collect()
    }

    /// Records that `repository` (`registry/path`) holds the blob.
    pub fn record_blob_source(&self, digest: &crate::Digest, repository: &str) -> Result<()> {
        self.record_blob_sources(std::slice::from_ref(digest), repository)
    }

    /// Records that `repository` (`registry/path`) holds every one of
    /// `digests`, in one metadata transaction (a pull or push records all
    /// of an image's blobs at once).
    pub fn record_blob_sources(&self, digests: &[crate::Digest], repository: &str) -> Result<()> {
        if digests.is_empty() {
            return Ok(());
        }
        self.meta.write(|txn| {
            for digest in digests {
                let key = digest.to_string();
                let mut sources: Vec<String> = match meta::get(&self.meta, txn, BLOB_SOURCES, &key)?
                {
                    Some(bytes) => parse_json("blob sources", &bytes)?,
                    None => Vec::new(),
                };
                if sources.iter().any(|s| s == repository) {
                    continue;
                }
                sources.push(repository.to_string());
                // The newest few are enough to find a mount source.
                if sources.len() > 8 {
                    sources.remove(0);
                }
                let bytes = serde_json::to_vec(&sources).expect("serializes");
                meta::put(&self.meta, txn, BLOB_SOURCES, &key, &bytes)?;
            }
            Ok(())
        })
    }

    /// [`Store::blob_sources`] of many blobs in one metadata read.
    pub fn blob_sources_of(&self, digests: &[crate::Digest]) -> Result<Vec<Vec<String>>> {
        let rows = self.meta.read(|txn| {
            digests
                .iter()
                .map(|d| meta::read_one(&self.meta, txn, BLOB_SOURCES, &d.to_string()))
                .collect::<Result<Vec<_>>>()
        })?;
        rows.into_iter()
            .map(|row| match row {
                Some(bytes) => parse_json("blob sources", &bytes),
                None => Ok(Vec::new()),
            })
            .collect()
    }

    /// Repositories (`registry/path`) known to hold the blob.
    pub fn blob_sources(&self, digest: &crate::Digest) -> Result<Vec<String>> {
        let key = digest.to_string();
        let bytes = self
            .meta
            .read(|txn| meta::read_one(&self.meta, txn, BLOB_SOURCES, &key))?;
        match bytes {
            Some(bytes) => parse_json("blob sources", &bytes),
            None => Ok(Vec::new()),
        }
    }
}
