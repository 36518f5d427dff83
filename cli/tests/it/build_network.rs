//! `kiln build` RUN networks as root: the default bridge network (an eth0
//! with an address of kiln0's subnet, a default route, BuildKit's hosts
//! file), `--network host`, and nothing left of a RUN's attachment after
//! the build, a failed RUN or a build killed with SIGKILL.
//! Only addresses of kiln's own bridge are used (a server the test runs
//! on the host, reached through the gateway address).

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::{has_tool, is_root, kiln_bin, root_with_busybox, skip_or_fail};

fn ready() -> bool {
    if !is_root() {
        return !skip_or_fail("build network tests need root");
    }
    for tool in ["iptables", "ip"] {
        if !has_tool(tool) {
            return !skip_or_fail(&format!(
                "build network tests need {tool} (Debian iptables, iproute2)"
            ));
        }
    }
    true
}

/// Runs `kiln build --progress plain ARGS DIR` as a child: (its pid, output).
fn build(root: &Path, args: &[&str], dir: &Path) -> (u32, Output) {
    let child = Command::new(kiln_bin())
        .arg("--root")
        .arg(root)
        .args(["build", "--progress", "plain"])
        .args(args)
        .arg(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    (pid, child.wait_with_output().unwrap())
}

fn text(out: &Output) -> String {
    let mut t = String::from_utf8_lossy(&out.stdout).into_owned();
    t.push_str(&String::from_utf8_lossy(&out.stderr));
    t
}

fn dockerfile(text: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("Dockerfile"), text).unwrap();
    dir
}

/// What a build with pid `pid` still holds on the host: its attachments in
/// kiln's network state and its network namespace mounts.
fn held_by_build(pid: u32) -> Vec<String> {
    let prefix = format!("build{pid}x");
    let mut held = Vec::new();
    if let Ok(entries) = std::fs::read_dir("/run/kiln/net") {
        for entry in entries.flatten() {
            let Ok(text) = std::fs::read_to_string(entry.path()) else {
                continue;
            };
            let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) else {
                continue;
            };
            if let Some(eps) = v["endpoints"].as_object() {
                held.extend(
                    eps.keys()
                        .filter(|k| k.starts_with(&prefix))
                        .map(|k| format!("attachment {k}")),
                );
            }
        }
    }
    if let Ok(entries) = std::fs::read_dir("/run/kiln/netns") {
        held.extend(
            entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(&prefix))
                .map(|n| format!("netns {n}")),
        );
    }
    held
}

/// Whether a host link with this interface index exists.
fn link_exists(index: &str) -> bool {
    let out = Command::new("ip")
        .args(["-o", "link", "show"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .any(|l| l.split(':').next() == Some(index))
}

/// A one-shot-per-connection HTTP server on every host address; counts
/// the requests it answered.
fn serve(body: &'static str) -> (u16, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("0.0.0.0:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let count = Arc::new(AtomicUsize::new(0));
    let served = count.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
            let mut buf = [0u8; 1024];
            let _ = stream.read(&mut buf);
            let _ = write!(
                stream,
                "HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
            served.fetch_add(1, Ordering::SeqCst);
        }
    });
    (port, count)
}

#[test]
fn run_on_the_default_network_reaches_the_gateway_and_leaves_nothing() {
    if !ready() {
        return;
    }
    let root = root_with_busybox();
    let (port, served) = serve("hello-from-host");
    let dir = dockerfile(
        "FROM busybox:latest\n\
         ARG PORT\n\
         RUN ip -4 addr show eth0 | grep -q 'inet 10\\.88\\.' \
         && ip route | grep -q '^default via ' \
         && test \"$(hostname)\" = buildkitsandbox \
         && grep -q '^127.0.0.1.*buildkitsandbox' /etc/hosts \
         && grep -q '^nameserver ' /etc/resolv.conf \
         && cat /sys/class/net/eth0/iflink > /iflink \
         && gw=$(ip route | awk '/^default/ {print $3}') \
         && wget -qO /fetched http://$gw:$PORT/ \
         && test \"$(cat /fetched)\" = hello-from-host\n",
    );
    let (pid, out) = build(
        root.path(),
        &["--build-arg", &format!("PORT={port}"), "-t", "netcheck:1"],
        dir.path(),
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        served.load(Ordering::SeqCst) >= 1,
        "the host server was not reached"
    );
    assert_eq!(held_by_build(pid), Vec::<String>::new());
    // The RUN's veth (its eth0's peer on the host) is gone.
    let check = dockerfile("FROM netcheck:1\nRUN --network=none cat /iflink\n");
    let (_, out) = build(root.path(), &[], check.path());
    let log = text(&out);
    assert!(out.status.success(), "{log}");
    let index = log
        .lines()
        .find_map(|l| {
            let mut w = l.split_whitespace();
            (w.next()?.starts_with('#') && w.next()?.parse::<f64>().is_ok())
                .then(|| w.next())
                .flatten()
                .filter(|t| t.bytes().all(|b| b.is_ascii_digit()))
                .map(str::to_string)
        })
        .unwrap_or_else(|| panic!("no iflink in:\n{log}"));
    assert!(!link_exists(&index), "veth {index} left after the build");

    // A failed RUN gives its attachment back too.
    let failing = dockerfile("FROM busybox:latest\nRUN ip link show eth0 && false\n");
    let (pid, out) = build(root.path(), &[], failing.path());
    assert!(!out.status.success(), "{}", text(&out));
    assert_eq!(held_by_build(pid), Vec::<String>::new());
}

