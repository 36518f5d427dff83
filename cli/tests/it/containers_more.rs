//! More container commands, as root: `attach` and detach keys through a
//! real pty, `start -ai`, `cp` both ways on running and stopped containers
//! (with a hostile symlink), anonymous volumes and `rm -v`,
//! `--privileged`, `--device`, and the cgroup v2 device program.
//!
//! Needs: root, overlayfs, cgroups, Debian's busybox-static; the device
//! program test needs a cgroup2 mount (/sys/fs/cgroup or /sys/fs/cgroup/unified).

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::{kiln_bin, skip_or_fail};
use crate::containers::{root, text, Root};

/// A kiln process on a fresh pty, with everything it prints collected.
struct OnPty {
    child: Child,
    writer: File,
    output: Arc<Mutex<Vec<u8>>>,
}

impl OnPty {
    fn spawn(r: &Root, args: &[&str]) -> OnPty {
        let (master, slave) = kiln_runner::pty::open_pair().unwrap();
        kiln_runner::pty::set_window_size(
            std::os::fd::AsFd::as_fd(&master),
            kiln_runner::pty::WindowSize {
                rows: 33,
                cols: 111,
            },
        )
        .unwrap();
        let child = Command::new(kiln_bin())
            .arg("--root")
            .arg(r.path())
            .args(args)
            .stdin(slave.try_clone().unwrap())
            .stdout(slave.try_clone().unwrap())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        drop(slave);
        let writer = master.try_clone().unwrap();
        let output = Arc::new(Mutex::new(Vec::new()));
        let sink = output.clone();
        std::thread::spawn(move || {
            let mut master = master;
            let mut buf = [0u8; 4096];
            while let Ok(n) = master.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
        OnPty {
            child,
            writer,
            output,
        }
    }

    fn text(&self) -> String {
        text(&self.output.lock().unwrap())
    }

    /// Waits (up to a minute) until `marker` was printed.
    fn expect(&self, marker: &str) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !self.text().contains(marker) {
            assert!(
                Instant::now() < deadline,
                "{marker:?} never came; output: {}",
                self.text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn send(&mut self, bytes: &[u8]) {
        self.writer.write_all(bytes).unwrap();
    }

    fn wait(mut self) -> i32 {
        let status = self.child.wait().unwrap();
        status.code().unwrap_or(-1)
    }
}

fn is_running(r: &Root, name: &str) -> bool {
    r.inspect(name)["State"]["Running"].as_bool() == Some(true)
}

#[test]
fn run_it_detach_keys_then_attach() {
    let r = root!();
    let mut run = OnPty::spawn(&r, &["run", "-it", "--name", "t1", "busybox", "sh"]);
    run.send(b"echo A$((1+1))\n");
    run.expect("A2");
    // ctrl-p ctrl-q: kiln returns 0, the container runs on.
    run.send(b"\x10\x11");
    assert_eq!(run.wait(), 0);
    assert!(is_running(&r, "t1"), "detaching stopped the container");
    // Attach again, detach with other keys, attach once more and exit.
    let mut again = OnPty::spawn(&r, &["attach", "--detach-keys", "ctrl-a,x", "t1"]);
    again.send(b"echo B$((2+1))\n");
    again.expect("B3");
    again.send(b"\x01x");
    assert_eq!(again.wait(), 0);
    assert!(is_running(&r, "t1"));
    let mut last = OnPty::spawn(&r, &["attach", "t1"]);
    last.send(b"echo C$((3+1)); exit 7\n");
    last.expect("C4");
    let seen = last.text();
    assert_eq!(last.wait(), 7, "output: {seen}");
    assert!(!is_running(&r, "t1"));
    assert_eq!(r.inspect("t1")["State"]["ExitCode"], 7);
}

#[test]
fn attach_to_a_detached_terminal_container() {
    let r = root!();
    r.ok(&["run", "-dit", "--name", "bg", "busybox", "sh"]);
    let mut a = OnPty::spawn(&r, &["attach", "bg"]);
    a.send(b"stty size; echo D$((4+1))\n");
    a.expect("D5");
    // The attaching terminal's size reached the container's pty.
    a.expect("33 111");
    a.send(b"\x10\x11");
    assert_eq!(a.wait(), 0);
    assert!(is_running(&r, "bg"));
    // Not running, unknown: one clear line, non-zero exit.
    let out = r.run(&["attach", "nosuch"]);
    assert_ne!(out.status.code(), Some(0));
    assert!(text(&out.stderr).contains("no such container: nosuch"));
    r.ok(&["create", "--name", "idle", "busybox", "true"]);
    let out = r.run(&["attach", "idle"]);
    assert_ne!(out.status.code(), Some(0));
    assert!(text(&out.stderr).contains("not running"));
    let out = r.run(&["attach", "--detach-keys", "ctrl-1", "bg"]);
    assert!(text(&out.stderr).contains("invalid detach keys"));
}

#[test]
fn start_attach_interactive() {
    let r = root!();
    r.ok(&[
        "create",
        "-i",
        "--name",
        "ci",
        "busybox",
        "sh",
        "-c",
        "while read l; do echo got:$l; done; echo err >&2; exit 3",
    ]);
    let mut child = Command::new(kiln_bin())
        .args(["--root", r.path().to_str().unwrap(), "start", "-ai", "ci"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"one\ntwo\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(text(&out.stdout), "got:one\ngot:two\n");
    assert_eq!(text(&out.stderr), "err\n");
    // -a alone: output only.
    r.ok(&[
        "create",
        "--name",
        "oo",
        "busybox",
        "sh",
        "-c",
        "echo out; exit 4",
    ]);
    let out = r.run(&["start", "-a", "oo"]);
    assert_eq!(out.status.code(), Some(4));
    assert_eq!(text(&out.stdout), "out\n");
}

/// Waits until the running container `name` has made the file `path`.
fn wait_for_file(r: &Root, name: &str, path: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = r.run(&["exec", name, "test", "-f", path]);
        if out.status.success() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "container {name} never made {path}: {}",
            text(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn read(path: impl AsRef<Path>) -> String {
    std::fs::read_to_string(path.as_ref())
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.as_ref().display()))
}

#[test]
fn cp_both_ways_running_and_stopped() {
    let r = root!();
    r.ok(&[
        "run",
        "-d",
        "-v",
        "/vol",
        "--name",
        "cc",
        "busybox",
        "sh",
        "-c",
        "mkdir -p /d/sub && echo f > /d/f && echo g > /d/sub/g && chown 5:6 /d/f && sleep 1000",
    ]);
    wait_for_file(&r, "cc", "/d/sub/g");
    let host = tempfile::tempdir().unwrap();
    let h = host.path();
    // A directory into an existing directory: lands as h/d.
    r.ok(&["cp", "cc:/d", h.to_str().unwrap()]);
    assert_eq!(read(h.join("d/sub/g")), "g\n");
    // SRC/. into a new directory: its contents.
    r.ok(&["cp", "cc:/d/.", h.join("contents").to_str().unwrap()]);
    assert_eq!(read(h.join("contents/f")), "f\n");
    // A file to a new name; -a keeps the owner.
    r.ok(&["cp", "-a", "cc:/d/f", h.join("renamed").to_str().unwrap()]);
    assert_eq!(read(h.join("renamed")), "f\n");
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(h.join("renamed")).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (5, 6));
    assert_eq!(std::fs::metadata(h.join("d/f")).unwrap().uid(), 0);
    // Host to the running container.
    std::fs::create_dir_all(h.join("up/inner")).unwrap();
    std::fs::write(h.join("up/inner/x"), "x").unwrap();
    r.ok(&["cp", h.join("up").to_str().unwrap(), "cc:/tmp/"]);
    assert_eq!(r.ok(&["exec", "cc", "cat", "/tmp/up/inner/x"]), "x");
    // Into a volume of the running container: it lands in the volume.
    r.ok(&["cp", h.join("up/inner/x").to_str().unwrap(), "cc:/vol/"]);
    let volume = volume_names(&r).pop().expect("the anonymous volume");
    let data = r.path().join("volumes").join(volume).join("_data");
    assert_eq!(read(data.join("x")), "x");
    // Stopped: both ways through its layers.
    r.ok(&["stop", "-t", "1", "cc"]);
    std::fs::write(h.join("late"), "late").unwrap();
    r.ok(&["cp", h.join("late").to_str().unwrap(), "cc:/d/sub/"]);
    r.ok(&["cp", "cc:/d/sub/late", h.join("back").to_str().unwrap()]);
    assert_eq!(read(h.join("back")), "late");
    // A stopped container's volume is mounted for the copy too.
    r.ok(&["cp", h.join("late").to_str().unwrap(), "cc:/vol/late"]);
    assert_eq!(read(data.join("late")), "late");
    r.ok(&["start", "cc"]);
    assert_eq!(r.ok(&["exec", "cc", "cat", "/d/sub/late"]), "late");
    // A tar stream out and back in.
    let out = r.run(&["cp", "cc:/d/sub", "-"]);
    assert!(out.status.success());
    let mut child = Command::new(kiln_bin())
        .args(["--root", r.path().to_str().unwrap(), "cp", "-", "cc:/tmp"])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(&out.stdout).unwrap();
    assert!(child.wait().unwrap().success());
    assert_eq!(r.ok(&["exec", "cc", "cat", "/tmp/sub/g"]), "g\n");
}

#[test]
fn cp_never_leaves_the_container_root() {
    let r = root!();
    let marker = format!("kiln-cp-escape-{}", std::process::id());
    let host_victim = PathBuf::from("/tmp").join(&marker);
    r.ok(&[
        "run",
        "--name",
        "evil",
        "busybox",
        "sh",
        "-c",
        "ln -s /tmp /out && ln -s ../../../../../etc /up && echo inside > /tmp/secret",
    ]);
    // Writing through a symlink to /tmp writes the container's /tmp.
    let host = tempfile::tempdir().unwrap();
    std::fs::write(host.path().join(&marker), "payload").unwrap();
    r.ok(&[
        "cp",
        host.path().join(&marker).to_str().unwrap(),
        "evil:/out/",
    ]);
    assert!(!host_victim.exists(), "cp wrote {}", host_victim.display());
    r.ok(&[
        "cp",
        &format!("evil:/tmp/{marker}"),
        host.path().join("back").to_str().unwrap(),
    ]);
    assert_eq!(read(host.path().join("back")), "payload");
    // Reading through `..` and symlinks stays in the container too.
    r.ok(&[
        "cp",
        "evil:/up/passwd",
        host.path().join("p").to_str().unwrap(),
    ]);
    assert_ne!(
        read(host.path().join("p")),
        read("/etc/passwd"),
        "read the host's /etc/passwd"
    );
    r.ok(&[
        "cp",
        "evil:/../../../../tmp/secret",
        host.path().join("s").to_str().unwrap(),
    ]);
    assert_eq!(read(host.path().join("s")), "inside\n");
    // A tar with `..` in a name is refused.
    let mut tar = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(1);
    h.set_mode(0o644);
    h.set_entry_type(tar::EntryType::Regular);
    h.as_gnu_mut().unwrap().name[..13].copy_from_slice(b"../../escaped");
    h.set_cksum();
    tar.append(&h, &b"x"[..]).unwrap();
    let bytes = tar.into_inner().unwrap();
    let mut child = Command::new(kiln_bin())
        .args(["--root", r.path().to_str().unwrap(), "cp", "-", "evil:/tmp"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(&bytes).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("leaves the destination"));
    // Bad paths: one clear line each, non-zero exit.
    for (args, says) in [
        (vec!["cp", "nosuch:/x", "/tmp/y"], "no such container"),
        (vec!["cp", "evil:/nonexistent", "/tmp/y"], "no such file"),
        (vec!["cp", "/tmp", "/tmp"], "must be CONTAINER:PATH"),
        (
            vec!["cp", "evil:/etc", "/etc/hostname"],
            "cannot copy a directory to a file",
        ),
        (
            vec!["cp", "evil:/etc/passwd", "/nonexistent-dir/x/"],
            "must exist",
        ),
    ] {
        let out = r.run(&args);
        assert_ne!(out.status.code(), Some(0), "{args:?}");
        let err = text(&out.stderr);
        assert!(err.contains(says), "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
    }
}

fn volume_names(r: &Root) -> Vec<String> {
    r.ok(&["volume", "ls", "-q"])
        .lines()
        .map(String::from)
        .collect()
}

#[test]
fn anonymous_volumes_and_rm_v() {
    let r = root!();
    r.ok(&[
        "run",
        "--name",
        "keep",
        "-v",
        "/data",
        "busybox",
        "sh",
        "-c",
        "echo x > /data/f",
    ]);
    let volumes = volume_names(&r);
    assert_eq!(volumes.len(), 1, "{volumes:?}");
    assert_eq!(
        volumes[0].len(),
        64,
        "an anonymous volume is named by an id"
    );
    // In use: volume rm refuses.
    assert!(!r.run(&["volume", "rm", &volumes[0]]).status.success());
    r.ok(&["rm", "keep"]);
    assert_eq!(volume_names(&r), volumes, "rm without -v kept the volume");
    r.ok(&["volume", "rm", &volumes[0]]);
    r.ok(&["run", "--name", "drop", "-v", "/data", "busybox", "true"]);
    assert_eq!(volume_names(&r).len(), 1);
    r.ok(&["rm", "-v", "drop"]);
    assert!(volume_names(&r).is_empty(), "rm -v kept the volume");
    r.ok(&["run", "--rm", "-v", "/data", "busybox", "true"]);
    assert!(volume_names(&r).is_empty(), "--rm kept the volume");
    r.ok(&["run", "-d", "--rm", "-v", "/data", "busybox", "true"]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !(r.ids().is_empty() && volume_names(&r).is_empty()) {
        assert!(Instant::now() < deadline, "-d --rm kept the volume");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn image_volumes_get_the_image_content() {
    let r = root!();
    r.ok(&[
        "import",
        "--change",
        "VOLUME /etc",
        crate::common::busybox_tar().to_str().unwrap(),
        "withvol:1",
    ]);
    let passwd = r.ok(&["run", "--name", "vv", "withvol:1", "cat", "/etc/passwd"]);
    assert!(passwd.starts_with("root:"), "{passwd}");
    let volumes = volume_names(&r);
    assert_eq!(volumes.len(), 1, "{volumes:?}");
    let data = r.path().join("volumes").join(&volumes[0]).join("_data");
    assert_eq!(read(data.join("passwd")), passwd);
    // A flag's mount at the same path replaces the image's volume.
    let host = tempfile::tempdir().unwrap();
    let bind = format!("{}:/etc", host.path().display());
    r.ok(&["run", "--rm", "-v", &bind, "withvol:1", "true"]);
    assert_eq!(volume_names(&r).len(), 1);
    r.ok(&["rm", "-v", "vv"]);
    assert!(volume_names(&r).is_empty());
}

#[test]
fn privileged_and_devices() {
    let r = root!();
    let out = r.run(&[
        "run",
        "--rm",
        "--privileged",
        "busybox",
        "sh",
        "-c",
        "mknod /tmp/z c 1 5 && head -c 1 /tmp/z >/dev/null && echo mknod-ok; \
         mkdir /m && mount -t tmpfs t /m && echo mount-ok; \
         test -c /dev/kmsg && echo kmsg-ok; \
         grep -q ' /sys sysfs rw' /proc/mounts && echo sys-rw; \
         grep CapEff /proc/self/status",
    ]);
    let stdout = text(&out.stdout);
    for want in ["mknod-ok", "mount-ok", "kmsg-ok", "sys-rw"] {
        assert!(
            stdout.contains(want),
            "{want} missing: {stdout}{}",
            text(&out.stderr)
        );
    }
    // Without it: no mount, no such device, /sys read-only.
    let out = r.run(&[
        "run",
        "--rm",
        "busybox",
        "sh",
        "-c",
        "mknod /tmp/z c 1 11; head -c 1 /tmp/z >/dev/null 2>&1 || echo open-denied; \
         mount -t tmpfs t /mnt 2>/dev/null || echo mount-denied; \
         test -e /dev/kmsg || echo no-kmsg",
    ]);
    let stdout = text(&out.stdout);
    for want in ["open-denied", "mount-denied", "no-kmsg"] {
        assert!(stdout.contains(want), "{want} missing: {stdout}");
    }
    // --device with permissions: w allows writing, r alone does not.
    let out = r.run(&[
        "run",
        "--rm",
        "--device",
        "/dev/kmsg:/dev/k:w",
        "busybox",
        "sh",
        "-c",
        "echo kiln-device-test > /dev/k && echo write-ok",
    ]);
    assert!(
        text(&out.stdout).contains("write-ok"),
        "{}",
        text(&out.stderr)
    );
    let out = r.run(&[
        "run",
        "--rm",
        "--device",
        "/dev/kmsg:/dev/k:r",
        "busybox",
        "sh",
        "-c",
        "echo kiln-device-test > /dev/k || echo write-denied",
    ]);
    assert!(text(&out.stdout).contains("write-denied"));
    for bad in ["/dev/nonexistent", "/etc/passwd", "/dev/kmsg:/dev/k:x"] {
        let out = r.run(&["run", "--rm", "--device", bad, "busybox", "true"]);
        assert_eq!(out.status.code(), Some(125), "{bad}");
        assert_eq!(text(&out.stderr).lines().count(), 1, "{bad}");
    }
    assert!(r.ids().is_empty(), "bad --device left a container");
}

/// Where a cgroup2 filesystem is mounted on this host, if anywhere.
fn cgroup2_mount() -> Option<PathBuf> {
    let mounts = std::fs::read_to_string("/proc/self/mounts").ok()?;
    mounts.lines().find_map(|l| {
        let f: Vec<&str> = l.split(' ').collect();
        (f.get(2) == Some(&"cgroup2")).then(|| PathBuf::from(f[1]))
    })
}

#[test]
fn v2_device_program_allows_and_denies() {
    use kiln_runner::oci_spec::runtime::{LinuxDeviceCgroupBuilder, LinuxDeviceType};
    if !crate::common::is_root() {
        skip_or_fail("the device program test needs root");
        return;
    }
    let Some(mount) = cgroup2_mount() else {
        skip_or_fail("no cgroup2 mount");
        return;
    };
    let dir = mount.join(format!("kiln-devtest-{}", std::process::id()));
    std::fs::create_dir(&dir).unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let node = scratch.path().join("zero");
    let made = Command::new("mknod")
        .arg(&node)
        .args(["c", "1", "5"])
        .status()
        .unwrap();
    assert!(made.success());
    let rules = [
        LinuxDeviceCgroupBuilder::default()
            .allow(false)
            .access("rwm")
            .build()
            .unwrap(),
        LinuxDeviceCgroupBuilder::default()
            .allow(true)
            .typ(LinuxDeviceType::C)
            .major(1)
            .minor(3)
            .access("rw")
            .build()
            .unwrap(),
    ];
    let attached = kiln_runner::cgroup::devices::attach(&dir, &rules);
    let script = format!(
        "echo $$ > {procs} || exit 9; \
         head -c 1 /dev/null && echo null-ok; \
         head -c 1 {node} >/dev/null 2>&1 || echo zero-denied; \
         mknod {scratch}/made c 1 5 2>/dev/null || echo mknod-denied",
        procs = dir.join("cgroup.procs").display(),
        node = node.display(),
        scratch = scratch.path().display(),
    );
    let out = attached.as_ref().ok().map(|_| {
        Command::new("/bin/busybox")
            .args(["sh", "-c", &script])
            .output()
            .unwrap()
    });
    let _ = std::fs::remove_dir(&dir);
    attached.unwrap();
    let out = out.unwrap();
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    for want in ["null-ok", "zero-denied", "mknod-denied"] {
        assert!(stdout.contains(want), "{want} missing: {stdout}");
    }
    assert!(!dir.exists(), "test cgroup left behind");
}

/// Member names of a tar on disk.
fn tar_names(tar: &Path) -> Vec<String> {
    let out = Command::new("tar").arg("-tf").arg(tar).output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    text(&out.stdout).lines().map(str::to_string).collect()
}

#[test]
fn diff_and_export_show_the_container_changes() {
    let r = root!();
    r.ok(&[
        "run",
        "--name",
        "dx",
        "busybox",
        "sh",
        "-c",
        "echo new > /new && rm /bin/ls && mkdir -p /srv/dd && echo f > /srv/dd/f && echo me >> /etc/passwd",
    ]);
    let lines = r.ok(&["diff", "dx"]);
    let lines: Vec<&str> = lines.lines().collect();
    for want in [
        "A /new",
        "C /bin",
        "D /bin/ls",
        "C /etc",
        "C /etc/passwd",
        "A /srv/dd/f",
    ] {
        assert!(lines.contains(&want), "{want} not in {lines:?}");
    }
    // The network files are mount points, not changes; the listing is sorted.
    assert!(!lines.iter().any(|l| l.contains("/etc/hosts")), "{lines:?}");
    let mut sorted = lines.clone();
    sorted.sort_by_key(|l| l[2..].to_string());
    assert_eq!(lines, sorted);

    // export: the image with the changes, to a file and to stdout alike.
    let work = tempfile::tempdir().unwrap();
    let tar = work.path().join("dx.tar");
    r.ok(&["export", "-o", tar.to_str().unwrap(), "dx"]);
    let names = tar_names(&tar);
    assert!(names.iter().any(|n| n == "new"), "{names:?}");
    assert!(names.iter().any(|n| n == "srv/dd/f"), "{names:?}");
    assert!(names.iter().any(|n| n == "bin/busybox"), "{names:?}");
    assert!(
        !names.iter().any(|n| n == "bin/ls"),
        "a deleted file is in the export"
    );
    assert!(!names.iter().any(|n| n.contains(".wh.")), "{names:?}");
    let piped = r.run(&["export", "dx"]);
    assert!(piped.status.success(), "{}", text(&piped.stderr));
    assert_eq!(
        piped.stdout,
        std::fs::read(&tar).unwrap(),
        "same tree, same bytes"
    );
    // What export wrote imports and runs.
    r.ok(&["import", tar.to_str().unwrap(), "exported:v1"]);
    assert_eq!(
        r.ok(&[
            "run",
            "--rm",
            "exported:v1",
            "sh",
            "-c",
            "cat /new; tail -n1 /etc/passwd"
        ]),
        "new\nme\n"
    );

    // A running container: its own files, not what is mounted in it.
    r.ok(&[
        "run",
        "-d",
        "-v",
        "/vol",
        "--name",
        "live",
        "busybox",
        "sh",
        "-c",
        "echo v > /vol/inside && echo r > /running && sleep 1000",
    ]);
    wait_for_file(&r, "live", "/running");
    let live = work.path().join("live.tar");
    r.ok(&["export", "-o", live.to_str().unwrap(), "live"]);
    let names = tar_names(&live);
    assert!(names.iter().any(|n| n == "running"), "{names:?}");
    assert!(
        !names.iter().any(|n| n.starts_with("vol/inside")),
        "a volume was exported"
    );
    assert!(
        !names.iter().any(|n| n.starts_with("proc/1")),
        "/proc was exported"
    );
    assert!(r.ok(&["diff", "live"]).lines().any(|l| l == "A /running"));
    // Nothing of the views stays mounted on the host (a view stacks the
    // container's upper directory as a lower one).
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts
            .lines()
            .any(|l| l.contains(r.path().to_str().unwrap()) && l.contains("/upper:")),
        "{mounts}"
    );
    r.ok(&["rm", "-f", "-v", "live", "dx"]);

    // Bad input: one line, non-zero.
    let out = r.run(&["export", "-o", tar.to_str().unwrap(), "nosuch"]);
    assert!(!out.status.success());
    assert_eq!(
        text(&out.stderr).trim().lines().count(),
        1,
        "{}",
        text(&out.stderr)
    );
    let out = r.run(&["diff", "nosuch"]);
    assert!(!out.status.success());
    assert_eq!(
        text(&out.stderr).trim().lines().count(),
        1,
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn pause_freezes_and_unpause_thaws() {
    let r = root!();
    let id = r.ok(&[
        "run",
        "-d",
        "--name",
        "tick",
        "busybox",
        "sh",
        "-c",
        "i=0; while :; do i=$((i+1)); echo $i > /n; sleep 0.05; done",
    ]);
    let counter = r.path().join("containers").join(id.trim()).join("upper/n");
    let read_n = || -> u64 {
        std::fs::read_to_string(&counter)
            .ok()
            .and_then(|t| t.trim().parse().ok())
            .unwrap_or(0)
    };
    let moves = |from: u64| {
        let deadline = Instant::now() + Duration::from_secs(30);
        while read_n() <= from {
            assert!(
                Instant::now() < deadline,
                "the counter never moved past {from}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    moves(0);
    r.ok(&["pause", "tick"]);
    assert!(r.ok(&["ps"]).contains("(Paused)"));
    let inspect: serde_json::Value = serde_json::from_str(&r.ok(&["inspect", "tick"])).unwrap();
    assert_eq!(inspect[0]["State"]["Status"], "paused");
    assert_eq!(inspect[0]["State"]["Paused"], true);
    let frozen_at = read_n();
    std::thread::sleep(Duration::from_millis(400));
    assert_eq!(read_n(), frozen_at, "a paused container kept running");
    let exec = r.run(&["exec", "tick", "true"]);
    assert!(
        text(&exec.stderr).contains("paused"),
        "{}",
        text(&exec.stderr)
    );
    assert!(!r.run(&["pause", "tick"]).status.success(), "paused twice");
    r.ok(&["unpause", "tick"]);
    moves(frozen_at);
    assert!(!r.run(&["unpause", "tick"]).status.success(), "not paused");
    // A paused container still stops: the signal lands once it thaws.
    r.ok(&["pause", "tick"]);
    r.ok(&["stop", "-t", "1", "tick"]);
    let inspect: serde_json::Value = serde_json::from_str(&r.ok(&["inspect", "tick"])).unwrap();
    assert_eq!(inspect[0]["State"]["Status"], "exited");
    assert!(
        !r.run(&["pause", "tick"]).status.success(),
        "paused a stopped container"
    );
    r.ok(&["rm", "tick"]);
}
