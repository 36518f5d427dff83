//! Image commands on a real store: import, images, tag, rmi, inspect, save,
//! load, system df/prune, fsck, and interop with skopeo and umoci.

use std::fs;
use std::path::Path;
use std::process::Command;

use crate::common::*;

#[test]
fn import_lists_and_inspects() {
    let root = root_with_busybox();
    let table = kiln_ok(root.path(), &["images"]);
    let mut lines = table.lines();
    let header = lines.next().unwrap();
    assert!(header.starts_with("REPOSITORY"), "{header}");
    for column in ["TAG", "IMAGE ID", "CREATED", "SIZE"] {
        assert!(header.contains(column), "{header}");
    }
    let row = lines.next().expect("one image row");
    assert!(row.starts_with("busybox "), "{row}");
    assert!(row.contains(" latest "), "{row}");

    let id = image_id(root.path(), "busybox");
    assert!(id.starts_with("sha256:"), "{id}");
    let quiet = kiln_ok(root.path(), &["images", "-q"]);
    assert_eq!(quiet.trim(), &id[7..19]);

    let json_line = kiln_ok(root.path(), &["images", "--format", "json"]);
    let record: serde_json::Value = serde_json::from_str(json_line.trim()).unwrap();
    assert_eq!(record["Repository"], "busybox");
    assert_eq!(record["Tag"], "latest");

    let inspect: serde_json::Value =
        serde_json::from_str(&kiln_ok(root.path(), &["inspect", "busybox:latest"])).unwrap();
    assert_eq!(inspect[0]["RepoTags"][0], "busybox:latest");
    assert_eq!(
        inspect[0]["RootFS"]["diff_ids"].as_array().unwrap().len(),
        1
    );
    assert_eq!(inspect[0]["Layers"].as_array().unwrap().len(), 1);
    assert!(inspect[0]["Size"].as_u64().unwrap() > 1_000_000);
    // Size is the unpacked size, as docker reports it: the bytes of the
    // layer's snapshot, not of its stored blob.
    let diff_id = inspect[0]["RootFS"]["diff_ids"][0].as_str().unwrap();
    let info: serde_json::Value = serde_json::from_slice(
        &std::fs::read(
            root.path()
                .join("snapshots")
                .join(diff_id.trim_start_matches("sha256:"))
                .join("info.json"),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(inspect[0]["Size"], info["bytes"]);
    // The same image by short id.
    let by_id: serde_json::Value =
        serde_json::from_str(&kiln_ok(root.path(), &["inspect", &id[7..19]])).unwrap();
    assert_eq!(by_id[0]["Id"], inspect[0]["Id"]);
    assert_fsck_clean(root.path());
}

/// `kiln import ARGS` with SOURCE_DATE_EPOCH=`epoch`; its output (the id).
fn import_at(root: &Path, epoch: &str, args: &[&str]) -> String {
    let out = Command::new(kiln_bin())
        .env("SOURCE_DATE_EPOCH", epoch)
        .args(["--root", root.to_str().unwrap(), "import"])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[test]
fn import_is_reproducible_and_applies_changes() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    let tar = busybox_tar().to_str().unwrap();
    for root in [a.path(), b.path()] {
        import_at(
            root,
            "1700000000",
            &[
                "--change",
                r#"CMD ["sh"]"#,
                "--change",
                "ENV A=1",
                "--change",
                "WORKDIR /srv",
                "--change",
                "USER nobody",
                "--change",
                "LABEL x=y",
                "--change",
                "EXPOSE 8080",
                "--change",
                "ENTRYPOINT [\"/bin/env\"]",
                tar,
                "app:v1",
            ],
        );
    }
    assert_eq!(image_id(a.path(), "app:v1"), image_id(b.path(), "app:v1"));
    let inspect: serde_json::Value =
        serde_json::from_str(&kiln_ok(a.path(), &["inspect", "app:v1"])).unwrap();
    let config = &inspect[0]["Config"];
    assert_eq!(config["Cmd"], serde_json::json!(["sh"]));
    assert_eq!(config["Entrypoint"], serde_json::json!(["/bin/env"]));
    assert_eq!(config["Env"], serde_json::json!(["A=1"]));
    assert_eq!(config["WorkingDir"], "/srv");
    assert_eq!(config["User"], "nobody");
    assert_eq!(config["Labels"]["x"], "y");
    assert!(config["ExposedPorts"].get("8080/tcp").is_some(), "{config}");
}

#[test]
fn import_from_directory() {
    let root = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir_all(dir.path().join("etc")).unwrap();
    fs::write(dir.path().join("etc/hello"), "hi\n").unwrap();
    kiln_ok(
        root.path(),
        &["import", dir.path().to_str().unwrap(), "dir:latest"],
    );
    let inspect: serde_json::Value =
        serde_json::from_str(&kiln_ok(root.path(), &["inspect", "dir"])).unwrap();
    assert_eq!(inspect[0]["Layers"].as_array().unwrap().len(), 1);
    assert_fsck_clean(root.path());
}

#[test]
fn tag_and_rmi() {
    let root = root_with_busybox();
    kiln_ok(root.path(), &["tag", "busybox", "localhost:5000/bb:v2"]);
    let table = kiln_ok(root.path(), &["images"]);
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("localhost:5000/bb ") && l.contains(" v2 ")),
        "{table}"
    );
    let id = image_id(root.path(), "busybox");
    assert_eq!(id, image_id(root.path(), "localhost:5000/bb:v2"));

    // By id with two names: refused without -f.
    let err = kiln_err(root.path(), &["rmi", &id[7..19]]);
    assert!(err.contains("-f"), "{err}");

    let out = kiln_ok(root.path(), &["rmi", "localhost:5000/bb:v2"]);
    assert!(out.contains("Untagged: localhost:5000/bb:v2"), "{out}");
    assert!(!out.contains("Deleted"), "{out}");
    let out = kiln_ok(root.path(), &["rmi", "busybox"]);
    assert!(out.contains("Deleted: sha256:"), "{out}");
    assert_eq!(kiln_ok(root.path(), &["images", "-q"]).trim(), "");
    // Its blobs and snapshot are gone too.
    let blobs = fs::read_dir(root.path().join("blobs/sha256"))
        .unwrap()
        .count();
    assert_eq!(blobs, 0);
    assert_fsck_clean(root.path());

    let err = kiln_err(root.path(), &["rmi", "nothere"]);
    assert!(err.contains("no such image: nothere"), "{err}");
}

