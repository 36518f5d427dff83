//! The build corpus (testdata/build/<case>): each case built FROM
//! busybox:latest with `kiln build`, then checked by running the image
//! (`kiln run`: files, modes, owners, env, user, workdir, entrypoint/cmd)
//! and by reading its config. Bad input fails with one clear line, leaves
//! the store consistent and the cache usable.
//!
//! Needs: root, overlayfs, cgroups, Debian's busybox-static.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde_json::Value;

use crate::common::{
    build_case as case, config_of, is_cached, is_root, kiln, kiln_ok, project_dir,
    root_with_busybox, sha256_hex, skip_or_fail,
};

fn ready() -> bool {
    if !is_root() {
        return !skip_or_fail("build corpus tests need root");
    }
    true
}

/// `kiln build ARGS`: (success, stderr).
fn build(root: &Path, args: &[&str]) -> (bool, String) {
    let mut all = vec!["build", "--progress", "plain"];
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

/// Builds `dir` and expects failure; returns stderr.
fn build_err(root: &Path, args: &[&str]) -> String {
    let (ok, stderr) = build(root, args);
    assert!(!ok, "kiln build {args:?} should fail:\n{stderr}");
    stderr
}

/// Runs `sh -c script` in `image` and returns stdout (exit 0 required).
fn run_sh(root: &Path, image: &str, script: &str) -> String {
    kiln_ok(
        root,
        &["run", "--rm", "--entrypoint", "sh", image, "-c", script],
    )
}

fn history(config: &Value) -> Vec<String> {
    config["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["created_by"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// No mount under this root is left, and fsck is clean.
fn assert_clean(root: &Path) {
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap();
    let root_text = root.to_string_lossy();
    // Only this root's: other builds on the machine have their own.
    let stray: Vec<&str> = mounts
        .lines()
        .filter(|l| l.contains(root_text.as_ref()))
        .collect();
    assert!(stray.is_empty(), "stray mounts: {stray:?}");
    kiln_ok(root, &["fsck"]);
    let scratch = root.join("cache/scratch");
    let left: Vec<PathBuf> = std::fs::read_dir(&scratch)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "scratch left behind: {left:?}");
}

/// `stat` lines of these paths inside `image`.
fn stats(root: &Path, image: &str, paths: &[&str]) -> String {
    run_sh(
        root,
        image,
        &format!("stat -c '%n %u:%g %a' {}", paths.join(" ")),
    )
}

fn arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

#[test]
fn add_unpacks_local_archives_by_content() {
    if !ready() {
        return;
    }
    let root = root_with_busybox();
    let ctx = case("add-archive");
    build_ok(
        root.path(),
        &["-t", "archive:1", ctx.path().to_str().unwrap()],
    );
    let mut paths = Vec::new();
    for dir in ["/plain", "/gzip", "/bzip2", "/xz", "/zstd"] {
        paths.push(format!("{dir}/alpha.txt {dir}/sub {dir}/sub/beta.txt"));
    }
    let got = stats(
        root.path(),
        "archive:1",
        &paths.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    let mut expected = String::new();
    for dir in ["/plain", "/gzip", "/bzip2", "/xz", "/zstd"] {
        expected.push_str(&format!(
            "{dir}/alpha.txt 1000:1001 640\n{dir}/sub 1000:1001 750\n{dir}/sub/beta.txt 1000:1001 644\n"
        ));
    }
    assert_eq!(
        got, expected,
        "unpacked with the archive's owners and modes"
    );
    // mtimes come from the archive; a gzip file that is no tar stays as it is.
    assert_eq!(
        run_sh(
            root.path(),
            "archive:1",
            "stat -c %Y /xz/alpha.txt; gunzip -c /notes/notes.txt.gz; cat /plain/alpha.txt"
        ),
        "1577934245\njust text\nalpha\n"
    );
    assert_eq!(
        stats(
            root.path(),
            "archive:1",
            &["/chowned/alpha.txt", "/chowned/sub"]
        ),
        "/chowned/alpha.txt 7:8 640\n/chowned/sub 7:8 750\n",
        "--chown applies to what an archive unpacks"
    );
    assert_eq!(
        run_sh(
            root.path(),
            "archive:1",
            "cat /over/alpha.txt /over/other.txt"
        ),
        "alpha\nkeep\n",
        "existing files are replaced, others kept"
    );
    assert_clean(root.path());
}

#[test]
fn add_keeps_hostile_archives_inside_the_image() {
    if !ready() {
        return;
    }
    let _ = std::fs::remove_file("/tmp/kiln-escape-dotdot");
    let _ = std::fs::remove_file("/tmp/kiln-escape-symlink");
    let root = root_with_busybox();
    let ctx = case("add-hostile");
    let dir = ctx.path().to_str().unwrap();
    build_ok(root.path(), &["--target", "dotdot", "-t", "dotdot:1", dir]);
    assert_eq!(
        run_sh(
            root.path(),
            "dotdot:1",
            "cat /unpacked/ok.txt /unpacked/tmp/kiln-escape-dotdot; test ! -e /tmp/kiln-escape-dotdot"
        ),
        "fine\nescaped\n",
        "the ../ entry stops at the destination"
    );
    build_ok(
        root.path(),
        &["--target", "symlink", "-t", "symlink:1", dir],
    );
    assert_eq!(
        run_sh(
            root.path(),
            "symlink:1",
            "readlink /unpacked/etc; cat /unpacked/tmp/kiln-escape-symlink; test ! -e /tmp/kiln-escape-symlink"
        ),
        "/tmp\nescaped\n",
        "the write through the absolute symlink lands below the destination"
    );
    assert!(!Path::new("/tmp/kiln-escape-dotdot").exists());
    assert!(!Path::new("/tmp/kiln-escape-symlink").exists());
    assert_clean(root.path());
}

/// A tiny HTTP/1.1 server on 127.0.0.1: `/files/<name>` from `files`,
/// with a fixed Last-Modified and an ETag (the content's digest; a matching
/// If-None-Match gets 304); anything else is 404. Counts requests and
/// whole answers.
type Files = Arc<Mutex<Vec<(String, Vec<u8>)>>>;

struct Server {
    port: u16,
    files: Files,
    hits: Arc<Mutex<usize>>,
    whole: Arc<Mutex<usize>>,
}

const LAST_MODIFIED: &str = "Wed, 01 Jan 2020 00:00:00 GMT";
const LAST_MODIFIED_SECS: &str = "1577836800";

impl Server {
    fn start(files: Vec<(String, Vec<u8>)>) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let files = Arc::new(Mutex::new(files));
        let hits = Arc::new(Mutex::new(0));
        let whole = Arc::new(Mutex::new(0));
        let (f, h, w) = (files.clone(), hits.clone(), whole.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut request = String::new();
                if reader.read_line(&mut request).is_err() {
                    continue;
                }
                let mut if_none_match = None;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    if let Some((k, v)) = line.split_once(':') {
                        if k.eq_ignore_ascii_case("if-none-match") {
                            if_none_match = Some(v.trim().to_string());
                        }
                    }
                }
                *h.lock().unwrap() += 1;
                let path = request.split_whitespace().nth(1).unwrap_or("/").to_string();
                let found = f
                    .lock()
                    .unwrap()
                    .iter()
                    .find(|(name, _)| format!("/files/{name}") == path)
                    .map(|(_, data)| data.clone());
                let _ = match found {
                    Some(data) => {
                        let etag = format!("\"{}\"", sha256_hex(&data));
                        if if_none_match.as_deref() == Some(etag.as_str()) {
                            stream.write_all(
                                b"HTTP/1.1 304 Not Modified\r\nConnection: close\r\n\r\n",
                            )
                        } else {
                            *w.lock().unwrap() += 1;
                            stream
                                .write_all(
                                    format!(
                                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nLast-Modified: {LAST_MODIFIED}\r\nETag: {etag}\r\nConnection: close\r\n\r\n",
                                        data.len()
                                    )
                                    .as_bytes(),
                                )
                                .and_then(|_| stream.write_all(&data))
                        }
                    }
                    None => stream.write_all(
                        b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                    ),
                };
            }
        });
        Server {
            port,
            files,
            hits,
            whole,
        }
    }

    fn set(&self, name: &str, data: &[u8]) {
        let mut files = self.files.lock().unwrap();
        files.retain(|(n, _)| n != name);
        files.push((name.to_string(), data.to_vec()));
    }

    fn hits(&self) -> usize {
        *self.hits.lock().unwrap()
    }

    fn whole(&self) -> usize {
        *self.whole.lock().unwrap()
    }
}

