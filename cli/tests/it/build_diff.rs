//! Differential tests: every case directory in testdata/build/ is built by
//! `kiln build` and by `docker build --no-cache` (BuildKit) FROM the same
//! busybox:latest, and the two images are compared: the config fields a
//! Dockerfile sets, the history, the layer count, and the final file tree
//! (names, types, modes, owners, content digests, symlink targets, xattrs,
//! and the mtimes that do not depend on when the build ran: an mtime both
//! builders set after the case's newest source file is a build time and not
//! compared).
//!
//! Cases are found by listing the directory, so new ones are compared
//! without touching this file. A case directory may hold:
//! - `.nodiff`: not compared; the file says why (printed).
//! - `build-args`: one `KEY=VALUE` a line (`#` comments), passed as
//!   `--build-arg` to both builders.
//! - `build-target`: a stage name, passed as `--target` to both.
//! - `diff-ignore-content`: absolute paths (one a line, `#` comments) whose
//!   content is stateful by design (e.g. counted through a cache mount that
//!   persists in the shared Docker engine); their type, mode and owner are
//!   still compared.
//!
//! A case that fails to build with both builders agrees; one that fails with
//! only one of them is a difference. Every difference is listed (case,
//! field or path, kiln's value, docker's value) and the test fails; the
//! deliberate ones are normalized away by [`ALLOWED`], each with its reason.
//!
//! Needs: root, a Docker engine with BuildKit (`DOCKER_HOST`, as
//! ../shared/peers/dockerd.sh exports it; /usr/bin/docker). Without an
//! engine the test skips outside CI and fails under CI=true.

use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value;
use sha2::{Digest as _, Sha256};

use crate::common::{busybox_tar, is_root, kiln, kiln_ok, project_dir, skip_or_fail};

/// Differences this peer shows that are not normalizations: kiln follows
/// current BuildKit where Docker 20.10's BuildKit 0.8 differs, and one
/// open kiln difference. Listed (case, text of the difference, why) so the
/// test names them on every run without failing; a listed difference that
/// no longer shows up fails the test, so the list stays true.
const KNOWN: &[(&str, &str, &str)] = &[
    (
        "add-archive",
        "/chowned/",
        "ADD --chown of a local archive: Docker 20.10 (BuildKit 0.8) keeps the archive's owners; \
         kiln applies --chown as current BuildKit does",
    ),
    (
        "add-archive",
        "/zstd",
        "a zstd archive: Docker 20.10 does not recognise zstd and copies the file; kiln (like \
         current BuildKit) unpacks it",
    ),
    (
        "add-hostile",
        "only docker fails",
        "an archive writing through an absolute symlink: docker unpacks in a chroot at the \
         destination and fails when the link's target directory is missing there; kiln keeps the \
         write inside the destination and succeeds",
    ),
    (
        "mount-cache",
        "/var/cache",
        "a missing RUN --mount target directory: Docker 20.10 (BuildKit 0.8) leaves the mount \
     point it made in the layer; kiln removes mount stubs after the step as current BuildKit \
     does (its executor cleans them up)",
    ),
];

/// The docker client that builds with BuildKit when `DOCKER_BUILDKIT=1`
/// (Debian's docker.io; a newer client elsewhere on PATH wants buildx).
const DOCKER: &str = "/usr/bin/docker";

/// Differences that are deliberate, each normalized away before comparing.
/// (what differs, why kiln keeps it.)
const ALLOWED: &[(&str, &str)] = &[
    (
        "history created_by of EXPOSE: `EXPOSE map[80/tcp:{}]` (docker) vs `EXPOSE [80/tcp]` (kiln)",
        "the peer here is Docker 20.10 (BuildKit 0.8), which prints the port set as a Go map; \
         current BuildKit prints the expanded ports as a list, as kiln does. Same ports compared.",
    ),
    (
        "history created_by of ARG with a --build-arg: `ARG K=default` (docker) vs `ARG K=value` \
         (kiln)",
        "Docker 20.10 (BuildKit 0.8) records the Dockerfile's default; current BuildKit records \
         the value the build used, as kiln does. Compared by key for the keys build-args sets.",
    ),
    (
        "history created_by of HEALTHCHECK: one duration fewer in docker's text",
        "Docker 20.10's health config has no StartInterval; current BuildKit prints it, as kiln \
         does. Compared with kiln's start interval removed.",
    ),
    (
        "mtimes that both builders set after the case's newest source file (directories a \
         step made or changed, what RUN wrote, what COPY --from copied from a stage's RUN)",
        "they are the time a step ran (BuildKit may even reuse an earlier run's WORKDIR \
         result under --no-cache), different on every build; an mtime from the base image or \
         a context file is compared.",
    ),
    (
        "docker layers holding nothing but the /etc directory entry (kiln: no layer, \
         empty_layer true)",
        "BuildKit's RUN creates and removes mount points for /etc/hosts and /etc/resolv.conf \
         when the image lacks them, which leaves /etc's new mtime as a layer even when the \
         command wrote nothing; such layers are dropped from docker's image (and its history \
         entry marked empty) before comparing.",
    ),
    (
        "mtimes of directories a RUN step wrote (e.g. /etc: docker's is the build time, kiln's \
         the base image's)",
        "BuildKit creates mount points for /etc/hosts and /etc/resolv.conf in the rootfs when \
         the image lacks them and removes them after the step, which touches their directory; \
         kiln mounts without touching the image.",
    ),
];