#[test]
fn run_steps_of_a_build_reuse_one_namespace_that_they_cannot_change() {
    if !ready() {
        return;
    }
    let root = root_with_busybox();
    let (port, served) = serve("hello-again");
    // Each RUN reaches the host; none can reconfigure the namespace (so the
    // next step, which gets the same one back, finds it as it was made).
    let step = |n: u32| {
        format!(
            "RUN ! ip addr add 10.99.0.{n}/32 dev eth0 2>/dev/null \
             && ! ip link set eth0 mtu 1280 2>/dev/null \
             && ! ip -4 addr show eth0 | grep -q 10.99.0. \
             && cat /sys/class/net/eth0/iflink > /iflink{n} \
             && gw=$(ip route | awk '/^default/ {{print $3}}') \
             && wget -qO /fetched{n} http://$gw:$PORT/ \
             && test \"$(cat /fetched{n})\" = hello-again\n"
        )
    };
    let dir = dockerfile(&format!(
        "FROM busybox:latest\nARG PORT\n{}{}{}\
         RUN --network=none test \"$(cat /iflink1)\" = \"$(cat /iflink2)\" \
         && test \"$(cat /iflink2)\" = \"$(cat /iflink3)\"\n",
        step(1),
        step(2),
        step(3)
    ));
    let (pid, out) = build(
        root.path(),
        &["--build-arg", &format!("PORT={port}")],
        dir.path(),
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        served.load(Ordering::SeqCst) >= 3,
        "a RUN step did not reach the host"
    );
    assert_eq!(held_by_build(pid), Vec::<String>::new());
}

#[test]
fn network_host_and_none_in_build() {
    if !ready() {
        return;
    }
    let root = root_with_busybox();
    // A host interface other than lo that stays while the test runs (other
    // tests make and remove veths): the one of the default route, else the
    // kiln0 bridge the default RUN below makes. With host, the RUN sees it.
    let routes = std::fs::read_to_string("/proc/net/route").unwrap();
    let iface = routes
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|f| f.len() > 1 && f[1] == "00000000")
        .map(|f| f[0].to_string())
        .unwrap_or_else(|| "kiln0".to_string());
    let arg = format!("IFACE={iface}");
    let dir = dockerfile(
        "FROM busybox:latest\nARG IFACE\n\
         RUN --network=host test -e /sys/class/net/$IFACE\n\
         RUN --network=none test \"$(ls /sys/class/net)\" = lo\n\
         RUN test \"$(ls /sys/class/net | tr '\\n' ' ')\" = 'eth0 lo '\n",
    );
    let (pid, out) = build(root.path(), &["--build-arg", &arg], dir.path());
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(held_by_build(pid), Vec::<String>::new());
    // kiln build --network host: every RUN without its own is on the host.
    let host = dockerfile("FROM busybox:latest\nARG IFACE\nRUN test -e /sys/class/net/$IFACE\n");
    let (_, out) = build(
        root.path(),
        &["--network", "host", "--build-arg", &arg],
        host.path(),
    );
    assert!(out.status.success(), "{}", text(&out));
}

#[test]
fn killed_build_leaves_no_attachment_the_next_build_does_not_reap() {
    if !ready() {
        return;
    }
    let root = root_with_busybox();
    let seconds = format!("{}", 4000 + rand::random::<u16>() % 1000);
    let dir = dockerfile(&format!("FROM busybox:latest\nRUN sleep {seconds}\n"));
    let mut child = Command::new(kiln_bin())
        .arg("--root")
        .arg(root.path())
        .args(["build", "--progress", "plain"])
        .arg(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    let started = Instant::now();
    // Attached and running: the attachment records the container's pid.
    while held_by_build(pid).len() < 2 || !sleep_running(&seconds) {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the RUN never started"
        );
        assert!(child.try_wait().unwrap().is_none(), "the build ended early");
        std::thread::sleep(Duration::from_millis(50));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let started = Instant::now();
    while sleep_running(&seconds) {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the RUN container outlived its build"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // The next build reaps what the killed one held.
    let next = dockerfile("FROM busybox:latest\nRUN --network=none true\n");
    let (_, out) = build(root.path(), &[], next.path());
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(held_by_build(pid), Vec::<String>::new());
}

fn sleep_running(seconds: &str) -> bool {
    std::fs::read_dir("/proc").unwrap().flatten().any(|e| {
        std::fs::read(e.path().join("cmdline"))
            .map(|c| c == format!("sleep\0{seconds}\0").as_bytes())
            .unwrap_or(false)
    })
}

#[test]
fn interrupted_build_gives_its_run_attachment_back() {
    if !ready() {
        return;
    }
    let root = root_with_busybox();
    let seconds = format!("{}", 5000 + rand::random::<u16>() % 1000);
    let dir = dockerfile(&format!("FROM busybox:latest\nRUN sleep {seconds}\n"));
    let mut child = Command::new(kiln_bin())
        .arg("--root")
        .arg(root.path())
        .args(["build", "--progress", "plain"])
        .arg(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    let started = Instant::now();
    while held_by_build(pid).len() < 2 || !sleep_running(&seconds) {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the RUN never started"
        );
        assert!(child.try_wait().unwrap().is_none(), "the build ended early");
        std::thread::sleep(Duration::from_millis(50));
    }
    // Ctrl-C: the build stops its RUN and gives back what it held itself.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let status = child.wait().unwrap();
    assert!(!status.success());
    assert_eq!(held_by_build(pid), Vec::<String>::new());
    assert!(!sleep_running(&seconds), "the RUN outlived its build");
}