#[test]
fn add_downloads_urls_with_checksums() {
    if !ready() {
        return;
    }
    let data = b"remote data\n".to_vec();
    let archive = std::fs::read(project_dir().join("testdata/build/add-archive/data.tgz")).unwrap();
    let server = Server::start(vec![
        ("data.txt".into(), data.clone()),
        ("archive.tgz".into(), archive),
    ]);
    let port = server.port.to_string();
    let sum = sha256_hex(&data);
    let root = root_with_busybox();
    let ctx = case("add-url");
    let dir = ctx.path().to_str().unwrap();
    let port_arg = format!("PORT={port}");
    let sum_arg = format!("SUM={sum}");
    let args = [
        "--build-arg",
        port_arg.as_str(),
        "--build-arg",
        sum_arg.as_str(),
        "-t",
        "url:1",
        dir,
    ];
    build_ok(root.path(), &args);
    assert_eq!(
        stats(
            root.path(),
            "url:1",
            &[
                "/downloads/data.txt",
                "/pinned.txt",
                "/downloads/archive.tgz",
                "/owned.txt"
            ]
        ),
        "/downloads/data.txt 0:0 600\n/pinned.txt 0:0 600\n/downloads/archive.tgz 0:0 600\n/owned.txt 5:6 644\n",
        "0600 root files, --chown/--chmod applied, archives not unpacked"
    );
    assert_eq!(
        run_sh(
            root.path(),
            "url:1",
            "stat -c %Y /downloads/data.txt; cat /pinned.txt"
        ),
        format!("{LAST_MODIFIED_SECS}\nremote data\n")
    );
    assert_eq!(
        run_sh(
            root.path(),
            "url:1",
            "cat /unpacked/alpha.txt; stat -c '%u:%g' /unpacked/sub; ls /packed"
        ),
        "alpha\n1000:1001\nlocal.tgz\n",
        "--unpack=true unpacks a download, --unpack=false keeps a local archive"
    );

    // Unchanged content: every step cached; the unpinned URLs are asked
    // again (If-None-Match) but not downloaded.
    let (hits, whole) = (server.hits(), server.whole());
    let again = build_ok(root.path(), &args);
    assert!(
        !again.contains("cache miss"),
        "all cached when nothing changed:\n{again}"
    );
    assert!(server.hits() > hits, "the URLs are checked again");
    assert_eq!(server.whole(), whole, "304s, no downloads");
    // Not modified but the step runs (--no-cache): it is downloaded whole.
    let mut fresh = vec!["--no-cache"];
    fresh.extend_from_slice(&args);
    build_ok(root.path(), &fresh);
    assert_eq!(
        run_sh(root.path(), "url:1", "cat /downloads/data.txt"),
        "remote data\n"
    );

    // Changed content: an unpinned ADD runs again and gets it; a pinned
    // one that is cached downloads nothing.
    let unpinned = tempfile::tempdir().unwrap();
    std::fs::write(
        unpinned.path().join("Dockerfile"),
        format!("FROM busybox:latest\nADD http://127.0.0.1:{port}/files/data.txt /d.txt\n"),
    )
    .unwrap();
    let udir = unpinned.path().to_str().unwrap();
    let pinned = tempfile::tempdir().unwrap();
    std::fs::write(
        pinned.path().join("Dockerfile"),
        format!(
            "FROM busybox:latest\nADD --checksum=sha256:{sum} http://127.0.0.1:{port}/files/data.txt /p.txt\n"
        ),
    )
    .unwrap();
    let pdir = pinned.path().to_str().unwrap();
    build_ok(root.path(), &["-t", "url:2", udir]);
    build_ok(root.path(), &["-t", "url:3", pdir]);
    server.set("data.txt", b"changed\n");
    let changed = build_ok(root.path(), &["-t", "url:2", udir]);
    assert!(
        !is_cached(&changed, "ADD http"),
        "changed content rebuilds:\n{changed}"
    );
    assert_eq!(run_sh(root.path(), "url:2", "cat /d.txt"), "changed\n");
    let before = server.hits();
    let cached = build_ok(root.path(), &["-t", "url:3", pdir]);
    assert!(is_cached(&cached, "ADD --checksum"), "{cached}");
    assert_eq!(server.hits(), before, "a cached pinned ADD fetches nothing");

    let other = tempfile::tempdir().unwrap();
    let odir = other.path().to_str().unwrap();
    // Checksum mismatch (the content changed) and a 404: one clear line each.
    std::fs::write(
        other.path().join("Dockerfile"),
        format!(
            "FROM busybox:latest\nRUN echo miss\nADD --checksum=sha256:{sum} http://127.0.0.1:{port}/files/data.txt /p.txt\n"
        ),
    )
    .unwrap();
    let stderr = build_err(root.path(), &[odir]);
    let last = stderr.lines().last().unwrap_or_default();
    assert!(
        last.contains(&format!("checksum mismatch for http://127.0.0.1:{port}/files/data.txt: expected sha256:{sum}, got sha256:{}", sha256_hex(b"changed\n"))),
        "{stderr}"
    );
    std::fs::write(
        other.path().join("Dockerfile"),
        format!("FROM busybox:latest\nADD http://127.0.0.1:{port}/files/missing /m\n"),
    )
    .unwrap();
    let stderr = build_err(root.path(), &[odir]);
    assert!(
        stderr.contains(&format!(
            "failed to download http://127.0.0.1:{port}/files/missing: server answered 404 Not Found"
        )),
        "{stderr}"
    );
    assert_clean(root.path());
    // The store still serves the cache after the failures.
    server.set("data.txt", &data);
    let after = build_ok(root.path(), &args);
    assert!(!after.contains("cache miss"), "{after}");
}

