//! Layer diff and apply without privileges: determinism, digests, member
//! order and headers, round trips, tar overwrite semantics, compression
//! detection.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{symlink, DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::Path;

use filetime::FileTime;
use kiln_store::layer::{self, Compression, DiffOptions};
use kiln_store::Digest;

use crate::layer_support::{decompress, diff_to_vec, member_names, snapshot, RawTar};

const ALL: [Compression; 3] = [Compression::None, Compression::Gzip, Compression::Zstd];

fn set_mtime(path: &Path, secs: i64) {
    let t = FileTime::from_unix_time(secs, 0);
    filetime::set_symlink_file_times(path, t, t).unwrap();
}

/// Some compressible bytes.
fn text(len: usize, seed: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity(len);
    let mut x = seed;
    while out.len() < len {
        x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        out.extend_from_slice(format!("{} ", x % 1000).as_bytes());
    }
    out.truncate(len);
    out
}

/// A tree with every file type an unprivileged user can make.
fn build_tree(root: &Path) {
    fs::create_dir_all(root.join("etc/conf.d")).unwrap();
    fs::create_dir_all(root.join("usr/bin")).unwrap();
    fs::create_dir_all(root.join("a")).unwrap();
    fs::write(root.join("etc/hostname"), b"kiln\n").unwrap();
    fs::write(root.join("etc/empty"), b"").unwrap();
    fs::write(root.join("etc/conf.d/big"), text(3 * 1024 * 1024 + 17, 1)).unwrap();
    fs::write(root.join("usr/bin/tool"), text(70_000, 2)).unwrap();
    fs::set_permissions(
        root.join("usr/bin/tool"),
        fs::Permissions::from_mode(0o4755),
    )
    .unwrap();
    // Names whose bytewise order differs from a per-directory walk.
    fs::write(root.join("a.txt"), b"dot").unwrap();
    fs::write(root.join("a-b"), b"dash").unwrap();
    fs::write(root.join("a/b"), b"slash").unwrap();
    // Hardlinks: three names, one inode.
    fs::write(root.join("usr/bin/busybox"), text(5000, 3)).unwrap();
    fs::hard_link(root.join("usr/bin/busybox"), root.join("usr/bin/sh")).unwrap();
    fs::hard_link(root.join("usr/bin/busybox"), root.join("a/ls")).unwrap();
    symlink("busybox", root.join("usr/bin/ash")).unwrap();
    symlink("/nowhere/at/all", root.join("dangling")).unwrap();
    let long_target = "../".repeat(40) + "target";
    symlink(&long_target, root.join("long-link")).unwrap();
    let long_dir = root.join("l".repeat(90)).join("m".repeat(90));
    fs::create_dir_all(&long_dir).unwrap();
    fs::write(long_dir.join("file-with-a-long-path"), b"long").unwrap();
    nix::unistd::mkfifo(
        &root.join("fifo"),
        nix::sys::stat::Mode::from_bits_truncate(0o640),
    )
    .unwrap();
    fs::DirBuilder::new()
        .mode(0o755)
        .create(root.join("tmp"))
        .unwrap();
    fs::set_permissions(root.join("tmp"), fs::Permissions::from_mode(0o1777)).unwrap();
    fs::create_dir(root.join("shared")).unwrap();
    fs::set_permissions(root.join("shared"), fs::Permissions::from_mode(0o2775)).unwrap();
    fs::create_dir(root.join("ro")).unwrap();
    fs::write(root.join("ro/inside"), b"read only dir").unwrap();
    fs::set_permissions(root.join("ro"), fs::Permissions::from_mode(0o555)).unwrap();
    // A user xattr where the file system has them.
    let _ = xattr::set(root.join("etc/hostname"), "user.kiln.test", b"v\0binary");

    // Fixed mtimes, files first, directories last (writing in a directory
    // touches it).
    let mut paths: Vec<_> = walkdir::WalkDir::new(root)
        .min_depth(1)
        .into_iter()
        .map(|e| e.unwrap().into_path())
        .collect();
    paths.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for (i, p) in paths.iter().enumerate() {
        set_mtime(p, 1_600_000_000 + i as i64 * 1000);
    }
}

