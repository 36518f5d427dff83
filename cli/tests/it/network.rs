//! Container networking, as root with real namespaces, bridges and
//! iptables rules: published ports, user networks (names, isolation),
//! unique addresses, `--network none`, bad input, and nothing left behind
//! (links, netns mounts, rules) after removal or a killed monitor.
//! Only loopback and addresses of kiln's own namespaces are used.

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

use crate::common::{has_tool, is_root, kiln, kiln_ok, root_with_busybox, skip_or_fail};

struct Root {
    dir: tempfile::TempDir,
}

impl Root {
    fn new() -> Option<Root> {
        if !is_root() {
            skip_or_fail("network tests need root");
            return None;
        }
        for tool in ["iptables", "ip", "nft"] {
            if !has_tool(tool) {
                skip_or_fail(&format!(
                    "network tests need {tool} (Debian iptables, iproute2)"
                ));
                return None;
            }
        }
        if !Path::new("/bin/busybox").exists() {
            skip_or_fail("network tests need /bin/busybox (Debian package busybox-static)");
            return None;
        }
        Some(Root {
            dir: root_with_busybox(),
        })
    }
    fn path(&self) -> &Path {
        self.dir.path()
    }
    fn run(&self, args: &[&str]) -> Output {
        kiln(self.path(), args)
    }
    fn ok(&self, args: &[&str]) -> String {
        kiln_ok(self.path(), args)
    }
    fn inspect(&self, name: &str) -> Value {
        let v: Value = serde_json::from_str(&self.ok(&["inspect", name])).unwrap();
        v[0].clone()
    }
    /// The container's address on `network`.
    fn ip(&self, name: &str, network: &str) -> String {
        self.inspect(name)["NetworkSettings"]["Networks"][network]["IPAddress"]
            .as_str()
            .unwrap_or_else(|| panic!("{name} has no address on {network}"))
            .to_string()
    }
}

impl Drop for Root {
    fn drop(&mut self) {
        let ids = self.ok(&["ps", "-aq"]);
        for id in ids.lines() {
            let _ = self.run(&["rm", "-f", id]);
        }
        let _ = self.run(&["network", "prune", "-f"]);
    }
}

fn unique(prefix: &str) -> String {
    format!("{prefix}{}", std::process::id() % 100000)
}

fn sh(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .expect("spawning a host tool");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Every listing that could show what a container held: links, iptables
/// rules (both tables), the nftables ruleset, netns mounts, kiln's state.
fn host_listing() -> String {
    [
        sh("ip", &["-o", "link", "show"]),
        sh("ip", &["-o", "addr", "show"]),
        sh("iptables", &["-w", "-S"]),
        sh("iptables", &["-w", "-t", "nat", "-S"]),
        sh("nft", &["list", "ruleset"]),
        // Network namespace mounts (the rootfs mount of a killed monitor
        // is the container's, removed with it).
        std::fs::read_to_string("/proc/mounts")
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("/run/kiln/netns"))
            .collect::<Vec<_>>()
            .join("\n"),
        std::fs::read_dir("/run/kiln/net")
            .map(|d| {
                d.flatten()
                    .filter_map(|e| std::fs::read_to_string(e.path()).ok())
                    .collect::<Vec<_>>()
                    .join("\n")
            })
            .unwrap_or_default(),
    ]
    .join("\n")
}

/// The host-side veth of a running container (from kiln's host state).
fn veth_of(id: &str) -> String {
    for entry in std::fs::read_dir("/run/kiln/net").unwrap().flatten() {
        let Ok(text) = std::fs::read_to_string(entry.path()) else {
            continue;
        };
        let Ok(v) = serde_json::from_str::<Value>(&text) else {
            continue;
        };
        if let Some(veth) = v["endpoints"][id]["veth"].as_str() {
            return veth.to_string();
        }
    }
    panic!("no endpoint for {id}")
}

