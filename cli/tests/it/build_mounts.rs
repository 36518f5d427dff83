//! `kiln build` RUN features as root: `--mount=type=cache|bind|tmpfs|secret|ssh`,
//! `#!` heredocs, `--network`, `kiln build --secret`, `kiln builder du|prune`
//! with cache mounts, and a build killed with SIGKILL during a RUN.
//! Cases from testdata/build/mount-*, FROM busybox:latest.
//!
//! Needs: root, overlayfs, cgroups, Debian's busybox-static.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{
    assert_fsck_clean, build_case as case, check_in_image, is_cached, is_root, kiln, kiln_bin,
    kiln_ok, root_with_busybox, sha256_hex, skip_or_fail,
};

fn ready() -> bool {
    if !is_root() {
        return !skip_or_fail("build mount tests need root");
    }
    true
}

/// Runs `kiln build` and returns (success, stdout + stderr).
fn build(root: &Path, args: &[&str]) -> (bool, String) {
    let mut all = vec!["build", "--progress", "plain"];
    all.extend_from_slice(args);
    let out = kiln(root, &all);
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

fn build_ok(root: &Path, args: &[&str]) -> String {
    let (ok, output) = build(root, args);
    assert!(ok, "kiln build {args:?} failed:\n{output}");
    output
}

/// No mount under this root and no overlay of kiln's is left; fsck is clean.
fn assert_clean(root: &Path) {
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap();
    let root_text = root.to_string_lossy();
    let stray: Vec<&str> = mounts
        .lines()
        .filter(|l| l.contains(root_text.as_ref()))
        .collect();
    assert!(stray.is_empty(), "stray mounts: {stray:?}");
    assert_fsck_clean(root);
}

/// Every file under `dir` (symlinks not followed).
fn files_under(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let kind = entry.file_type().unwrap();
        if kind.is_dir() {
            files_under(&entry.path(), out);
        } else if kind.is_file() {
            out.push(entry.path());
        }
    }
}

fn cache_mount_ids(root: &Path) -> Vec<String> {
    let out = kiln_ok(root, &["builder", "du"]);
    out.lines()
        .filter(|l| l.contains("exec.cachemount"))
        .map(|l| l.to_string())
        .collect()
}

#[test]
fn cache_mount_persists_across_builds_and_stays_out_of_the_image() {
    if !ready() {
        return;
    }
    let root = root_with_busybox();
    let r = root.path();
    let dir = case("mount-cache");
    let ctx = dir.path().to_str().unwrap();
    build_ok(r, &["-t", "cached:1", ctx]);
    // --no-cache runs the step again: it sees what the first build wrote.
    build_ok(r, &["--no-cache", "-t", "cached:2", ctx]);
    check_in_image(
        r,
        "cached:1",
        &["test \"$(cat /runs)\" = 1 && test ! -e /var/cache/app"],
    );
    check_in_image(
        r,
        "cached:2",
        &[
            "test \"$(cat /runs)\" = 2",
            "test \"$(cat /cache-owner)\" = '750 1 2'",
            "test ! -e /var/cache/app",
        ],
    );
    // A rebuild with the cache is a hit: the key covers the mount's
    // definition, not what the cache holds.
    let out = build_ok(r, &[ctx]);
    assert!(is_cached(&out, "RUN --mount=type=cache"), "{out}");
    let listed = cache_mount_ids(r);
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert!(listed[0].contains("app-cache"), "{listed:?}");
    // Keeping everything removes nothing; keeping nothing removes the mount.
    kiln_ok(r, &["builder", "prune", "-f", "--keep-storage", "1t"]);
    assert_eq!(cache_mount_ids(r).len(), 1);
    let out = kiln_ok(r, &["builder", "prune", "-f", "--keep-storage", "0"]);
    assert!(out.contains("1 cache mounts"), "{out}");
    assert!(cache_mount_ids(r).is_empty());
    // Keeping nothing removed the step records too: the step runs again,
    // and a fresh cache mount starts counting at 1.
    let out = build_ok(r, &["-t", "cached:3", ctx]);
    assert!(!is_cached(&out, "RUN --mount=type=cache"), "{out}");
    check_in_image(r, "cached:3", &["test \"$(cat /runs)\" = 1"]);
    assert_eq!(cache_mount_ids(r).len(), 1);
    kiln_ok(r, &["builder", "prune", "--all", "-f"]);
    assert!(cache_mount_ids(r).is_empty());
    assert!(!r
        .join("buildcache/mounts")
        .read_dir()
        .unwrap()
        .any(|_| true));
    assert_clean(r);
}