#[test]
fn copy_parents_keeps_parent_directories() {
    if !ready() {
        return;
    }
    let root = root_with_busybox();
    let ctx = case("copy-parents");
    build_ok(
        root.path(),
        &["-t", "parents:1", ctx.path().to_str().unwrap()],
    );
    assert_eq!(
        run_sh(
            root.path(),
            "parents:1",
            "cd / && find keep glob pivot dir -type f | sort"
        ),
        "dir/src/b/two.txt\nglob/src/b/two.txt\nkeep/other/four.txt\nkeep/src/a/deep/one.txt\npivot/b/two.txt\n"
    );
    assert_clean(root.path());
}

#[test]
fn copy_link_layers_do_not_depend_on_earlier_steps() {
    if !ready() {
        return;
    }
    let root = root_with_busybox();
    let ctx = case("copy-link");
    let dir = ctx.path().to_str().unwrap();
    build_ok(root.path(), &["-t", "link:1", dir]);
    assert_eq!(
        stats(
            root.path(),
            "link:1",
            &["/srv", "/srv/app", "/srv/app/linked.txt", "/srv/base.txt"]
        ),
        "/srv 0:0 755\n/srv/app 0:0 755\n/srv/app/linked.txt 0:0 644\n/srv/base.txt 0:0 600\n",
        "directories the linked layer makes are 0755 root, over the 0700 /srv"
    );
    // An earlier step changes: the --link steps stay cached, the RUN
    // after them runs on the new stack.
    let out = build_ok(
        root.path(),
        &["--build-arg", "BEFORE=2", "-t", "link:2", dir],
    );
    assert!(!is_cached(&out, "RUN echo"), "{out}");
    assert!(is_cached(&out, "COPY --link app/"), "{out}");
    assert!(is_cached(&out, "ADD --link"), "{out}");
    assert!(!is_cached(&out, "RUN test -f /before"), "{out}");
    assert_eq!(
        run_sh(root.path(), "link:2", "cat /before /srv/app/linked.txt"),
        "2\nlinked\n"
    );
    assert_clean(root.path());
}

