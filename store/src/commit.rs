//! Making new images: layers from directories or root filesystem tars, and
//! the config + manifest that tie them together.

use std::fs;
use std::io::Read;
use std::path::Path;

use oci_spec::image::{Descriptor, ImageConfiguration, ImageManifestBuilder, MediaType};

use crate::images::descriptor;
use crate::layer::{Compression, DiffOptions};
use crate::{Digest, Error, Lease, Result, Store};

/// A layer just stored.
#[derive(Debug, Clone)]
pub struct NewLayer {
    /// The layer blob as a manifest lists it.
    pub descriptor: Descriptor,
    /// Its uncompressed digest, as the config's rootfs lists it.
    pub diff_id: Digest,
    /// (bytes of regular files, entries) of the directory it was made
    /// from: what [`Store::adopt_snapshot`] records without a second walk.
    pub usage: (u64, u64),
}

impl Store {
    /// Turns a directory into a layer blob (uncompressed, as local images
    /// keep them; compression happens when bytes leave the machine).
    pub fn layer_from_dir(
        &self,
        dir: &Path,
        lease: &Lease,
        options: &DiffOptions,
    ) -> Result<NewLayer> {
        self.layer_from_dir_excluding(dir, lease, options, &[])
    }

    /// [`Store::layer_from_dir`] leaving out the paths in `exclude`
    /// (relative to `dir`; each one path, not what is below it).
    pub fn layer_from_dir_excluding(
        &self,
        dir: &Path,
        lease: &Lease,
        options: &DiffOptions,
        exclude: &[&Path],
    ) -> Result<NewLayer> {
        let mut writer = self.content.writer()?;
        let out = crate::layer::diff_excluding(dir, &mut writer, options, exclude)?;
        let digest = writer.commit_leased(lease, Some(&out.digest), Some(out.size))?;
        Ok(NewLayer {
            descriptor: descriptor(layer_media_type(options.compression), &digest, out.size),
            diff_id: out.diff_id,
            usage: out.usage,
        })
    }

    /// Unpacks a root filesystem tar (any compression) into a new bottom
    /// snapshot, checking every entry, and stores it as a normalized layer.
    pub fn layer_from_rootfs_tar(
        &self,
        tar: impl Read,
        lease: &Lease,
        options: &DiffOptions,
    ) -> Result<NewLayer> {
        let temp = self.snapshot_temp_dir()?;
        let result = (|| {
            let fs_dir = temp.join("fs");
            fs::create_dir(&fs_dir).map_err(Error::io(&fs_dir))?;
            crate::layer::apply(tar, &fs_dir)?;
            let layer = self.layer_from_dir(&fs_dir, lease, options)?;
            // The unpacked tree is this layer's snapshot: keep it.
            lease.protect(&layer.diff_id)?;
            self.finish_snapshot(
                &temp,
                &layer.diff_id,
                None,
                &layer.diff_id,
                Some(layer.usage),
            )?;
            Ok(layer)
        })();
        if temp.exists() {
            let _ = fs::remove_dir_all(&temp);
        }
        result
    }

    /// Writes `config` (its rootfs diff ids must match `layers`) and an OCI
    /// manifest for it; returns the manifest's descriptor.
    pub fn commit_image(
        &self,
        config: &ImageConfiguration,
        layers: &[Descriptor],
        lease: &Lease,
    ) -> Result<Descriptor> {
        if config.rootfs().diff_ids().len() != layers.len() {
            return Err(Error::Conflict {
                id: "new image".to_string(),
                reason: format!(
                    "{} layers but {} diff ids in the config",
                    layers.len(),
                    config.rootfs().diff_ids().len()
                ),
            });
        }
        let config_bytes = serde_json::to_vec(config).expect("an image config serializes");
        self.commit_image_bytes(&config_bytes, layers, lease)
    }