#[test]
fn locked_cache_mount_is_exclusive_across_concurrent_builds() {
    if !ready() {
        return;
    }
    let root = root_with_busybox();
    let r = root.path();
    // Each build fails if it finds the other one inside the cache.
    let script = "RUN --mount=type=cache,target=/c,id=shared-lock,sharing=locked sh -c \
                  'test ! -e /c/busy || exit 9; touch /c/busy; sleep 1; rm /c/busy; echo x >> /c/log'";
    let dirs: Vec<tempfile::TempDir> = (0..2)
        .map(|n| {
            let d = tempfile::tempdir().unwrap();
            std::fs::write(
                d.path().join("Dockerfile"),
                format!("FROM busybox:latest\nENV N={n}\n{script}\n"),
            )
            .unwrap();
            d
        })
        .collect();
    let children: Vec<_> = dirs
        .iter()
        .map(|d| {
            Command::new(kiln_bin())
                .args([
                    "--root",
                    r.to_str().unwrap(),
                    "build",
                    "--progress",
                    "plain",
                ])
                .arg(d.path())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let check = tempfile::tempdir().unwrap();
    std::fs::write(
        check.path().join("Dockerfile"),
        "FROM busybox:latest\nRUN --mount=type=cache,target=/c,id=shared-lock,sharing=locked \
         test \"$(wc -l < /c/log)\" = 2\n",
    )
    .unwrap();
    build_ok(r, &["--no-cache", check.path().to_str().unwrap()]);
    assert_clean(r);
}

#[test]
fn bind_and_tmpfs_mounts_are_read_but_not_kept() {
    if !ready() {
        return;
    }
    let root = root_with_busybox();
    let r = root.path();
    let dir = case("mount-bind");
    let ctx = dir.path().to_str().unwrap();
    build_ok(r, &["-t", "bound:1", ctx]);
    check_in_image(
        r,
        "bound:1",
        &[
            "test \"$(cat /from-context)\" = original",
            "test \"$(cat /rw-saw)\" = scribble",
            "test \"$(cat /from-stage)\" = from-stage",
            "test \"$(cat /tmpfs-saw)\" = temp",
            "test ! -e /src && test ! -e /tools && test ! -e /scratch",
        ],
    );
    // rw writes went to a throw-away layer, not the context.
    assert_eq!(
        std::fs::read_to_string(dir.path().join("src/input.txt")).unwrap(),
        "original\n"
    );
    assert!(!dir.path().join("src/new.txt").exists());
    // A file outside the mounted source changes nothing.
    std::fs::write(dir.path().join("unrelated.txt"), "x").unwrap();
    let out = build_ok(r, &[ctx]);
    assert!(
        is_cached(&out, "cat /src/input.txt > /from-context"),
        "{out}"
    );
    // The mounted content changed: the step runs again.
    std::fs::write(dir.path().join("src/input.txt"), "changed\n").unwrap();
    let out = build_ok(r, &["-t", "bound:2", ctx]);
    assert!(
        !is_cached(&out, "cat /src/input.txt > /from-context"),
        "{out}"
    );
    check_in_image(r, "bound:2", &["test \"$(cat /from-context)\" = changed"]);
    assert_clean(r);
}

#[test]
fn secrets_reach_the_run_and_nothing_else() {
    if !ready() {
        return;
    }
    let root = root_with_busybox();
    let r = root.path();
    let dir = case("mount-secret");
    let ctx = dir.path().to_str().unwrap();
    let token = format!("kiln-test-token-{:016x}", rand::random::<u64>());
    let apikey = format!("kiln-test-apikey-{:016x}", rand::random::<u64>());
    let token_file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(token_file.path(), &token).unwrap();
    let token_arg = format!("id=token,src={}", token_file.path().display());
    let out = Command::new(kiln_bin())
        .args([
            "--root",
            r.to_str().unwrap(),
            "build",
            "--progress",
            "plain",
        ])
        .args(["--secret", &token_arg])
        .args(["--secret", "id=apikey,env=KILN_TEST_APIKEY"])
        .args(["-t", "secret:1", ctx])
        .env("KILN_TEST_APIKEY", &apikey)
        .output()
        .unwrap();
    let output = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{output}");
    assert!(
        !output.contains(&token) && !output.contains(&apikey),
        "{output}"
    );
    check_in_image(
        r,
        "secret:1",
        &[
            &format!(
                "test \"$(cat /token-digest)\" = {}",
                sha256_hex(token.as_bytes())
            ),
            &format!(
                "test \"$(cat /apikey-digest)\" = {}",
                sha256_hex(apikey.as_bytes())
            ),
            "test \"$(cat /token-mode)\" = 400 && test \"$(cat /etc-token-mode)\" = 440",
            "test \"$(cat /absent)\" = skipped && test \"$(cat /ssh)\" = ssh-skipped",
            "test ! -e /run/secrets && test ! -e /etc/token",
        ],
    );
    // Neither value is anywhere in the store: layers, snapshots, cache
    // records, metadata.
    let mut files = Vec::new();
    files_under(r, &mut files);
    assert!(files.len() > 10);
    for file in &files {
        let bytes = std::fs::read(file).unwrap_or_default();
        for secret in [&token, &apikey] {
            assert!(
                !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
                "a secret is in {}",
                file.display()
            );
        }
    }
    // The value is not part of the key: another value is still a hit.
    std::fs::write(token_file.path(), "another value").unwrap();
    let out = Command::new(kiln_bin())
        .args([
            "--root",
            r.to_str().unwrap(),
            "build",
            "--progress",
            "plain",
        ])
        .args(["--secret", &token_arg])
        .args(["--secret", "id=apikey,env=KILN_TEST_APIKEY"])
        .arg(ctx)
        .env("KILN_TEST_APIKEY", &apikey)
        .output()
        .unwrap();
    let output = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{output}");
    assert!(is_cached(&output, "id=token sh -c"), "{output}");
    assert_clean(r);
}

#[test]
fn missing_required_secret_and_ssh_fail_clearly() {
    if !ready() {
        return;
    }
    let root = root_with_busybox();
    let r = root.path();
    let dir = tempfile::tempdir().unwrap();
    let ctx = dir.path().to_str().unwrap();
    for (line, message) in [
        (
            "RUN --mount=type=secret,id=needed,required=true true",
            "secret needed not found",
        ),
        (
            "RUN --mount=type=secret,id=needed,env=NEEDED true",
            "secret needed not found",
        ),
        (
            "RUN --mount=type=ssh,required=true true",
            "no SSH agent forwarded",
        ),
    ] {
        std::fs::write(
            dir.path().join("Dockerfile"),
            format!("FROM busybox:latest\n{line}\n"),
        )
        .unwrap();
        let (ok, output) = build(r, &[ctx]);
        assert!(!ok, "{output}");
        assert!(output.contains(message), "{output}");
        assert_clean(r);
    }
    // A --secret whose source is missing names the id and the file.
    let (ok, output) = build(r, &["--secret", "id=x,src=/nonexistent/kiln-secret", ctx]);
    assert!(!ok);
    assert!(
        output.contains("secret x: reading /nonexistent/kiln-secret"),
        "{output}"
    );
}

#[test]
fn heredoc_script_and_network_none() {
    if !ready() {
        return;
    }
    let root = root_with_busybox();
    let r = root.path();
    let dir = case("mount-misc");
    let ctx = dir.path().to_str().unwrap();
    build_ok(r, &["-t", "misc:1", ctx]);
    check_in_image(
        r,
        "misc:1",
        &[
            "test \"$(cat /heredoc)\" = 'heredoc ran as /dev/pipes/EOT'",
            "test \"$(cat /net-devices)\" = lo && test \"$(cat /net-routes)\" = 0",
            "test ! -e /dev/pipes",
        ],
    );
    // kiln build --network none applies to every RUN without its own.
    let plain = tempfile::tempdir().unwrap();
    std::fs::write(
        plain.path().join("Dockerfile"),
        "FROM busybox:latest\nRUN test \"$(ls /sys/class/net)\" = lo\n",
    )
    .unwrap();
    build_ok(r, &["--network", "none", plain.path().to_str().unwrap()]);
    let (ok, output) = build(
        r,
        &["--network", "bridgeless", plain.path().to_str().unwrap()],
    );
    assert!(!ok);
    assert!(output.contains("invalid --network"), "{output}");
    assert_clean(r);
}

/// Pids of processes whose command line is exactly `args`.
fn processes_running(args: &[&str]) -> Vec<u32> {
    let want: Vec<u8> = args
        .iter()
        .flat_map(|a| [a.as_bytes(), b"\0"].concat())
        .collect();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c == want))
        .collect()
}

