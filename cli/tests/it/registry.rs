//! `kiln pull`, `push`, `login`, `logout` and `search` against real
//! `docker-registry` processes on loopback (kiln-testkit), with skopeo and
//! umoci for interop. Compiled only with `--features test-registry`.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use kiln_testkit::registry::{PASSWORD, USER};
use kiln_testkit::{require, Auth, Fault, FaultProxy, Registry};

use crate::common::*;

/// A registry and the runtime its helper servers run on.
struct Live {
    registry: Registry,
    /// Credentials and docker config of this test only.
    docker_config: tempfile::TempDir,
    runtime: tokio::runtime::Runtime,
}

impl Live {
    fn start(auth: Auth) -> Option<Live> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let registry = runtime.block_on(Registry::start(auth))?;
        Some(Live {
            registry,
            docker_config: tempfile::tempdir().unwrap(),
            runtime,
        })
    }

    fn host(&self) -> &str {
        &self.registry.host
    }

    /// kiln with this test's CA directory and docker config.
    fn command(&self, root: &Path, args: &[&str]) -> Command {
        let mut command = Command::new(kiln_bin());
        command
            .arg("--root")
            .arg(root)
            .args(args)
            .env("KILN_CERTS_DIR", &self.registry.certs_dir)
            .env("DOCKER_CONFIG", self.docker_config.path())
            .env_remove("KILN_INSECURE_REGISTRIES");
        command
    }

    /// Runs kiln (see [`Live::command`]), with `stdin` as its input.
    fn kiln(&self, root: &Path, args: &[&str], stdin: Option<&str>) -> Output {
        let mut child = self
            .command(root, args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawning the kiln binary built by cargo");
        if let Some(input) = stdin {
            child
                .stdin
                .take()
                .unwrap()
                .write_all(input.as_bytes())
                .unwrap();
        }
        child.wait_with_output().unwrap()
    }

    /// Starts kiln (see [`Live::command`]) without waiting for it.
    fn spawn(&self, root: &Path, args: &[&str]) -> std::process::Child {
        self.command(root, args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawning the kiln binary built by cargo")
    }

    fn ok(&self, root: &Path, args: &[&str]) -> String {
        let out = self.kiln(root, args, None);
        assert!(
            out.status.success(),
            "kiln {args:?} failed:\nstdout: {}\nstderr: {}\nregistry log: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.registry.log()
        );
        String::from_utf8(out.stdout).unwrap()
    }

    fn err(&self, root: &Path, args: &[&str]) -> String {
        let out = self.kiln(root, args, None);
        assert!(
            !out.status.success(),
            "kiln {args:?} succeeded but should fail:\n{}",
            String::from_utf8_lossy(&out.stdout)
        );
        assert_eq!(out.status.code(), Some(1));
        String::from_utf8_lossy(&out.stderr).into_owned()
    }
}

/// Every chain id of the image has a complete snapshot.
fn assert_snapshots_present(root: &Path, name: &str) {
    let json = kiln_ok(root, &["inspect", name]);
    let records: serde_json::Value = serde_json::from_str(&json).unwrap();
    let layers = records[0]["RootFS"]["diff_ids"].as_array().unwrap().len();
    let snapshots: Vec<_> = std::fs::read_dir(root.join("snapshots"))
        .unwrap()
        .flatten()
        .filter(|e| e.path().join("info.json").is_file())
        .collect();
    assert!(
        snapshots.len() >= layers && layers > 0,
        "{} snapshots for {layers} layers",
        snapshots.len()
    );
}

/// The digest printed by `NAME: digest: sha256:... size: N`.
fn pushed_digest(output: &str) -> String {
    let line = output
        .lines()
        .find(|l| l.contains(": digest: sha256:"))
        .unwrap_or_else(|| panic!("no digest line in {output}"));
    line.split_whitespace().nth(2).unwrap().to_string()
}

/// One line, starting `kiln: pulling ...`, naming no secret.
fn assert_one_line_error(stderr: &str, start: &str) {
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "want one line, got: {stderr}");
    assert!(
        lines[0].starts_with(start),
        "want {start:?}..., got: {stderr}"
    );
}