#[test]
fn save_then_load_round_trip() {
    let root = root_with_busybox();
    kiln_ok(root.path(), &["tag", "busybox", "extra:1"]);
    let archive = root.path().join("out.tar");
    kiln_ok(
        root.path(),
        &[
            "save",
            "-o",
            archive.to_str().unwrap(),
            "busybox",
            "extra:1",
        ],
    );
    let listing = Command::new("tar")
        .arg("-tf")
        .arg(&archive)
        .output()
        .unwrap();
    let listing = String::from_utf8(listing.stdout).unwrap();
    for member in ["manifest.json", "index.json", "oci-layout", "repositories"] {
        assert!(
            listing.lines().any(|l| l == member),
            "{member} missing:\n{listing}"
        );
    }
    let other = tempfile::tempdir().unwrap();
    let out = kiln_ok(other.path(), &["load", "-i", archive.to_str().unwrap()]);
    assert!(out.contains("Loaded image: busybox:latest"), "{out}");
    assert!(out.contains("Loaded image: extra:1"), "{out}");
    assert_eq!(
        image_id(root.path(), "busybox"),
        image_id(other.path(), "busybox")
    );
    assert_fsck_clean(other.path());

    // The same archive through standard input, gzip-compressed.
    let gz = root.path().join("out.tar.gz");
    let status = Command::new("sh")
        .arg("-c")
        .arg(format!("gzip -c {} > {}", archive.display(), gz.display()))
        .status()
        .unwrap();
    assert!(status.success());
    let third = tempfile::tempdir().unwrap();
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "{} --root {} load < {}",
            kiln_bin(),
            third.path().display(),
            gz.display()
        ))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        image_id(root.path(), "busybox"),
        image_id(third.path(), "busybox")
    );
}

