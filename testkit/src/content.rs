//! Generated images: random layers, a config, a manifest, and indexes.

use bytes::Bytes;
use kiln_registry::{
    sha256_digest, BlobSource, Client, Descriptor, PushOutcome, Reference, OCI_INDEX, OCI_MANIFEST,
};
use rand::RngCore;

pub const LAYER_TYPE: &str = "application/vnd.oci.image.layer.v1.tar";
pub const CONFIG_TYPE: &str = "application/vnd.oci.image.config.v1+json";

/// A blob and its descriptor.
#[derive(Clone)]
pub struct Blob {
    pub descriptor: Descriptor,
    pub bytes: Bytes,
}

impl Blob {
    pub fn new(media_type: &str, bytes: Vec<u8>) -> Blob {
        let bytes = Bytes::from(bytes);
        let descriptor =
            Descriptor::new(media_type.into(), bytes.len() as u64, sha256_digest(&bytes));
        Blob { descriptor, bytes }
    }

    pub fn random(size: usize) -> Blob {
        let mut bytes = vec![0u8; size];
        rand::rng().fill_bytes(&mut bytes);
        Blob::new(LAYER_TYPE, bytes)
    }

    pub fn digest(&self) -> String {
        self.descriptor.digest().to_string()
    }
}

/// A single-platform image.
pub struct TestImage {
    pub config: Blob,
    pub layers: Vec<Blob>,
    pub manifest: Bytes,
}

impl TestImage {
    pub fn new(architecture: &str, layer_sizes: &[usize]) -> TestImage {
        let layers: Vec<Blob> = layer_sizes.iter().map(|&size| Blob::random(size)).collect();
        let diff_ids: Vec<String> = layers.iter().map(Blob::digest).collect();
        let config = serde_json::json!({
            "architecture": architecture,
            "os": "linux",
            "config": {"Cmd": ["/bin/sh"]},
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
            "history": [{"created_by": format!("kiln test {}", rand::random::<u64>())}],
        });
        let config = Blob::new(CONFIG_TYPE, serde_json::to_vec(&config).unwrap());
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": config.descriptor,
            "layers": layers.iter().map(|l| &l.descriptor).collect::<Vec<_>>(),
        });
        // Pretty-printed on purpose: the registry must keep these exact bytes.
        let manifest = Bytes::from(serde_json::to_vec_pretty(&manifest).unwrap());
        TestImage {
            config,
            layers,
            manifest,
        }
    }

    pub fn digest(&self) -> String {
        sha256_digest(&self.manifest).to_string()
    }

    pub fn descriptor(&self, architecture: &str) -> serde_json::Value {
        serde_json::json!({
            "mediaType": OCI_MANIFEST,
            "digest": self.digest(),
            "size": self.manifest.len(),
            "platform": {"os": "linux", "architecture": architecture},
        })
    }

    pub fn blobs(&self) -> impl Iterator<Item = &Blob> {
        std::iter::once(&self.config).chain(self.layers.iter())
    }

    /// Pushes blobs (in parallel) then the manifest under `reference`.
    pub async fn push(&self, client: &Client, reference: &Reference) -> Vec<PushOutcome> {
        let pushes = self.blobs().map(|blob| {
            let source = BlobSource::Bytes(blob.bytes.clone());
            let client = client.clone();
            let reference = reference.clone();
            let descriptor = blob.descriptor.clone();
            async move {
                client
                    .push_blob(&reference, &descriptor, &source, None)
                    .await
            }
        });
        let outcomes: Vec<PushOutcome> = futures_util::future::try_join_all(pushes).await.unwrap();
        let digest = client
            .push_manifest(reference, OCI_MANIFEST, self.manifest.clone())
            .await
            .unwrap();
        assert_eq!(digest.to_string(), self.digest());
        outcomes
    }
}

/// An OCI index over `(image, architecture)` pairs.
pub fn index(entries: &[(&TestImage, &str)]) -> Bytes {
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": entries.iter().map(|(image, arch)| image.descriptor(arch)).collect::<Vec<_>>(),
    });
    Bytes::from(serde_json::to_vec(&index).unwrap())
}