#[test]
fn push_then_pull_into_a_fresh_root() {
    let Some(live) = Live::start(Auth::None) else {
        return;
    };
    let source = root_with_busybox();
    let name = format!("{}/bb:v1", live.host());
    kiln_ok(source.path(), &["tag", "busybox:latest", &name]);
    let pushed = live.ok(source.path(), &["push", &name]);
    assert!(pushed.contains("The push refers to repository"), "{pushed}");
    assert!(pushed.contains(": Pushed"), "{pushed}");
    let digest = pushed_digest(&pushed);

    let target = tempfile::tempdir().unwrap();
    let pulled = live.ok(target.path(), &["pull", &name]);
    assert!(pulled.contains(&format!("Digest: {digest}")), "{pulled}");
    assert!(
        pulled.contains("Status: Downloaded newer image for"),
        "{pulled}"
    );
    assert!(pulled.contains("Pull complete"), "{pulled}");
    assert_eq!(pulled.lines().last(), Some(name.as_str()));
    assert_eq!(
        image_id(target.path(), &name),
        image_id(source.path(), "busybox:latest")
    );
    assert_fsck_clean(target.path());
    assert_snapshots_present(target.path(), &name);

    // Warm: nothing moves.
    let again = live.ok(target.path(), &["pull", &name]);
    assert!(again.contains("Status: Image is up to date for"), "{again}");
    let quiet = live.ok(target.path(), &["pull", "-q", &name]);
    assert_eq!(quiet.trim(), name);
    let warm_push = live.ok(source.path(), &["push", &name]);
    assert!(warm_push.contains("Layer already exists"), "{warm_push}");
    assert_eq!(pushed_digest(&warm_push), digest);

    // By digest: the name keeps the digest.
    let by_digest = format!("{}/bb@{digest}", live.host());
    let third = tempfile::tempdir().unwrap();
    let out = live.ok(third.path(), &["pull", &by_digest]);
    assert_eq!(out.lines().last(), Some(by_digest.as_str()));
    assert_fsck_clean(third.path());

    // The pulled image (gzip layers) goes up unchanged to another
    // repository, its blobs mounted from the first one.
    let other = format!("{}/copy:v1", live.host());
    kiln_ok(target.path(), &["tag", &name, &other]);
    let copied = live.ok(target.path(), &["push", &other]);
    assert_eq!(pushed_digest(&copied), digest, "{copied}");
    assert!(copied.contains("Mounted from bb"), "{copied}");

    let found = live.ok(target.path(), &["search", &format!("{}/b", live.host())]);
    let rows: Vec<&str> = found.lines().collect();
    assert_eq!(rows[0], "NAME");
    assert!(
        rows.contains(&format!("{}/bb", live.host()).as_str()),
        "{found}"
    );
    assert!(
        !rows.contains(&format!("{}/copy", live.host()).as_str()),
        "{found}"
    );
}

#[test]
fn pulls_what_skopeo_pushed_and_skopeo_reads_what_kiln_pushed() {
    if !require(&["skopeo", "umoci"]) {
        return;
    }
    let Some(live) = Live::start(Auth::None) else {
        return;
    };
    let source = root_with_busybox();
    let layout = format!("oci:{}:busybox:latest", source.path().display());
    let sk = format!("{}/sk:v1", live.host());
    let status = Command::new("skopeo")
        .args([
            "copy",
            "--quiet",
            "--dest-tls-verify=false",
            "--dest-compress",
        ])
        .arg(&layout)
        .arg(format!("docker://{sk}"))
        .status()
        .unwrap();
    assert!(status.success());
    let target = tempfile::tempdir().unwrap();
    live.ok(target.path(), &["pull", &sk]);
    assert_eq!(
        image_id(target.path(), &sk),
        image_id(source.path(), "busybox:latest")
    );
    assert_fsck_clean(target.path());
    assert_snapshots_present(target.path(), &sk);

    // kiln push -> skopeo inspect / copy -> umoci unpack.
    let kn = format!("{}/kn:v1", live.host());
    kiln_ok(source.path(), &["tag", "busybox:latest", &kn]);
    let digest = pushed_digest(&live.ok(source.path(), &["push", &kn]));
    let inspect = Command::new("skopeo")
        .args(["inspect", "--tls-verify=false"])
        .arg(format!("docker://{kn}"))
        .output()
        .unwrap();
    assert!(inspect.status.success());
    let inspect: serde_json::Value = serde_json::from_slice(&inspect.stdout).unwrap();
    assert_eq!(inspect["Digest"], digest.as_str());
    let work = tempfile::tempdir().unwrap();
    let oci_dir = work.path().join("oci");
    let status = Command::new("skopeo")
        .args(["copy", "--quiet", "--src-tls-verify=false"])
        .arg(format!("docker://{kn}"))
        .arg(format!("oci:{}:v1", oci_dir.display()))
        .status()
        .unwrap();
    assert!(status.success());
    let bundle = work.path().join("bundle");
    let mut umoci = Command::new("umoci");
    umoci
        .args(["unpack", "--image"])
        .arg(format!("{}:v1", oci_dir.display()))
        .arg(&bundle);
    if !is_root() {
        umoci.arg("--rootless");
    }
    assert!(umoci.status().unwrap().success());
    assert!(bundle.join("rootfs/bin/busybox").exists());
}

