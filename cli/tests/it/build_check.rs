//! `kiln build --check` and `--print-graph`: golden files under
//! testdata/dockerfile/check/ (`UPDATE_GOLDEN=1` rewrites them).

use std::path::{Path, PathBuf};

use crate::common::kiln;

fn testdata() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../testdata/dockerfile"
    ))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn check_golden_cases() {
    let root = tempfile::tempdir().expect("temp root");
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(testdata().join("check"))
        .expect("reading testdata/dockerfile/check")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.join("Dockerfile").is_file())
        .collect();
    dirs.sort();
    assert!(dirs.len() >= 5);
    let mut failures = Vec::new();
    for dir in dirs {
        let out = kiln(
            root.path(),
            &["build", "--check", dir.to_str().expect("utf-8 path")],
        );
        let got = format!(
            "exit: {}\n--- stdout\n{}--- stderr\n{}",
            out.status.code().unwrap_or(-1),
            text(&out.stdout),
            text(&out.stderr)
        );
        let path = dir.join("expected");
        if std::env::var_os("UPDATE_GOLDEN").is_some() {
            std::fs::write(&path, &got).expect("writing golden file");
            continue;
        }
        let expected = std::fs::read_to_string(&path).unwrap_or_default();
        if expected != got {
            failures.push(format!(
                "{}:\n--- expected\n{expected}--- got\n{got}",
                path.display()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

fn context(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp context");
    for (name, body) in files {
        let path = dir.path().join(name);
        std::fs::create_dir_all(path.parent().expect("has parent")).expect("mkdir");
        std::fs::write(path, body).expect("writing context file");
    }
    dir
}

fn ctx_arg(dir: &Path) -> &str {
    dir.to_str().expect("utf-8 path")
}

#[test]
fn build_pulls_a_missing_base_image_and_says_why_it_failed() {
    let root = tempfile::tempdir().expect("temp root");
    // Port 1 on loopback refuses connections: the pull fails at once.
    let ctx = context(&[("Dockerfile", "FROM 127.0.0.1:1/nothing:v1\n")]);
    let out = kiln(root.path(), &["build", ctx_arg(ctx.path())]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("Unable to find image '127.0.0.1:1/nothing:v1' locally"),
        "{stderr}"
    );
    assert!(
        stderr.contains("reading the config of base image 127.0.0.1:1/nothing:v1"),
        "{stderr}"
    );
    assert!(
        stderr.contains("pulling 127.0.0.1:1/nothing:v1"),
        "{stderr}"
    );
}

#[test]
fn print_graph_dot_and_json() {
    let root = tempfile::tempdir().expect("temp root");
    let df = "ARG V=1\nFROM alpine AS build\nARG V\nRUN echo $V > /v\nFROM scratch AS unused\nFROM scratch\nCOPY --from=build /v /v\n";
    let ctx = context(&[("Dockerfile", df)]);
    let out = kiln(
        root.path(),
        &["build", "--print-graph", "dot", ctx_arg(ctx.path())],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let dot = text(&out.stdout);
    assert!(
        dot.starts_with("digraph build {") && dot.contains("-> n"),
        "{dot}"
    );
    assert!(
        !dot.contains("unused"),
        "stages the target does not need are left out"
    );

    let out = kiln(
        root.path(),
        &[
            "build",
            "--print-graph",
            "json",
            "--build-arg",
            "V=7",
            "--platform",
            "linux/arm64",
            ctx_arg(ctx.path()),
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("valid JSON");
    let nodes = json["nodes"].as_array().expect("nodes");
    let exec = nodes
        .iter()
        .find(|n| n["op"]["type"] == "exec")
        .expect("an exec node");
    assert!(exec["op"]["env"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e == "V=7"));
    assert_eq!(exec["op"]["platform"]["architecture"], "arm64");
}

#[test]
fn target_file_and_dockerignore() {
    let root = tempfile::tempdir().expect("temp root");
    let ctx = context(&[
        (
            "build/app.Dockerfile",
            "FROM alpine AS base\nCOPY . /src\nFROM base AS test\nRUN make test\n",
        ),
        ("build/app.Dockerfile.dockerignore", "*.md\n!README.md\n"),
        (".dockerignore", "ignored-because-the-specific-file-wins\n"),
    ]);
    let file = ctx.path().join("build/app.Dockerfile");
    let args = [
        "build",
        "--print-graph",
        "json",
        "-f",
        file.to_str().unwrap(),
        "--target",
        "base",
        ctx_arg(ctx.path()),
    ];
    let out = kiln(root.path(), &args);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("valid JSON");
    assert_eq!(json["target"], 0);
    let context_node = json["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["op"]["type"] == "context")
        .unwrap();
    assert_eq!(
        context_node["op"]["exclude"],
        serde_json::json!(["*.md", "!README.md"])
    );

    let out = kiln(
        root.path(),
        &[
            "build",
            "--check",
            "--target",
            "tset",
            "-f",
            file.to_str().unwrap(),
            ctx_arg(ctx.path()),
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("did you mean test?"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn base_image_config_comes_from_the_store() {
    let root = tempfile::tempdir().unwrap();
    crate::common::kiln_ok(
        root.path(),
        &[
            "import",
            "--change",
            "ENV FROM_BASE=yes",
            crate::common::busybox_tar().to_str().unwrap(),
            "base:latest",
        ],
    );
    let ctx = tempfile::tempdir().unwrap();
    std::fs::write(
        ctx.path().join("Dockerfile"),
        "FROM base\nRUN echo $FROM_BASE\n",
    )
    .unwrap();
    let graph = crate::common::kiln_ok(
        root.path(),
        &[
            "build",
            "--print-graph",
            "json",
            ctx.path().to_str().unwrap(),
        ],
    );
    assert!(
        graph.contains("FROM_BASE=yes"),
        "base ENV missing from the RUN op:\n{graph}"
    );
}
