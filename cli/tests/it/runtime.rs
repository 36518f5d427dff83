//! `kiln runtime run` on a busybox bundle, as root: exit codes, process
//! settings, stdio, pty, limits, isolation. Each test has its own bundle
//! and cgroup and checks that the cgroup is gone afterwards.
//!
//! Needs: root, cgroups (v1 or v2), Debian's busybox-static (/bin/busybox).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::common::{is_root, kiln_bin, skip_or_fail};

const BUSYBOX: &str = "/bin/busybox";

/// A bundle directory with a busybox rootfs and docker's default spec.
struct Bundle {
    dir: tempfile::TempDir,
    config: Value,
    cgroup: String,
}

static COUNTER: AtomicUsize = AtomicUsize::new(0);

impl Bundle {
    /// Returns `None` (after skipping or panicking under CI) when a
    /// precondition is missing.
    fn new() -> Option<Bundle> {
        if !is_root() {
            skip_or_fail("runtime tests need root");
            return None;
        }
        if !Path::new(BUSYBOX).exists() {
            skip_or_fail("runtime tests need /bin/busybox (Debian package busybox-static)");
            return None;
        }
        if !Path::new("/sys/fs/cgroup/cgroup.controllers").exists()
            && !Path::new("/sys/fs/cgroup/memory").exists()
        {
            skip_or_fail("runtime tests need a cgroup v2 or v1 memory hierarchy");
            return None;
        }
        let dir = tempfile::tempdir().expect("creating a temporary bundle directory");
        let bin = dir.path().join("rootfs/bin");
        std::fs::create_dir_all(&bin).unwrap();
        std::fs::create_dir_all(dir.path().join("rootfs/tmp")).unwrap();
        std::fs::copy(BUSYBOX, bin.join("busybox")).unwrap();
        let list = Command::new(BUSYBOX)
            .arg("--list")
            .output()
            .expect("running busybox --list");
        for applet in String::from_utf8_lossy(&list.stdout).lines() {
            if applet != "busybox" {
                let _ = std::os::unix::fs::symlink("busybox", bin.join(applet));
            }
        }
        let config = serde_json::to_value(kiln_runner::default_spec()).unwrap();
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let cgroup = format!("kiln-test-{}-{n}", std::process::id());
        Some(Bundle {
            dir,
            config,
            cgroup,
        })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn args(&mut self, args: &[&str]) -> &mut Self {
        self.config["process"]["args"] = json!(args);
        self
    }

    fn set(&mut self, pointer: &str, value: Value) -> &mut Self {
        let (parent, key) = pointer.rsplit_once('/').unwrap();
        let target = self
            .config
            .pointer_mut(parent)
            .unwrap_or_else(|| panic!("no {parent} in spec"));
        target[key] = value;
        self
    }

    fn command(&self, extra: &[&str]) -> Command {
        std::fs::write(
            self.path().join("config.json"),
            serde_json::to_vec_pretty(&self.config).unwrap(),
        )
        .unwrap();
        let mut cmd = Command::new(kiln_bin());
        cmd.args(["runtime", "run", "--bundle"])
            .arg(self.path())
            .args(["--cgroup", &self.cgroup])
            .args(extra)
            .arg(format!("ctr-{}", self.cgroup));
        cmd
    }

    /// Runs to completion with piped stdio and no input.
    fn run(&self) -> Output {
        self.run_with(&[])
    }

    fn run_with(&self, extra: &[&str]) -> Output {
        let out = self
            .command(extra)
            .stdin(Stdio::null())
            .output()
            .expect("spawning kiln");
        self.assert_cgroup_gone();
        out
    }

    fn cgroup_dirs(&self) -> Vec<PathBuf> {
        let mut dirs = vec![Path::new("/sys/fs/cgroup").join(&self.cgroup)];
        if let Ok(entries) = std::fs::read_dir("/sys/fs/cgroup") {
            for entry in entries.flatten() {
                dirs.push(entry.path().join(&self.cgroup));
            }
        }
        dirs
    }

    fn assert_cgroup_gone(&self) {
        for dir in self.cgroup_dirs() {
            assert!(!dir.exists(), "cgroup {} left behind", dir.display());
        }
    }
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

macro_rules! bundle {
    () => {
        match Bundle::new() {
            Some(b) => b,
            None => return,
        }
    };
}

#[test]
fn exit_codes_follow_docker() {
    let mut b = bundle!();
    assert_eq!(b.args(&["true"]).run().status.code(), Some(0));
    assert_eq!(b.args(&["sh", "-c", "exit 3"]).run().status.code(), Some(3));
    let out = b.args(&["no-such-command"]).run();
    assert_eq!(out.status.code(), Some(127), "{}", stderr(&out));
    assert!(stderr(&out).contains("no-such-command"));
    std::fs::write(b.path().join("rootfs/bin/not-executable"), "data").unwrap();
    let out = b.args(&["/bin/not-executable"]).run();
    assert_eq!(out.status.code(), Some(126), "{}", stderr(&out));
    // Under kiln's init the shell is not PID 1, so SIGKILL to itself works.
    let out = b.args(&["sh", "-c", "kill -9 $$"]).run_with(&["--init"]);
    assert_eq!(out.status.code(), Some(137), "{}", stderr(&out));
}

#[test]
fn set_up_failure_is_125() {
    let mut b = bundle!();
    b.args(&["true"]).set("/process/cwd", json!("relative/cwd"));
    let out = b.run();
    assert_eq!(out.status.code(), Some(125), "{}", stderr(&out));
    assert!(stderr(&out).contains("relative/cwd"), "{}", stderr(&out));
}

#[test]
fn env_user_cwd() {
    let mut b = bundle!();
    b.args(&["sh", "-c", "echo $FOO; id -u; id -g; id -G; pwd"])
        .set("/process/env", json!(["PATH=/bin", "FOO=bar baz"]))
        .set(
            "/process/user",
            json!({"uid": 1000, "gid": 1001, "additionalGids": [2000]}),
        )
        .set("/process/cwd", json!("/tmp"));
    let out = b.run();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out), "bar baz\n1000\n1001\n1001 2000\n/tmp\n");
}