#[test]
fn errors_are_one_line_and_leave_nothing_behind() {
    let Some(live) = Live::start(Auth::None) else {
        return;
    };
    let root = tempfile::tempdir().unwrap();
    let missing = format!("{}/nothing:nope", live.host());
    let stderr = live.err(root.path(), &["pull", &missing]);
    assert_one_line_error(&stderr, &format!("kiln: pulling {missing}: "));
    assert!(stderr.contains("not found"), "{stderr}");

    let stderr = live.err(root.path(), &["pull", "127.0.0.1:1/x:y"]);
    assert_one_line_error(&stderr, "kiln: pulling 127.0.0.1:1/x:y: ");

    let stderr = live.err(root.path(), &["push", "nothing:here"]);
    assert!(stderr.contains("no such image"), "{stderr}");
    assert!(kiln_ok(root.path(), &["images", "-q"]).trim().is_empty());
    assert_fsck_clean(root.path());
}

#[test]
fn a_cut_download_resumes_and_bad_content_is_refused() {
    let Some(live) = Live::start(Auth::None) else {
        return;
    };
    let source = root_with_busybox();
    let name = format!("{}/bb:v1", live.host());
    kiln_ok(source.path(), &["tag", "busybox:latest", &name]);
    live.ok(source.path(), &["push", &name]);
    let proxy = live.runtime.block_on(FaultProxy::start(live.host()));
    let through = format!("{}/bb:v1", proxy.host);

    proxy.inject("GET", "/blobs/sha256:", Fault::Cut, 2);
    let target = tempfile::tempdir().unwrap();
    live.ok(target.path(), &["pull", &through]);
    assert_fsck_clean(target.path());
    assert_snapshots_present(target.path(), &through);

    // A registry serving something that is not a manifest.
    proxy.inject(
        "GET",
        "/manifests/",
        Fault::ReplaceBody(b"{\"schemaVersion\": 2, \"layers\": 7}".to_vec()),
        1000,
    );
    let fresh = tempfile::tempdir().unwrap();
    let stderr = live.err(fresh.path(), &["pull", &through]);
    assert_one_line_error(&stderr, &format!("kiln: pulling {through}: "));
    assert!(stderr.contains("manifest"), "{stderr}");
    assert!(kiln_ok(fresh.path(), &["images", "-q"]).trim().is_empty());
    assert_fsck_clean(fresh.path());
    drop(proxy);
    let proxy = live.runtime.block_on(FaultProxy::start(live.host()));
    let through = format!("{}/bb:v1", proxy.host);

    proxy.inject("GET", "/blobs/sha256:", Fault::FlipByte, 1000);
    let fresh = tempfile::tempdir().unwrap();
    let stderr = live.err(fresh.path(), &["pull", &through]);
    assert_one_line_error(&stderr, &format!("kiln: pulling {through}: "));
    assert!(stderr.contains("digest mismatch"), "{stderr}");
    assert!(kiln_ok(fresh.path(), &["images", "-q"]).trim().is_empty());
    assert_fsck_clean(fresh.path());
}