#[test]
fn load_refuses_a_corrupt_archive_and_stores_nothing() {
    let root = root_with_busybox();
    let archive = root.path().join("out.tar");
    kiln_ok(
        root.path(),
        &["save", "-o", archive.to_str().unwrap(), "busybox"],
    );
    // Flip one byte inside the layer blob: its name no longer matches.
    let mut bytes = fs::read(&archive).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0xff;
    fs::write(&archive, &bytes).unwrap();
    let other = tempfile::tempdir().unwrap();
    let err = kiln_err(other.path(), &["load", "-i", archive.to_str().unwrap()]);
    assert_eq!(err.trim().lines().count(), 1, "one error line: {err}");
    assert!(
        err.contains("digest mismatch") || err.contains("layer"),
        "{err}"
    );
    assert_eq!(kiln_ok(other.path(), &["images", "-q"]).trim(), "");
    assert_eq!(
        fs::read_dir(other.path().join("ingest")).unwrap().count(),
        0
    );
    assert_fsck_clean(other.path());

    let err = kiln_err(other.path(), &["load", "-i", "/nonexistent.tar"]);
    assert!(err.contains("/nonexistent.tar"), "{err}");
}

#[test]
fn fsck_finds_a_corrupt_blob() {
    let root = root_with_busybox();
    assert_fsck_clean(root.path());
    let blobs = root.path().join("blobs/sha256");
    let biggest = fs::read_dir(&blobs)
        .unwrap()
        .map(|e| e.unwrap().path())
        .max_by_key(|p| fs::metadata(p).unwrap().len())
        .unwrap();
    let mut bytes = fs::read(&biggest).unwrap();
    bytes[100] ^= 1;
    fs::write(&biggest, bytes).unwrap();
    let out = kiln(root.path(), &["fsck"]);
    assert_eq!(out.status.code(), Some(1));
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(report.contains("content hashes to"), "{report}");
}

#[test]
fn system_df_and_prune() {
    let root = root_with_busybox();
    let df = kiln_ok(root.path(), &["system", "df"]);
    assert!(df.lines().next().unwrap().starts_with("TYPE"), "{df}");
    assert!(
        df.lines()
            .any(|l| l.starts_with("Images ") && l.contains(" 1 ")),
        "{df}"
    );
    // An untagged image: re-import under the same name leaves the old one dangling.
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("f"), "x").unwrap();
    kiln_ok(
        root.path(),
        &["import", dir.path().to_str().unwrap(), "busybox:latest"],
    );
    let table = kiln_ok(root.path(), &["images"]);
    assert!(table.lines().any(|l| l.starts_with("<none> ")), "{table}");
    // A stray ingest file from a dead writer.
    fs::write(root.path().join("ingest/999999999-deadbeef"), "partial").unwrap();
    let out = kiln_ok(root.path(), &["system", "prune", "-f"]);
    assert!(out.contains("Total reclaimed space"), "{out}");
    let table = kiln_ok(root.path(), &["images"]);
    assert!(!table.contains("<none>"), "{table}");
    assert!(table.contains("busybox"), "{table}");
    assert_eq!(fs::read_dir(root.path().join("ingest")).unwrap().count(), 0);
    assert_fsck_clean(root.path());
    kiln_ok(root.path(), &["system", "prune", "-a"]);
    assert_eq!(kiln_ok(root.path(), &["images", "-q"]).trim(), "");
    assert_eq!(
        fs::read_dir(root.path().join("blobs/sha256"))
            .unwrap()
            .count(),
        0
    );
    assert_eq!(
        fs::read_dir(root.path().join("snapshots")).unwrap().count(),
        0
    );
}