#[test]
fn stdin_is_piped_and_stdout_stderr_stay_apart() {
    let mut b = bundle!();
    b.args(&["sh", "-c", "cat; echo out; echo err >&2"]);
    let mut child = b
        .command(&[])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"from stdin\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    b.assert_cgroup_gone();
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(stdout(&out), "from stdin\nout\n");
    assert_eq!(stderr(&out), "err\n");
}

#[test]
fn pid_one_hostname_and_no_host_processes() {
    let mut b = bundle!();
    let host_pid = std::process::id();
    b.args(&["sh", "-c", &format!("echo $$; hostname; ls /proc | grep -c '^[0-9]'; test -e /proc/{host_pid} && echo host-visible; true")])
        .set("/hostname", json!("box"));
    let out = b.run();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let lines: Vec<_> = stdout(&out).lines().map(str::to_string).collect();
    assert_eq!(lines[0], "1");
    assert_eq!(lines[1], "box");
    let visible: u32 = lines[2].parse().unwrap();
    assert!(visible <= 4, "container sees {visible} processes");
    assert!(!stdout(&out).contains("host-visible"));
}

#[test]
fn isolation_probes_fail() {
    let mut b = bundle!();
    let host_name = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    let probes = [
        ("mount", "mount -t tmpfs none /tmp"),
        ("sysrq", "echo h > /proc/sysrq-trigger"),
        ("module", "insmod /bin/busybox"),
        ("mknod-block", "mknod /dev/sda-probe b 8 0"),
        ("hostname", "hostname host-probe"),
        ("unshare", "unshare -m true"),
        ("kcore", "head -c 1 /proc/kcore | grep -q ."),
    ];
    for (name, probe) in probes {
        let out = b.args(&["sh", "-c", probe]).run();
        assert_ne!(
            out.status.code(),
            Some(0),
            "probe {name} succeeded: {}",
            stdout(&out)
        );
    }
    assert_eq!(
        std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap(),
        host_name
    );
}