#[test]
fn login_with_htpasswd_over_tls_then_push() {
    let Some(live) = Live::start(Auth::Basic) else {
        return;
    };
    let root = root_with_busybox();
    let host = live.host().to_string();
    let wrong = "wrong-secret-password-1234";
    let out = live.kiln(
        root.path(),
        &["login", "-u", USER, "--password-stdin", &host],
        Some(&format!("{wrong}\n")),
    );
    assert_eq!(out.status.code(), Some(1));
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!all.contains(wrong), "the password leaked: {all}");
    assert!(all.contains("kiln: logging in to"), "{all}");
    assert!(!live.docker_config.path().join("config.json").exists());

    let name = format!("{host}/private:v1");
    kiln_ok(root.path(), &["tag", "busybox:latest", &name]);
    let stderr = live.err(root.path(), &["push", &name]);
    assert!(stderr.contains("unauthorized"), "{stderr}");

    let out = live.kiln(
        root.path(),
        &["login", "-u", USER, "--password-stdin", &host],
        Some(&format!("{PASSWORD}\n")),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout.trim(), "Login Succeeded");
    assert!(!String::from_utf8_lossy(&out.stderr).contains(PASSWORD));
    let config = std::fs::read_to_string(live.docker_config.path().join("config.json")).unwrap();
    assert!(config.contains(&host), "{config}");

    live.ok(root.path(), &["push", &name]);
    let target = tempfile::tempdir().unwrap();
    live.ok(target.path(), &["pull", &name]);
    assert_fsck_clean(target.path());

    let out = live.ok(root.path(), &["logout", &host]);
    assert!(out.contains("Removing login credentials"), "{out}");
    let stderr = live.err(tempfile::tempdir().unwrap().path(), &["pull", &name]);
    assert!(stderr.contains("unauthorized"), "{stderr}");
    assert!(!stderr.contains(PASSWORD));
}

#[test]
fn pull_with_token_auth() {
    let Some(live) = Live::start(Auth::Token) else {
        return;
    };
    let root = root_with_busybox();
    let host = live.host().to_string();
    let out = live.kiln(
        root.path(),
        &["login", "-u", USER, "--password-stdin", &host],
        Some(PASSWORD),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let name = format!("{host}/tok:v1");
    kiln_ok(root.path(), &["tag", "busybox:latest", &name]);
    live.ok(root.path(), &["push", &name]);
    live.ok(root.path(), &["logout", &host]);

    // Anonymous pulls get pull-only tokens.
    let target = tempfile::tempdir().unwrap();
    live.ok(target.path(), &["pull", &name]);
    assert_eq!(
        image_id(target.path(), &name),
        image_id(root.path(), "busybox:latest")
    );
    assert_fsck_clean(target.path());
}

/// A context directory holding only `Dockerfile` with `text`.
fn context_with(text: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("Dockerfile"), text).unwrap();
    dir
}

#[cfg(feature = "test-root")]
#[test]
fn build_pulls_a_missing_base_image() {
    let Some(live) = Live::start(Auth::None) else {
        return;
    };
    let source = root_with_busybox();
    let name = format!("{}/bb:v1", live.host());
    kiln_ok(source.path(), &["tag", "busybox:latest", &name]);
    live.ok(source.path(), &["push", &name]);

    let target = tempfile::tempdir().unwrap();
    let ctx = context_with(&format!("FROM {name}\nRUN true\n"));
    let out = live.kiln(
        target.path(),
        &[
            "build",
            "--progress",
            "plain",
            "-t",
            "built:v1",
            ctx.path().to_str().unwrap(),
        ],
        None,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!("Unable to find image '{name}' locally")),
        "{stderr}"
    );
    assert!(
        stderr.contains("Status: Downloaded newer image for"),
        "{stderr}"
    );
    assert_eq!(
        image_id(target.path(), &name),
        image_id(source.path(), "busybox:latest")
    );
    image_id(target.path(), "built:v1");
    assert_fsck_clean(target.path());

    // Now present: a second build pulls nothing.
    let again = live.kiln(
        target.path(),
        &["build", "--progress", "plain", ctx.path().to_str().unwrap()],
        None,
    );
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert!(again.status.success(), "{stderr}");
    assert!(!stderr.contains("Unable to find image"), "{stderr}");
}