#[test]
fn copy_chown_chmod_and_exclude() {
    if !ready() {
        return;
    }
    let root = root_with_busybox();
    let ctx = case("copy-flags");
    build_ok(
        root.path(),
        &["-t", "flags:1", ctx.path().to_str().unwrap()],
    );
    assert_eq!(
        stats(
            root.path(),
            "flags:1",
            &[
                "/numeric.txt",
                "/name.txt",
                "/name-group.txt",
                "/uid-only.txt",
                "/octal.txt",
                "/symbolic.txt",
                "/plus-x.txt"
            ]
        ),
        "/numeric.txt 42:43 644\n/name.txt 1234:1235 644\n/name-group.txt 1234:77 644\n\
         /uid-only.txt 1234:1234 644\n/octal.txt 0:0 751\n/symbolic.txt 0:0 644\n/plus-x.txt 0:0 755\n"
    );
    assert_eq!(
        run_sh(root.path(), "flags:1", "cd /excluded && find . | sort"),
        ".\n./a.txt\n"
    );
    assert_clean(root.path());
}

#[test]
fn copy_from_keeps_owners_and_context_files_are_roots() {
    if !ready() {
        return;
    }
    let root = root_with_busybox();
    let ctx = case("copy-from-owners");
    build_ok(
        root.path(),
        &["-t", "owners:1", ctx.path().to_str().unwrap()],
    );
    assert_eq!(
        stats(
            root.path(),
            "owners:1",
            &["/kept", "/kept/x", "/chowned/x", "/context-file"]
        ),
        "/kept 0:0 755\n/kept/x 123:456 640\n/chowned/x 9:9 640\n/context-file 0:0 644\n"
    );
    assert_clean(root.path());
}