fn docker() -> Command {
    let mut cmd = Command::new(DOCKER);
    cmd.env("DOCKER_BUILDKIT", "1");
    cmd
}

/// Why the Docker engine cannot be used, if it cannot.
fn engine_missing() -> Option<String> {
    if std::env::var_os("DOCKER_HOST").is_none() {
        return Some(
            "DOCKER_HOST is not set (eval \"$(../shared/peers/dockerd.sh)\" starts an engine)"
                .into(),
        );
    }
    if !Path::new(DOCKER).is_file() {
        return Some(format!("{DOCKER} is missing (Debian's docker.io)"));
    }
    match docker()
        .args(["info", "--format", "{{.ServerVersion}}"])
        .output()
    {
        Ok(out) if out.status.success() => None,
        Ok(out) => Some(format!(
            "the Docker engine at DOCKER_HOST does not answer: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        Err(e) => Some(format!("running {DOCKER}: {e}")),
    }
}

/// One case directory and what it asks for.
struct Case {
    name: String,
    dir: PathBuf,
    build_args: Vec<String>,
    target: Option<String>,
    ignore_content: Vec<String>,
}

/// The case directories of testdata/build, sorted; `.nodiff` ones are
/// listed with their reason instead.
fn cases() -> (Vec<Case>, Vec<(String, String)>) {
    let top = project_dir().join("testdata/build");
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&top)
        .expect("reading testdata/build")
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    let mut found = Vec::new();
    let mut skipped = Vec::new();
    for dir in dirs {
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        if let Ok(reason) = std::fs::read_to_string(dir.join(".nodiff")) {
            let reason = match reason.trim() {
                "" => "no reason given in the file".to_string(),
                r => r.to_string(),
            };
            skipped.push((name, reason));
            continue;
        }
        let lines = |file: &str| -> Vec<String> {
            std::fs::read_to_string(dir.join(file))
                .unwrap_or_default()
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(String::from)
                .collect()
        };
        let build_args = lines("build-args");
        let target = lines("build-target").into_iter().next();
        let ignore_content = lines("diff-ignore-content");
        found.push(Case {
            name,
            dir,
            build_args,
            target,
            ignore_content,
        });
    }
    (found, skipped)
}

/// The arguments both builders get besides the tag and the context.
fn common_args(case: &Case) -> Vec<String> {
    let mut args = Vec::new();
    for a in &case.build_args {
        args.push("--build-arg".to_string());
        args.push(a.clone());
    }
    if let Some(t) = &case.target {
        args.push("--target".to_string());
        args.push(t.clone());
    }
    args
}

/// Last lines of a build's output, for a difference report.
fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(8)..].join("\n    ")
}

/// Where the test keeps the kiln side and the docker tags to remove.
struct Session {
    root: tempfile::TempDir,
    tags: Vec<String>,
}

impl Drop for Session {
    fn drop(&mut self) {
        for tag in &self.tags {
            let _ = docker().args(["rmi", "-f", tag]).output();
        }
    }
}

/// A kiln root with busybox:latest (deterministic id: SOURCE_DATE_EPOCH=0,
/// so every run and every test process gives docker the same image), and
/// the same image loaded into docker as busybox:latest.
fn session() -> Session {
    let root = tempfile::tempdir().unwrap();
    let out = Command::new(crate::common::kiln_bin())
        .arg("--root")
        .arg(root.path())
        .args(["import", busybox_tar().to_str().unwrap(), "busybox:latest"])
        .env("SOURCE_DATE_EPOCH", "0")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "kiln import: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let archive = root.path().join("busybox-for-docker.tar");
    kiln_ok(
        root.path(),
        &["save", "-o", archive.to_str().unwrap(), "busybox:latest"],
    );
    let out = docker()
        .args(["load", "-i"])
        .arg(&archive)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "docker load of kiln's busybox: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::remove_file(&archive).unwrap();
    Session {
        root,
        tags: Vec::new(),
    }
}

