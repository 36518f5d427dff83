//! Layer tests that need root (feature `test-root`): owners, device nodes,
//! trusted.* xattrs, overlayfs whiteouts both ways, and a real overlay
//! mount of applied layers.

use std::fs;
use std::os::unix::fs::{lchown, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use kiln_store::layer;
use nix::sys::stat::{makedev, mknod, Mode, SFlag};

use crate::layer_support::{diff_to_vec, member_names, require_root, snapshot, RawTar};

fn whiteout(path: &Path) {
    mknod(path, SFlag::S_IFCHR, Mode::empty(), 0).unwrap();
}

fn is_whiteout(path: &Path) -> bool {
    let m = path.symlink_metadata().unwrap();
    m.file_type().is_char_device() && m.rdev() == 0
}

fn is_opaque(path: &Path) -> bool {
    xattr::get(path, "trusted.overlay.opaque")
        .unwrap()
        .as_deref()
        == Some(b"y")
}

/// An overlay upper dir with every file type, owners and xattrs.
fn build_upper(root: &Path) {
    fs::create_dir_all(root.join("dev")).unwrap();
    fs::create_dir_all(root.join("etc/opaque/sub")).unwrap();
    fs::create_dir_all(root.join("var")).unwrap();
    mknod(
        &root.join("dev/null"),
        SFlag::S_IFCHR,
        Mode::from_bits_truncate(0o666),
        makedev(1, 3),
    )
    .unwrap();
    mknod(
        &root.join("dev/loop0"),
        SFlag::S_IFBLK,
        Mode::from_bits_truncate(0o660),
        makedev(7, 0),
    )
    .unwrap();
    mknod(
        &root.join("dev/fifo"),
        SFlag::S_IFIFO,
        Mode::from_bits_truncate(0o600),
        0,
    )
    .unwrap();
    fs::write(root.join("etc/owned"), b"owned").unwrap();
    lchown(root.join("etc/owned"), Some(1234), Some(5678)).unwrap();
    fs::set_permissions(root.join("etc/owned"), fs::Permissions::from_mode(0o6750)).unwrap();
    std::os::unix::fs::symlink("owned", root.join("etc/link")).unwrap();
    lchown(root.join("etc/link"), Some(42), Some(43)).unwrap();
    fs::write(root.join("etc/opaque/sub/new"), b"new").unwrap();
    xattr::set(root.join("etc/opaque"), "trusted.overlay.opaque", b"y").unwrap();
    // overlayfs bookkeeping that must not reach the layer.
    xattr::set(root.join("var"), "trusted.overlay.impure", b"y").unwrap();
    xattr::set(root.join("etc/owned"), "trusted.kiln", b"kept").unwrap();
    xattr::set(
        root.join("etc/owned"),
        "security.capability",
        &[
            1, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        ],
    )
    .unwrap();
    whiteout(&root.join("var/deleted"));
    whiteout(&root.join("gone"));
    lchown(root.join("var"), Some(7), Some(8)).unwrap();
}

#[test]
fn round_trip_with_every_file_type() {
    if !require_root("round_trip_with_every_file_type") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let upper = tmp.path().join("upper");
    build_upper(&upper);
    let (first, blob) = diff_to_vec(&upper, layer::Compression::Gzip);
    let names = member_names(&blob);
    for want in [
        ".wh.gone",
        "var/.wh.deleted",
        "etc/opaque/",
        "etc/opaque/.wh..wh..opq",
        "dev/null",
        "dev/loop0",
    ] {
        assert!(
            names.iter().any(|n| n == want),
            "{want} missing in {names:?}"
        );
    }
    // The opaque marker comes right after its directory.
    let dir = names.iter().position(|n| n == "etc/opaque/").unwrap();
    assert_eq!(names[dir + 1], "etc/opaque/.wh..wh..opq");

    let dest = tmp.path().join("dest");
    fs::create_dir(&dest).unwrap();
    let stats = layer::apply(&blob[..], &dest).unwrap();
    assert_eq!(stats.whiteouts, 3);
    let (second, _) = diff_to_vec(&dest, layer::Compression::Gzip);
    assert_eq!(first, second);

    let mut want = snapshot(&upper);
    let mut got = snapshot(&dest);
    want.remove(&b""[..]);
    got.remove(&b""[..]);
    assert_eq!(want, got);
    assert!(is_whiteout(&dest.join("gone")));
    assert!(is_whiteout(&dest.join("var/deleted")));
    assert!(is_opaque(&dest.join("etc/opaque")));
    assert!(xattr::get(dest.join("var"), "trusted.overlay.impure")
        .unwrap()
        .is_none());
    assert_eq!(
        xattr::get(dest.join("etc/owned"), "trusted.kiln")
            .unwrap()
            .as_deref(),
        Some(&b"kept"[..])
    );
    let owned = fs::metadata(dest.join("etc/owned")).unwrap();
    assert_eq!(
        (owned.uid(), owned.gid(), owned.mode() & 0o7777),
        (1234, 5678, 0o6750)
    );
    let null = fs::metadata(dest.join("dev/null")).unwrap();
    assert!(null.file_type().is_char_device());
    assert_eq!(null.rdev(), makedev(1, 3));
}

#[test]
fn oci_whiteouts_become_overlay_whiteouts() {
    if !require_root("oci_whiteouts_become_overlay_whiteouts") {
        return;
    }
    let tar = RawTar::new()
        .dir("d/")
        .file("d/.wh.old", b"")
        .file("d/kept", b"1")
        .file("o/.wh..wh..opq", b"")
        .file("o/fresh", b"2")
        // A whiteout for a name this layer also writes: the directory of
        // this layer replaces the lower one whole.
        .file(".wh.both", b"")
        .dir("both/")
        .file("both/x", b"3")
        // Reserved aufs names carry nothing.
        .file(".wh..wh.plnk", b"")
        .finish();
    let dest = tempfile::tempdir().unwrap();
    let d = dest.path();
    let stats = layer::apply(&tar[..], d).unwrap();
    assert_eq!(stats.whiteouts, 3);
    assert!(is_whiteout(&d.join("d/old")));
    assert!(!d.join("d/.wh.old").exists());
    assert!(is_opaque(&d.join("o")));
    assert!(!d.join("o/.wh..wh..opq").exists());
    assert!(d.join("both").is_dir() && is_opaque(&d.join("both")));
    assert!(!d.join(".wh..wh.plnk").exists());
    let owner = fs::symlink_metadata(d.join("d/old")).unwrap();
    assert_eq!((owner.uid(), owner.gid()), (0, 0));
}

/// Mounts an overlay of read-only lowerdirs (top first), unmounted on drop.
struct Overlay {
    target: PathBuf,
}

impl Overlay {
    fn mount(lowers: &[&Path], target: &Path) -> Overlay {
        let lowerdir = lowers
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(":");
        nix::mount::mount(
            Some("overlay"),
            target,
            Some("overlay"),
            nix::mount::MsFlags::MS_RDONLY,
            Some(format!("lowerdir={lowerdir}").as_str()),
        )
        .unwrap();
        Overlay {
            target: target.to_path_buf(),
        }
    }
}

impl Drop for Overlay {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.target, nix::mount::MntFlags::MNT_DETACH);
    }
}