#[test]
fn onbuild_triggers_run_once_in_the_child() {
    if !ready() {
        return;
    }
    let root = root_with_busybox();
    // FROM a stage with triggers (the RUN tests in the case check them).
    let stage = case("onbuild-stage");
    build_ok(
        root.path(),
        &["-t", "onstage:1", stage.path().to_str().unwrap()],
    );
    let config = config_of(root.path(), "onstage:1");
    assert!(config["config"]["OnBuild"].is_null(), "{config}");

    // FROM an image with triggers, which use the child's context.
    let ctx = case("onbuild-image");
    let dir = ctx.path().to_str().unwrap();
    let base_file = ctx.path().join("base.Dockerfile");
    build_ok(
        root.path(),
        &[
            "-f",
            base_file.to_str().unwrap(),
            "-t",
            "kiln-onbuild-base:1",
            dir,
        ],
    );
    let base = config_of(root.path(), "kiln-onbuild-base:1");
    assert_eq!(
        base["config"]["OnBuild"],
        serde_json::json!([
            "COPY marker.txt /from-child-context.txt",
            "RUN echo ran > /onbuild-ran.txt"
        ])
    );
    build_ok(root.path(), &["-t", "onchild:1", dir]);
    let child = config_of(root.path(), "onchild:1");
    assert!(child["config"]["OnBuild"].is_null(), "{child}");
    assert_eq!(child["config"]["Labels"]["role"], "onbuild-base");
    // A grandchild whose context lacks marker.txt builds: no trigger left.
    let grand = tempfile::tempdir().unwrap();
    std::fs::write(
        grand.path().join("Dockerfile"),
        "FROM onchild:1\nRUN cat /from-child-context.txt\n",
    )
    .unwrap();
    build_ok(root.path(), &[grand.path().to_str().unwrap()]);
    assert_clean(root.path());
}

#[test]
fn predefined_platform_args_and_stage_args() {
    if !ready() {
        return;
    }
    let root = root_with_busybox();
    let ctx = case("platform-args");
    let dir = ctx.path().to_str().unwrap();
    build_ok(root.path(), &["--target", "plat", "-t", "plat:1", dir]);
    let a = arch();
    assert_eq!(
        run_sh(root.path(), "plat:1", "cat /platform /base /undeclared"),
        format!("linux/{a}|linux|{a}||linux/{a}|linux|{a}\nbase=busybox:latest\nundeclared=\n")
    );
    // ARGs declared in a stage carry over to a stage built FROM it.
    build_ok(root.path(), &["-t", "plat:2", dir]);
    assert_eq!(
        run_sh(root.path(), "plat:2", "cat /inherited"),
        "inherited=from-base\n"
    );
    let history = history(&config_of(root.path(), "plat:2"));
    assert!(
        history
            .iter()
            // The value reaches RUN, not the `|N` prefix of its history
            // (as docker build writes it; build_diff compares the case).
            .any(|h| h.starts_with("RUN /bin/sh -c echo \"inherited=$INHERITED\"")),
        "{history:?}"
    );
    assert_clean(root.path());
}