/// An image's config JSON and its layers' bytes (decompressed), read from
/// the kiln store.
struct Image {
    config: Value,
    layers: Vec<Vec<u8>>,
}

fn blob(root: &Path, digest: &str) -> Vec<u8> {
    let hex = digest.trim_start_matches("sha256:");
    std::fs::read(root.join("blobs/sha256").join(hex))
        .unwrap_or_else(|e| panic!("reading blob {digest}: {e}"))
}

fn decompress(bytes: Vec<u8>) -> Vec<u8> {
    let mut out = Vec::new();
    if bytes.starts_with(&[0x1f, 0x8b]) {
        flate2::read::GzDecoder::new(&bytes[..])
            .read_to_end(&mut out)
            .unwrap();
    } else if bytes.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        zstd::stream::read::Decoder::new(&bytes[..])
            .unwrap()
            .read_to_end(&mut out)
            .unwrap();
    } else {
        return bytes;
    }
    out
}

fn image(root: &Path, name: &str) -> Image {
    let records: Value = serde_json::from_str(&kiln_ok(root, &["inspect", name])).unwrap();
    let record = &records[0];
    let config = serde_json::from_slice(&blob(root, record["Id"].as_str().unwrap())).unwrap();
    let layers = record["Layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| decompress(blob(root, l["digest"].as_str().unwrap())))
        .collect();
    Image { config, layers }
}

/// One path of a flattened image.
#[derive(Debug, Clone, PartialEq)]
struct Node {
    /// `file sha256:...`, `dir`, `symlink -> target`, `char 1:3`, ...
    kind: String,
    mode: u32,
    uid: u64,
    gid: u64,
    mtime: u64,
    xattrs: BTreeMap<String, Vec<u8>>,
    /// Index of the layer that wrote it last.
    layer: usize,
}

fn clean(path: &[u8]) -> String {
    let text = String::from_utf8_lossy(path);
    let trimmed = text.trim_start_matches("./").trim_matches('/');
    format!("/{trimmed}")
}

fn parent_of(path: &str) -> &str {
    match path.rfind('/') {
        Some(0) | None => "/",
        Some(i) => &path[..i],
    }
}

fn is_under(path: &str, dir: &str) -> bool {
    if dir == "/" {
        return path != "/";
    }
    path.strip_prefix(dir).is_some_and(|r| r.starts_with('/'))
}

/// The file tree the layers make, whiteouts applied (OCI image-spec
/// layer.md: `.wh.NAME` deletes NAME of lower layers, `.wh..wh..opq` empties
/// its directory of lower layers' entries).
fn flatten(layers: &[Vec<u8>]) -> BTreeMap<String, Node> {
    let mut tree: BTreeMap<String, Node> = BTreeMap::new();
    for (index, bytes) in layers.iter().enumerate() {
        let mut added: Vec<(String, Node)> = Vec::new();
        let mut deleted: Vec<String> = Vec::new();
        let mut opaque: Vec<String> = Vec::new();
        let mut archive = tar::Archive::new(&bytes[..]);
        for entry in archive.entries().expect("a layer is a tar") {
            let mut entry = entry.expect("a layer entry reads");
            let path = clean(&entry.path_bytes());
            let name = path.rsplit('/').next().unwrap_or("").to_string();
            if name == ".wh..wh..opq" {
                opaque.push(parent_of(&path).to_string());
                continue;
            }
            if let Some(hidden) = name.strip_prefix(".wh.") {
                let dir = parent_of(&path);
                deleted.push(if dir == "/" {
                    format!("/{hidden}")
                } else {
                    format!("{dir}/{hidden}")
                });
                continue;
            }
            let header = entry.header().clone();
            let mut xattrs = BTreeMap::new();
            if let Ok(Some(pax)) = entry.pax_extensions() {
                for ext in pax.flatten() {
                    if let Some(key) = ext.key().ok().and_then(|k| k.strip_prefix("SCHILY.xattr."))
                    {
                        xattrs.insert(key.to_string(), ext.value_bytes().to_vec());
                    }
                }
            }
            let link = entry
                .link_name_bytes()
                .map(|l| String::from_utf8_lossy(&l).into_owned())
                .unwrap_or_default();
            let kind = match header.entry_type() {
                tar::EntryType::Regular | tar::EntryType::Continuous => {
                    let mut data = Vec::new();
                    entry.read_to_end(&mut data).unwrap();
                    format!("file sha256:{}", hex::encode(Sha256::digest(&data)))
                }
                // A hard link has its target's content (in this layer or an
                // earlier entry of it): the tree compares content, not links.
                tar::EntryType::Link => {
                    let target = clean(link.as_bytes());
                    added
                        .iter()
                        .rev()
                        .find(|(p, _)| *p == target)
                        .map(|(_, n)| n.kind.clone())
                        .or_else(|| tree.get(&target).map(|n| n.kind.clone()))
                        .unwrap_or_else(|| format!("hardlink to missing {target}"))
                }
                tar::EntryType::Directory => "dir".to_string(),
                tar::EntryType::Symlink => format!("symlink -> {link}"),
                tar::EntryType::Char => format!(
                    "char {}:{}",
                    header.device_major().ok().flatten().unwrap_or(0),
                    header.device_minor().ok().flatten().unwrap_or(0)
                ),
                tar::EntryType::Block => format!(
                    "block {}:{}",
                    header.device_major().ok().flatten().unwrap_or(0),
                    header.device_minor().ok().flatten().unwrap_or(0)
                ),
                tar::EntryType::Fifo => "fifo".to_string(),
                other => format!("{other:?}"),
            };
            added.push((
                path,
                Node {
                    kind,
                    mode: header.mode().unwrap_or(0) & 0o7777,
                    uid: header.uid().unwrap_or(0),
                    gid: header.gid().unwrap_or(0),
                    mtime: header.mtime().unwrap_or(0),
                    xattrs,
                    layer: index,
                },
            ));
        }
        for dir in &opaque {
            tree.retain(|p, _| !is_under(p, dir));
        }
        for gone in &deleted {
            tree.retain(|p, _| p != gone && !is_under(p, gone));
        }
        for (path, node) in added {
            // A non-directory replacing a directory hides what was under it.
            if node.kind != "dir" {
                tree.retain(|p, _| !is_under(p, &path));
            }
            tree.insert(path, node);
        }
    }
    tree
}

/// For each layer, the `created_by` of the history entry that made it.
fn layer_steps(config: &Value) -> Vec<String> {
    config["history"]
        .as_array()
        .map(|h| {
            h.iter()
                .filter(|e| !e["empty_layer"].as_bool().unwrap_or(false))
                .map(|e| e["created_by"].as_str().unwrap_or("").to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// True when `node` is a directory that a RUN step wrote last.
fn dir_from_run(node: &Node, steps: &[String]) -> bool {
    node.kind == "dir" && steps.get(node.layer).is_some_and(|s| s.starts_with("RUN "))
}

/// True when an absent, null, empty list or empty map value.
fn is_blank(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        Value::String(s) => s.is_empty(),
        _ => false,
    }
}

/// The config fields a Dockerfile sets.
const CONFIG_FIELDS: &[&str] = &[
    "Env",
    "Cmd",
    "Entrypoint",
    "WorkingDir",
    "User",
    "Labels",
    "ExposedPorts",
    "Volumes",
    "StopSignal",
    "Healthcheck",
    "Shell",
    "OnBuild",
    "ArgsEscaped",
];

/// Docker 20.10's `EXPOSE map[80/tcp:{} 53/udp:{}]` as the sorted ports.
fn expose_ports(text: &str) -> Option<Vec<String>> {
    let rest = text.strip_prefix("EXPOSE ")?;
    let inner = rest
        .strip_prefix("map[")
        .or_else(|| rest.strip_prefix('['))?
        .strip_suffix(']')?;
    let mut ports: Vec<String> = inner
        .split_whitespace()
        .map(|p| p.trim_end_matches(":{}").to_string())
        .collect();
    ports.sort();
    ports.dedup();
    Some(ports)
}

/// Kiln's HEALTHCHECK text without its start interval (the last quoted
/// duration), as Docker 20.10 writes it.
fn without_start_interval(text: &str) -> Option<String> {
    let end = text.rfind(" '\\x")?;
    let start = text[..end].rfind(" \"")?;
    Some(format!("{}{}", &text[..start], &text[end..]))
}

/// Whether two `ARG` history texts agree, keys in `overridden` (set by
/// --build-arg) compared by key only.
fn same_arg(kiln: &str, docker: &str, overridden: &[String]) -> bool {
    let (Some(k), Some(d)) = (kiln.strip_prefix("ARG "), docker.strip_prefix("ARG ")) else {
        return false;
    };
    let (k, d): (Vec<&str>, Vec<&str>) = (k.split(' ').collect(), d.split(' ').collect());
    k.len() == d.len()
        && k.iter().zip(&d).all(|(k, d)| {
            let key = k.split('=').next().unwrap_or("");
            k == d || (overridden.iter().any(|o| o == key) && d.split('=').next() == Some(key))
        })
}

/// Whether two `created_by` texts agree, after [`ALLOWED`]; `overridden`
/// are the ARG names the case's build-args set.
fn same_step(kiln: &str, docker: &str, overridden: &[String]) -> bool {
    if kiln == docker {
        return true;
    }
    if kiln.starts_with("ARG ") {
        return same_arg(kiln, docker, overridden);
    }
    if let (Some(k), Some(d)) = (expose_ports(kiln), expose_ports(docker)) {
        return k == d;
    }
    if kiln.starts_with("HEALTHCHECK ") {
        return without_start_interval(kiln).as_deref() == Some(docker);
    }
    false
}

/// Pairs of indexes of `a` and `b` matched by a longest common
/// subsequence under `same`; unmatched entries are paired with `None`.
fn align<T>(
    a: &[T],
    b: &[T],
    same: impl Fn(&T, &T) -> bool,
) -> Vec<(Option<usize>, Option<usize>)> {
    let (n, m) = (a.len(), b.len());
    let mut lcs = vec![vec![0usize; m + 1]; n + 1];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            lcs[i][j] = if same(&a[i], &b[j]) {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let (mut i, mut j, mut out) = (0, 0, Vec::new());
    while i < n || j < m {
        if i < n && j < m && same(&a[i], &b[j]) {
            out.push((Some(i), Some(j)));
            i += 1;
            j += 1;
        } else if j == m || (i < n && lcs[i + 1][j] >= lcs[i][j + 1]) {
            out.push((Some(i), None));
            i += 1;
        } else {
            out.push((None, Some(j)));
            j += 1;
        }
    }
    out
}

fn compare_config(kiln: &Value, docker: &Value, overridden: &[String], diffs: &mut Vec<String>) {
    for field in CONFIG_FIELDS {
        let k = &kiln["config"][field];
        let d = &docker["config"][field];
        if k != d && !(is_blank(k) && is_blank(d)) {
            diffs.push(format!("config {field}: kiln {k} vs docker {d}"));
        }
    }
    let empty = Vec::new();
    let kh = kiln["history"].as_array().unwrap_or(&empty);
    let dh = docker["history"].as_array().unwrap_or(&empty);
    if kh.len() != dh.len() {
        diffs.push(format!(
            "history count: kiln {} vs docker {}",
            kh.len(),
            dh.len()
        ));
    }
    let created_by = |v: &Value| v["created_by"].as_str().unwrap_or("").to_string();
    let pairs = align(kh, dh, |k, d| {
        same_step(&created_by(k), &created_by(d), overridden)
    });
    for pair in pairs {
        match pair {
            (Some(i), Some(j)) => {
                let ke = kh[i]["empty_layer"].as_bool().unwrap_or(false);
                let de = dh[j]["empty_layer"].as_bool().unwrap_or(false);
                if ke != de {
                    diffs.push(format!(
                        "history {:?} empty_layer: kiln {ke} vs docker {de}",
                        created_by(&kh[i])
                    ));
                }
            }
            (Some(i), None) => diffs.push(format!(
                "history entry only kiln has (kiln [{i}]): {:?}",
                created_by(&kh[i])
            )),
            (None, Some(j)) => diffs.push(format!(
                "history entry only docker has (docker [{j}]): {:?}",
                created_by(&dh[j])
            )),
            (None, None) => {}
        }
    }
    let count = |v: &Value| v["rootfs"]["diff_ids"].as_array().map_or(0, Vec::len);
    if count(kiln) != count(docker) {
        diffs.push(format!(
            "rootfs diff_ids count: kiln {} vs docker {}",
            count(kiln),
            count(docker)
        ));
    }
}

/// The newest mtime of anything under `dir` (seconds): later mtimes in
/// an image are build times.
fn newest_mtime(dir: &Path) -> u64 {
    let mut newest = 0;
    let meta = std::fs::symlink_metadata(dir).unwrap();
    newest = newest.max(meta.mtime() as u64);
    if meta.is_dir() {
        for entry in std::fs::read_dir(dir).unwrap() {
            newest = newest.max(newest_mtime(&entry.unwrap().path()));
        }
    }
    newest
}

/// Whether an mtime is from the last day: a directory a step made (WORKDIR,
/// a COPY destination) gets the build's time, and BuildKit may reuse an
/// earlier build's result for it even under --no-cache, so its time can be
/// older than this checkout of the case while still being a build time.
fn recent(mtime: u64) -> bool {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    mtime + 86_400 > now
}

/// Whether an mtime is a build time: after the case's newest source file.
fn during_run(mtime: u64, newest: u64) -> bool {
    mtime > newest
}

/// True when a layer holds only the `etc/` directory entry: what
/// BuildKit's RUN leaves after removing its /etc/hosts and
/// /etc/resolv.conf mount points from an image that lacks them.
fn only_etc_dir(layer: &[u8]) -> bool {
    let mut archive = tar::Archive::new(layer);
    let mut paths = Vec::new();
    for entry in archive.entries().expect("a layer is a tar") {
        let entry = entry.expect("a layer entry reads");
        paths.push((clean(&entry.path_bytes()), entry.header().entry_type()));
    }
    paths == [("/etc".to_string(), tar::EntryType::Directory)]
}

/// Drops docker's /etc-only RUN layers (see [`ALLOWED`]) and marks their
/// history entries empty.
fn drop_mount_point_layers(image: &mut Image) {
    let mut layer = 0;
    let mut keep = Vec::new();
    let history = image.config["history"].as_array_mut();
    let Some(history) = history else { return };
    for entry in history.iter_mut() {
        if entry["empty_layer"].as_bool().unwrap_or(false) {
            continue;
        }
        let step = entry["created_by"].as_str().unwrap_or("");
        let drop =
            step.starts_with("RUN ") && image.layers.get(layer).is_some_and(|l| only_etc_dir(l));
        if drop {
            entry["empty_layer"] = Value::Bool(true);
        }
        keep.push(!drop);
        layer += 1;
    }
    let mut flags = keep.iter();
    image.layers.retain(|_| *flags.next().unwrap_or(&true));
    if let Some(ids) = image.config["rootfs"]["diff_ids"].as_array_mut() {
        let mut flags = keep.iter();
        ids.retain(|_| *flags.next().unwrap_or(&true));
    }
}

fn show(node: Option<&Node>) -> String {
    match node {
        None => "absent".to_string(),
        Some(n) => format!(
            "{} mode {:o} uid {} gid {} mtime {}{}",
            n.kind,
            n.mode,
            n.uid,
            n.gid,
            n.mtime,
            if n.xattrs.is_empty() {
                String::new()
            } else {
                format!(" xattrs {:?}", n.xattrs.keys().collect::<Vec<_>>())
            }
        ),
    }
}

fn compare_trees(
    kiln: &Image,
    docker: &Image,
    newest: u64,
    ignore_content: &[String],
    diffs: &mut Vec<String>,
) {
    let kt = flatten(&kiln.layers);
    let dt = flatten(&docker.layers);
    let ks = layer_steps(&kiln.config);
    let ds = layer_steps(&docker.config);
    let mut paths: Vec<&String> = kt.keys().chain(dt.keys()).collect();
    paths.sort();
    paths.dedup();
    for path in paths {
        let (k, d) = (kt.get(path), dt.get(path));
        let differs = match (k, d) {
            (Some(k), Some(d)) if ignore_content.contains(path) => {
                let kind = |n: &Node| n.kind.split(' ').next().unwrap_or("").to_string();
                kind(k) != kind(d) || k.mode != d.mode || k.uid != d.uid || k.gid != d.gid
            }
            (Some(k), Some(d)) => {
                let mtimes = k.mtime == d.mtime
                    || (during_run(k.mtime, newest) && during_run(d.mtime, newest))
                    || dir_from_run(k, &ks)
                    || dir_from_run(d, &ds)
                    || (k.kind.starts_with("dir")
                        && d.kind.starts_with("dir")
                        && recent(k.mtime)
                        && recent(d.mtime));
                k.kind != d.kind
                    || k.mode != d.mode
                    || k.uid != d.uid
                    || k.gid != d.gid
                    || k.xattrs != d.xattrs
                    || !mtimes
            }
            _ => true,
        };
        if differs {
            diffs.push(format!("{path}: kiln {} vs docker {}", show(k), show(d)));
        }
    }
}

/// How building one case both ways came out.
enum Outcome {
    /// Both built it; the differences (none: the same image).
    Compared(Vec<String>),
    /// Both failed: agreement.
    BothFail,
    /// Docker 20.10's built-in Dockerfile frontend cannot parse it (syntax
    /// newer than that frontend): nothing to compare against. Its error.
    PeerTooOld(String),
}

/// Docker's error line when its frontend rejected the Dockerfile's syntax.
fn peer_parse_error(stderr: &str) -> Option<String> {
    stderr
        .lines()
        .find(|l| l.contains("dockerfile parse error") || l.contains("unknown instruction"))
        .map(|l| l.trim().to_string())
}

/// Builds one case both ways and compares the results.
fn diff_case(session: &mut Session, case: &Case) -> Outcome {
    let root = session.root.path();
    let tag = format!("kiln-bdiff-{}-{}", case.name, std::process::id()).to_lowercase();
    let kiln_tag = format!("{tag}:kiln");
    let docker_tag = format!("{tag}:docker");
    let dir = case.dir.to_str().unwrap();
    let mut args: Vec<String> = vec!["build".into(), "-t".into(), kiln_tag.clone()];
    args.extend(common_args(case));
    args.push(dir.to_string());
    let args_ref: Vec<&str> = args.iter().map(String::as_str).collect();
    let kiln_out = kiln(root, &args_ref);

    session.tags.push(docker_tag.clone());
    let docker_out = docker()
        .args(["build", "--pull=false", "--no-cache", "-t", &docker_tag])
        .args(common_args(case))
        .arg(dir)
        .output()
        .unwrap();

    let (ko, dok) = (kiln_out.status.success(), docker_out.status.success());
    if !ko || !dok {
        if !ko && !dok {
            return Outcome::BothFail;
        }
        let docker_err = String::from_utf8_lossy(&docker_out.stderr);
        if ko {
            if let Some(line) = peer_parse_error(&docker_err) {
                return Outcome::PeerTooOld(line);
            }
        }
        let (who, out) = if ko {
            ("docker", &docker_out)
        } else {
            ("kiln", &kiln_out)
        };
        return Outcome::Compared(vec![format!(
            "only {who} fails to build it:\n    {}",
            tail(&String::from_utf8_lossy(&out.stderr))
        )]);
    }

    // docker's image into the kiln root, so both are read the same way.
    let mut save = docker()
        .args(["save", &docker_tag])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let load = Command::new(crate::common::kiln_bin())
        .arg("--root")
        .arg(root)
        .arg("load")
        .stdin(save.stdout.take().unwrap())
        .output()
        .unwrap();
    assert!(save.wait().unwrap().success(), "docker save {docker_tag}");
    assert!(
        load.status.success(),
        "kiln load of docker's {docker_tag}: {}",
        String::from_utf8_lossy(&load.stderr)
    );
    let _ = docker().args(["rmi", "-f", &docker_tag]).output();

    let k = image(root, &kiln_tag);
    let mut d = image(root, &docker_tag);
    drop_mount_point_layers(&mut d);
    let mut diffs = Vec::new();
    let overridden: Vec<String> = case
        .build_args
        .iter()
        .map(|a| a.split('=').next().unwrap_or("").to_string())
        .collect();
    compare_config(&k.config, &d.config, &overridden, &mut diffs);
    compare_trees(
        &k,
        &d,
        newest_mtime(&case.dir),
        &case.ignore_content,
        &mut diffs,
    );
    Outcome::Compared(diffs)
}

#[test]
fn build_cases_match_docker_build() {
    if !is_root() {
        skip_or_fail("the differential build test needs root");
        return;
    }
    if let Some(reason) = engine_missing() {
        skip_or_fail(&format!("differential build test: {reason}"));
        return;
    }
    for (what, why) in ALLOWED {
        eprintln!("  allowed: {what}: {why}");
    }
    let (cases, skipped) = cases();
    for (name, reason) in &skipped {
        eprintln!("  {name}: not compared (.nodiff: {reason})");
    }
    assert!(!cases.is_empty(), "no case directories in testdata/build");
    let mut session = session();
    let mut report = Vec::new();
    let mut known_seen = vec![false; KNOWN.len()];
    for case in &cases {
        let diffs = match diff_case(&mut session, case) {
            Outcome::BothFail => {
                eprintln!("  {}: both builders fail it (agreed)", case.name);
                continue;
            }
            Outcome::PeerTooOld(error) => {
                eprintln!(
                    "  {}: not compared: Docker 20.10's Dockerfile frontend rejects it ({error})",
                    case.name
                );
                continue;
            }
            Outcome::Compared(diffs) => diffs,
        };
        let mut fresh = 0;
        for d in &diffs {
            let known = KNOWN
                .iter()
                .position(|(c, text, _)| *c == case.name && d.contains(text));
            match known {
                Some(i) => {
                    known_seen[i] = true;
                    eprintln!(
                        "  {}: known kiln difference: {d} ({})",
                        case.name, KNOWN[i].2
                    );
                }
                None => {
                    fresh += 1;
                    report.push(format!("{}: {d}", case.name));
                }
            }
        }
        eprintln!(
            "  {}: {}",
            case.name,
            match (diffs.len(), fresh) {
                (0, _) => "same as docker build".to_string(),
                (n, 0) => format!("{n} known difference(s), nothing new"),
                (_, n) => format!("{n} difference(s)"),
            }
        );
    }
    let compared: Vec<&str> = cases.iter().map(|c| c.name.as_str()).collect();
    for (i, (case, text, _)) in KNOWN.iter().enumerate() {
        if !known_seen[i] && compared.contains(case) {
            report.push(format!(
                "{case}: the known difference {text:?} is gone; remove it from build_diff::KNOWN"
            ));
        }
    }
    assert!(
        report.is_empty(),
        "kiln build and docker build differ ({} difference(s); deliberate ones are in \
         build_diff::ALLOWED):\n{}",
        report.len(),
        report.join("\n")
    );
    // The store stays consistent after all of it.
    let out = kiln(session.root.path(), &["fsck"]);
    assert!(
        out.status.success(),
        "fsck: {}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn tree_flattening_applies_whiteouts() {
    // Two layers: the second deletes a file and empties a directory; the
    // flattened tree must show neither, and keep the rest.
    fn layer(entries: &[(&str, Option<&[u8]>)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (path, data) in entries {
            let mut h = tar::Header::new_gnu();
            match data {
                Some(d) => {
                    h.set_entry_type(tar::EntryType::Regular);
                    h.set_size(d.len() as u64);
                    h.set_mode(0o644);
                    b.append_data(&mut h, path, *d).unwrap();
                }
                None => {
                    h.set_entry_type(tar::EntryType::Directory);
                    h.set_size(0);
                    h.set_mode(0o755);
                    b.append_data(&mut h, path, &[][..]).unwrap();
                }
            }
        }
        b.into_inner().unwrap()
    }
    let lower = layer(&[
        ("a/", None),
        ("a/x", Some(b"x")),
        ("b/", None),
        ("b/y", Some(b"y")),
        ("c", Some(b"c")),
    ]);
    let upper = layer(&[
        ("a/", None),
        ("a/.wh..wh..opq", Some(b"")),
        ("a/z", Some(b"z")),
        ("b/.wh.y", Some(b"")),
    ]);
    let tree = flatten(&[lower, upper]);
    let paths: Vec<&str> = tree.keys().map(String::as_str).collect();
    assert_eq!(paths, ["/a", "/a/z", "/b", "/c"]);
    assert_eq!(tree["/a/z"].layer, 1);
    assert!(tree["/c"].kind.starts_with("file sha256:"));
}

#[test]
fn allowed_history_differences_are_narrow() {
    let none: &[String] = &[];
    assert!(same_step(
        "EXPOSE [80/tcp 53/udp]",
        "EXPOSE map[53/udp:{} 80/tcp:{}]",
        none
    ));
    assert!(!same_step("EXPOSE [80/tcp]", "EXPOSE map[81/tcp:{}]", none));
    assert!(same_step(
        "HEALTHCHECK &{[\"CMD-SHELL\" \"true\"] \"30s\" \"0s\" \"0s\" \"0s\" '\\x00'}",
        "HEALTHCHECK &{[\"CMD-SHELL\" \"true\"] \"30s\" \"0s\" \"0s\" '\\x00'}",
        none
    ));
    assert!(!same_step(
        "HEALTHCHECK &{[\"CMD-SHELL\" \"true\"] \"30s\" \"0s\" \"0s\" \"0s\" '\\x00'}",
        "HEALTHCHECK &{[\"CMD-SHELL\" \"true\"] \"31s\" \"0s\" \"0s\" '\\x00'}",
        none
    ));
    let set = ["F".to_string()];
    assert!(same_step("ARG F=spicy X=1", "ARG F=plain X=1", &set));
    assert!(!same_step("ARG F=spicy X=1", "ARG F=plain X=2", &set));
    assert!(!same_step("ARG G=spicy", "ARG G=plain", &set));
    let pairs = align(&["a", "b", "c"], &["a", "c", "d"], |x, y| x == y);
    assert_eq!(
        pairs,
        [
            (Some(0), Some(0)),
            (Some(1), None),
            (Some(2), Some(1)),
            (None, Some(2))
        ]
    );
}
