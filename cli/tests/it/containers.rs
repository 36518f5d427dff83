//! Containers from busybox:latest, as root: `kiln run` (exit codes, env,
//! user, workdir, stdio, pty, limits, isolation), detached containers with
//! their monitor, logs, exec, stop, volumes. Every test removes its
//! containers and checks that no mount, cgroup or process is left.
//!
//! Needs: root, overlayfs, cgroups (v1 or v2), Debian's busybox-static.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::common::{is_root, kiln, kiln_bin, kiln_ok, root_with_busybox, skip_or_fail};

/// A store root with busybox:latest; on drop removes every container and
/// checks nothing is left behind.
pub(crate) struct Root {
    dir: tempfile::TempDir,
}

impl Root {
    pub(crate) fn new() -> Option<Root> {
        if !is_root() {
            skip_or_fail("container tests need root");
            return None;
        }
        if !Path::new("/bin/busybox").exists() {
            skip_or_fail("container tests need /bin/busybox (Debian package busybox-static)");
            return None;
        }
        if !std::fs::read_to_string("/proc/filesystems").is_ok_and(|f| f.contains("overlay")) {
            skip_or_fail("container tests need overlayfs");
            return None;
        }
        Some(Root {
            dir: root_with_busybox(),
        })
    }

    pub(crate) fn path(&self) -> &Path {
        self.dir.path()
    }

    pub(crate) fn run(&self, args: &[&str]) -> Output {
        kiln(self.path(), args)
    }

    pub(crate) fn ok(&self, args: &[&str]) -> String {
        kiln_ok(self.path(), args)
    }

    pub(crate) fn state(&self, id: &str) -> Value {
        let text = std::fs::read(self.path().join("containers").join(id).join("state.json"))
            .expect("reading state.json");
        serde_json::from_slice(&text).unwrap()
    }

    pub(crate) fn inspect(&self, name: &str) -> Value {
        let v: Value = serde_json::from_str(&self.ok(&["inspect", name])).unwrap();
        v[0].clone()
    }

    pub(crate) fn ids(&self) -> Vec<String> {
        self.ok(&["ps", "-aq"]).lines().map(String::from).collect()
    }

    /// No mount below the root, no kiln/<id> cgroup of its containers.
    pub(crate) fn assert_clean(&self, ids: &[String]) {
        let mounts = std::fs::read_to_string("/proc/mounts").unwrap();
        let root = std::fs::canonicalize(self.path()).unwrap();
        assert!(
            !mounts.contains(root.to_str().unwrap()),
            "mounts left below {}:\n{mounts}",
            root.display()
        );
        for id in ids {
            for dir in cgroup_dirs(id) {
                assert!(!dir.exists(), "cgroup {} left behind", dir.display());
            }
        }
    }
}

impl Drop for Root {
    fn drop(&mut self) {
        let ids = self.ids();
        for id in &ids {
            let _ = self.run(&["rm", "-f", id]);
        }
        if !std::thread::panicking() {
            assert!(self.ids().is_empty(), "containers left");
            self.assert_clean(&ids);
        }
    }
}

/// Where a container's cgroup would be, v1 and v2.
fn cgroup_dirs(id: &str) -> Vec<PathBuf> {
    let mut dirs = vec![Path::new("/sys/fs/cgroup/kiln").join(id)];
    for controller in ["memory", "pids", "cpu", "cpu,cpuacct", "freezer", "devices"] {
        dirs.push(
            Path::new("/sys/fs/cgroup")
                .join(controller)
                .join("kiln")
                .join(id),
        );
    }
    dirs
}

pub(crate) fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

macro_rules! root {
    () => {
        match Root::new() {
            Some(r) => r,
            None => return,
        }
    };
}
pub(crate) use root;