#[test]
fn build_check_stays_offline() {
    let Some(live) = Live::start(Auth::None) else {
        return;
    };
    let source = root_with_busybox();
    let name = format!("{}/bb:v1", live.host());
    kiln_ok(source.path(), &["tag", "busybox:latest", &name]);
    live.ok(source.path(), &["push", &name]);

    let parent = tempfile::tempdir().unwrap();
    let root = parent.path().join("root");
    let ctx = context_with(&format!("FROM {name}\nRUN true\n"));
    let out = live.kiln(
        &root,
        &["build", "--check", ctx.path().to_str().unwrap()],
        None,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(!stderr.contains("Unable to find image"), "{stderr}");
    assert!(!root.exists(), "--check created a root");
}

#[test]
fn multi_platform_image_is_pushed_whole() {
    if !require(&["skopeo"]) {
        return;
    }
    let Some(live) = Live::start(Auth::None) else {
        return;
    };
    // A two-platform image in registry A, pushed with the client.
    let client = live.registry.client();
    let amd64 = kiln_testkit::TestImage::new("amd64", &[3000]);
    let arm64 = kiln_testkit::TestImage::new("arm64", &[5000]);
    let source = live.registry.reference("multi/arch:1");
    let index = kiln_testkit::content::index(&[(&amd64, "amd64"), (&arm64, "arm64")]);
    live.runtime.block_on(async {
        for image in [&amd64, &arm64] {
            image
                .push(
                    &client,
                    &source.with_digest(image.digest().parse().unwrap()),
                )
                .await;
        }
        client
            .push_manifest(&source, kiln_registry::OCI_INDEX, index.clone())
            .await
            .unwrap();
    });

    // Into a kiln root with every platform: skopeo --all to an OCI archive, kiln load.
    let work = tempfile::tempdir().unwrap();
    let archive = work.path().join("multi.tar");
    let status = Command::new("skopeo")
        .args(["copy", "--quiet", "--all", "--src-tls-verify=false"])
        .arg(format!("docker://{}/multi/arch:1", live.host()))
        .arg(format!(
            "oci-archive:{}:{}/copy/arch:1",
            archive.display(),
            live.host()
        ))
        .status()
        .unwrap();
    assert!(status.success());
    let root = tempfile::tempdir().unwrap();
    let target = format!("{}/copy/arch:1", live.host());
    kiln_ok(root.path(), &["load", "-i", archive.to_str().unwrap()]);
    let inspect: serde_json::Value =
        serde_json::from_str(&kiln_ok(root.path(), &["inspect", &target])).unwrap();
    let stored_index = inspect[0]["Target"]["digest"].as_str().unwrap().to_string();
    assert!(
        inspect[0]["Target"]["mediaType"]
            .as_str()
            .unwrap()
            .contains("index"),
        "{inspect}"
    );

    // kiln push sends both children and the index, with the bytes it holds.
    let out = live.ok(root.path(), &["push", &target]);
    assert_eq!(pushed_digest(&out), stored_index, "{out}");
    let raw = |reference: String| {
        let out = Command::new("skopeo")
            .args(["inspect", "--raw", "--tls-verify=false"])
            .arg(format!("docker://{reference}"))
            .output()
            .unwrap();
        assert!(out.status.success(), "{reference} missing in the registry");
        out.stdout
    };
    let pushed_index = raw(target.clone());
    assert_eq!(
        kiln_store::Digest::of(&pushed_index).to_string(),
        stored_index
    );
    let pushed_index: serde_json::Value = serde_json::from_slice(&pushed_index).unwrap();
    let children = pushed_index["manifests"].as_array().unwrap();
    assert_eq!(children.len(), 2, "{pushed_index}");
    for child in children {
        let digest = child["digest"].as_str().unwrap();
        let bytes = raw(format!("{}/copy/arch@{digest}", live.host()));
        assert_eq!(kiln_store::Digest::of(&bytes).to_string(), digest);
    }
}

#[cfg(feature = "test-root")]
#[test]
fn run_pulls_a_missing_image() {
    let Some(live) = Live::start(Auth::None) else {
        return;
    };
    let source = root_with_busybox();
    let name = format!("{}/runme:v1", live.host());
    kiln_ok(source.path(), &["tag", "busybox:latest", &name]);
    live.ok(source.path(), &["push", &name]);

    let target = tempfile::tempdir().unwrap();
    let out = live.kiln(
        target.path(),
        &["run", "--rm", &name, "echo", "pulled and ran"],
        None,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "pulled and ran"
    );
    assert!(
        stderr.contains(&format!("Unable to find image '{name}' locally")),
        "{stderr}"
    );
    assert_eq!(
        image_id(target.path(), &name),
        image_id(source.path(), "busybox:latest")
    );
    assert_fsck_clean(target.path());
}

#[cfg(feature = "test-root")]
#[test]
fn run_pull_policies_follow_a_moved_tag() {
    let Some(live) = Live::start(Auth::None) else {
        return;
    };
    let source = root_with_busybox();
    let name = format!("{}/moving:v1", live.host());
    kiln_ok(source.path(), &["tag", "busybox:latest", &name]);
    live.ok(source.path(), &["push", &name]);
    let target = tempfile::tempdir().unwrap();
    let run = |pull: &str| {
        let out = live.kiln(
            target.path(),
            &[
                "run",
                "--rm",
                "--pull",
                pull,
                &name,
                "sh",
                "-c",
                "cat /version 2>/dev/null || echo none",
            ],
            None,
        );
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "--pull {pull}: {stderr}");
        (
            String::from_utf8_lossy(&out.stdout).trim().to_string(),
            stderr,
        )
    };

    // --pull never refuses an image the store lacks, and makes nothing.
    let out = live.kiln(
        target.path(),
        &["run", "--rm", "--pull", "never", &name, "true"],
        None,
    );
    assert_eq!(out.status.code(), Some(125));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--pull never"), "{stderr}");
    assert_eq!(kiln_ok(target.path(), &["ps", "-aq"]).trim(), "");

    assert_eq!(run("missing").0, "none");
    let first = image_id(target.path(), &name);

    // The tag moves in the registry to an image with /version.
    let newer = context_with("FROM busybox:latest\nRUN echo v2 > /version\n");
    kiln_ok(
        source.path(),
        &["build", "-q", "-t", &name, newer.path().to_str().unwrap()],
    );
    live.ok(source.path(), &["push", &name]);
    let moved = image_id(source.path(), &name);
    assert_ne!(first, moved);

    // missing and never use the stored image; always fetches the moved tag.
    assert_eq!(run("missing").0, "none");
    assert_eq!(run("never").0, "none");
    assert_eq!(image_id(target.path(), &name), first);
    let (stdout, stderr) = run("always");
    assert_eq!(stdout, "v2", "{stderr}");
    assert_eq!(image_id(target.path(), &name), moved);
    assert_eq!(kiln_ok(target.path(), &["ps", "-aq"]).trim(), "");
    assert_fsck_clean(target.path());
}