#[test]
fn raw_socket_needs_its_capability() {
    let mut b = bundle!();
    // With docker's default set (which has CAP_NET_RAW) ping over lo works...
    let out = b.args(&["ping", "-c", "1", "-W", "2", "127.0.0.1"]).run();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    // ...without the capability the raw socket is refused.
    let caps: Vec<&str> = kiln_runner::DEFAULT_CAPABILITIES
        .iter()
        .copied()
        .filter(|c| *c != "CAP_NET_RAW")
        .collect();
    for set in ["bounding", "effective", "permitted"] {
        b.set(&format!("/process/capabilities/{set}"), json!(caps));
    }
    let out = b.run();
    assert_ne!(
        out.status.code(),
        Some(0),
        "ping without CAP_NET_RAW worked"
    );
}

#[test]
fn pty_is_the_controlling_terminal() {
    let mut b = bundle!();
    let (master, slave) = kiln_runner::pty::open_pair().unwrap();
    kiln_runner::pty::set_window_size(
        std::os::fd::AsFd::as_fd(&master),
        kiln_runner::pty::WindowSize {
            rows: 30,
            cols: 100,
        },
    )
    .unwrap();
    b.args(&["sh"]).set("/process/terminal", json!(true));
    let mut child = b
        .command(&[])
        .stdin(slave.try_clone().unwrap())
        .stdout(slave.try_clone().unwrap())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(slave);
    let mut writer = master.try_clone().unwrap();
    let reader = crate::common::read_pty_until(master, "DONE");
    let pause = || std::thread::sleep(Duration::from_millis(400));
    writer.write_all(b"tty; stty size\n").unwrap();
    pause();
    // A resize reaches the container when kiln gets SIGWINCH.
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
    // Ctrl-C interrupts the foreground job inside; Ctrl-D ends the shell.
    writer.write_all(b"stty size; sleep 100\n").unwrap();
    pause();
    writer.write_all(b"\x03").unwrap();
    pause();
    writer.write_all(b"echo D''ONE\n").unwrap();
    pause();
    writer.write_all(b"\x04").unwrap();
    let status = wait_timeout(&mut child, Duration::from_secs(20));
    let out = String::from_utf8_lossy(&reader.join().unwrap()).into_owned();
    b.assert_cgroup_gone();
    assert_eq!(status, Some(0), "output: {out}");
    assert!(out.contains("/dev/pts/0"), "output: {out}");
    assert!(out.contains("30 100"), "output: {out}");
    assert!(out.contains("40 120"), "output: {out}");
}

#[test]
fn memory_limit_oom_kills_with_137() {
    let mut b = bundle!();
    b.args(&["tail", "/dev/zero"]).set(
        "/linux/resources/memory",
        json!({"limit": 32 * 1024 * 1024, "swap": 32 * 1024 * 1024}),
    );
    let out = b.run();
    assert_eq!(out.status.code(), Some(137), "{}", stderr(&out));
}

#[test]
fn pids_limit_stops_a_fork_bomb() {
    let mut b = bundle!();
    b.args(&[
        "sh",
        "-c",
        "i=0; while [ $i -lt 40 ]; do sleep 2 & i=$((i+1)); done; wait; echo finished",
    ])
    .set("/linux/resources/pids", json!({"limit": 10}));
    let out = b.run();
    assert!(stderr(&out).contains("fork"), "stderr: {}", stderr(&out));
}