#[test]
fn diff_is_deterministic_and_digests_are_right() {
    let tmp = tempfile::tempdir().unwrap();
    let tree = tmp.path().join("tree");
    build_tree(&tree);
    for compression in ALL {
        let (first, blob) = diff_to_vec(&tree, compression);
        let (second, again) = diff_to_vec(&tree, compression);
        assert_eq!(first, second, "{compression:?}");
        assert_eq!(blob, again, "{compression:?}");
        assert_eq!(first.digest, Digest::of(&blob));
        assert_eq!(first.size, blob.len() as u64);
        assert_eq!(first.diff_id, Digest::of(&decompress(&blob)));
        assert_eq!(Compression::detect(&blob), compression);
    }
    let (plain, _) = diff_to_vec(&tree, Compression::None);
    let (gzip, _) = diff_to_vec(&tree, Compression::Gzip);
    let (zstd, _) = diff_to_vec(&tree, Compression::Zstd);
    assert_eq!(plain.diff_id, gzip.diff_id);
    assert_eq!(plain.diff_id, zstd.diff_id);
    assert_eq!(plain.digest, plain.diff_id);
    assert!(gzip.size < plain.size && zstd.size < plain.size);
    // Readable by the system's gzip as well, if there is one.
    if let Ok(mut child) = std::process::Command::new("gzip")
        .args(["-t", "-"])
        .stdin(std::process::Stdio::piped())
        .spawn()
    {
        let (_, blob) = diff_to_vec(&tree, Compression::Gzip);
        child.stdin.take().unwrap().write_all(&blob).unwrap();
        assert!(child.wait().unwrap().success(), "gzip -t rejects our gzip");
    }
}

#[test]
fn members_are_sorted_and_headers_normalized() {
    let tmp = tempfile::tempdir().unwrap();
    let tree = tmp.path().join("tree");
    build_tree(&tree);
    let (_, blob) = diff_to_vec(&tree, Compression::None);
    let names = member_names(&blob);
    let keys: Vec<&str> = names.iter().map(|n| n.trim_end_matches('/')).collect();
    let mut sorted = keys.clone();
    sorted.sort();
    assert_eq!(keys, sorted);
    assert_eq!(keys[..3], ["a", "a-b", "a.txt"]);
    assert!(names.contains(&"etc/".to_string()));

    let mut archive = tar::Archive::new(&blob[..]);
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let h = entry.header().clone();
        assert_eq!(h.username_bytes(), Some(&b""[..]));
        assert_eq!(h.groupname_bytes(), Some(&b""[..]));
        assert!(h.as_ustar().is_some(), "ustar headers only");
        let name = entry.path_bytes().into_owned();
        let name = String::from_utf8(name).unwrap();
        match name.as_str() {
            "usr/bin/tool" => assert_eq!(h.mode().unwrap(), 0o4755),
            "tmp/" => assert_eq!(h.mode().unwrap(), 0o1777),
            "shared/" => assert_eq!(h.mode().unwrap(), 0o2775),
            "ro/" => assert_eq!(h.mode().unwrap(), 0o555),
            // The first name in path order carries the data.
            "a/ls" => assert_eq!(h.entry_type(), tar::EntryType::Regular),
            "usr/bin/busybox" | "usr/bin/sh" => {
                assert_eq!(h.entry_type(), tar::EntryType::Link);
                assert_eq!(&*entry.link_name_bytes().unwrap(), b"a/ls");
            }
            "long-link" => assert_eq!(
                entry.link_name_bytes().unwrap().len(),
                "../".len() * 40 + "target".len()
            ),
            "fifo" => assert_eq!(h.entry_type(), tar::EntryType::Fifo),
            "etc/hostname" => {
                let xattrs: Vec<_> = entry
                    .pax_extensions()
                    .unwrap()
                    .map(|records| {
                        records
                            .map(|r| r.unwrap().key().unwrap().to_string())
                            .collect()
                    })
                    .unwrap_or_default();
                if xattr::get(tree.join("etc/hostname"), "user.kiln.test")
                    .unwrap()
                    .is_some()
                {
                    assert_eq!(xattrs, ["SCHILY.xattr.user.kiln.test"]);
                }
            }
            _ => {}
        }
    }
}

#[test]
fn source_date_epoch_clamps_mtimes() {
    let tmp = tempfile::tempdir().unwrap();
    fs::write(tmp.path().join("old"), b"1").unwrap();
    fs::write(tmp.path().join("new"), b"2").unwrap();
    set_mtime(&tmp.path().join("old"), 1_000_000_000);
    set_mtime(&tmp.path().join("new"), 2_000_000_000);
    let opts = DiffOptions {
        compression: Compression::None,
        source_date_epoch: Some(1_500_000_000),
    };
    let mut blob = Vec::new();
    layer::diff(tmp.path(), &mut blob, &opts).unwrap();
    let mut archive = tar::Archive::new(&blob[..]);
    let mtimes: Vec<(String, u64)> = archive
        .entries()
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.path().unwrap().display().to_string(),
                e.header().mtime().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        mtimes,
        [
            ("new".to_string(), 1_500_000_000),
            ("old".to_string(), 1_000_000_000)
        ]
    );
}