#[test]
fn exit_codes_follow_docker() {
    let r = root!();
    let code = |args: &[&str]| r.run(args).status.code();
    assert_eq!(
        code(&["run", "--rm", "busybox", "sh", "-c", "exit 3"]),
        Some(3)
    );
    assert_eq!(
        code(&["run", "--rm", "--init", "busybox", "sh", "-c", "kill -9 $$"]),
        Some(137)
    );
    assert_eq!(code(&["run", "--rm", "busybox", "/no/such"]), Some(127));
    assert_eq!(code(&["run", "--rm", "busybox", "/etc/passwd"]), Some(126));
    assert_eq!(code(&["run", "--rm", "nosuchimage"]), Some(125));
    assert_eq!(
        code(&["run", "-d", "--rm", "busybox", "/no/such"]),
        Some(127)
    );
    assert!(r.ids().is_empty(), "--rm left containers");
}

/// `run --rm` hands its directory to a detached deleter: gone from `ps -a`
/// at once, gone from disk soon after; what a killed deleter or creator left
/// (an unlocked `.trash-<id>`, a `.creating-<id>`) goes with the next create.
#[test]
fn run_rm_removes_in_the_background_and_sweeps_leftovers() {
    let r = root!();
    let containers = r.path().join("containers");
    r.ok(&["run", "--rm", "busybox", "true"]);
    let leftover_trash = containers.join(format!(".trash-{}", "a".repeat(64)));
    std::fs::create_dir_all(leftover_trash.join("upper/etc")).unwrap();
    std::fs::write(leftover_trash.join("upper/etc/hosts"), "x").unwrap();
    let leftover_creating = containers.join(format!(".creating-{}", "b".repeat(64)));
    std::fs::create_dir_all(leftover_creating.join("upper")).unwrap();
    let out = r.run(&["run", "--rm", "busybox", "sh", "-c", "printf hi; exit 4"]);
    assert_eq!(out.status.code(), Some(4));
    // Output without a newline is printed once (the deleter writes nothing).
    assert_eq!(text(&out.stdout), "hi");
    assert!(r.ids().is_empty(), "--rm left a container in ps -a");
    assert!(
        !leftover_trash.exists(),
        "an unlocked trash tree was not swept"
    );
    assert!(
        !leftover_creating.exists(),
        "a half-made container was not swept"
    );
    // The deleter is a process of its own: wait for it.
    let mut names = Vec::new();
    for _ in 0..200 {
        names = std::fs::read_dir(&containers)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n != ".lock")
            .collect();
        if names.is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(
        names.is_empty(),
        "left in {}: {names:?}",
        containers.display()
    );
    // A failed start drops the janitor it began with: it ends, as does
    // every deleter, leaving no process behind that names this store.
    let failed = r.run(&["run", "--rm", "busybox", "/no/such"]);
    assert_eq!(failed.status.code(), Some(127));
    let root = r.path().to_string_lossy().into_owned();
    let mut lingering = Vec::new();
    for _ in 0..200 {
        lingering = processes_naming(&root);
        if lingering.is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(lingering.is_empty(), "kiln processes left: {lingering:?}");
}

/// Pids and command lines of the processes whose command line holds `text`.
fn processes_naming(text: &str) -> Vec<(u32, String)> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.contains(text) {
            found.push((pid, cmdline));
        }
    }
    found
}

#[test]
fn bad_input_leaves_nothing_behind() {
    let r = root!();
    for args in [
        vec!["run", "--memory", "64x", "busybox", "true"],
        vec!["run", "--cpus", "0", "busybox", "true"],
        vec!["run", "-v", "/no/such/dir:/x", "busybox", "true"],
        vec!["run", "--cap-add", "bogus", "busybox", "true"],
        vec!["run", "-u", "nosuchuser", "busybox", "true"],
        vec!["run", "--network", "nosuchnet", "busybox", "true"],
        vec!["run", "--name", "bad name", "busybox", "true"],
        vec!["run", "nosuchimage", "true"],
    ] {
        let out = r.run(&args);
        assert_eq!(out.status.code(), Some(125), "{args:?}");
        assert!(!out.stderr.is_empty(), "{args:?} gave no message");
    }
    assert!(r.ids().is_empty(), "bad input left a container");
    assert!(!r.path().join("volumes").exists());
}

