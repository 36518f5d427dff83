//! The content store, names, leases and collection on a real root.

use std::io::Write;

use kiln_store::{descriptor, Digest, Error, PruneOptions, Store};
use oci_spec::image::MediaType;

fn entries(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir).unwrap().count()
}

#[test]
fn blobs_are_verified_before_they_appear() {
    let root = tempfile::tempdir().unwrap();
    let store = Store::open(root.path()).unwrap();
    let digest = store.content().write(b"hello").unwrap();
    assert_eq!(digest, Digest::of(b"hello"));
    assert_eq!(store.content().read(&digest).unwrap(), b"hello");

    let mut writer = store.content().writer().unwrap();
    writer.write_all(b"not what was promised").unwrap();
    let err = writer
        .commit(Some(&Digest::of(b"promised")), None)
        .unwrap_err();
    assert!(matches!(err, Error::DigestMismatch { .. }), "{err}");

    let mut writer = store.content().writer().unwrap();
    writer.write_all(b"short").unwrap();
    let err = writer.commit(None, Some(99)).unwrap_err();
    assert!(matches!(err, Error::SizeMismatch { .. }), "{err}");

    assert_eq!(store.content().list().unwrap(), vec![digest]);
    assert_eq!(
        entries(&root.path().join("ingest")),
        0,
        "partial writes are removed"
    );
}

#[test]
fn a_synced_writer_keeps_writing_and_commits_the_whole_blob() {
    let root = tempfile::tempdir().unwrap();
    let store = Store::open(root.path()).unwrap();
    let mut writer = store.content().writer().unwrap();
    writer.write_all(b"first half, ").unwrap();
    writer.sync().unwrap();
    writer.write_all(b"second half").unwrap();
    writer.sync().unwrap();
    let whole = b"first half, second half";
    let digest = writer
        .commit(Some(&Digest::of(whole)), Some(whole.len() as u64))
        .unwrap();
    assert_eq!(store.content().read(&digest).unwrap(), whole);
}

#[test]
fn names_untagged_and_index_json() {
    let root = tempfile::tempdir().unwrap();
    let store = Store::open(root.path()).unwrap();
    let a = store.content().write(b"{\"a\":1}").unwrap();
    let b = store.content().write(b"{\"b\":1}").unwrap();
    let da = descriptor(MediaType::ImageManifest, &a, 7);
    let db = descriptor(MediaType::ImageManifest, &b, 7);
    store.set_name("docker.io/library/x:latest", &da).unwrap();
    store.set_name("docker.io/library/x:latest", &db).unwrap();
    // a lost its only name: it is kept as untagged.
    let untagged: Vec<String> = store
        .untagged()
        .unwrap()
        .iter()
        .map(|d| d.digest().to_string())
        .collect();
    assert_eq!(untagged, vec![a.to_string()]);
    let index = store.read_index().unwrap();
    let refs: Vec<Option<String>> = index
        .manifests()
        .iter()
        .map(|m| {
            m.annotations()
                .as_ref()
                .and_then(|an| an.get("org.opencontainers.image.ref.name").cloned())
        })
        .collect();
    assert!(refs.contains(&Some("x:latest".to_string())), "{refs:?}");
    assert_eq!(index.manifests().len(), 2);
    store.remove_name("docker.io/library/x:latest").unwrap();
    assert!(store
        .remove_name("docker.io/library/x:latest")
        .unwrap_err()
        .is_not_found());
}

#[test]
fn leases_protect_from_collection() {
    let root = tempfile::tempdir().unwrap();
    let store = Store::open(root.path()).unwrap();
    let lease = store.lease().unwrap();
    let mut writer = store.content().writer().unwrap();
    writer.write_all(b"in progress").unwrap();
    let digest = writer.commit_leased(&lease, None, None).unwrap();
    let report = store.prune(&PruneOptions::default()).unwrap();
    assert_eq!(report.blobs_removed, 0);
    assert!(store.content().contains(&digest));
    drop(lease);
    let report = store.prune(&PruneOptions::default()).unwrap();
    assert_eq!(report.blobs_removed, 1);
    assert!(!store.content().contains(&digest));
}

#[test]
fn threads_share_one_root() {
    let root = tempfile::tempdir().unwrap();
    let store = Store::open(root.path()).unwrap();
    let digest = store.content().write(b"{}").unwrap();
    let target = descriptor(MediaType::ImageManifest, &digest, 2);
    std::thread::scope(|scope| {
        for i in 0..8 {
            let store = store.clone();
            let target = target.clone();
            scope.spawn(move || {
                store
                    .set_name(&format!("docker.io/library/t{i}:latest"), &target)
                    .unwrap()
            });
        }
    });
    assert_eq!(store.names().unwrap().len(), 8);
    assert_eq!(store.read_index().unwrap().manifests().len(), 8);
}