#[test]
fn diff_apply_diff_gives_the_same_digests() {
    let tmp = tempfile::tempdir().unwrap();
    let tree = tmp.path().join("tree");
    build_tree(&tree);
    for compression in ALL {
        let (first, blob) = diff_to_vec(&tree, compression);
        let dest = tmp.path().join(format!("applied-{compression:?}"));
        fs::create_dir(&dest).unwrap();
        let stats = layer::apply(&blob[..], &dest).unwrap();
        assert_eq!(stats.compression, compression);
        assert!(stats.entries > 20);
        let (second, _) = diff_to_vec(&dest, compression);
        assert_eq!(first, second, "{compression:?}");
        let mut want = snapshot(&tree);
        let mut got = snapshot(&dest);
        // The roots differ (not a member of the layer).
        want.remove(&b""[..]);
        got.remove(&b""[..]);
        assert_eq!(want, got, "{compression:?}");
        // Hardlinks came back as hardlinks.
        let ino = |p: &str| fs::metadata(dest.join(p)).unwrap().ino();
        assert_eq!(ino("usr/bin/sh"), ino("a/ls"));
        assert_eq!(ino("usr/bin/busybox"), ino("a/ls"));
    }
}

#[test]
fn later_members_win() {
    let tar = RawTar::new()
        .file("x", b"file first")
        .dir("x/")
        .file("x/inside", b"1")
        .dir("y/")
        .file("y/gone", b"2")
        .file("y", b"file replaces dir")
        .file("z", b"old")
        .symlink("z", "elsewhere")
        .file("deep/implicit/parents", b"3")
        .file("f", b"first")
        .file("f", b"second")
        .hardlink("f2", "f")
        .finish();
    let dest = tempfile::tempdir().unwrap();
    layer::apply(&tar[..], dest.path()).unwrap();
    let d = dest.path();
    assert!(d.join("x").is_dir());
    assert_eq!(fs::read(d.join("x/inside")).unwrap(), b"1");
    assert_eq!(fs::read(d.join("y")).unwrap(), b"file replaces dir");
    assert_eq!(fs::read_link(d.join("z")).unwrap(), Path::new("elsewhere"));
    assert_eq!(fs::read(d.join("deep/implicit/parents")).unwrap(), b"3");
    assert_eq!(fs::read(d.join("f2")).unwrap(), b"second");
    assert_eq!(
        fs::metadata(d.join("f")).unwrap().ino(),
        fs::metadata(d.join("f2")).unwrap().ino()
    );
}

#[test]
fn root_member_sets_the_root_and_mtimes_survive() {
    let mut tar = RawTar::new().dir("./").dir("d/").file("d/f", b"x").finish();
    // RawTar writes mtime 1_600_000_000 everywhere: check dirs kept it
    // although files were written in them afterwards.
    let dest = tempfile::tempdir().unwrap();
    layer::apply(&tar[..], dest.path()).unwrap();
    for p in [dest.path().to_path_buf(), dest.path().join("d")] {
        assert_eq!(fs::metadata(&p).unwrap().mtime(), 1_600_000_000, "{p:?}");
    }
    // A truncated layer is an error, not a silent partial success.
    tar.truncate(700);
    let dest = tempfile::tempdir().unwrap();
    assert!(layer::apply(&tar[..], dest.path()).is_err());
}

