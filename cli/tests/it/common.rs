//! Shared helpers for the CLI integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

/// The `kiln` binary under test.
pub fn kiln_bin() -> &'static str {
    env!("CARGO_BIN_EXE_kiln")
}

/// Runs `kiln --root ROOT ARGS...` and returns its output.
pub fn kiln(root: &Path, args: &[&str]) -> Output {
    Command::new(kiln_bin())
        .arg("--root")
        .arg(root)
        .args(args)
        .output()
        .expect("spawning the kiln binary built by cargo")
}

/// Runs kiln and panics with its output unless it exits 0; returns stdout.
pub fn kiln_ok(root: &Path, args: &[&str]) -> String {
    let out = kiln(root, args);
    assert!(
        out.status.success(),
        "kiln {args:?} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("kiln prints UTF-8")
}

/// Runs kiln, expects failure, returns stderr.
pub fn kiln_err(root: &Path, args: &[&str]) -> String {
    let out = kiln(root, args);
    assert!(
        !out.status.success(),
        "kiln {args:?} succeeded but should fail:\nstdout: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// True when the test process runs as root.
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .map(|s| {
            s.lines()
                .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

/// True when running under CI, where a test that cannot run must fail.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Skips (returns true) with a printed reason outside CI; panics under CI.
pub fn skip_or_fail(reason: &str) -> bool {
    if in_ci() {
        panic!("cannot run under CI: {reason}");
    }
    eprintln!("skipping: {reason}");
    true
}

/// True when `tool` is on PATH.
pub fn has_tool(tool: &str) -> bool {
    std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|p| p.join(tool).is_file()))
        .unwrap_or(false)
}

/// The project's top directory.
pub fn project_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("cli/ sits in the project")
        .to_path_buf()
}

/// The busybox root filesystem tar of testdata/base, made once per test
/// process into cargo's scratch directory for tests (under the target
/// directory): one file, replaced atomically, so runs leave nothing in /tmp.
pub fn busybox_tar() -> &'static Path {
    static TAR: OnceLock<PathBuf> = OnceLock::new();
    TAR.get_or_init(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR"));
        std::fs::create_dir_all(dir).unwrap();
        let tar = dir.join("busybox-rootfs.tar");
        let made = dir.join(format!("busybox-rootfs.tar.{}", std::process::id()));
        let status = Command::new(project_dir().join("testdata/base/make-busybox-rootfs.sh"))
            .arg(&made)
            .status()
            .expect("running testdata/base/make-busybox-rootfs.sh");
        assert!(status.success(), "make-busybox-rootfs.sh failed");
        std::fs::rename(&made, &tar).unwrap();
        tar
    })
}

/// A fresh store root holding busybox:latest.
pub fn root_with_busybox() -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    kiln_ok(
        root.path(),
        &["import", busybox_tar().to_str().unwrap(), "busybox:latest"],
    );
    root
}

/// The image id (config digest) `kiln inspect` reports for `name`.
pub fn image_id(root: &Path, name: &str) -> String {
    let json = kiln_ok(root, &["inspect", name]);
    let records: serde_json::Value = serde_json::from_str(&json).unwrap();
    records[0]["Id"].as_str().unwrap().to_string()
}

/// Panics with fsck's report unless `kiln fsck` finds the store consistent.
pub fn assert_fsck_clean(root: &Path) {
    let out = kiln(root, &["fsck"]);
    assert!(
        out.status.success(),
        "fsck found problems:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Reads a pty master on a thread until `marker` shows up in the output
/// (or the pty closes); the thread returns everything read.
pub fn read_pty_until(
    master: std::fs::File,
    marker: &'static str,
) -> std::thread::JoinHandle<Vec<u8>> {
    use std::io::Read;
    std::thread::spawn(move || {
        let mut master = master;
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match master.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    out.extend_from_slice(&buf[..n]);
                    if String::from_utf8_lossy(&out).contains(marker) {
                        break;
                    }
                }
            }
        }
        out
    })
}

/// A copy of testdata/build/<case> in a temporary directory.
pub fn build_case(name: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&project_dir().join("testdata/build").join(name), dir.path());
    dir
}

/// Copies a tree of plain files and directories.
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// The lines `#N ...` of the build step whose start line contains `needle`
/// (BuildKit-style plain progress).
pub fn step_lines<'a>(output: &'a str, needle: &str) -> Vec<&'a str> {
    let Some(start) = output
        .lines()
        .find(|l| l.starts_with('#') && l.contains(needle))
    else {
        panic!("no step {needle:?} in:\n{output}");
    };
    let id = start.split_whitespace().next().unwrap().to_string();
    output
        .lines()
        .filter(|l| l.split_whitespace().next() == Some(id.as_str()))
        .collect()
}

/// Whether the build step whose start line contains `needle` was CACHED.
pub fn is_cached(output: &str, needle: &str) -> bool {
    step_lines(output, needle)
        .iter()
        .any(|l| l.ends_with(" CACHED"))
}

/// The image config of `image`, read from its blob.
pub fn config_of(root: &Path, image: &str) -> serde_json::Value {
    let id = image_id(root, image);
    let bytes = std::fs::read(
        root.join("blobs/sha256")
            .join(id.trim_start_matches("sha256:")),
    )
    .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

/// Builds a Dockerfile with these RUN lines FROM `image` (no cache): each
/// must succeed inside the built image.
pub fn check_in_image(root: &Path, image: &str, checks: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let mut text = format!("FROM {image}\n");
    for check in checks {
        text.push_str(&format!("RUN {check}\n"));
    }
    std::fs::write(dir.path().join("Dockerfile"), text).unwrap();
    let args = [
        "build",
        "--progress",
        "plain",
        "--no-cache",
        dir.path().to_str().unwrap(),
    ];
    let out = kiln(root, &args);
    assert!(
        out.status.success(),
        "kiln build {args:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Hex SHA-256 of `data`.
pub fn sha256_hex(data: &[u8]) -> String {
    kiln_store::Digest::of(data).hex().to_string()
}