/// cgroup directories named `kiln-build/<pid>-*` in any hierarchy.
fn build_cgroups_of(pid: u32) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut bases = vec![PathBuf::from("/sys/fs/cgroup/kiln-build")];
    for entry in std::fs::read_dir("/sys/fs/cgroup").unwrap().flatten() {
        bases.push(entry.path().join("kiln-build"));
    }
    for base in bases {
        for entry in std::fs::read_dir(&base).into_iter().flatten().flatten() {
            if entry
                .file_name()
                .to_string_lossy()
                .starts_with(&format!("{pid}-"))
            {
                found.push(entry.path());
            }
        }
    }
    found
}

#[test]
fn killed_build_leaves_no_container_mount_or_cgroup() {
    if !ready() {
        return;
    }
    let root = root_with_busybox();
    let r = root.path();
    let dir = tempfile::tempdir().unwrap();
    let seconds = format!("{}", 3000 + rand::random::<u16>() % 1000);
    std::fs::write(
        dir.path().join("Dockerfile"),
        format!(
            "FROM busybox:latest\nRUN --mount=type=cache,target=/c --mount=type=tmpfs,target=/t \
             --mount=type=bind,target=/ctx sleep {seconds}\n"
        ),
    )
    .unwrap();
    let mut child = Command::new(kiln_bin())
        .args([
            "--root",
            r.to_str().unwrap(),
            "build",
            "--progress",
            "plain",
        ])
        .arg(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let build_pid = child.id();
    let started = Instant::now();
    while processes_running(&["sleep", &seconds]).is_empty() {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the RUN never started"
        );
        assert!(child.try_wait().unwrap().is_none(), "the build ended early");
        std::thread::sleep(Duration::from_millis(50));
    }
    // The running step's cache mount is in use: prune keeps it.
    let du = kiln_ok(r, &["builder", "du"]);
    assert!(
        du.lines()
            .any(|l| l.contains("exec.cachemount") && l.contains(" false ")),
        "{du}"
    );
    kiln_ok(r, &["builder", "prune", "--all", "-f"]);
    assert_eq!(cache_mount_ids(r).len(), 1);
    child.kill().unwrap();
    child.wait().unwrap();
    // The container dies with the build, before any other kiln command
    // (SIGKILL is delivered at once; its exit is waited for, bounded).
    let started = Instant::now();
    while !processes_running(&["sleep", &seconds]).is_empty() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the RUN container outlived its build"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // The next kiln command cleans the mounts and cgroups it left.
    let next = tempfile::tempdir().unwrap();
    std::fs::write(
        next.path().join("Dockerfile"),
        "FROM busybox:latest\nRUN true\n",
    )
    .unwrap();
    build_ok(r, &[next.path().to_str().unwrap()]);
    assert!(
        build_cgroups_of(build_pid).is_empty(),
        "{:?}",
        build_cgroups_of(build_pid)
    );
    assert!(!r
        .join("cache/run")
        .read_dir()
        .into_iter()
        .flatten()
        .flatten()
        .any(|e| e
            .file_name()
            .to_string_lossy()
            .starts_with(&format!("{build_pid}-"))));
    // Free again once the build is gone.
    kiln_ok(r, &["builder", "prune", "--all", "-f"]);
    assert!(cache_mount_ids(r).is_empty());
    assert_clean(r);
}
