//! Interop with skopeo: what skopeo pushes the client pulls, and the other
//! way round, with every digest kept.

use std::path::Path;
use std::process::Command;

use kiln_registry::{Platform, OCI_MANIFEST};

use kiln_testkit::{require, run, Auth, Registry, TestImage};

/// Writes `image` as an OCI image layout in `dir`, tagged `tag`.
fn write_layout(dir: &Path, image: &TestImage, tag: &str) {
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    for blob in image.blobs() {
        std::fs::write(blobs.join(blob.descriptor.digest().digest()), &blob.bytes).unwrap();
    }
    let digest = image.digest();
    std::fs::write(
        blobs.join(digest.trim_start_matches("sha256:")),
        &image.manifest,
    )
    .unwrap();
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": OCI_MANIFEST,
            "digest": digest,
            "size": image.manifest.len(),
            "annotations": {"org.opencontainers.image.ref.name": tag},
        }],
    });
    std::fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
}

#[tokio::test]
async fn client_pulls_what_skopeo_pushed() {
    if !require(&["skopeo"]) {
        return;
    }
    let Some(registry) = Registry::start(Auth::None).await else {
        return;
    };
    let image = TestImage::new("amd64", &[20_000, 30_000]);
    let layout = registry.dir.path().join("layout");
    write_layout(&layout, &image, "v1");
    run(Command::new("skopeo")
        .args(["copy", "--preserve-digests", "--dest-tls-verify=false"])
        .arg(format!("oci:{}:v1", layout.display()))
        .arg(format!("docker://{}/interop/from-skopeo:v1", registry.host)));
    let client = registry.client();
    let reference = registry.reference("interop/from-skopeo:v1");
    let resolved = client.resolve(&reference, &Platform::host()).await.unwrap();
    assert_eq!(resolved.manifest.digest.to_string(), image.digest());
    for blob in image.blobs() {
        let bytes = client
            .fetch_blob_bytes(&reference, &blob.descriptor)
            .await
            .unwrap();
        assert!(bytes == blob.bytes, "blob {} differs", blob.digest());
    }
}

#[tokio::test]
async fn skopeo_reads_what_the_client_pushed() {
    if !require(&["skopeo"]) {
        return;
    }
    let Some(registry) = Registry::start(Auth::None).await else {
        return;
    };
    let image = TestImage::new("amd64", &[40_000, 50_000]);
    let client = registry.client();
    image
        .push(&client, &registry.reference("interop/from-kiln:v2"))
        .await;
    let source = format!("docker://{}/interop/from-kiln:v2", registry.host);
    let raw = run(Command::new("skopeo")
        .args(["inspect", "--tls-verify=false", "--raw"])
        .arg(&source));
    assert_eq!(
        raw.as_bytes(),
        image.manifest.as_ref(),
        "skopeo sees the exact manifest bytes"
    );
    let out = registry.dir.path().join("copied");
    run(Command::new("skopeo")
        .args(["copy", "--preserve-digests", "--src-tls-verify=false"])
        .arg(&source)
        .arg(format!("oci:{}:v2", out.display())));
    for blob in image.blobs() {
        let path = out
            .join("blobs/sha256")
            .join(blob.descriptor.digest().digest());
        assert!(
            std::fs::read(&path).unwrap() == blob.bytes.as_ref(),
            "blob {} differs",
            blob.digest()
        );
    }
    let manifest = out
        .join("blobs/sha256")
        .join(image.digest().trim_start_matches("sha256:"));
    assert!(manifest.exists(), "skopeo kept the manifest digest");
}