#[test]
fn applied_whiteouts_hide_lower_files_in_an_overlay() {
    if !require_root("applied_whiteouts_hide_lower_files_in_an_overlay") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let base = RawTar::new()
        .dir("a/")
        .file("a/keep", b"keep")
        .file("a/gone", b"gone")
        .dir("d/")
        .file("d/old", b"old")
        .file("top", b"top")
        .finish();
    let change = RawTar::new()
        .dir("a/")
        .file("a/.wh.gone", b"")
        .file("d/.wh..wh..opq", b"")
        .file("d/new", b"new")
        .file(".wh.top", b"")
        .finish();
    let lower = tmp.path().join("lower");
    let upper = tmp.path().join("upper");
    layer::apply_atomic(&base[..], &lower).unwrap();
    layer::apply_atomic(&change[..], &upper).unwrap();
    let merged = tmp.path().join("merged");
    fs::create_dir(&merged).unwrap();
    let _mount = Overlay::mount(&[&upper, &lower], &merged);
    assert_eq!(fs::read(merged.join("a/keep")).unwrap(), b"keep");
    assert!(!merged.join("a/gone").exists());
    assert!(!merged.join("d/old").exists());
    assert_eq!(fs::read(merged.join("d/new")).unwrap(), b"new");
    assert!(!merged.join("top").exists());
    let mut listing: Vec<_> = fs::read_dir(&merged)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    listing.sort();
    assert_eq!(listing, ["a", "d"]);
}

#[test]
fn diff_of_a_real_overlay_upper_dir() {
    if !require_root("diff_of_a_real_overlay_upper_dir") {
        return;
    }
    // Let the kernel make the whiteouts and the opaque directory: delete
    // and recreate through a read-write overlay, then diff its upper dir.
    let tmp = tempfile::tempdir().unwrap();
    let base = RawTar::new()
        .dir("a/")
        .file("a/gone", b"gone")
        .dir("d/")
        .file("d/old", b"old")
        .finish();
    let lower = tmp.path().join("lower");
    layer::apply_atomic(&base[..], &lower).unwrap();
    let (upper, work, merged) = (
        tmp.path().join("up"),
        tmp.path().join("work"),
        tmp.path().join("m"),
    );
    for d in [&upper, &work, &merged] {
        fs::create_dir(d).unwrap();
    }
    nix::mount::mount(
        Some("overlay"),
        &merged,
        Some("overlay"),
        nix::mount::MsFlags::empty(),
        Some(
            format!(
                "lowerdir={},upperdir={},workdir={}",
                lower.display(),
                upper.display(),
                work.display()
            )
            .as_str(),
        ),
    )
    .unwrap();
    let mounted = Overlay {
        target: merged.clone(),
    };
    fs::remove_file(merged.join("a/gone")).unwrap();
    fs::remove_dir_all(merged.join("d")).unwrap();
    fs::create_dir(merged.join("d")).unwrap();
    fs::write(merged.join("d/new"), b"new").unwrap();
    drop(mounted);

    let (_, blob) = diff_to_vec(&upper, layer::Compression::None);
    let names = member_names(&blob);
    assert!(names.contains(&"a/.wh.gone".to_string()), "{names:?}");
    assert!(names.contains(&"d/.wh..wh..opq".to_string()), "{names:?}");
    assert!(names.contains(&"d/new".to_string()), "{names:?}");
    assert!(!names.iter().any(|n| n.contains("d/old")), "{names:?}");
}