#[test]
fn apply_detects_compression_and_reads_multi_member_gzip() {
    let tar = RawTar::new()
        .file("a", &text(100_000, 9))
        .file("b", b"x")
        .finish();
    // Two gzip members back to back (as pigz and others write them).
    let (head, tail) = tar.split_at(1024);
    let mut gz = Vec::new();
    for part in [head, tail] {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(part).unwrap();
        gz.extend(e.finish().unwrap());
    }
    let zst = zstd::encode_all(&tar[..], 3).unwrap();
    for (blob, want) in [
        (tar.clone(), Compression::None),
        (gz, Compression::Gzip),
        (zst, Compression::Zstd),
    ] {
        let dest = tempfile::tempdir().unwrap();
        let mut reader = kiln_store::HashingReader::new(&blob[..]);
        let stats = layer::apply(&mut reader, dest.path()).unwrap();
        assert_eq!(stats.compression, want);
        assert_eq!(stats.entries, 2);
        assert_eq!(stats.bytes, 100_001);
        // The whole blob was read, so a hashing reader sees its digest.
        let (_, digest, n) = reader.finish();
        assert_eq!((digest, n), (Digest::of(&blob), blob.len() as u64));
        assert_eq!(fs::read(dest.path().join("a")).unwrap(), text(100_000, 9));
    }
    // A corrupt gzip stream is a read error.
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(&tar).unwrap();
    let mut bad = e.finish().unwrap();
    let n = bad.len();
    bad[n - 6] ^= 0xff; // the CRC-32 in the trailer
    let dest = tempfile::tempdir().unwrap();
    let err = layer::apply(&bad[..], dest.path()).unwrap_err();
    assert!(matches!(err, kiln_store::Error::LayerRead { .. }), "{err}");
}

#[test]
fn apply_atomic_renames_into_place() {
    let tmp = tempfile::tempdir().unwrap();
    let final_path = tmp.path().join("snapshots").join("chain");
    fs::create_dir(tmp.path().join("snapshots")).unwrap();
    let tar = RawTar::new().file("hello", b"world").finish();
    layer::apply_atomic(&tar[..], &final_path).unwrap();
    assert_eq!(fs::read(final_path.join("hello")).unwrap(), b"world");
    // A second apply of the same layer finds it there and leaves no debris.
    layer::apply_atomic(&tar[..], &final_path).unwrap();
    let names: Vec<_> = fs::read_dir(tmp.path().join("snapshots"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["chain"]);
    // A failing apply leaves nothing either.
    let bad = RawTar::new().file("../x", b"").finish();
    let other = tmp.path().join("snapshots").join("other");
    assert!(layer::apply_atomic(&bad[..], &other).is_err());
    assert_eq!(
        fs::read_dir(tmp.path().join("snapshots")).unwrap().count(),
        1
    );
}

#[test]
fn media_types() {
    assert_eq!(
        Compression::Gzip.media_type(),
        "application/vnd.oci.image.layer.v1.tar+gzip"
    );
    assert_eq!(
        Compression::Zstd.media_type(),
        "application/vnd.oci.image.layer.v1.tar+zstd"
    );
    assert_eq!(
        Compression::None.media_type(),
        "application/vnd.oci.image.layer.v1.tar"
    );
}

#[test]
fn odd_names_round_trip() {
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;
    let tmp = tempfile::tempdir().unwrap();
    let tree = tmp.path().join("tree");
    fs::create_dir(&tree).unwrap();
    // Not UTF-8, a newline, spaces, and a name past ustar's 100 bytes.
    let names: [&[u8]; 4] = [b"caf\xe9", b"new\nline", b"with spaces", &[b'n'; 200]];
    for name in names {
        fs::write(tree.join(OsStr::from_bytes(name)), name).unwrap();
    }
    let (first, blob) = diff_to_vec(&tree, Compression::Gzip);
    let dest = tmp.path().join("dest");
    fs::create_dir(&dest).unwrap();
    layer::apply(&blob[..], &dest).unwrap();
    for name in names {
        assert_eq!(fs::read(dest.join(OsStr::from_bytes(name))).unwrap(), name);
    }
    assert_eq!(diff_to_vec(&dest, Compression::Gzip).0, first);
}

#[test]
fn diff_excluding_leaves_out_exactly_the_named_paths() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    fs::create_dir_all(root.join("etc/sub")).unwrap();
    fs::write(root.join("etc/hosts"), b"").unwrap();
    fs::write(root.join("etc/sub/kept"), b"k").unwrap();
    fs::write(root.join("newfile"), b"x").unwrap();
    let opts = DiffOptions {
        compression: Compression::None,
        source_date_epoch: None,
    };
    let mut blob = Vec::new();
    layer::diff_excluding(
        root,
        &mut blob,
        &opts,
        &[Path::new("etc/hosts"), Path::new("etc")],
    )
    .unwrap();
    // Only the named paths go: what is below an excluded directory stays.
    assert_eq!(member_names(&blob), ["etc/sub/", "etc/sub/kept", "newfile"]);
    let mut all = Vec::new();
    layer::diff_excluding(root, &mut all, &opts, &[]).unwrap();
    assert_eq!(all, diff_to_vec(root, Compression::None).1);
}
