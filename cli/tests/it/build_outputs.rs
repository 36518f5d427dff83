//! `kiln build` outputs and front-door flags: `--output` (image, oci,
//! docker, local, tar), `--metadata-file`, a Dockerfile on stdin,
//! `--no-cache-filter`, `--platform`, and `--progress` (a real pty for
//! `tty`). Archives are checked with skopeo and a Docker engine.
//!
//! Builds that RUN need root (feature `test-root`); bad specs fail before
//! anything is built and run anywhere.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use crate::common::*;

/// Runs `kiln --root ROOT ARGS` with `stdin` piped in.
fn kiln_stdin(root: &Path, args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(kiln_bin())
        .arg("--root")
        .arg(root)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning the kiln binary built by cargo");
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child.wait_with_output().unwrap()
}

fn stderr_of(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn bad_output_specs_fail_before_building() {
    let root = tempfile::tempdir().unwrap();
    let store = root.path().join("store");
    let ctx = tempfile::tempdir().unwrap();
    std::fs::write(ctx.path().join("Dockerfile"), "FROM scratch\n").unwrap();
    let file = ctx.path().join("Dockerfile");
    let c = ctx.path().to_str().unwrap();
    for (spec, expect) in [
        ("type=bogus", "unknown type \"bogus\""),
        ("type=local", "type=local needs dest=DIRECTORY"),
        ("type=local,dest=-", "cannot write to stdout"),
        ("type=docker", "type=docker needs dest=FILE"),
        ("dest=out.tar", "type=... is required"),
        ("type=oci,dest=/nonexistent-dir/x.tar", "does not exist"),
        (
            "type=oci,dest=o.tar,compression=zstd",
            "option compression=zstd is not supported",
        ),
        ("type=registry,name=x", "type=registry is not supported"),
        ("type=tar,dest=DIR", "is a directory, not a file"),
        ("type=local,dest=FILE", "is not a directory"),
    ] {
        let spec = spec
            .replace("DIR", c)
            .replace("FILE", file.to_str().unwrap());
        let stderr = kiln_err(&store, &["build", "-o", &spec, c]);
        let lines: Vec<&str> = stderr.lines().collect();
        assert_eq!(lines.len(), 1, "{spec}: {stderr}");
        assert!(
            lines[0].starts_with("kiln: invalid --output"),
            "{spec}: {stderr}"
        );
        assert!(stderr.contains(expect), "{spec}: {stderr}");
    }
    // Two outputs on stdout.
    let out = kiln(&store, &["build", "-o", "-", "-o", "type=oci", c]);
    assert!(!out.status.success());
    assert!(stderr_of(&out).contains("more than one output writes to stdout"));
    // Nothing was built, so no store was made.
    assert!(!store.exists(), "a bad --output created the store");
    // Another platform would need emulation.
    let stderr = kiln_err(&store, &["build", "--platform", "linux/arm64", c]);
    assert!(
        stderr.contains("builds only for this host's platform"),
        "{stderr}"
    );
    assert!(!store.exists());
}

#[test]
fn progress_tty_needs_a_terminal() {
    let root = tempfile::tempdir().unwrap();
    let ctx = tempfile::tempdir().unwrap();
    std::fs::write(ctx.path().join("Dockerfile"), "FROM scratch\n").unwrap();
    let out = kiln(
        root.path(),
        &["build", "--progress", "tty", ctx.path().to_str().unwrap()],
    );
    assert!(!out.status.success());
    assert!(
        stderr_of(&out).contains("--progress tty: standard error is not a terminal"),
        "{}",
        stderr_of(&out)
    );
}

#[cfg(feature = "test-root")]
mod root {
    use super::*;

    /// A context with `Dockerfile` = `text` and `hello.txt`.
    fn context(text: &str) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("Dockerfile"), text).unwrap();
        std::fs::write(dir.path().join("hello.txt"), "hello\n").unwrap();
        dir
    }

    const TREE: &str = "FROM busybox:latest AS base
