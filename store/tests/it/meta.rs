//! The metadata database: reads that never write it, leases that write
//! only what they protect, holds that keep it open, and a file left open by
//! a writer that died.

use std::path::Path;

use kiln_store::{descriptor, CacheRecord, PruneOptions, Store};
use oci_spec::image::MediaType;

/// The bytes and modification time of `meta.redb`.
fn meta_file(root: &Path) -> (Vec<u8>, std::time::SystemTime) {
    let path = root.join("meta.redb");
    let bytes = std::fs::read(&path).unwrap();
    let modified = std::fs::metadata(&path).unwrap().modified().unwrap();
    (bytes, modified)
}

/// Writes the blobs of an image without layers for `architecture`.
fn image_without_layers(store: &Store, architecture: &str) -> oci_spec::image::Descriptor {
    let config = format!(
        r#"{{"architecture":"{architecture}","os":"linux","rootfs":{{"type":"layers","diff_ids":[]}}}}"#
    );
    let config_digest = store.content().write(config.as_bytes()).unwrap();
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config_digest}","size":{}}},"layers":[]}}"#,
        config.len()
    );
    let digest = store.content().write(manifest.as_bytes()).unwrap();
    descriptor(MediaType::ImageManifest, &digest, manifest.len() as u64)
}

/// A store with one named image without layers.
fn store_with_a_name(root: &Path) -> (Store, oci_spec::image::Descriptor) {
    let store = Store::open(root).unwrap();
    let target = image_without_layers(&store, "amd64");
    store
        .set_name("docker.io/library/m:latest", &target)
        .unwrap();
    (store, target)
}

#[test]
fn reads_and_idle_leases_leave_the_file_untouched() {
    let root = tempfile::tempdir().unwrap();
    let (store, _) = store_with_a_name(root.path());
    let before = meta_file(root.path());
    assert_eq!(store.names().unwrap().len(), 1);
    assert!(store.untagged().unwrap().is_empty());
    assert!(store.cache_record("nothing").unwrap().is_none());
    assert!(store.cache_records().unwrap().is_empty());
    // A lease that never protects anything writes nothing.
    drop(store.lease().unwrap());
    {
        let _hold = store.hold_metadata();
        assert_eq!(store.names().unwrap().len(), 1);
        assert!(store.untagged().unwrap().is_empty());
    }
    // Another handle on the root reads the same.
    assert_eq!(Store::open(root.path()).unwrap().names().unwrap().len(), 1);
    assert_eq!(meta_file(root.path()), before, "a read wrote meta.redb");
}

#[test]
fn a_lease_writes_only_new_digests_and_removes_its_record() {
    let root = tempfile::tempdir().unwrap();
    let (store, _) = store_with_a_name(root.path());
    let blob = store.content().write(b"leased").unwrap();
    let lease = store.lease().unwrap();
    lease.protect(&blob).unwrap();
    let after_first = meta_file(root.path());
    lease.protect(&blob).unwrap();
    assert_eq!(
        meta_file(root.path()),
        after_first,
        "protecting a protected digest wrote meta.redb"
    );
    let more = [
        store.content().write(b"two").unwrap(),
        store.content().write(b"three").unwrap(),
    ];
    lease
        .protect_all(&[more[0].clone(), blob.clone(), more[1].clone()])
        .unwrap();
    let after_all = meta_file(root.path());
    lease.protect_all(&more).unwrap();
    assert_eq!(
        meta_file(root.path()),
        after_all,
        "nothing new, yet written"
    );
    let report = store.prune(&PruneOptions::default()).unwrap();
    assert_eq!(report.blobs_removed, 0, "the lease keeps its blobs");
    drop(lease);
    let report = store.prune(&PruneOptions::default()).unwrap();
    assert_eq!(report.blobs_removed, 3, "a dropped lease keeps nothing");
}

#[test]
fn a_hold_reads_then_writes_and_others_see_it() {
    let root = tempfile::tempdir().unwrap();
    let (store, target) = store_with_a_name(root.path());
    {
        let _hold = store.hold_metadata();
        let clone = store.clone();
        let _inner = clone.hold_metadata();
        assert_eq!(store.names().unwrap().len(), 1);
        store
            .set_name("docker.io/library/m:second", &target)
            .unwrap();
        assert_eq!(clone.names().unwrap().len(), 2);
        store
            .put_cache_record("k", &CacheRecord::default())
            .unwrap();
        assert!(store.cache_record("k").unwrap().is_some());
    }
    // Released: a separate handle (as another process) reads and writes.
    let other = Store::open(root.path()).unwrap();
    assert_eq!(other.names().unwrap().len(), 2);
    assert!(other.remove_cache_record("k").unwrap());
    assert!(store.cache_records().unwrap().is_empty());
    let problems = other.fsck().unwrap().problems;
    assert!(problems.is_empty(), "{problems:?}");
}