#[test]
fn parallel_commands_on_one_root() {
    let root = root_with_busybox();
    let tar = busybox_tar().to_str().unwrap().to_string();
    let children: Vec<_> = (0..8)
        .map(|i| {
            let args: Vec<String> = match i % 4 {
                0 => vec!["import".into(), tar.clone(), format!("par{i}:latest")],
                1 => vec!["tag".into(), "busybox".into(), format!("tagged{i}")],
                2 => vec!["images".into()],
                _ => vec!["system".into(), "prune".into()],
            };
            Command::new(kiln_bin())
                .arg("--root")
                .arg(root.path())
                .args(&args)
                .stdout(std::process::Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    for mut child in children {
        assert!(child.wait().unwrap().success());
    }
    let names = kiln_ok(root.path(), &["images", "--format", "json"]);
    for want in ["par0", "par4", "tagged1", "tagged5", "busybox"] {
        assert!(
            names.contains(&format!("\"Repository\":\"{want}\"")),
            "{want} missing: {names}"
        );
    }
    let removals: Vec<_> = ["par0", "par4", "tagged1", "tagged5"]
        .iter()
        .map(|n| {
            Command::new(kiln_bin())
                .arg("--root")
                .arg(root.path())
                .args(["rmi", n])
                .stdout(std::process::Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    for mut child in removals {
        assert!(child.wait().unwrap().success());
    }
    assert_fsck_clean(root.path());
    assert!(kiln_ok(root.path(), &["images"]).contains("busybox"));
}

#[test]
fn killed_import_leaves_a_consistent_store() {
    let root = root_with_busybox();
    let tar = busybox_tar().to_str().unwrap().to_string();
    for delay_ms in [1u64, 5, 15, 40] {
        let mut child = Command::new(kiln_bin())
            .arg("--root")
            .arg(root.path())
            .args(["import", &tar, "killed:latest"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(delay_ms));
        let _ = child.kill();
        let _ = child.wait();
        assert_fsck_clean(root.path());
    }
    kiln_ok(root.path(), &["system", "prune"]);
    assert_fsck_clean(root.path());
    assert_eq!(fs::read_dir(root.path().join("ingest")).unwrap().count(), 0);
}

#[test]
fn bad_input_gives_one_clear_line() {
    let root = tempfile::tempdir().unwrap();
    let cases: &[(&[&str], &str)] = &[
        (
            &["import", "/does/not/exist.tar", "x"],
            "/does/not/exist.tar",
        ),
        (
            &["import", busybox_tar().to_str().unwrap(), "Bad Name"],
            "Bad Name",
        ),
        (
            &[
                "import",
                "--change",
                "RUN true",
                busybox_tar().to_str().unwrap(),
                "x",
            ],
            "RUN",
        ),
        (&["tag", "nothere", "x"], "no such image: nothere"),
        (&["inspect", "nothere"], "no such image: nothere"),
        (
            &["save", "-o", "/tmp/x.tar", "nothere"],
            "no such image: nothere",
        ),
    ];
    for (args, needle) in cases {
        let out = kiln(root.path(), args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(needle), "{args:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{args:?}: {err}");
    }
    // A file that is not a tar: refused, nothing stored.
    let junk = root.path().join("junk.tar");
    fs::write(&junk, vec![7u8; 4096]).unwrap();
    kiln_err(root.path(), &["import", junk.to_str().unwrap(), "junk"]);
    assert_eq!(
        fs::read_dir(root.path().join("blobs/sha256"))
            .unwrap()
            .count(),
        0
    );
    assert_eq!(
        fs::read_dir(root.path().join("snapshots")).unwrap().count(),
        0
    );
    assert_fsck_clean(root.path());
}

#[test]
fn skopeo_and_umoci_read_the_root() {
    if !has_tool("skopeo") || !has_tool("umoci") {
        skip_or_fail("skopeo and umoci are needed (apt-get install skopeo umoci)");
        return;
    }
    let root = root_with_busybox();
    let oci = format!("oci:{}:busybox:latest", root.path().display());
    let out = Command::new("skopeo")
        .args(["inspect", &oci])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "skopeo inspect: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let info: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(info["Layers"].as_array().unwrap().len(), 1);

    let bundle = tempfile::tempdir().unwrap();
    let dest = bundle.path().join("b");
    let out = Command::new("umoci")
        .args([
            "unpack",
            "--image",
            &format!("{}:busybox:latest", root.path().display()),
        ])
        .arg(&dest)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "umoci unpack: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(dest.join("rootfs/bin/busybox").is_file());

    // skopeo writes docker-archive and oci-archive tars; kiln loads both.
    for (kind, file) in [("docker-archive", "d.tar"), ("oci-archive", "o.tar")] {
        let path = bundle.path().join(file);
        let out = Command::new("skopeo")
            .args([
                "copy",
                &oci,
                &format!("{kind}:{}:copied:v1", path.display()),
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "skopeo copy {kind}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let other = tempfile::tempdir().unwrap();
        let loaded = kiln_ok(other.path(), &["load", "-i", path.to_str().unwrap()]);
        assert!(loaded.contains("copied:v1"), "{kind}: {loaded}");
        assert_eq!(
            image_id(other.path(), "copied:v1"),
            image_id(root.path(), "busybox"),
            "{kind}"
        );
        assert_fsck_clean(other.path());
    }

    // A kiln save archive is an OCI archive skopeo reads.
    let saved = bundle.path().join("saved.tar");
    kiln_ok(
        root.path(),
        &["save", "-o", saved.to_str().unwrap(), "busybox"],
    );
    let out = Command::new("skopeo")
        .args(["inspect", &format!("docker-archive:{}", saved.display())])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "skopeo inspect docker-archive: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Command::new("skopeo")
        .args([
            "inspect",
            &format!("oci-archive:{}:latest", saved.display()),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "skopeo inspect oci-archive: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A Docker engine to check interop with, when one answers (CI starts one
/// with ../shared/peers/dockerd.sh and exports DOCKER_HOST).
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
fn docker_loads_what_kiln_saves_and_back() {
    let Some(_) = docker() else {
        skip_or_fail("no Docker engine answers (start one with ../shared/peers/dockerd.sh)");
        return;
    };
    let root = root_with_busybox();
    let name = format!("kiln-interop-{}:v1", std::process::id());
    kiln_ok(root.path(), &["tag", "busybox", &name]);
    let archive = root.path().join("for-docker.tar");
    kiln_ok(
        root.path(),
        &["save", "-o", archive.to_str().unwrap(), &name],
    );
    let out = docker()
        .unwrap()
        .args(["load", "-i"])
        .arg(&archive)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "docker load: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = docker()
        .unwrap()
        .args(["image", "inspect", "--format", "{{.Id}}", &name])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "docker image inspect: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        image_id(root.path(), &name)
    );

    // And what docker saves, kiln loads with the same id.
    let back = root.path().join("from-docker.tar");
    let out = docker()
        .unwrap()
        .args(["save", "-o"])
        .arg(&back)
        .arg(&name)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "docker save: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let other = tempfile::tempdir().unwrap();
    let loaded = kiln_ok(other.path(), &["load", "-i", back.to_str().unwrap()]);
    assert!(loaded.contains(&name), "{loaded}");
    assert_eq!(image_id(other.path(), &name), image_id(root.path(), &name));
    assert_fsck_clean(other.path());
    let _ = docker().unwrap().args(["rmi", &name]).output();
}

#[test]
fn images_filters() {
    let root = tempfile::tempdir().unwrap();
    let tar = busybox_tar().to_str().unwrap();
    let import =
        |epoch: &str, args: &[&str]| import_at(root.path(), epoch, args)[7..19].to_string();
    let base = import("1000", &[tar, "busybox:latest"]);
    let app = import(
        "2000",
        &["--change", "LABEL team=a", tar, "registry.local/app:v1"],
    );
    let loose = import("3000", &["--change", "LABEL team=b", tar]);
    let ids = |filters: &[&str]| -> Vec<String> {
        let mut args = vec!["images", "-q"];
        for f in filters {
            args.extend(["-f", f]);
        }
        kiln_ok(root.path(), &args)
            .lines()
            .map(String::from)
            .collect()
    };
    assert_eq!(ids(&["dangling=true"]), [loose.as_str()]);
    assert_eq!(ids(&["dangling=false"]), [app.as_str(), base.as_str()]);
    assert_eq!(ids(&["reference=busy*"]), [base.as_str()]);
    assert_eq!(ids(&["reference=*/app:v?"]), [app.as_str()]);
    assert!(
        ids(&["reference=app"]).is_empty(),
        "* and names stay within a path part"
    );
    assert_eq!(ids(&["label=team"]), [loose.as_str(), app.as_str()]);
    assert_eq!(ids(&["label=team=a"]), [app.as_str()]);
    assert_eq!(
        ids(&["label=team=a", "label=team=b"]),
        [loose.as_str(), app.as_str()]
    );
    assert_eq!(ids(&["label=team", "dangling=false"]), [app.as_str()]);
    assert_eq!(ids(&["before=registry.local/app:v1"]), [base.as_str()]);
    assert_eq!(ids(&["since=registry.local/app:v1"]), [loose.as_str()]);
    for bad in ["dangling=maybe", "colour=red", "since=nosuch:v1", "nokey"] {
        let out = kiln(root.path(), &["images", "-f", bad]);
        assert!(!out.status.success(), "{bad}");
        assert_eq!(
            String::from_utf8_lossy(&out.stderr).trim().lines().count(),
            1,
            "{bad}"
        );
    }
}