fn assert_gone(id: &str, veth: &str) {
    let listing = host_listing();
    assert!(!listing.contains(id), "{id} left in host state:\n{listing}");
    // The kernel destroys a released namespace (and the veth pair in it) in
    // the background: wait for that, up to 20 s.
    let mut listing = listing;
    for _ in 0..200 {
        if !listing.contains(veth) {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
        listing = host_listing();
    }
    panic!("veth {veth} left:\n{listing}");
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// An HTTP GET from the host (std sockets): the body, or None when the
/// connection fails.
fn wget(url: &str) -> Option<String> {
    use std::io::{Read, Write};
    let rest = url.strip_prefix("http://")?;
    let (addr, path) = rest.split_once('/').unwrap_or((rest, ""));
    let addr: std::net::SocketAddr = addr.parse().ok()?;
    let mut stream =
        std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_secs(3)).ok()?;
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .ok()?;
    write!(stream, "GET /{path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).ok()?;
    let (head, body) = answer.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.").then(|| body.to_string())
}

#[test]
fn published_ports_answer_from_the_host_and_close_on_removal() {
    let Some(root) = Root::new() else { return };
    let port = free_port().to_string();
    let id = root
        .ok(&[
            "run",
            "-d",
            "--name",
            "web",
            "-p",
            &format!("{port}:80"),
            "-p",
            "8080",
            "busybox",
            "sh",
            "-c",
            "echo hello-web > /tmp/index.html; httpd -p 80 -h /tmp; httpd -f -p 8080 -h /tmp",
        ])
        .trim()
        .to_string();
    let veth = veth_of(&id);
    // httpd forks into the background first: poll until it answers.
    let url = format!("http://127.0.0.1:{port}/index.html");
    let mut body = None;
    for _ in 0..50 {
        body = wget(&url);
        if body.is_some() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(body.as_deref(), Some("hello-web\n"));
    // `-p 8080`: a free host port, shown by `kiln port`.
    let shown = root.ok(&["port", "web", "8080"]);
    let chosen = shown.trim().rsplit(':').next().unwrap().to_string();
    assert!(chosen.parse::<u16>().is_ok(), "kiln port printed {shown:?}");
    assert!(root
        .ok(&["port", "web"])
        .contains(&format!("80/tcp -> 0.0.0.0:{port}")));
    // ps shows them in its PORTS column.
    let ps = root.ok(&["ps", "-f", "name=web"]);
    assert!(ps.lines().next().unwrap().contains("PORTS"), "{ps}");
    assert!(ps.contains(&format!("0.0.0.0:{port}->80/tcp")), "{ps}");
    assert!(ps.contains(&format!("0.0.0.0:{chosen}->8080/tcp")), "{ps}");
    assert_eq!(
        wget(&format!("http://127.0.0.1:{chosen}/index.html")).as_deref(),
        Some("hello-web\n")
    );
    root.ok(&["rm", "-f", "web"]);
    assert_eq!(wget(&url), None, "port still answers after removal");
    assert_gone(&id, &veth);
}

#[test]
fn user_networks_resolve_names_and_are_isolated() {
    let Some(root) = Root::new() else { return };
    let (front, back) = (unique("front"), unique("back"));
    root.ok(&["network", "create", &front]);
    root.ok(&["network", "create", &back]);
    assert!(root.ok(&["network", "ls"]).contains(&front));
    root.ok(&[
        "run",
        "-d",
        "--name",
        "srv",
        "--network",
        &front,
        "--network-alias",
        "db",
        "busybox",
        "sleep",
        "60",
    ]);
    let srv_ip = root.ip("srv", &front);
    // Same network: by name and by alias.
    let out = root.run(&[
        "run",
        "--rm",
        "--name",
        "cli",
        "--network",
        &front,
        "busybox",
        "sh",
        "-c",
        "ping -c1 -W3 srv && ping -c1 -W3 db",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains(&srv_ip));
    // The network's embedded DNS resolver answers names and aliases.
    let out = root.ok(&[
        "run",
        "--rm",
        "--network",
        &front,
        "busybox",
        "sh",
        "-c",
        "cat /etc/resolv.conf; nslookup srv; nslookup db",
    ]);
    assert_eq!(
        out.matches(&format!("Address: {srv_ip}")).count(),
        2,
        "{out}"
    );
    // Another network: neither the name nor the address.
    let out = root.run(&[
        "run",
        "--rm",
        "--network",
        &back,
        "busybox",
        "ping",
        "-c1",
        "-W2",
        &srv_ip,
    ]);
    assert!(
        !out.status.success(),
        "a container on {back} reached {srv_ip}"
    );
    let out = root.run(&[
        "run",
        "--rm",
        "--network",
        &back,
        "busybox",
        "ping",
        "-c1",
        "-W2",
        "srv",
    ]);
    assert!(!out.status.success(), "a container on {back} resolved srv");
    // Renamed while running: the network answers to the new name only.
    root.ok(&["rename", "srv", "server2"]);
    let out = root.run(&[
        "run",
        "--rm",
        "--network",
        &front,
        "busybox",
        "sh",
        "-c",
        "nslookup server2 && ! nslookup srv",
    ]);
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains(&srv_ip),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(!root
        .run(&["rename", "server2", "bad name"])
        .status
        .success());
    root.ok(&["rename", "server2", "srv"]);
    // A network in use cannot go; afterwards its bridge goes with it.
    assert!(!root.run(&["network", "rm", &front]).status.success());
    let bridge = root.ok(&["network", "inspect", &front]);
    let v: Value = serde_json::from_str(&bridge).unwrap();
    let bridge = v[0]["Options"]["com.docker.network.bridge.name"]
        .as_str()
        .unwrap()
        .to_string();
    root.ok(&["rm", "-f", "srv"]);
    root.ok(&["network", "rm", &front, &back]);
    let links = sh("ip", &["-o", "link", "show"]);
    assert!(
        !links.contains(&format!(" {bridge}:")),
        "bridge {bridge} left:\n{links}"
    );
    assert!(!sh("iptables", &["-w", "-S"]).contains(&bridge));
}

#[test]
fn parallel_runs_get_unique_addresses_and_give_them_back() {
    let Some(root) = Root::new() else { return };
    let path = root.path().to_path_buf();
    let handles: Vec<_> = (0..20)
        .map(|_| {
            let path = path.clone();
            std::thread::spawn(move || {
                kiln_ok(&path, &["run", "-d", "busybox", "sleep", "60"])
                    .trim()
                    .to_string()
            })
        })
        .collect();
    let ids: Vec<String> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let mut ips: Vec<String> = ids.iter().map(|id| root.ip(id, "bridge")).collect();
    let veths: Vec<String> = ids.iter().map(|id| veth_of(id)).collect();
    ips.sort();
    ips.dedup();
    assert_eq!(ips.len(), 20, "addresses handed out twice: {ips:?}");
    for id in &ids {
        root.ok(&["rm", "-f", id]);
    }
    for (id, veth) in ids.iter().zip(&veths) {
        assert_gone(id, veth);
    }
}

#[test]
fn network_none_has_only_loopback() {
    let Some(root) = Root::new() else { return };
    let out = root.ok(&[
        "run",
        "--rm",
        "--network",
        "none",
        "busybox",
        "sh",
        "-c",
        "ip route; ip -o link; readlink /proc/self/ns/net; ls /proc/self/fd",
    ]);
    assert!(!out.contains("default"), "a route out:\n{out}");
    let links: Vec<&str> = out.lines().filter(|l| l.contains(": ")).collect();
    assert_eq!(links.len(), 1, "links besides lo:\n{out}");
    assert!(links[0].contains("lo:"));
    assert!(links[0].contains(",UP"), "lo is down:\n{out}");
    // A namespace of its own (made before the container, on another
    // thread), whose descriptor the program does not inherit: only stdio
    // and the descriptor ls reads /proc/self/fd with.
    let host = std::fs::read_link("/proc/self/ns/net").unwrap();
    let ns = |out: &str| -> String {
        out.lines()
            .find(|l| l.starts_with("net:["))
            .unwrap_or_else(|| panic!("no namespace in:\n{out}"))
            .to_string()
    };
    let first = ns(&out);
    assert_ne!(first, host.to_str().unwrap(), "the host's namespace");
    let fds: Vec<&str> = out
        .lines()
        .skip_while(|l| !l.starts_with("net:["))
        .skip(1)
        .collect();
    assert_eq!(
        fds,
        ["0", "1", "2", "3"],
        "descriptors of the program:\n{out}"
    );
    // Started by its monitor (run -d), the same.
    let id = root.ok(&[
        "run",
        "-d",
        "--network",
        "none",
        "busybox",
        "sh",
        "-c",
        "ip -o link; readlink /proc/self/ns/net",
    ]);
    let id = id.trim();
    assert_eq!(root.ok(&["wait", id]).trim(), "0");
    let out = root.ok(&["logs", id]);
    root.ok(&["rm", id]);
    assert_eq!(out.lines().filter(|l| l.contains(": ")).count(), 1, "{out}");
    assert!(out.contains("lo: <LOOPBACK,UP"), "{out}");
    let second = ns(&out);
    assert_ne!(second, host.to_str().unwrap(), "the host's namespace");
    assert_ne!(second, first, "two containers share a namespace");
    // The default bridge: a default route, hostname, hosts, resolv.conf.
    let out = root.ok(&[
        "run",
        "--rm",
        "--hostname",
        "box1",
        "--add-host",
        "db.local:10.1.2.3",
        "--dns",
        "10.9.9.9",
        "busybox",
        "sh",
        "-c",
        "ip route; cat /etc/hostname /etc/hosts /etc/resolv.conf",
    ]);
    assert!(out.contains("default via"), "{out}");
    assert!(out.contains("box1"), "{out}");
    assert!(out.contains("10.1.2.3\tdb.local"), "{out}");
    assert!(out.contains("nameserver 10.9.9.9"), "{out}");
}

#[test]
fn bad_network_input_is_refused_and_leaves_nothing() {
    let Some(root) = Root::new() else { return };
    // A host port in use.
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = busy.local_addr().unwrap().port();
    let out = root.run(&[
        "run",
        "-d",
        "--name",
        "clash",
        "-p",
        &format!("{port}:80"),
        "busybox",
        "sleep",
        "5",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&port.to_string()) && err.contains("in use"),
        "{err}"
    );
    assert!(!sh("iptables", &["-w", "-t", "nat", "-S"]).contains(&format!("--dport {port} ")));
    let id = root.inspect("clash")["Id"].as_str().unwrap().to_string();
    assert!(!host_listing().contains(&id));
    // In the foreground with --rm: the network is attached while the
    // container starts, and its program waits for it; a failed attach
    // stops the container before the program ran (it would leave a file).
    let out_dir = tempfile::tempdir().unwrap();
    let volume = format!("{}:/out", out_dir.path().display());
    let out = root.run(&[
        "run",
        "--rm",
        "--name",
        "clash-rm",
        "-v",
        &volume,
        "-p",
        &format!("{port}:80"),
        "busybox",
        "touch",
        "/out/ran",
    ]);
    assert_eq!(out.status.code(), Some(125));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("in use"), "{err}");
    assert!(!out_dir.path().join("ran").exists(), "the program ran");
    assert!(!root.run(&["inspect", "clash-rm"]).status.success());
    assert!(!sh("iptables", &["-w", "-t", "nat", "-S"]).contains(&format!("--dport {port} ")));
    // The same start with a free port runs the program.
    root.ok(&[
        "run", "--rm", "-v", &volume, "-p", "80", "busybox", "touch", "/out/ran",
    ]);
    assert!(out_dir.path().join("ran").exists());
    // An unknown network: no container at all.
    let out = root.run(&[
        "run",
        "--name",
        "lost",
        "--network",
        "nosuchnet",
        "busybox",
        "true",
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("network nosuchnet not found"));
    assert!(!root.run(&["inspect", "lost"]).status.success());
    // An overlapping subnet.
    let out = root.run(&[
        "network",
        "create",
        "--subnet",
        "10.88.3.0/24",
        &unique("over"),
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("overlaps"));
    assert!(!root.ok(&["network", "ls"]).contains(&unique("over")));
    // Bad port syntax.
    let out = root.run(&["run", "-p", "80:x", "busybox", "true"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid port"));
}

#[test]
fn a_killed_monitor_leaks_nothing() {
    let Some(root) = Root::new() else { return };
    let id = root
        .ok(&["run", "-d", "-p", "8080", "busybox", "sleep", "60"])
        .trim()
        .to_string();
    let veth = veth_of(&id);
    let state: Value = serde_json::from_slice(
        &std::fs::read(root.path().join("containers").join(&id).join("state.json")).unwrap(),
    )
    .unwrap();
    for key in ["pid", "monitor_pid"] {
        let pid = state[key].as_i64().unwrap() as i32;
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
    }
    std::thread::sleep(std::time::Duration::from_millis(300));
    // The next kiln command gives the network back.
    root.ok(&["ps", "-a"]);
    assert_gone(&id, &veth);
}

#[test]
fn connect_and_disconnect_a_running_container() {
    let Some(root) = Root::new() else { return };
    let (left, right) = (unique("left"), unique("right"));
    root.ok(&["network", "create", &left]);
    root.ok(&["network", "create", &right]);
    root.ok(&[
        "run",
        "-d",
        "--name",
        "lhs",
        "--network",
        &left,
        "busybox",
        "sleep",
        "60",
    ]);
    root.ok(&[
        "run",
        "-d",
        "--name",
        "rhs",
        "--network",
        &right,
        "busybox",
        "sleep",
        "60",
    ]);
    let rhs_ip = root.ip("rhs", &right);
    let ping = ["exec", "lhs", "ping", "-c1", "-W2", rhs_ip.as_str()];
    assert!(!root.run(&ping).status.success(), "reached another network");
    let veth = veth_of(root.inspect("lhs")["Id"].as_str().unwrap());
    root.ok(&["network", "connect", &right, "lhs"]);
    assert!(
        root.run(&ping).status.success(),
        "connect gave no way to {rhs_ip}"
    );
    // Its resolver answers for the names of every network it is on.
    let out = root.ok(&["exec", "lhs", "nslookup", "rhs"]);
    assert!(out.contains(&format!("Address: {rhs_ip}")), "{out}");
    root.ok(&["network", "disconnect", &right, "lhs"]);
    assert!(!root.run(&ping).status.success(), "still reaches {rhs_ip}");
    assert!(
        sh("ip", &["-o", "link", "show"]).contains(&veth),
        "first network lost"
    );
    root.ok(&["rm", "-f", "lhs", "rhs"]);
    root.ok(&["network", "rm", &left, &right]);
}

#[test]
fn publish_all_and_container_network_mode() {
    let Some(root) = Root::new() else { return };
    let tar = crate::common::busybox_tar().to_str().unwrap().to_string();
    root.ok(&[
        "import",
        "--change",
        "EXPOSE 8000 9000/udp",
        &tar,
        "exposing:v1",
    ]);
    root.ok(&[
        "run",
        "-d",
        "--name",
        "pa",
        "-P",
        "exposing:v1",
        "sleep",
        "60",
    ]);
    let ports = root.ok(&["port", "pa"]);
    assert!(ports.contains("8000/tcp -> 0.0.0.0:"), "{ports}");
    assert!(ports.contains("9000/udp -> 0.0.0.0:"), "{ports}");
    // --network container:NAME shares pa's namespace: same address.
    let ip = root.ip("pa", "bridge");
    let out = root.ok(&[
        "run",
        "--rm",
        "--network",
        "container:pa",
        "busybox",
        "ip",
        "-o",
        "-4",
        "addr",
    ]);
    assert!(out.contains(&format!("inet {ip}/")), "{out}");
    // -p with --network none is refused.
    let out = root.run(&[
        "run",
        "--rm",
        "--network",
        "none",
        "-p",
        "80",
        "busybox",
        "true",
    ]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("conflicting options"));
    root.ok(&["rm", "-f", "pa"]);
    let out = root.run(&[
        "run",
        "--rm",
        "--network",
        "container:pa",
        "busybox",
        "true",
    ]);
    assert!(!out.status.success());
}

/// A container reaches a published port of a container on its own network,
/// and its own published port, through the gateway address (hairpin: the
/// bridge sends the frame back out of the port it came in on).
#[test]
fn published_port_answers_from_the_same_network_hairpin() {
    let Some(root) = Root::new() else { return };
    let port = free_port().to_string();
    let name = unique("hairpin");
    root.ok(&[
        "run",
        "-d",
        "--name",
        &name,
        "-p",
        &format!("{port}:80"),
        "busybox",
        "sh",
        "-c",
        "echo hello-hairpin > /tmp/index.html; httpd -f -p 80 -h /tmp",
    ]);
    let network: Value = serde_json::from_str(&root.ok(&["network", "inspect", "bridge"])).unwrap();
    let gateway = network[0]["IPAM"]["Config"][0]["Gateway"]
        .as_str()
        .unwrap_or_else(|| panic!("no gateway in {network}"))
        .to_string();
    // From the host first: httpd answers (polled until it has started).
    let url = format!("http://{gateway}:{port}/index.html");
    let mut body = None;
    for _ in 0..50 {
        body = wget(&url);
        if body.is_some() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(body.as_deref(), Some("hello-hairpin\n"));
    let fetch = format!(
        "printf 'GET /index.html HTTP/1.0\\r\\n\\r\\n' | nc -w 5 {gateway} {port} | tail -n 1"
    );
    // Another container of the same network.
    let out = root.run(&["run", "--rm", "busybox", "sh", "-c", &fetch]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "hello-hairpin",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The container itself.
    let out = root.run(&["exec", &name, "sh", "-c", &fetch]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "hello-hairpin",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `kiln commit` of a bridged container leaves out the empty /etc/hosts,
/// /etc/resolv.conf and /etc/hostname made only as mount points of its
/// network files; files the image had, and the container's own changes,
/// stay.
#[test]
fn commit_leaves_out_network_file_mount_points() {
    let Some(root) = Root::new() else { return };
    let (c1, c2, c3) = (unique("cma"), unique("cmb"), unique("cmc"));
    let (i1, i2, i3) = (
        format!("{c1}:img"),
        format!("{c2}:img"),
        format!("{c3}:img"),
    );
    // The test image has /etc/hostname but neither /etc/hosts nor /etc/resolv.conf.
    root.ok(&[
        "run",
        "--name",
        &c1,
        "busybox",
        "sh",
        "-c",
        "echo x > /newfile; echo '10.1.2.3 extra' >> /etc/hosts; echo kept > /etc/kept",
    ]);
    root.ok(&["commit", &c1, &i1]);
    // Run on the host network: no file is mounted over what the image has.
    let check = |image: &str, script: &str| {
        let out = root.run(&[
            "run",
            "--rm",
            "--network",
            "host",
            image,
            "sh",
            "-c",
            script,
        ]);
        assert!(
            out.status.success(),
            "{image}: {script}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    };
    check(
        &i1,
        "test ! -e /etc/hosts && test ! -e /etc/resolv.conf && test -s /etc/hostname \
         && test \"$(cat /newfile)\" = x && test \"$(cat /etc/kept)\" = kept",
    );
    // A file the container itself wrote on the host network is kept ...
    root.ok(&[
        "run",
        "--network",
        "host",
        "--name",
        &c2,
        "busybox",
        "sh",
        "-c",
        "echo '127.0.0.1 mine' > /etc/hosts",
    ]);
    root.ok(&["commit", &c2, &i2]);
    check(&i2, "grep -q mine /etc/hosts && test ! -e /etc/resolv.conf");
    // ... and stays through a commit of a bridged container of that image.
    root.ok(&["run", "--name", &c3, &i2, "true"]);
    root.ok(&["commit", &c3, &i3]);
    check(&i3, "grep -q mine /etc/hosts && test ! -e /etc/resolv.conf");
    for image in [&i1, &i2, &i3] {
        let _ = root.run(&["rmi", "-f", image]);
    }
}

#[test]
fn two_roots_never_pick_the_same_subnet() {
    let Some(a) = Root::new() else { return };
    let Some(b) = Root::new() else { return };
    let (na, nb) = (unique("ra"), unique("rb"));
    a.ok(&["network", "create", &na]);
    b.ok(&["network", "create", &nb]);
    let subnet = |r: &Root, n: &str| -> String {
        let v: Value = serde_json::from_str(&r.ok(&["network", "inspect", n])).unwrap();
        v[0]["IPAM"]["Config"][0]["Subnet"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let (sa, sb) = (subnet(&a, &na), subnet(&b, &nb));
    assert_ne!(
        sa, sb,
        "two roots' networks share {sa}: their resolvers would clash"
    );
    a.ok(&["network", "rm", &na]);
    b.ok(&["network", "rm", &nb]);
    // Removed networks give their subnets back.
    for s in [&sa, &sb] {
        let reservation = std::path::Path::new("/run/kiln/net/subnets").join(s.replace('/', "_"));
        assert!(!reservation.exists(), "{} stays reserved", s);
    }
}

#[test]
fn a_network_made_again_at_once_gets_its_resolver() {
    let Some(root) = Root::new() else { return };
    for round in 0..3 {
        let net = unique(&format!("again{round}"));
        root.ok(&["network", "create", &net]);
        root.ok(&[
            "run",
            "-d",
            "--name",
            "named",
            "--network",
            &net,
            "busybox",
            "sleep",
            "60",
        ]);
        // The resolver answers for the container's name.
        let out = root.run(&[
            "run",
            "--rm",
            "--network",
            &net,
            "busybox",
            "nslookup",
            "named",
        ]);
        assert!(
            out.status.success(),
            "round {round}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        root.ok(&["rm", "-f", "named"]);
        // Removed and at once made again: the subnet (and so the resolver's
        // address) comes back while the old resolver may still be up.
        root.ok(&["network", "rm", &net]);
    }
}

/// A network's bridge keeps one hardware address while containers come and
/// go. Without an address of its own, Linux gives a bridge the lowest one of
/// its ports, so it changed as containers joined and left, and a container
/// that had cached the old one lost its gateway (and the DNS resolver on it)
/// until its ARP entry expired: "connection timed out" from nslookup.
#[test]
fn bridges_keep_their_hardware_address_as_containers_come_and_go() {
    let Some(root) = Root::new() else { return };
    let net = unique("mac");
    root.ok(&["network", "create", &net]);
    let v: Value = serde_json::from_str(&root.ok(&["network", "inspect", &net])).unwrap();
    let bridge = v[0]["Options"]["com.docker.network.bridge.name"]
        .as_str()
        .unwrap()
        .to_string();
    let sys = |file: &str| {
        std::fs::read_to_string(format!("/sys/class/net/{bridge}/{file}"))
            .unwrap_or_else(|e| panic!("reading {file} of bridge {bridge}: {e}"))
            .trim()
            .to_string()
    };
    root.ok(&[
        "run",
        "-d",
        "--name",
        "first",
        "--network",
        &net,
        "busybox",
        "sleep",
        "60",
    ]);
    // NET_ADDR_SET: the address is the bridge's own, not taken from a port.
    assert_eq!(sys("addr_assign_type"), "3");
    let mac = sys("address");
    let mut seen = vec![mac.clone()];
    for n in 0..4 {
        root.ok(&[
            "run",
            "-d",
            "--name",
            &format!("more{n}"),
            "--network",
            &net,
            "busybox",
            "sleep",
            "60",
        ]);
        seen.push(sys("address"));
    }
    for n in 0..4 {
        root.ok(&["rm", "-f", &format!("more{n}")]);
        seen.push(sys("address"));
    }
    root.ok(&["rm", "-f", "first"]);
    seen.push(sys("address"));
    assert!(
        seen.iter().all(|m| *m == mac),
        "bridge {bridge} changed its address: {seen:?}"
    );
    root.ok(&["network", "rm", &net]);
}

/// On the default bridge (no name resolution) a container's /etc/hosts
/// lists only itself, so others joining and leaving leave it untouched
/// (before, every start and exit rewrote every container's hosts file).
#[test]
fn default_bridge_hosts_files_are_not_rewritten_by_others() {
    let Some(root) = Root::new() else { return };
    let id = root
        .ok(&[
            "run",
            "-d",
            "--add-host",
            "extra:10.1.2.3",
            "busybox",
            "sleep",
            "60",
        ])
        .trim()
        .to_string();
    let hosts = root.path().join("containers").join(&id).join("hosts");
    let stamp = || {
        let m = std::fs::metadata(&hosts).unwrap();
        (
            m.modified().unwrap(),
            std::fs::read_to_string(&hosts).unwrap(),
        )
    };
    let before = stamp();
    assert!(before.1.contains("10.1.2.3\textra"), "{}", before.1);
    let out = root.ok(&["run", "--rm", "busybox", "cat", "/etc/hosts"]);
    assert!(!out.contains("extra"), "{out}");
    root.ok(&["run", "-d", "--name", "other", "busybox", "sleep", "60"]);
    root.ok(&["rm", "-f", "other"]);
    assert_eq!(stamp(), before, "{id}'s hosts file was rewritten");
    root.ok(&["rm", "-f", &id]);
}