#[cfg(feature = "test-root")]
#[test]
fn build_pull_uses_a_changed_base_image() {
    let Some(live) = Live::start(Auth::None) else {
        return;
    };
    let source = root_with_busybox();
    let name = format!("{}/base:v1", live.host());
    kiln_ok(source.path(), &["tag", "busybox:latest", &name]);
    live.ok(source.path(), &["push", &name]);

    let target = tempfile::tempdir().unwrap();
    let ctx = context_with(&format!(
        "FROM {name}\nRUN cat /version 2>/dev/null || echo none\n"
    ));
    let c = ctx.path().to_str().unwrap();
    let build = |extra: &[&str]| {
        let mut args = vec!["build", "--progress", "plain", "-t", "onbase:v1"];
        args.extend_from_slice(extra);
        args.push(c);
        let out = live.kiln(target.path(), &args, None);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "{stderr}");
        stderr
    };
    build(&[]);
    let first_base = image_id(target.path(), &name);

    // The tag moves in the registry to an image with /version.
    let newer = context_with("FROM busybox:latest\nRUN echo v2 > /version\n");
    kiln_ok(
        source.path(),
        &["build", "-q", "-t", &name, newer.path().to_str().unwrap()],
    );
    live.ok(source.path(), &["push", &name]);
    let new_base = image_id(source.path(), &name);
    assert_ne!(first_base, new_base);

    // Without --pull the stored base is used: all cached.
    let stderr = build(&[]);
    assert!(!stderr.contains("Downloaded newer image"), "{stderr}");
    assert!(stderr.contains("#2 CACHED"), "{stderr}");
    assert_eq!(image_id(target.path(), &name), first_base);

    // With --pull the moved tag is fetched, and the step says why it ran.
    let stderr = build(&["--pull"]);
    assert!(
        stderr.contains(&format!("Status: Downloaded newer image for {name}")),
        "{stderr}"
    );
    assert!(
        stderr.contains("cache miss: base image changed"),
        "{stderr}"
    );
    assert!(stderr.contains(" v2\n"), "{stderr}");
    assert_eq!(image_id(target.path(), &name), new_base);

    // Again with --pull: the registry has nothing newer; the cache holds.
    let stderr = build(&["--pull"]);
    assert!(stderr.contains("Status: Image is up to date"), "{stderr}");
    assert!(stderr.contains("#2 CACHED"), "{stderr}");
    assert_fsck_clean(target.path());
}