#[test]
fn cpu_quota_throttles() {
    let mut b = bundle!();
    let script = "i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done; \
                  cat /sys/fs/cgroup/cpu/cpu.stat 2>/dev/null || cat /sys/fs/cgroup/cpu.stat";
    b.args(&["sh", "-c", script]).set(
        "/linux/resources/cpu",
        json!({"quota": 10000, "period": 100000}),
    );
    let out = b.run();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let throttled: u64 = stdout(&out)
        .lines()
        .find_map(|l| l.strip_prefix("nr_throttled "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no nr_throttled in {}", stdout(&out)));
    assert!(throttled > 0, "{}", stdout(&out));
}

#[test]
fn init_reaps_and_forwards_signals() {
    let mut b = bundle!();
    // An orphaned background child must not keep the container alive and
    // its zombie is reaped by kiln's init.
    b.args(&[
        "sh",
        "-c",
        "(sleep 0.1 &) ; sleep 0.3; ps -o stat | grep -c Z; exit 0",
    ]);
    let out = b.run_with(&["--init"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out).trim(), "0", "zombies left");

    // SIGTERM to kiln reaches the program through kiln's init: 143.
    b.args(&["sleep", "30"]);
    let mut child = b.command(&["--init"]).stdin(Stdio::null()).spawn().unwrap();
    std::thread::sleep(Duration::from_millis(500));
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let status = wait_timeout(&mut child, Duration::from_secs(10));
    b.assert_cgroup_gone();
    assert_eq!(status, Some(143));
}

#[test]
fn exec_joins_a_running_container() {
    let mut b = bundle!();
    let pid_file = b.path().join("pid");
    b.args(&["sh", "-c", "echo started > /tmp/mark; sleep 20"])
        .set("/hostname", json!("exec-box"));
    let mut run = b
        .command(&["--init", "--pid-file", pid_file.to_str().unwrap()])
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let pid = loop {
        if let Ok(text) = std::fs::read_to_string(&pid_file) {
            if !text.is_empty() {
                break text;
            }
        }
        assert!(Instant::now() < deadline, "no pid file");
        std::thread::sleep(Duration::from_millis(20));
    };
    std::thread::sleep(Duration::from_millis(200));
    let out = Command::new(kiln_bin())
        .args(["runtime", "exec", "--bundle"])
        .arg(b.path())
        .args(["--pid", pid.trim(), "sh", "-c", "hostname; cat /tmp/mark; cat /proc/1/cmdline | tr '\\0' ' '; echo; cat /proc/self/cgroup"])
        .output()
        .unwrap();
    let exec_status = out.status.code();
    let missing = Command::new(kiln_bin())
        .args(["runtime", "exec", "--bundle"])
        .arg(b.path())
        .args(["--pid", pid.trim(), "no-such-command"])
        .output()
        .unwrap();
    Command::new("kill")
        .args(["-TERM", &run.id().to_string()])
        .status()
        .unwrap();
    let run_status = wait_timeout(&mut run, Duration::from_secs(10));
    b.assert_cgroup_gone();
    assert_eq!(exec_status, Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    let lines: Vec<_> = text.lines().collect();
    assert_eq!(lines[0], "exec-box");
    assert_eq!(lines[1], "started");
    assert!(
        lines[2].contains("sleep 20") || lines[2].contains("kiln-init"),
        "{text}"
    );
    assert!(
        text.contains(&b.cgroup) || text.lines().skip(3).all(|l| l.ends_with(":/")),
        "{text}"
    );
    assert_eq!(missing.status.code(), Some(127), "{}", stderr(&missing));
    assert_eq!(run_status, Some(143));
}

#[test]
fn bind_tmpfs_and_read_only_root() {
    let mut b = bundle!();
    let host = tempfile::tempdir().unwrap();
    std::fs::write(host.path().join("f"), "from host\n").unwrap();
    let mut mounts = b.config["mounts"].as_array().unwrap().clone();
    mounts.push(json!({"destination": "/data", "type": "bind", "source": host.path(), "options": ["rbind", "ro"]}));
    mounts.push(json!({"destination": "/scratch", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "nodev"]}));
    b.set("/mounts", json!(mounts)).set("/root/readonly", json!(true)).args(&[
        "sh",
        "-c",
        "cat /data/f; touch /data/x 2>/dev/null || echo ro-bind; touch /scratch/y && echo tmpfs-ok; \
         touch /z 2>/dev/null || echo ro-root",
    ]);
    let out = b.run();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out), "from host\nro-bind\ntmpfs-ok\nro-root\n");
    assert!(!host.path().join("x").exists());
}

#[test]
fn default_spec_is_printed() {
    if !Path::new(kiln_bin()).exists() {
        return;
    }
    let out = Command::new(kiln_bin())
        .args(["runtime", "spec"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let spec: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(spec["process"]["noNewPrivileges"], json!(true));
    assert!(
        spec["linux"]["seccomp"]["syscalls"]
            .as_array()
            .unwrap()
            .len()
            > 1
    );
}

fn wait_timeout(child: &mut std::process::Child, limit: Duration) -> Option<i32> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status.code();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("kiln did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