#[test]
fn proxy_args_stay_out_of_history_unless_declared() {
    if !ready() {
        return;
    }
    let root = root_with_busybox();
    let ctx = case("proxy-args");
    build_ok(
        root.path(),
        &[
            "--build-arg",
            "HTTP_PROXY=http://proxy.example:3128",
            "--build-arg",
            "NO_PROXY=localhost",
            "-t",
            "proxy:1",
            ctx.path().to_str().unwrap(),
        ],
    );
    assert_eq!(
        run_sh(root.path(), "proxy:1", "cat /undeclared /declared"),
        "http=http://proxy.example:3128\nno=localhost\n"
    );
    let config = config_of(root.path(), "proxy:1");
    let history = history(&config);
    assert!(
        history.iter().all(|h| !h.contains("proxy.example")),
        "{history:?}"
    );
    assert!(history.iter().any(|h| h == "ARG NO_PROXY"), "{history:?}");
    assert!(
        history
            .iter()
            .any(|h| h.starts_with("RUN |1 NO_PROXY=localhost /bin/sh -c")),
        "{history:?}"
    );
    assert!(
        config["config"]["Env"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| !e.as_str().unwrap().contains("PROXY")),
        "{config}"
    );
    assert_clean(root.path());
}

#[test]
fn config_instructions_as_docker_writes_them() {
    if !ready() {
        return;
    }
    let root = root_with_busybox();
    let ctx = case("config");
    build_ok(
        root.path(),
        &["-t", "config:1", ctx.path().to_str().unwrap()],
    );
    let config = config_of(root.path(), "config:1");
    let c = &config["config"];
    let env: Vec<&str> = c["Env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap())
        .collect();
    assert_eq!(
        env,
        [
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "ONE=1",
            "TWO=two words",
            "OLD=old style value",
            "REF=1-two words"
        ]
    );
    assert_eq!(
        c["Labels"],
        serde_json::json!({"a": "b", "quoted key": "quoted value", "multi.line": "x", "other": "y"})
    );
    let ports: Vec<&String> = c["ExposedPorts"].as_object().unwrap().keys().collect();
    assert_eq!(
        ports,
        ["443/tcp", "53/udp", "80/tcp", "8000/tcp", "8001/tcp"]
    );
    let volumes: Vec<&String> = c["Volumes"].as_object().unwrap().keys().collect();
    assert_eq!(volumes, ["/cache", "/data", "/logs"]);
    assert_eq!(c["StopSignal"], "SIGUSR1");
    assert_eq!(
        c["Healthcheck"],
        serde_json::json!({
            "Test": ["CMD-SHELL", "wget -q -O- http://localhost/ || exit 1"],
            "Interval": 5_000_000_000i64,
            "Timeout": 2_000_000_000i64,
            "StartPeriod": 10_000_000_000i64,
            "StartInterval": 1_000_000_000i64,
            "Retries": 4
        })
    );
    assert_eq!(c["Shell"], serde_json::json!(["/bin/sh", "-ec"]));
    assert_eq!(c["User"], "root:root");
    assert_eq!(c["WorkingDir"], "/home/worker/app/sub");
    assert_eq!(c["Entrypoint"], serde_json::json!(["/bin/echo", "entry"]));
    assert_eq!(c["Cmd"], serde_json::json!(["cmd"]));
    let history = history(&config);
    assert!(
        history
            .iter()
            .any(|h| h == "RUN /bin/sh -ec echo \"$TWO\" > /shell-env # buildkit"),
        "SHELL applies to RUN: {history:?}"
    );
    // Running it: entrypoint + cmd; the WORKDIR was made owned by the USER
    // of its time; the environment is the config's.
    assert_eq!(
        kiln_ok(root.path(), &["run", "--rm", "config:1"]),
        "entry cmd\n"
    );
    assert_eq!(
        run_sh(
            root.path(),
            "config:1",
            "pwd; id -u; echo \"$REF\"; cat /shell-env; stat -c '%u:%g %a' /home/worker/app /home/worker/app/sub"
        ),
        "/home/worker/app/sub\n0\n1-two words\ntwo words\n4321:4322 755\n4321:4322 755\n"
    );
    assert_clean(root.path());
}

#[test]
fn entrypoint_resets_the_inherited_cmd() {
    if !ready() {
        return;
    }
    let root = root_with_busybox();
    let ctx = case("entrypoint-cmd");
    let dir = ctx.path().to_str().unwrap();
    build_ok(root.path(), &["--target", "reset", "-t", "reset:1", dir]);
    let reset = config_of(root.path(), "reset:1");
    assert_eq!(
        reset["config"]["Entrypoint"],
        serde_json::json!(["/bin/echo"])
    );
    assert!(reset["config"]["Cmd"].is_null(), "{reset}");
    assert_eq!(kiln_ok(root.path(), &["run", "--rm", "reset:1"]), "\n");
    build_ok(root.path(), &["-t", "kept:1", dir]);
    let kept = config_of(root.path(), "kept:1");
    assert_eq!(
        kept["config"]["Entrypoint"],
        serde_json::json!(["/bin/sh", "-c", "echo shell form"])
    );
    assert_eq!(kept["config"]["Cmd"], serde_json::json!(["kept"]));
    assert_eq!(
        kiln_ok(root.path(), &["run", "--rm", "kept:1"]),
        "shell form\n"
    );
    assert_clean(root.path());
}

#[test]
fn bad_input_fails_clearly_and_keeps_the_cache() {
    if !ready() {
        return;
    }
    let root = root_with_busybox();
    let ctx = case("copy-flags");
    let good = ctx.path().to_str().unwrap();
    build_ok(root.path(), &["-t", "good:1", good]);
    let bad = tempfile::tempdir().unwrap();
    let dir = bad.path().to_str().unwrap();
    // (Dockerfile, what the error says, whether it fails while solving:
    // then the last line is the error; compile errors show the line too).
    // An archive cut short after its first entry.
    let plain = std::fs::read(project_dir().join("testdata/build/add-archive/plain.tar")).unwrap();
    std::fs::write(bad.path().join("cut.tar"), &plain[..1000]).unwrap();
    let cases: [(&str, &str, bool); 6] = [
        (
            "FROM busybox:latest\nADD cut.tar /cut/\n",
            "unpacking archive cut.tar",
            true,
        ),
        (
            "FROM busybox:latest\nADD --checksum=sha256:0000000000000000000000000000000000000000000000000000000000000000 Dockerfile /x\n",
            "--checksum is not allowed here: it requires an HTTP(S) source",
            false,
        ),
        (
            "FROM busybox:latest\nCOPY nothere.txt /x\n",
            "\"/nothere.txt\": not found",
            true,
        ),
        (
            "FROM busybox:latest\nRUN true\nCOPY --from=busybox:latest /nothere /x\n",
            "\"/nothere\": not found",
            true,
        ),
        (
            "FROM busybox:latest AS build\nFROM busybox:latest\nCOPY --from=buidl /x /x\n",
            "buidl",
            false,
        ),
        (
            "FROM busybox:latest\nADD --checksum=sha256:0000 http://127.0.0.1:1/x /x\n",
            "invalid value \"sha256:0000\" for --checksum",
            false,
        ),
    ];
    for (text, needle, solving) in cases {
        std::fs::write(bad.path().join("Dockerfile"), text).unwrap();
        let stderr = build_err(root.path(), &[dir]);
        assert!(stderr.contains(needle), "{text}: {stderr}");
        if solving {
            let last = stderr.lines().last().unwrap_or_default();
            assert!(
                last.starts_with("kiln: ") && last.contains(needle),
                "one error line last: {stderr}"
            );
        }
        assert_clean(root.path());
    }
    let again = build_ok(root.path(), &["-t", "good:1", good]);
    assert!(!again.contains("cache miss"), "{again}");
}