/// A store with `name`: a one-layer image (made by import) of `mb` MB of
/// incompressible files.
fn random_image(name: &str, mb: usize) -> tempfile::TempDir {
    use rand::RngCore;
    let root = tempfile::tempdir().unwrap();
    let tree = tempfile::tempdir().unwrap();
    let mut rng = rand::rng();
    for i in 0..mb * 4 {
        let dir = tree.path().join(format!("d{}", i % 16));
        std::fs::create_dir_all(&dir).unwrap();
        let mut bytes = vec![0u8; 256 * 1024];
        rng.fill_bytes(&mut bytes);
        std::fs::write(dir.join(format!("f{i}")), bytes).unwrap();
    }
    kiln_ok(
        root.path(),
        &["import", tree.path().to_str().unwrap(), name],
    );
    root
}

/// Runs `args` and kills it with SIGKILL after each delay in turn; after
/// each kill the store at `root` must check clean.
fn kill_at_delays(live: &Live, root: &Path, args: &[&str], delays_ms: &[u64]) -> usize {
    let mut killed = 0;
    for delay in delays_ms {
        let mut child = live.spawn(root, args);
        std::thread::sleep(std::time::Duration::from_millis(*delay));
        if child.try_wait().unwrap().is_none() {
            killed += 1;
            child.kill().unwrap();
        }
        child.wait().unwrap();
        assert_fsck_clean(root);
    }
    killed
}

#[test]
fn killed_pulls_and_pushes_leave_consistent_stores() {
    let Some(live) = Live::start(Auth::None) else {
        return;
    };
    let name = format!("{}/big:v1", live.host());
    let source = random_image(&name, 48);
    // Pushes killed at several points, then one that finishes.
    let delays = [20, 60, 120, 250, 400, 700];
    let killed = kill_at_delays(&live, source.path(), &["push", &name], &delays);
    assert!(killed > 0, "every push finished before its kill");
    let pushed = live.ok(source.path(), &["push", &name]);
    let digest = pushed_digest(&pushed);

    // Pulls killed at several points into one root, then one that finishes.
    let target = tempfile::tempdir().unwrap();
    let killed = kill_at_delays(&live, target.path(), &["pull", &name], &delays);
    assert!(killed > 0, "every pull finished before its kill");
    let pulled = live.ok(target.path(), &["pull", &name]);
    assert!(pulled.contains(&format!("Digest: {digest}")), "{pulled}");
    assert_eq!(
        image_id(target.path(), &name),
        image_id(source.path(), &name)
    );
    assert_snapshots_present(target.path(), &name);
    assert_fsck_clean(target.path());
    // What the killed pulls left is garbage the next prune takes.
    kiln_ok(target.path(), &["system", "prune"]);
    assert_fsck_clean(target.path());
    assert_eq!(
        image_id(target.path(), &name),
        image_id(source.path(), &name)
    );
    let again = tempfile::tempdir().unwrap();
    live.ok(again.path(), &["pull", &name]);
    assert_eq!(
        image_id(again.path(), &name),
        image_id(source.path(), &name)
    );
}