RUN echo one > /one && chmod 600 /one && chown 1234:5678 /one
FROM base
COPY hello.txt /hello.txt
RUN ln -s /hello.txt /link && mkdir -p /d && echo x > /d/x && ln /d/x /d/y && rm /bin/ls
CMD [\"cat\", \"/hello.txt\"]
";

    fn build_out(root: &Path, args: &[&str]) -> Output {
        let mut all = vec!["build", "--progress", "plain"];
        all.extend_from_slice(args);
        kiln(root, &all)
    }

    fn build_ok(root: &Path, args: &[&str]) -> String {
        let out = build_out(root, args);
        assert!(
            out.status.success(),
            "kiln build {args:?} failed:\n{}",
            stderr_of(&out)
        );
        stderr_of(&out)
    }

    fn read_json(path: &Path) -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
    }

    /// A Docker engine, when one answers (../shared/peers/dockerd.sh).
    fn docker() -> Option<Command> {
        let docker = ["/usr/bin/docker", "/usr/local/bin/docker"]
            .into_iter()
            .find(|p| Path::new(p).is_file())?;
        let ok = Command::new(docker)
            .arg("info")
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        ok.then(|| Command::new(docker))
    }

    #[test]
    fn oci_and_docker_archives_load_in_skopeo_and_docker() {
        if !is_root() && skip_or_fail("builds need root") {
            return;
        }
        if !has_tool("skopeo") && skip_or_fail("skopeo is not installed") {
            return;
        }
        let root = root_with_busybox();
        let ctx = context(TREE);
        let work = tempfile::tempdir().unwrap();
        let oci = work.path().join("image-oci.tar");
        let dock = work.path().join("image-docker.tar");
        let meta = work.path().join("meta.json");
        let docker_name = format!("kiln-bout-{}:v1", std::process::id());
        let stderr = build_ok(
            root.path(),
            &[
                "-o",
                &format!("type=oci,dest={},name=built/oci:1", oci.display()),
                "--output",
                &format!("type=docker,dest={},name={docker_name}", dock.display()),
                "--metadata-file",
                meta.to_str().unwrap(),
                ctx.path().to_str().unwrap(),
            ],
        );
        assert!(stderr.contains("exporting to oci image format"), "{stderr}");
        assert!(
            stderr.contains("exporting to docker image format"),
            "{stderr}"
        );
        // Without -t the image is not named in the store.
        let images = kiln_ok(root.path(), &["images"]);
        assert!(!images.contains("built/oci"), "{images}");
        assert!(!images.contains("kiln-bout"), "{images}");
        let md = read_json(&meta);
        let digest = md["containerimage.digest"].as_str().unwrap().to_string();
        assert_eq!(md["containerimage.descriptor"]["digest"], digest.as_str());
        assert_eq!(
            md["image.name"],
            format!("docker.io/built/oci:1,docker.io/library/{docker_name}")
        );

        // skopeo reads the OCI archive by its name and copies it whole.
        let out = Command::new("skopeo")
            .arg("inspect")
            .arg(format!("oci-archive:{}:1", oci.display()))
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr_of(&out));
        let inspected: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(inspected["Digest"], digest.as_str());
        let copied = work.path().join("copied");
        let out = Command::new("skopeo")
            .arg("copy")
            .arg(format!("oci-archive:{}", oci.display()))
            .arg(format!("dir:{}", copied.display()))
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr_of(&out));
        let config = md["containerimage.config.digest"].as_str().unwrap();
        assert!(copied.join(config.trim_start_matches("sha256:")).is_file());

        // docker loads the docker archive and runs it.
        let Some(_) = docker() else {
            skip_or_fail("no Docker engine answers (start one with ../shared/peers/dockerd.sh)");
            return;
        };
        let out = docker()
            .unwrap()
            .args(["load", "-i"])
            .arg(&dock)
            .output()
            .unwrap();
        assert!(out.status.success(), "docker load: {}", stderr_of(&out));
        let run = docker()
            .unwrap()
            .args(["run", "--rm", &docker_name])
            .output()
            .unwrap();
        let _ = docker().unwrap().args(["rmi", &docker_name]).output();
        assert!(run.status.success(), "docker run: {}", stderr_of(&run));
        assert_eq!(String::from_utf8_lossy(&run.stdout), "hello\n");
        assert_fsck_clean(root.path());
    }

    #[test]
    fn local_dir_and_tar_hold_the_final_file_system() {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        if !is_root() && skip_or_fail("builds need root") {
            return;
        }
        let root = root_with_busybox();
        let ctx = context(TREE);
        let work = tempfile::tempdir().unwrap();
        let dir = work.path().join("rootfs");
        let tar = work.path().join("rootfs.tar");
        // -o DIR is type=local; -t then names nothing in the store (as in
        // docker build).
        build_ok(
            root.path(),
            &[
                "-o",
                dir.to_str().unwrap(),
                "-o",
                &format!("type=tar,dest={}", tar.display()),
                "-t",
                "named:v1",
                ctx.path().to_str().unwrap(),
            ],
        );
        let listed = kiln(root.path(), &["images", "-q", "named:v1"]);
        assert!(
            !listed.status.success() || listed.stdout.is_empty(),
            "-t with only -o outputs named an image: {}",
            String::from_utf8_lossy(&listed.stdout)
        );
        assert_eq!(
            std::fs::read_to_string(dir.join("hello.txt")).unwrap(),
            "hello\n"
        );
        let one = std::fs::metadata(dir.join("one")).unwrap();
        assert_eq!(one.permissions().mode() & 0o7777, 0o600);
        assert_eq!((one.uid(), one.gid()), (1234, 5678));
        assert_eq!(
            std::fs::read_link(dir.join("link")).unwrap(),
            Path::new("/hello.txt")
        );
        let (x, y) = (
            std::fs::metadata(dir.join("d/x")).unwrap(),
            std::fs::metadata(dir.join("d/y")).unwrap(),
        );
        assert_eq!(x.ino(), y.ino(), "d/y is a hard link of d/x");
        assert!(dir.join("bin/busybox").is_file());
        assert!(!dir.join("bin/ls").exists(), "a deleted file was written");

        let listing = Command::new("tar").arg("-tvf").arg(&tar).output().unwrap();
        assert!(listing.status.success());
        let listing = String::from_utf8_lossy(&listing.stdout);
        let line = |name: &str| {
            listing
                .lines()
                .find(|l| l.ends_with(name) || l.contains(&format!(" {name} ")))
                .unwrap_or_else(|| panic!("{name} not in:\n{listing}"))
                .to_string()
        };
        assert!(line("one").starts_with("-rw------- 1234/5678"), "{listing}");
        assert!(line("link -> /hello.txt").starts_with('l'), "{listing}");
        assert!(line("d/y link to d/x").starts_with('h'), "{listing}");
        assert!(!listing.contains(" bin/ls\n"), "{listing}");

        // `-o -` writes the tar to stdout; quiet prints no id over it.
        let out = kiln(
            root.path(),
            &["build", "-q", "-o", "-", ctx.path().to_str().unwrap()],
        );
        assert!(out.status.success(), "{}", stderr_of(&out));
        let mut child = Command::new("tar")
            .arg("-t")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(&out.stdout).unwrap();
        let names = child.wait_with_output().unwrap();
        assert!(names.status.success());
        assert!(String::from_utf8_lossy(&names.stdout)
            .lines()
            .any(|l| l == "hello.txt"));
        assert_fsck_clean(root.path());
    }

    #[test]
    fn extended_attributes_reach_local_and_tar_outputs() {
        if !is_root() && skip_or_fail("builds need root") {
            return;
        }
        // A base image whose file has an xattr (imported from a PAX tar).
        let work = tempfile::tempdir().unwrap();
        let tree = work.path().join("tree");
        std::fs::create_dir(&tree).unwrap();
        std::fs::write(tree.join("f"), "x\n").unwrap();
        if xattr::set(tree.join("f"), "user.kiln", b"yes").is_err()
            && skip_or_fail("the temporary directory takes no user xattrs")
        {
            return;
        }
        let base = work.path().join("base.tar");
        let status = Command::new("tar")
            .args(["--xattrs", "--xattrs-include=*", "-C"])
            .arg(&tree)
            .arg("-cf")
            .arg(&base)
            .arg(".")
            .status()
            .unwrap();
        assert!(status.success());
        let root = tempfile::tempdir().unwrap();
        kiln_ok(root.path(), &["import", base.to_str().unwrap(), "xa:1"]);
        let ctx = context("FROM xa:1\nLABEL a=b\n");
        let dir = work.path().join("out");
        let tar = work.path().join("out.tar");
        build_ok(
            root.path(),
            &[
                "-o",
                dir.to_str().unwrap(),
                "-o",
                &format!("type=tar,dest={}", tar.display()),
                ctx.path().to_str().unwrap(),
            ],
        );
        assert_eq!(
            xattr::get(dir.join("f"), "user.kiln").unwrap().as_deref(),
            Some(&b"yes"[..])
        );
        let back = work.path().join("back");
        std::fs::create_dir(&back).unwrap();
        let status = Command::new("tar")
            .args(["--xattrs", "--xattrs-include=*", "-C"])
            .arg(&back)
            .arg("-xf")
            .arg(&tar)
            .status()
            .unwrap();
        assert!(status.success());
        assert_eq!(
            xattr::get(back.join("f"), "user.kiln").unwrap().as_deref(),
            Some(&b"yes"[..])
        );
    }

    #[test]
    fn metadata_file_matches_the_stored_image() {
        if !is_root() && skip_or_fail("builds need root") {
            return;
        }
        let root = root_with_busybox();
        let ctx = context("FROM busybox:latest\nRUN echo hi > /hi\n");
        let work = tempfile::tempdir().unwrap();
        let meta = work.path().join("meta.json");
        build_ok(
            root.path(),
            &[
                "-t",
                "meta:v1",
                "--metadata-file",
                meta.to_str().unwrap(),
                ctx.path().to_str().unwrap(),
            ],
        );
        let md = read_json(&meta);
        let id = image_id(root.path(), "meta:v1");
        assert_eq!(md["containerimage.config.digest"], id.as_str());
        assert_eq!(md["image.name"], "docker.io/library/meta:v1");
        // The manifest blob is in the store, is what the digest says, and
        // points at the config.
        let digest = md["containerimage.digest"].as_str().unwrap();
        let blob = root
            .path()
            .join("blobs/sha256")
            .join(digest.trim_start_matches("sha256:"));
        let bytes = std::fs::read(&blob).unwrap();
        assert_eq!(md["containerimage.descriptor"]["size"], bytes.len());
        let manifest: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(manifest["config"]["digest"], id.as_str());
        assert_eq!(
            md["containerimage.descriptor"]["mediaType"],
            "application/vnd.oci.image.manifest.v1+json"
        );
        // No temporary file is left beside it.
        let left: Vec<_> = std::fs::read_dir(work.path()).unwrap().collect();
        assert_eq!(left.len(), 1);
    }

    #[test]
    fn dockerfile_from_stdin() {
        if !is_root() && skip_or_fail("builds need root") {
            return;
        }
        let root = root_with_busybox();
        // Context `-`: no files.
        let out = kiln_stdin(
            root.path(),
            &["build", "--progress", "plain", "-t", "stdin:v1", "-"],
            b"FROM busybox:latest\nRUN echo from-stdin > /s\nCMD [\"cat\", \"/s\"]\n",
        );
        assert!(out.status.success(), "{}", stderr_of(&out));
        let ran = kiln_ok(root.path(), &["run", "--rm", "stdin:v1"]);
        assert_eq!(ran, "from-stdin\n");
        // COPY from a context that is not there fails before anything runs.
        let out = kiln_stdin(
            root.path(),
            &["build", "-"],
            b"FROM busybox:latest\nRUN echo never\nCOPY hello.txt /\n",
        );
        assert!(!out.status.success());
        let stderr = stderr_of(&out);
        assert!(stderr.contains("Dockerfile:3:"), "{stderr}");
        assert!(stderr.contains("reads the build context"), "{stderr}");
        assert!(!stderr.contains("never"), "{stderr}");
        // -f - with a directory: the Dockerfile from stdin, files from the dir.
        let ctx = context("FROM scratch\n");
        let out = kiln_stdin(
            root.path(),
            &[
                "build",
                "-f",
                "-",
                "-t",
                "fdash:v1",
                ctx.path().to_str().unwrap(),
            ],
            b"FROM busybox:latest\nCOPY hello.txt /h\nCMD [\"cat\", \"/h\"]\n",
        );
        assert!(out.status.success(), "{}", stderr_of(&out));
        assert_eq!(
            kiln_ok(root.path(), &["run", "--rm", "fdash:v1"]),
            "hello\n"
        );
        assert_fsck_clean(root.path());
    }

    /// `#N` lines of the step whose start line contains `needle`.
    fn step_lines<'a>(output: &'a str, needle: &str) -> Vec<&'a str> {
        let start = output
            .lines()
            .find(|l| l.starts_with('#') && l.contains(needle))
            .unwrap_or_else(|| panic!("no step {needle:?} in:\n{output}"));
        let id = start.split_whitespace().next().unwrap().to_string();
        output
            .lines()
            .filter(|l| l.split_whitespace().next() == Some(id.as_str()))
            .collect()
    }

    fn cached(output: &str, needle: &str) -> bool {
        step_lines(output, needle)
            .iter()
            .any(|l| l.ends_with(" CACHED"))
    }

    #[test]
    fn no_cache_filter_reruns_only_the_named_stages() {
        if !is_root() && skip_or_fail("builds need root") {
            return;
        }
        let root = root_with_busybox();
        let ctx = context(
            "FROM busybox:latest AS deps\nRUN echo deps > /deps\n\
             FROM busybox:latest AS tool\nRUN echo tool > /tool\n\
             FROM deps\nCOPY --from=tool /tool /tool\nRUN cat /deps /tool\n",
        );
        let c = ctx.path().to_str().unwrap();
        build_ok(root.path(), &[c]);
        let again = build_ok(root.path(), &["--no-cache-filter", "tool", c]);
        assert!(
            step_lines(&again, "echo tool")
                .iter()
                .any(|l| l.ends_with("cache miss: --no-cache-filter")),
            "{again}"
        );
        assert!(cached(&again, "echo deps"), "{again}");
        assert!(cached(&again, "COPY --from=tool"), "{again}");
        // Comma-separated and repeated; a stage index names it too.
        let both = build_ok(
            root.path(),
            &[
                "--no-cache-filter",
                "deps,tool",
                "--no-cache-filter",
                "2",
                c,
            ],
        );
        for step in ["echo deps", "echo tool", "COPY --from=tool", "RUN cat"] {
            assert!(!cached(&both, step), "{step}: {both}");
        }
        let stderr = kiln_err(root.path(), &["build", "--no-cache-filter", "nope", c]);
        assert!(stderr.contains("no stage \"nope\""), "{stderr}");
    }

    #[test]
    fn host_platform_is_accepted() {
        if !is_root() && skip_or_fail("builds need root") {
            return;
        }
        let root = root_with_busybox();
        let ctx =
            context("FROM busybox:latest\nARG TARGETPLATFORM\nRUN echo $TARGETPLATFORM > /p\n");
        let c = ctx.path().to_str().unwrap();
        for platform in ["linux/amd64", "local", "amd64"] {
            if platform != "local" && std::env::consts::ARCH != "x86_64" {
                continue;
            }
            build_ok(root.path(), &["--platform", platform, "-t", "plat:v1", c]);
        }
        let dir = tempfile::tempdir().unwrap();
        build_ok(root.path(), &["-o", dir.path().to_str().unwrap(), c]);
        let written = std::fs::read_to_string(dir.path().join("p")).unwrap();
        assert!(written.starts_with("linux/"), "{written}");
    }

    #[test]
    fn progress_auto_without_a_terminal_is_plain() {
        if !is_root() && skip_or_fail("builds need root") {
            return;
        }
        let root = root_with_busybox();
        let ctx = context("FROM busybox:latest\nRUN echo plain-out\n");
        let out = kiln(
            root.path(),
            &["build", "--progress", "auto", ctx.path().to_str().unwrap()],
        );
        let stderr = stderr_of(&out);
        assert!(out.status.success(), "{stderr}");
        assert!(
            stderr.contains("#2 [stage-0 2/2] RUN echo plain-out"),
            "{stderr}"
        );
        assert!(stderr.contains("plain-out"), "{stderr}");
        assert!(
            !stderr.contains('\x1b'),
            "escape codes off a terminal: {stderr:?}"
        );
    }

    /// Runs `kiln build ARGS` with stderr on a pty (100 columns); returns
    /// (success, everything drawn).
    fn build_on_pty(root: &Path, args: &[&str]) -> (bool, String) {
        let (master, slave) = kiln_runner::pty::open_pair().unwrap();
        kiln_runner::pty::set_window_size(
            std::os::fd::AsFd::as_fd(&master),
            kiln_runner::pty::WindowSize {
                rows: 30,
                cols: 100,
            },
        )
        .unwrap();
        let child = Command::new(kiln_bin())
            .arg("--root")
            .arg(root)
            .arg("build")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(slave.try_clone().unwrap())
            .spawn()
            .unwrap();
        drop(slave);
        // Read to the end: the pty closes when kiln exits.
        let reader = read_pty_until(master, "\u{0}never printed");
        let out = child.wait_with_output().unwrap();
        let text = String::from_utf8_lossy(&reader.join().unwrap()).into_owned();
        (out.status.success(), text)
    }

    #[test]
    fn progress_tty_draws_on_a_terminal() {
        if !is_root() && skip_or_fail("builds need root") {
            return;
        }
        let root = root_with_busybox();
        let ctx = context(
            "FROM busybox:latest\nRUN for i in 1 2 3; do echo tick-$i; sleep 0.3; done\nRUN true\n",
        );
        let (ok, text) = build_on_pty(root.path(), &["-t", "tty:v1", ctx.path().to_str().unwrap()]);
        assert!(ok, "{text}");
        let id = image_id(root.path(), "tty:v1");
        assert!(text.contains("[+] Building"), "{text:?}");
        assert!(text.contains(" => => # tick-1"), "no output tail: {text:?}");
        assert!(
            text.contains(&format!("writing image {id} done")),
            "{text:?}"
        );
        assert!(text.contains(" => [stage-0 3/3] RUN true"), "{text:?}");
        // The cursor was hidden while drawing and is shown at the end.
        let hidden = text.rfind("\x1b[?25l").expect("cursor hidden");
        let shown = text.rfind("\x1b[?25h").expect("cursor shown again");
        assert!(shown > hidden, "{text:?}");
        assert!(text.contains("FINISHED"), "{text:?}");

        // A failing step: marked ERROR, and all its output shown at the end.
        let ctx = context(
            "FROM busybox:latest\nRUN for i in $(seq 1 15); do echo line-$i; done; exit 3\n",
        );
        let (ok, text) = build_on_pty(root.path(), &[ctx.path().to_str().unwrap()]);
        assert!(!ok);
        assert!(text.contains(" => ERROR [stage-0 2/2] RUN"), "{text:?}");
        let end = &text[text.find("------").expect("failure block")..];
        for i in 1..=15 {
            assert!(end.contains(&format!("line-{i}\r\n")), "line-{i}: {end:?}");
        }
        assert!(end.contains("exit code: 3"), "{end:?}");
        assert!(
            text.rfind("\x1b[?25h") > text.rfind("\x1b[?25l"),
            "{text:?}"
        );
    }

    #[test]
    fn history_lists_each_step_newest_first() {
        if !is_root() && skip_or_fail("builds need root") {
            return;
        }
        let root = root_with_busybox();
        let ctx = context("FROM busybox:latest\nENV A=1\nRUN printf hi > /x\n");
        build_ok(
            root.path(),
            &["-t", "hist:v1", ctx.path().to_str().unwrap()],
        );
        let id = image_id(root.path(), "hist:v1");
        let lines: Vec<serde_json::Value> =
            kiln_ok(root.path(), &["history", "--format", "json", "hist:v1"])
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect();
        assert_eq!(lines.len(), 3, "{lines:?}");
        assert_eq!(lines[0]["ID"], &id[7..19]);
        assert_eq!(
            lines[0]["CreatedBy"],
            "RUN /bin/sh -c printf hi > /x # buildkit"
        );
        assert_eq!(lines[0]["Size"], "2B", "the RUN layer holds /x alone");
        assert_eq!(lines[0]["Comment"], "buildkit.dockerfile.v0");
        assert_eq!(lines[1]["ID"], "<missing>");
        assert_eq!(lines[1]["CreatedBy"], "ENV A=1");
        assert_eq!(lines[1]["Size"], "0B");
        // The base image's entry, with the base layer's unpacked size.
        let bytes: Vec<String> = kiln_ok(
            root.path(),
            &["history", "-H=false", "--format", "json", "hist:v1"],
        )
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["Size"].to_string())
        .collect();
        let base: serde_json::Value =
            serde_json::from_str(&kiln_ok(root.path(), &["inspect", "busybox:latest"])).unwrap();
        assert_eq!(bytes[2], format!("\"{}\"", base[0]["Size"]));
        let quiet = kiln_ok(root.path(), &["history", "-q", "--no-trunc", "hist:v1"]);
        assert_eq!(quiet, format!("{id}\n<missing>\n<missing>\n"));
        let table = kiln_ok(root.path(), &["history", "hist:v1"]);
        assert!(table.starts_with("IMAGE"), "{table}");
        assert!(
            table
                .lines()
                .nth(1)
                .unwrap()
                .contains("RUN /bin/sh -c printf hi"),
            "{table}"
        );
        let missing = kiln(root.path(), &["history", "nosuch:v1"]);
        assert!(!missing.status.success());
        assert_eq!(stderr_of(&missing).trim().lines().count(), 1);
    }
}