#[test]
fn process_settings_and_stdio() {
    let r = root!();
    let out = r.run(&[
        "run",
        "--rm",
        "-e",
        "A=1",
        "-u",
        "www-data",
        "-w",
        "/srv/app",
        "-h",
        "box",
        "busybox",
        "sh",
        "-c",
        "echo $A $HOME; id; pwd; hostname; echo oops >&2",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("1 /var/www"), "{stdout}");
    assert!(
        stdout.contains("uid=33(www-data) gid=33(www-data)"),
        "{stdout}"
    );
    assert!(stdout.contains("/srv/app\nbox\n"), "{stdout}");
    assert!(!stdout.contains("oops"));
    assert_eq!(text(&out.stderr), "oops\n");
    let out = r.ok(&["run", "--rm", "-u", "1000:users", "busybox", "id"]);
    assert!(out.contains("uid=1000 gid=100(users)"), "{out}");

    // --env-file, then stdin piped with -i.
    let env_file = r.path().join("env");
    std::fs::write(&env_file, "# comment\nB=two\n").unwrap();
    let mut child = Command::new(kiln_bin())
        .args(["--root", r.path().to_str().unwrap(), "run", "--rm", "-i"])
        .args(["--env-file", env_file.to_str().unwrap(), "busybox"])
        .args(["sh", "-c", "echo $B; tr a-z A-Z"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"hello\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(text(&out.stdout), "two\nHELLO\n");
}

#[test]
fn isolation() {
    let r = root!();
    let out = r.ok(&[
        "run",
        "--rm",
        "--network",
        "none",
        "busybox",
        "sh",
        "-c",
        "echo pid $$; cat /proc/net/dev | tail -n +3 | cut -d: -f1 | tr -d ' '; \
         touch /ok && echo writable",
    ]);
    assert!(out.contains("pid 1\n"), "{out}");
    assert!(out.contains("\nlo\n") && !out.contains("eth"), "{out}");
    assert!(out.contains("writable"));
    let out = r.run(&["run", "--rm", "--read-only", "busybox", "touch", "/x"]);
    assert_ne!(out.status.code(), Some(0));
    let out = r.ok(&[
        "run",
        "--rm",
        "--read-only",
        "--tmpfs",
        "/scratch",
        "busybox",
        "sh",
        "-c",
        "touch /scratch/x && echo ok",
    ]);
    assert_eq!(out, "ok\n");
    // The rw layer is the container's own: a second container does not see it.
    r.ok(&["run", "--rm", "busybox", "touch", "/marker"]);
    assert_ne!(
        r.run(&["run", "--rm", "busybox", "ls", "/marker"])
            .status
            .code(),
        Some(0)
    );
    // Capabilities: chown works by default, not after --cap-drop.
    assert!(r
        .run(&["run", "--rm", "busybox", "chown", "1", "/tmp"])
        .status
        .success());
    assert!(!r
        .run(&[
            "run",
            "--rm",
            "--cap-drop",
            "chown",
            "busybox",
            "chown",
            "1",
            "/tmp"
        ])
        .status
        .success());
}

#[test]
fn limits() {
    let r = root!();
    let out = r.run(&[
        "run",
        "--rm",
        "--memory",
        "16m",
        "busybox",
        "sh",
        "-c",
        "head -c 200m /dev/zero | tail",
    ]);
    assert_eq!(out.status.code(), Some(137), "{}", text(&out.stderr));
    let out = r.run(&[
        "run",
        "--rm",
        "--pids-limit",
        "4",
        "busybox",
        "sh",
        "-c",
        "for i in 1 2 3 4 5 6 7 8; do sleep 3 & done; wait",
    ]);
    assert!(text(&out.stderr).contains("fork"), "{}", text(&out.stderr));
    let id = r.ok(&["run", "-d", "--cpus", "0.5", "busybox", "sleep", "100"]);
    let id = id.trim();
    let quota = r.inspect(id)["Spec"]["linux"]["resources"]["cpu"]["quota"].clone();
    assert_eq!(quota, 50000);
    for dir in cgroup_dirs(id) {
        for file in ["cpu.cfs_quota_us", "cpu.max"] {
            if let Ok(value) = std::fs::read_to_string(dir.join(file)) {
                assert!(value.starts_with("50000"), "{file}: {value}");
            }
        }
    }
    r.ok(&["rm", "-f", id]);
}

#[test]
fn detached_logs_exec_stop_and_rm() {
    let r = root!();
    let id = r.ok(&[
        "run",
        "-d",
        "--name",
        "web",
        "busybox",
        "sh",
        "-c",
        "echo started; echo warn >&2; trap 'echo bye; exit 0' TERM; while true; do sleep 0.1; done",
    ]);
    let id = id.trim().to_string();
    assert_eq!(id.len(), 64);
    assert!(r.ok(&["ps"]).contains("web"));
    let json: Value =
        serde_json::from_str(r.ok(&["ps", "--format", "json"]).lines().next().unwrap()).unwrap();
    assert_eq!(json["State"], "running");
    assert_eq!(r.inspect("web")["State"]["Running"], true);
    // Output arrives in the log.
    let mut logs = String::new();
    for _ in 0..100 {
        logs = r.ok(&["logs", "web"]);
        if logs.contains("started") {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(logs, "started\n");
    // stderr is a separate pipe: its line may land a moment after stdout's.
    let log = r.path().join("containers").join(&id).join("log.json");
    let mut raw = String::new();
    for _ in 0..100 {
        raw = std::fs::read_to_string(&log).unwrap();
        if raw.contains(r#""stream":"stderr""#) {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(raw.contains(r#""stream":"stderr""#), "{raw}");
    assert_eq!(
        r.ok(&[
            "exec",
            "-e",
            "X=7",
            "web",
            "sh",
            "-c",
            "echo $X; cat /proc/1/cmdline | head -c 2"
        ]),
        "7\nsh"
    );
    assert_eq!(
        r.run(&["exec", "web", "sh", "-c", "exit 4"]).status.code(),
        Some(4)
    );
    assert!(
        r.run(&["rm", "web"]).status.code() != Some(0),
        "rm of a running container"
    );
    r.ok(&["stop", "web"]);
    let state = r.inspect("web")["State"].clone();
    assert_eq!(state["Status"], "exited");
    assert_eq!(state["ExitCode"], 0);
    assert_eq!(r.ok(&["wait", "web"]), "0\n");
    assert!(r.ok(&["logs", "--tail", "1", "web"]).contains("bye"));
    assert!(r.ok(&["logs", "-t", "web"]).starts_with("20"));
    // --since/--until windows: an age, RFC 3339 and Unix seconds.
    let all = r.ok(&["logs", "--tail", "all", "web"]);
    assert!(all.contains("bye"), "{all}");
    assert_eq!(r.ok(&["logs", "--since", "1h", "web"]), all);
    assert_eq!(
        r.ok(&["logs", "--since", "2999-01-01T00:00:00Z", "web"]),
        ""
    );
    assert_eq!(r.ok(&["logs", "--until", "1000000000", "web"]), "");
    assert_eq!(
        r.ok(&["logs", "--until", "2999-01-01", "-n", "1", "web"]),
        "bye\n"
    );
    let bad = r.run(&["logs", "--since", "yesterday", "web"]);
    assert!(!bad.status.success());
    assert!(
        text(&bad.stderr).contains("invalid time"),
        "{}",
        text(&bad.stderr)
    );
    assert!(!r.ok(&["ps"]).contains("web"));
    assert!(r.ok(&["ps", "-a"]).contains("Exited (0)"));
    // rename: the new name finds it, the old one no longer; names stay unique.
    r.ok(&["rename", "web", "web2"]);
    assert_eq!(r.inspect("web2")["Id"], id.as_str());
    assert!(!r.run(&["inspect", "web"]).status.success());
    r.ok(&["create", "--name", "taken", "busybox", "true"]);
    let clash = r.run(&["rename", "web2", "taken"]);
    assert!(
        text(&clash.stderr).contains("already in use"),
        "{}",
        text(&clash.stderr)
    );
    r.ok(&["rm", "taken"]);
    r.ok(&["rename", "web2", "web"]);
    // Start again, kill with a signal, remove.
    r.ok(&["start", "web"]);
    assert!(r.ok(&["ps"]).contains("web"));
    r.ok(&["kill", "-s", "KILL", "web"]);
    assert_eq!(r.ok(&["wait", "web"]), "137\n");
    r.ok(&["rm", "web"]);
    assert!(!r.path().join("containers").join(&id).exists());
    r.assert_clean(&[id]);
}

#[test]
fn create_then_start_and_run_rm_detached() {
    let r = root!();
    let id = r.ok(&[
        "create",
        "--name",
        "later",
        "busybox",
        "sh",
        "-c",
        "echo hi; exit 5",
    ]);
    assert!(r.ok(&["ps", "-a"]).contains("Created"));
    r.ok(&["start", "later"]);
    assert_eq!(r.ok(&["wait", "later"]), "5\n");
    assert_eq!(r.ok(&["logs", "later"]), "hi\n");
    // start -a prints only this run's output and exits with its code.
    let out = r.run(&["start", "-a", "later"]);
    assert_eq!(out.status.code(), Some(5));
    assert_eq!(text(&out.stdout), "hi\n");
    r.ok(&["rm", id.trim()]);
    let id = r.ok(&["run", "-d", "--rm", "busybox", "true"]);
    for _ in 0..200 {
        if !r.path().join("containers").join(id.trim()).exists() {
            break;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    assert!(r.ids().is_empty(), "-d --rm left the container");
}

#[test]
fn killed_monitor_is_detected() {
    let r = root!();
    let id = r.ok(&["run", "-d", "busybox", "sleep", "1000"]);
    let id = id.trim().to_string();
    let state = r.state(&id);
    let monitor = state["monitor_pid"].as_i64().unwrap();
    Command::new("kill")
        .args(["-9", &monitor.to_string()])
        .status()
        .unwrap();
    while Path::new(&format!("/proc/{monitor}/stat")).exists()
        && !std::fs::read_to_string(format!("/proc/{monitor}/stat"))
            .unwrap_or_default()
            .contains(") Z")
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    // The program still runs without its monitor.
    assert!(r.ok(&["ps"]).contains(&id[..12]));
    r.ok(&["kill", &id]);
    let pid = state["pid"].as_i64().unwrap();
    for _ in 0..250 {
        if !Path::new(&format!("/proc/{pid}")).exists() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!r.ok(&["ps"]).contains(&id[..12]));
    assert!(r.ok(&["ps", "-a"]).contains("Exited (unknown)"));
    r.ok(&["rm", &id]);
    r.assert_clean(&[id]);
}

#[test]
fn volumes_outlive_containers() {
    let r = root!();
    r.ok(&[
        "run",
        "--rm",
        "-v",
        "data:/data",
        "busybox",
        "sh",
        "-c",
        "echo kept > /data/f",
    ]);
    assert_eq!(
        r.ok(&[
            "run",
            "--rm",
            "-v",
            "data:/data",
            "busybox",
            "cat",
            "/data/f"
        ]),
        "kept\n"
    );
    let host = tempfile::tempdir().unwrap();
    std::fs::write(host.path().join("in"), "from host").unwrap();
    let spec = format!("{}:/mnt:ro", host.path().display());
    assert_eq!(
        r.ok(&["run", "--rm", "-v", &spec, "busybox", "cat", "/mnt/in"]),
        "from host"
    );
    assert!(!r
        .run(&["run", "--rm", "-v", &spec, "busybox", "touch", "/mnt/x"])
        .status
        .success());
}

#[test]
fn interactive_terminal() {
    let r = root!();
    let (master, slave) = kiln_runner::pty::open_pair().unwrap();
    kiln_runner::pty::set_window_size(
        std::os::fd::AsFd::as_fd(&master),
        kiln_runner::pty::WindowSize {
            rows: 30,
            cols: 100,
        },
    )
    .unwrap();
    let mut child = Command::new(kiln_bin())
        .args([
            "--root",
            r.path().to_str().unwrap(),
            "run",
            "--rm",
            "-it",
            "busybox",
            "sh",
        ])
        .stdin(slave.try_clone().unwrap())
        .stdout(slave.try_clone().unwrap())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(slave);
    let mut writer = master.try_clone().unwrap();
    let reader = crate::common::read_pty_until(master, "DONE");
    let pause = || std::thread::sleep(Duration::from_millis(400));
    pause();
    writer.write_all(b"tty; stty size\n").unwrap();
    pause();
    kiln_runner::pty::set_window_size(
        std::os::fd::AsFd::as_fd(&writer),
        kiln_runner::pty::WindowSize {
            rows: 40,
            cols: 120,
        },
    )
    .unwrap();
    Command::new("kill")
        .args(["-WINCH", &child.id().to_string()])
        .status()
        .unwrap();
    pause();
    writer.write_all(b"stty size; sleep 100\n").unwrap();
    pause();
    writer.write_all(b"\x03").unwrap();
    pause();
    writer.write_all(b"echo D''ONE\n").unwrap();
    pause();
    writer.write_all(b"\x04").unwrap();
    let status = child.wait().unwrap();
    let out = text(&reader.join().unwrap());
    assert_eq!(status.code(), Some(0), "output: {out}");
    assert!(out.contains("/dev/pts/0"), "output: {out}");
    assert!(out.contains("30 100"), "output: {out}");
    assert!(out.contains("40 120"), "output: {out}");
    assert!(out.contains("DONE"), "output: {out}");
}

#[test]
fn commit_then_run() {
    let r = root!();
    r.ok(&[
        "run",
        "--name",
        "c1",
        "busybox",
        "sh",
        "-c",
        "echo new > /added; rm /etc/group",
    ]);
    r.ok(&["commit", "c1", "mine:v1"]);
    r.ok(&["rm", "c1"]);
    let out = r.run(&[
        "run",
        "--rm",
        "mine:v1",
        "sh",
        "-c",
        "cat /added; ls /etc/group",
    ]);
    assert_eq!(text(&out.stdout), "new\n");
    assert_ne!(
        out.status.code(),
        Some(0),
        "the deletion did not carry over"
    );
    assert!(r.ok(&["images"]).contains("mine"));
}

#[test]
fn volume_commands() {
    let r = root!();
    assert_eq!(r.ok(&["volume", "create", "v1"]), "v1\n");
    assert!(r.ok(&["volume", "ls"]).contains("v1"));
    let v: Value = serde_json::from_str(&r.ok(&["volume", "inspect", "v1"])).unwrap();
    let mountpoint = PathBuf::from(v[0]["Mountpoint"].as_str().unwrap());
    r.ok(&[
        "run",
        "--name",
        "user",
        "-v",
        "v1:/v",
        "busybox",
        "sh",
        "-c",
        "echo x > /v/f",
    ]);
    assert_eq!(
        std::fs::read_to_string(mountpoint.join("f")).unwrap(),
        "x\n"
    );
    assert!(
        r.run(&["volume", "rm", "v1"]).status.code() != Some(0),
        "in use"
    );
    r.ok(&["rm", "user"]);
    assert!(r.ok(&["volume", "prune"]).contains("v1"));
    assert_eq!(r.ok(&["volume", "ls", "-q"]), "");
}

#[test]
fn ps_filters_and_selections() {
    let r = root!();
    r.ok(&["create", "--name", "made", "busybox", "true"]);
    assert_eq!(
        r.run(&["run", "--name", "failed", "busybox", "sh", "-c", "exit 3"])
            .status
            .code(),
        Some(3)
    );
    let live = r.ok(&["run", "-d", "--name", "live", "busybox", "sleep", "100"]);
    let live = live.trim();
    let ids = |args: &[&str]| -> Vec<String> {
        let mut all = vec!["ps", "-q"];
        all.extend_from_slice(args);
        r.ok(&all).lines().map(String::from).collect()
    };
    let short = |name: &str| r.inspect(name)["Id"].as_str().unwrap()[..12].to_string();
    let (made, failed) = (short("made"), short("failed"));
    assert_eq!(ids(&[]), [&live[..12]]);
    // A status filter shows stopped containers without -a.
    assert_eq!(ids(&["-f", "status=exited"]), [failed.as_str()]);
    assert_eq!(ids(&["-f", "status=created"]), [made.as_str()]);
    assert_eq!(
        ids(&["-f", "status=created", "-f", "status=exited"]),
        [failed.as_str(), made.as_str()]
    );
    assert_eq!(ids(&["-a", "-f", "exited=3"]), [failed.as_str()]);
    assert!(ids(&["-a", "-f", "exited=0"]).is_empty());
    assert_eq!(ids(&["-a", "-f", "name=fail"]), [failed.as_str()]);
    assert_eq!(ids(&["-a", "-f", "ancestor=busybox"]).len(), 3);
    assert_eq!(
        ids(&["-a", "-f", "ancestor=busybox", "-f", "status=running"]),
        [&live[..12]]
    );
    assert_eq!(
        ids(&["-a", "-f", "id=", "-f", &format!("id={made}")]).len(),
        3,
        "values of one key OR"
    );
    // Newest first; -l and -n count stopped containers too.
    assert_eq!(ids(&["-l"]), [&live[..12]]);
    assert_eq!(ids(&["-n", "2"]), [&live[..12], failed.as_str()]);
    assert_eq!(ids(&["-l", "--no-trunc"]), [live]);
    let bad = r.run(&["ps", "-f", "colour=red"]);
    assert!(!bad.status.success());
    assert_eq!(
        text(&bad.stderr).trim().lines().count(),
        1,
        "{}",
        text(&bad.stderr)
    );
    r.ok(&["rm", "-f", "made", "failed", "live"]);
}

#[test]
fn stats_reads_the_container_cgroup() {
    let r = root!();
    r.ok(&[
        "run",
        "-d",
        "--name",
        "hog",
        "--memory",
        "64m",
        "busybox",
        "sh",
        "-c",
        "head -c 16m /dev/zero > /dev/shm/x && touch /ready && while :; do :; done",
    ]);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !r
        .run(&["exec", "hog", "test", "-f", "/ready"])
        .status
        .success()
    {
        assert!(std::time::Instant::now() < deadline, "hog never got ready");
        std::thread::sleep(Duration::from_millis(50));
    }
    let line = r.ok(&["stats", "--no-stream", "--format", "json", "hog"]);
    let v: Value = serde_json::from_str(line.trim()).unwrap();
    assert_eq!(v["Name"], "hog");
    let cpu: f64 = v["CPUPerc"]
        .as_str()
        .unwrap()
        .trim_end_matches('%')
        .parse()
        .unwrap();
    assert!(cpu > 1.0, "a busy loop shows {cpu}% CPU");
    let mem = v["MemUsage"].as_str().unwrap();
    let (used, limit) = mem.split_once(" / ").unwrap();
    assert_eq!(limit, "64MiB", "{mem}");
    let used_mib: f64 = used.trim_end_matches("MiB").parse().unwrap_or(0.0);
    assert!(
        used.ends_with("MiB") && used_mib >= 16.0,
        "16 MiB in /dev/shm, {mem}"
    );
    assert!(v["PIDs"].as_str().unwrap().parse::<u64>().unwrap() >= 1);
    let table = r.ok(&["stats", "--no-stream"]);
    assert!(table.starts_with("CONTAINER ID"), "{table}");
    assert!(table.contains("hog"), "{table}");
    r.ok(&["rm", "-f", "hog"]);
    // A stopped container shows zeros with -a; an unknown one is an error.
    r.ok(&["create", "--name", "idle", "busybox", "true"]);
    let idle = r.ok(&["stats", "-a", "--no-stream", "--format", "json"]);
    let v: Value = serde_json::from_str(idle.trim()).unwrap();
    assert_eq!(
        (v["CPUPerc"].as_str(), v["PIDs"].as_str()),
        (Some("0.00%"), Some("0"))
    );
    let bad = r.run(&["stats", "--no-stream", "nosuch"]);
    assert!(!bad.status.success());
    assert_eq!(text(&bad.stderr).trim().lines().count(), 1);
    r.ok(&["rm", "idle"]);
}

#[test]
fn container_and_image_management_commands() {
    let r = root!();
    r.ok(&["create", "--name", "made", "busybox", "true"]);
    r.ok(&[
        "run",
        "--name",
        "done",
        "busybox",
        "sh",
        "-c",
        "echo x > /f",
    ]);
    r.ok(&["run", "-d", "--name", "up", "busybox", "sleep", "100"]);
    let info: Value = serde_json::from_str(&r.ok(&["info", "--format", "json"])).unwrap();
    assert_eq!(
        (
            &info["Containers"],
            &info["ContainersRunning"],
            &info["ContainersStopped"]
        ),
        (&Value::from(3), &Value::from(1), &Value::from(2))
    );
    assert_eq!(info["Images"], 1);
    assert!(r.ok(&["info"]).contains("Storage Driver: overlay"));
    assert_eq!(r.ok(&["container", "ls", "-aq"]), r.ok(&["ps", "-aq"]));
    assert_eq!(r.ok(&["container", "ps", "-q"]), r.ok(&["ps", "-q"]));
    assert_eq!(r.ok(&["image", "ls", "-q"]), r.ok(&["images", "-q"]));
    // Same record, same bytes (capability sets are listed sorted).
    assert_eq!(
        r.ok(&["container", "inspect", "up"]),
        r.ok(&["inspect", "up"])
    );
    // prune takes every stopped container and leaves the running one.
    let pruned = r.ok(&["container", "prune", "-f"]);
    assert!(pruned.starts_with("Deleted Containers:"), "{pruned}");
    assert_eq!(
        pruned.lines().filter(|l| l.len() == 64).count(),
        2,
        "{pruned}"
    );
    assert!(pruned.contains("Total reclaimed space:"), "{pruned}");
    assert_eq!(r.ok(&["ps", "-a", "--format", "json"]).lines().count(), 1);
    r.ok(&["container", "rm", "-f", "up"]);
    // image prune: an untagged image goes, a named one stays.
    r.ok(&["run", "--name", "cc", "busybox", "touch", "/g"]);
    let id = r.ok(&["commit", "cc"]);
    r.ok(&["rm", "cc"]);
    assert!(r
        .ok(&["images", "-q", "-f", "dangling=true"])
        .contains(&id.trim()[7..19]));
    r.ok(&["image", "prune", "-f"]);
    assert_eq!(r.ok(&["images", "-q", "-f", "dangling=true"]), "");
    assert!(!r.ok(&["image", "ls", "-q"]).is_empty());
}