#[test]
fn a_file_left_open_by_a_dead_writer_reads_and_recovers() {
    let root = tempfile::tempdir().unwrap();
    let (store, target) = store_with_a_name(root.path());
    let copy = tempfile::tempdir().unwrap();
    {
        // While a writer has the database open, its file is marked as
        // needing recovery: copy the root as a killed writer would leave it.
        let _hold = store.hold_metadata();
        store
            .set_name("docker.io/library/m:second", &target)
            .unwrap();
        copy_tree(root.path(), copy.path());
    }
    let before = meta_file(copy.path());
    let survivor = Store::open(copy.path()).unwrap();
    assert_eq!(survivor.names().unwrap().len(), 2);
    assert_eq!(
        meta_file(copy.path()),
        before,
        "a read repaired the file on disk"
    );
    survivor.remove_name("docker.io/library/m:second").unwrap();
    assert_eq!(survivor.names().unwrap().len(), 1);
    let problems = survivor.fsck().unwrap().problems;
    assert!(problems.is_empty(), "{problems:?}");
}

#[test]
fn readers_and_writers_in_parallel() {
    let root = tempfile::tempdir().unwrap();
    let (store, target) = store_with_a_name(root.path());
    std::thread::scope(|scope| {
        for i in 0..8 {
            // Separate handles, as separate processes have.
            let store = Store::open(root.path()).unwrap();
            let target = target.clone();
            scope.spawn(move || {
                for j in 0..5 {
                    let names = store.names().unwrap().len();
                    assert!(names >= 1, "{names}");
                    if i % 2 == 0 {
                        store
                            .set_name(&format!("docker.io/library/p{i}:{j}"), &target)
                            .unwrap();
                    } else {
                        assert!(store.untagged().unwrap().is_empty());
                        assert!(store.cache_records().unwrap().is_empty());
                    }
                }
            });
        }
    });
    assert_eq!(store.names().unwrap().len(), 1 + 4 * 5);
    assert_eq!(store.read_index().unwrap().manifests().len(), 1 + 4 * 5);
}

fn copy_tree(from: &Path, to: &Path) {
    for entry in walkdir(from) {
        let relative = entry.strip_prefix(from).unwrap();
        let target = to.join(relative);
        if entry.is_dir() {
            std::fs::create_dir_all(&target).unwrap();
        } else {
            std::fs::copy(&entry, &target).unwrap();
        }
    }
}

fn walkdir(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        out.push(path.clone());
        if path.is_dir() {
            out.extend(walkdir(&path));
        }
    }
    out
}

/// A name lookup's answer is kept on disk (`meta.memo/`) for the next
/// process, and used only while the database is in the state it was read
/// from: an edited answer of the current state is what a lookup returns,
/// and after any commit the database answers again.
#[test]
fn kept_name_lookups_are_used_only_in_the_state_they_were_read_from() {
    let root = tempfile::tempdir().unwrap();
    let (store, target) = store_with_a_name(root.path());
    let name = "docker.io/library/m:latest";
    assert_eq!(store.find_image(name).unwrap().target, target);
    let kept: Vec<_> = std::fs::read_dir(root.path().join("meta.memo"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(kept.len(), 1, "{kept:?}");
    // Another image, not named yet.
    let other = image_without_layers(&store, "arm64");
    // The kept answer, pointed at it: a lookup returns what is kept.
    let mut entry: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&kept[0]).unwrap()).unwrap();
    entry["value"][0] = serde_json::to_value(&other).unwrap();
    std::fs::write(&kept[0], serde_json::to_vec(&entry).unwrap()).unwrap();
    let fresh = || Store::open(root.path()).unwrap();
    assert_eq!(fresh().find_image(name).unwrap().target, other);
    // Any commit makes it stale: the database answers (and is kept again).
    store
        .set_name("docker.io/library/x:latest", &other)
        .unwrap();
    assert_eq!(fresh().find_image(name).unwrap().target, target);
    // A moved name is seen at once, with its fellow names.
    fresh().set_name(name, &other).unwrap();
    let found = fresh().find_image(name).unwrap();
    assert_eq!(found.target, other);
    assert_eq!(
        found.names,
        vec![name.to_string(), "docker.io/library/x:latest".to_string()]
    );
    // A removed name is not found, kept answer or not.
    fresh().remove_name(name).unwrap();
    assert!(fresh().find_image(name).is_err());
}
