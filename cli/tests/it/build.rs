//! `kiln build` as root: cases from testdata/build built FROM busybox:latest,
//! checked by reading the config and by running the result (a second build
//! FROM it whose RUN steps test files, owners and modes); cache behaviour;
//! a failing RUN; parallel stages and the --jobs bound (overlap from
//! recorded events).
//!
//! Needs: root, overlayfs, cgroups, Debian's busybox-static.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::common::{
    build_case as case, check_in_image, config_of, image_id, is_cached, is_root, kiln, kiln_ok,
    root_with_busybox, skip_or_fail, step_lines,
};

fn ready() -> bool {
    if !is_root() {
        return !skip_or_fail("build tests need root");
    }
    true
}

/// Runs `kiln build` and returns (success, stderr).
fn build(root: &Path, args: &[&str]) -> (bool, String) {
    let mut all = vec!["build"];
    all.extend_from_slice(args);
    let out = kiln(root, &all);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn build_ok(root: &Path, args: &[&str]) -> String {
    let (ok, stderr) = build(root, args);
    assert!(ok, "kiln build {args:?} failed:\n{stderr}");
    stderr
}

fn miss_reason(output: &str, needle: &str) -> Option<String> {
    step_lines(output, needle)
        .iter()
        .find_map(|l| l.split_once(" cache miss: ").map(|(_, r)| r.to_string()))
}

/// No mount of this root (or of anything kiln) is left, and the store is
/// consistent.
fn assert_clean(root: &Path) {
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap();
    let root_text = root.to_string_lossy();
    let stray: Vec<&str> = mounts
        .lines()
        // Other tools' mounts (a peer docker, other tests' roots) are not
        // ours: a build's overlays name this root in their lower/upper dirs.
        .filter(|l| l.contains(root_text.as_ref()))
        .collect();
    assert!(stray.is_empty(), "stray mounts: {stray:?}");
    kiln_ok(root, &["fsck"]);
}

#[test]
fn basic_case_builds_a_docker_compatible_image() {
    if !ready() {
        return;
    }
    let root = root_with_busybox();
    let ctx = case("basic");
    let iid: PathBuf = ctx.path().join("iid");
    let out = build_ok(
        root.path(),
        &[
            "-t",
            "app:1",
            "--iidfile",
            iid.to_str().unwrap(),
            "--label",
            "extra=yes",
            "--progress",
            "plain",
            ctx.path().to_str().unwrap(),
        ],
    );
    assert!(
        out.contains("hello from the context"),
        "RUN output shown:\n{out}"
    );
    let config = config_of(root.path(), "app:1");
    let id = std::fs::read_to_string(&iid).unwrap();
    assert!(id.starts_with("sha256:"));
    let c = &config["config"];
    assert!(c["Env"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e == "GREETING=hi"));
    assert_eq!(c["Cmd"], serde_json::json!(["cat", "/app/version"]));
    assert_eq!(c["WorkingDir"], "/app");
    assert!(c["ExposedPorts"].get("8080/tcp").is_some());
    assert_eq!(c["Labels"]["org.example.case"], "basic");
    assert_eq!(c["Labels"]["extra"], "yes");
    assert_eq!(
        c["Healthcheck"]["Test"],
        serde_json::json!(["CMD-SHELL", "true"])
    );
    assert_eq!(c["Healthcheck"]["Interval"], 30_000_000_000i64);
    let history = config["history"].as_array().unwrap();
    let diff_ids = config["rootfs"]["diff_ids"].as_array().unwrap();
    let layers = history
        .iter()
        .filter(|h| h.get("empty_layer").is_none())
        .count();
    assert_eq!(layers, diff_ids.len(), "one history entry per layer");
    assert!(history.iter().any(|h| h["created_by"]
        .as_str()
        .unwrap_or("")
        .starts_with("RUN |1 VERSION=1 /bin/sh -c echo")));
    assert!(history
        .iter()
        .any(|h| h["created_by"] == "ENV GREETING=hi" && h["empty_layer"] == true));
    check_in_image(
        root.path(),
        "app:1",
        &[
            "test \"$(cat /app/version)\" = 'version 1'",
            "test \"$(cat /app/hello.txt)\" = 'hello from the context'",
            "test -f /app/src/main.rs",
            "test \"$(stat -c %u:%g:%a /owned.txt)\" = 1234:1235:640",
            "test \"$(stat -c %u:%g /app/hello.txt)\" = 0:0",
            "test -f /globbed/hello.txt && test -f /globbed/other.txt",
            "test ! -e /app/debug.log && test ! -e /app/ignored",
            "test \"$GREETING\" = hi && test \"$(pwd)\" = /app",
        ],
    );
    assert_clean(root.path());
}

#[test]
fn cache_rebuilds_only_what_changed() {
    if !ready() {
        return;
    }
    let root = root_with_busybox();
    let ctx = case("basic");
    let dir = ctx.path().to_str().unwrap();
    build_ok(root.path(), &["-t", "app:1", dir]);
    let first_id = image_id(root.path(), "app:1");

    // A fully cached rebuild under the same name writes no metadata: the
    // database and index.json are left as they were.
    let stamp = |name: &str| {
        let meta = std::fs::metadata(root.path().join(name)).unwrap();
        (
            meta.len(),
            std::os::unix::fs::MetadataExt::mtime_nsec(&meta),
            meta.modified().unwrap(),
        )
    };
    let before = (stamp("meta.redb"), stamp("index.json"));
    let again = build_ok(root.path(), &["-t", "app:1", dir]);
    assert_eq!((stamp("meta.redb"), stamp("index.json")), before);
    assert!(
        !again.contains("cache miss"),
        "second build all cached:\n{again}"
    );
    assert!(is_cached(&again, "RUN echo \"version"));
    // A fully cached rebuild is the same image (same config, same id), so
    // re-tagging leaves no untagged image behind.
    assert_eq!(image_id(root.path(), "app:1"), first_id);
    let listing = kiln_ok(root.path(), &["images"]);
    assert!(!listing.contains("<none>"), "{listing}");

    // touch without a change, and a change to an ignored file: cached.
    let hello = ctx.path().join("hello.txt");
    let text = std::fs::read(&hello).unwrap();
    std::fs::write(&hello, &text).unwrap();
    std::fs::write(ctx.path().join("debug.log"), "changed").unwrap();
    std::fs::write(ctx.path().join("ignored/secret.txt"), "changed").unwrap();
    let touched = build_ok(root.path(), &["-t", "app:1", dir]);
    assert!(
        !touched.contains("cache miss"),
        "touch stays cached:\n{touched}"
    );

    // One source file changed: the steps before its COPY stay cached.
    std::fs::write(
        ctx.path().join("src/main.rs"),
        "fn main() { println!(\"v2\"); }\n",
    )
    .unwrap();
    let changed = build_ok(root.path(), &["-t", "app:1", dir]);
    assert!(is_cached(&changed, "COPY hello.txt ./"), "{changed}");
    assert_eq!(
        miss_reason(&changed, "COPY src/ /app/src/").as_deref(),
        Some("src/main.rs changed"),
        "{changed}"
    );
    assert_eq!(
        miss_reason(&changed, "RUN echo \"version").as_deref(),
        Some("previous step changed")
    );

    // A build-arg change: the RUN that reads it rebuilds.
    let arg = build_ok(
        root.path(),
        &["--build-arg", "VERSION=2", "-t", "app:2", dir],
    );
    assert!(is_cached(&arg, "COPY src/ /app/src/"), "{arg}");
    assert_eq!(
        miss_reason(&arg, "RUN echo \"version").as_deref(),
        Some("build-arg VERSION changed"),
        "{arg}"
    );
    check_in_image(
        root.path(),
        "app:2",
        &["test \"$(cat /app/version)\" = 'version 2'"],
    );

    // --no-cache runs everything again.
    let fresh = build_ok(root.path(), &["--no-cache", dir]);
    assert_eq!(
        miss_reason(&fresh, "COPY hello.txt ./").as_deref(),
        Some("--no-cache")
    );
    assert_clean(root.path());
}

#[test]
fn failing_run_shows_exit_code_and_output() {
    if !ready() {
        return;
    }
    let root = root_with_busybox();
    let ctx = case("failing");
    let (ok, stderr) = build(root.path(), &[ctx.path().to_str().unwrap()]);
    assert!(!ok, "the build must fail:\n{stderr}");
    assert!(stderr.contains("exit code: 3"), "{stderr}");
    assert!(stderr.contains("boom-output"), "{stderr}");
    assert!(stderr.contains("------\n > [stage-0 2/3] RUN"), "{stderr}");
    assert!(
        !stderr.contains("never"),
        "later steps do not run:\n{stderr}"
    );
    assert_clean(root.path());
}

#[test]
fn missing_base_image_and_unsupported_flags_fail_clearly() {
    if !ready() {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    // A missing base is pulled; port 1 on loopback refuses, offline.
    std::fs::write(
        dir.path().join("Dockerfile"),
        "FROM 127.0.0.1:1/nothere:1\nRUN true\n",
    )
    .unwrap();
    let (ok, stderr) = build(root.path(), &[dir.path().to_str().unwrap()]);
    assert!(!ok);
    assert!(stderr.contains("pulling 127.0.0.1:1/nothere:1"), "{stderr}");
    let root = root_with_busybox();
    std::fs::write(
        dir.path().join("Dockerfile"),
        "FROM busybox:latest\nRUN --security=insecure true\n",
    )
    .unwrap();
    let (ok, stderr) = build(root.path(), &[dir.path().to_str().unwrap()]);
    assert!(!ok);
    assert!(
        stderr.contains("entitlement security.insecure is not granted"),
        "{stderr}"
    );
    assert_clean(root.path());
}

#[test]
fn independent_stages_run_at_once() {
    if !ready() {
        return;
    }
    let root = root_with_busybox();
    let ctx = case("parallel");
    let out = build_ok(
        root.path(),
        &[
            "--progress",
            "json",
            "--jobs",
            "4",
            "-t",
            "par:1",
            ctx.path().to_str().unwrap(),
        ],
    );
    let events: Vec<Value> = out
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let step_of = |needle: &str| {
        events
            .iter()
            .find(|e| e["event"] == "started" && e["name"].as_str().unwrap().contains(needle))
            .unwrap_or_else(|| panic!("no step {needle}:\n{out}"))["step"]
            .clone()
    };
    let time = |step: &Value, kind: &str| {
        events
            .iter()
            .find(|e| &e["step"] == step && e["event"] == kind)
            .unwrap_or_else(|| panic!("no {kind} for step {step}:\n{out}"))["time"]
            .as_f64()
            .unwrap()
    };
    let left = step_of("echo left");
    let right = step_of("echo right");
    let (ls, ld) = (time(&left, "started"), time(&left, "done"));
    let (rs, rd) = (time(&right, "started"), time(&right, "done"));
    assert!(
        ls < rd && rs < ld,
        "the two sleeps overlap: left {ls}..{ld}, right {rs}..{rd}"
    );
    assert!(
        !out.contains("exit 1"),
        "the unused stage is not built:\n{out}"
    );
    check_in_image(
        root.path(),
        "par:1",
        &["test \"$(cat /out/left)\" = left && test \"$(cat /out/right)\" = right"],
    );
    assert_clean(root.path());
}

/// (started, done) times of the step whose name contains `needle`, from
/// `--progress json` output.
fn span_of(out: &str, needle: &str) -> (f64, f64) {
    let events: Vec<Value> = out
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let step = events
        .iter()
        .find(|e| e["event"] == "started" && e["name"].as_str().unwrap().contains(needle))
        .unwrap_or_else(|| panic!("no step {needle}:\n{out}"))["step"]
        .clone();
    let time = |kind: &str| {
        events
            .iter()
            .find(|e| e["step"] == step && e["event"] == kind)
            .unwrap_or_else(|| panic!("no {kind} for step {needle}:\n{out}"))["time"]
            .as_f64()
            .unwrap()
    };
    (time("started"), time("done"))
}

#[test]
fn jobs_bounds_busy_steps_and_idle_ones_let_others_run() {
    if !ready() {
        return;
    }
    let root = root_with_busybox();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("Dockerfile"),
        "FROM busybox:latest AS idle1\nRUN sleep 2 && echo idle1 > /out\n\
         FROM busybox:latest AS idle2\nRUN sleep 2 && echo idle2 > /out\n\
         FROM busybox:latest AS busy1\n\
         RUN timeout 1 sh -c 'while :; do :; done'; echo busy1 > /out\n\
         FROM busybox:latest AS busy2\n\
         RUN timeout 1 sh -c 'while :; do :; done'; echo busy2 > /out\n\
         FROM busybox:latest\n\
         COPY --from=idle1 /out /idle1\nCOPY --from=idle2 /out /idle2\n\
         COPY --from=busy1 /out /busy1\nCOPY --from=busy2 /out /busy2\n",
    )
    .unwrap();
    let out = build_ok(
        root.path(),
        &[
            "--progress",
            "json",
            "--jobs",
            "1",
            "-t",
            "jobs:1",
            dir.path().to_str().unwrap(),
        ],
    );
    // A sleeping RUN gives its slot back: the other one starts meanwhile.
    let (a_start, a_done) = span_of(&out, "echo idle1");
    let (b_start, b_done) = span_of(&out, "echo idle2");
    assert!(
        a_start < b_done && b_start < a_done,
        "with --jobs 1 the two sleeps overlap: {a_start}..{a_done}, {b_start}..{b_done}\n{out}"
    );
    // Busy ones keep it: one after the other.
    let (c_start, c_done) = span_of(&out, "echo busy1");
    let (d_start, d_done) = span_of(&out, "echo busy2");
    assert!(
        c_done <= d_start || d_done <= c_start,
        "with --jobs 1 the two busy loops do not overlap: {c_start}..{c_done}, {d_start}..{d_done}\n{out}"
    );
    check_in_image(
        root.path(),
        "jobs:1",
        &["test \"$(cat /idle1 /idle2 /busy1 /busy2)\" = \"$(printf 'idle1\\nidle2\\nbusy1\\nbusy2')\""],
    );
    assert_clean(root.path());
}

#[test]
fn source_date_epoch_gives_the_same_image_on_two_roots() {
    if !ready() {
        return;
    }
    let mut ids = Vec::new();
    for _ in 0..2 {
        let root = root_with_busybox();
        // A fresh copy each time: other mtimes, same content.
        let ctx = case("basic");
        let iid = ctx.path().join("iid");
        let out = std::process::Command::new(crate::common::kiln_bin())
            .arg("--root")
            .arg(root.path())
            .args([
                "build",
                "--iidfile",
                iid.to_str().unwrap(),
                ctx.path().to_str().unwrap(),
            ])
            .env("SOURCE_DATE_EPOCH", "1700000000")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        ids.push(std::fs::read_to_string(&iid).unwrap());
        let config = config_of(root.path(), ids.last().unwrap());
        assert_eq!(config["created"], "2023-11-14T22:13:20Z");
        assert_clean(root.path());
        std::thread::sleep(std::time::Duration::from_millis(1100));
    }
    assert_eq!(ids[0], ids[1]);
}

#[test]
fn two_builds_at_once_share_the_store() {
    if !ready() {
        return;
    }
    let root = root_with_busybox();
    let contexts = [case("basic"), case("basic")];
    let children: Vec<std::process::Child> = contexts
        .iter()
        .enumerate()
        .map(|(i, ctx)| {
            std::process::Command::new(crate::common::kiln_bin())
                .arg("--root")
                .arg(root.path())
                .args([
                    "build",
                    "-t",
                    &format!("same:{i}"),
                    ctx.path().to_str().unwrap(),
                ])
                .stderr(std::process::Stdio::piped())
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
    // Both results are usable and the cache holds for a third build.
    check_in_image(
        root.path(),
        "same:1",
        &["test \"$(cat /app/version)\" = 'version 1'"],
    );
    let again = build_ok(root.path(), &[contexts[0].path().to_str().unwrap()]);
    assert!(!again.contains("cache miss"), "{again}");
    assert_clean(root.path());
}

#[test]
fn run_as_user_deletions_and_stage_copies() {
    if !ready() {
        return;
    }
    let root = root_with_busybox();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("Dockerfile"),
        "FROM busybox:latest AS base\n\
         RUN rm /bin/vi && mkdir -p /data/sub && echo x > /data/sub/file\n\
         USER www-data\n\
         RUN test \"$(id -u):$(id -g)\" = 33:33\n\
         USER root\n\
         WORKDIR /made/by/workdir\n\
         RUN test \"$(pwd)\" = /made/by/workdir\n\
         FROM base\n\
         COPY --from=base /data /copied\n\
         RUN test ! -e /bin/vi && test \"$(cat /copied/sub/file)\" = x\n",
    )
    .unwrap();
    build_ok(
        root.path(),
        &["-t", "steps:1", dir.path().to_str().unwrap()],
    );
    check_in_image(
        root.path(),
        "steps:1",
        &["test ! -e /bin/vi && test -d /made/by/workdir && test -f /copied/sub/file"],
    );
    assert_clean(root.path());
}