    /// As [`Store::commit_image`] with the config as bytes, for configs
    /// carrying fields oci-spec does not model (docker's `Healthcheck`,
    /// `Shell`, `OnBuild`). The caller keeps the rootfs diff ids and
    /// `layers` consistent.
    pub fn commit_image_bytes(
        &self,
        config_bytes: &[u8],
        layers: &[Descriptor],
        lease: &Lease,
    ) -> Result<Descriptor> {
        let config_digest = Digest::of(config_bytes);
        let config = descriptor(
            MediaType::ImageConfig,
            &config_digest,
            config_bytes.len() as u64,
        );
        let manifest_bytes = manifest_json(config, layers);
        let manifest_digest = Digest::of(&manifest_bytes);
        // Both under the lease in one metadata write, then both written.
        lease.protect_all(&[config_digest, manifest_digest.clone()])?;
        self.content.write(config_bytes)?;
        self.content.write(&manifest_bytes)?;
        Ok(descriptor(
            MediaType::ImageManifest,
            &manifest_digest,
            manifest_bytes.len() as u64,
        ))
    }

    /// The manifest descriptor [`Store::commit_image_bytes`] would write for
    /// `config_bytes` and `layers`, if `name` already points at it: then
    /// the image is in the store and reachable, and nothing needs writing
    /// (a fully cached rebuild). A read only.
    pub fn named_image_matches(
        &self,
        name: &str,
        config_bytes: &[u8],
        layers: &[Descriptor],
    ) -> Result<Option<Descriptor>> {
        let config = descriptor(
            MediaType::ImageConfig,
            &Digest::of(config_bytes),
            config_bytes.len() as u64,
        );
        let manifest_bytes = manifest_json(config, layers);
        let manifest = descriptor(
            MediaType::ImageManifest,
            &Digest::of(&manifest_bytes),
            manifest_bytes.len() as u64,
        );
        Ok(self
            .name_target(name)?
            .filter(|target| *target == manifest)
            .map(|_| manifest))
    }

    /// Writes an OCI image manifest for `config` and `layers`; returns its descriptor.
    pub fn write_manifest(
        &self,
        config: Descriptor,
        layers: &[Descriptor],
        lease: &Lease,
    ) -> Result<Descriptor> {
        let manifest_bytes = manifest_json(config, layers);
        let manifest_digest = self.write_leased(&manifest_bytes, lease)?;
        Ok(descriptor(
            MediaType::ImageManifest,
            &manifest_digest,
            manifest_bytes.len() as u64,
        ))
    }

    /// A fresh temporary snapshot directory for the caller to fill: make
    /// `fs/` (and e.g. an overlay `work/`) inside it, then hand it to
    /// [`Store::adopt_snapshot`], or remove it. A killed process's leftover
    /// is removed by the next prune.
    pub fn new_snapshot_dir(&self) -> Result<std::path::PathBuf> {
        self.snapshot_temp_dir()
    }

    /// Makes `temp` (from [`Store::new_snapshot_dir`], holding a complete
    /// `fs/` and nothing else) the snapshot `chain_id` without copying it:
    /// an overlay upper dir becomes the snapshot of the layer made from it.
    /// Protect `chain_id` with a lease first. When the snapshot already
    /// exists, `temp` is removed. `usage` is the tree's (bytes, entries)
    /// when known ([`NewLayer::usage`]); `None` walks the tree for it.
    pub fn adopt_snapshot(
        &self,
        temp: &Path,
        chain_id: &Digest,
        parent: Option<Digest>,
        diff_id: &Digest,
        usage: Option<(u64, u64)>,
    ) -> Result<()> {
        let result = self.finish_snapshot(temp, chain_id, parent, diff_id, usage);
        if result.is_err() && temp.exists() {
            let _ = fs::remove_dir_all(temp);
        }
        result
    }

    /// Stores small bytes under a lease.
    pub fn write_leased(&self, bytes: &[u8], lease: &Lease) -> Result<Digest> {
        let digest = Digest::of(bytes);
        lease.protect(&digest)?;
        self.content.write(bytes)
    }
}

/// The OCI image manifest JSON for `config` and `layers`.
fn manifest_json(config: Descriptor, layers: &[Descriptor]) -> Vec<u8> {
    let manifest = ImageManifestBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageManifest)
        .config(config)
        .layers(layers.to_vec())
        .build()
        .expect("a manifest with config and layers builds");
    serde_json::to_vec(&manifest).expect("a manifest serializes")
}

/// The OCI media type of a layer with this compression.
pub fn layer_media_type(compression: Compression) -> MediaType {
    match compression {
        Compression::None => MediaType::ImageLayer,
        Compression::Gzip => MediaType::ImageLayerGzip,
        Compression::Zstd => MediaType::ImageLayerZstd,
    }
}
