//! The embedded DNS resolver of a user network: a re-execution of the
//! caller's binary (as the container init is) listening on the network's
//! gateway address, port 53 (UDP and TCP). It answers A queries for the names and
//! aliases of the network's containers (read from the bridge's state file
//! at each query) and forwards every other query to the host's name
//! servers. It is started when a container joins the network and ends by
//! itself once the network has no container (checked every second) or its
//! bridge is gone.

use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::process::{Command, Stdio};
use std::time::Duration;

use super::{load, start_time, BridgeState, Error, Result};

/// Environment variable that turns a re-execution into the resolver of the
/// bridge it names.
pub const DNS_ENV: &str = "_KILN_NETWORK_DNS";

/// Starts the resolver of `state`'s bridge unless one runs; waits until it
/// listens. Call with the network lock held; records its pid in `state`.
pub(super) fn ensure_running(state: &mut BridgeState) -> Result<()> {
    if state.dns_pid > 0 && start_time(state.dns_pid) == Some(state.dns_start) {
        return Ok(());
    }
    let mut child = Command::new("/proc/self/exe")
        .env(DNS_ENV, &state.bridge)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| Error::io("starting the network's DNS resolver", e))?;
    let mut line = String::new();
    let _ = BufReader::new(child.stdout.take().expect("piped stdout")).read_line(&mut line);
    if line.trim() != "ok" {
        let _ = child.kill();
        let _ = child.wait();
        return Err(Error::new(format!(
            "the DNS resolver of bridge {} did not start: {}",
            state.bridge,
            line.trim()
        )));
    }
    let pid = child.id() as i32;
    state.dns_pid = pid;
    state.dns_start = start_time(pid).unwrap_or(0);
    // Not waited for: it outlives this process (reaped by init).
    std::mem::forget(child);
    Ok(())
}

/// Ends the resolver recorded in `state`, if it still runs, and waits
/// until it has let go of its address (it is not our child: gone or a
/// zombie is enough).
pub(super) fn stop(state: &BridgeState) {
    let pid = state.dns_pid;
    if pid <= 0 || start_time(pid) != Some(state.dns_start) {
        return;
    }
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::SIGKILL);
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    while std::time::Instant::now() < deadline {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let state_char = stat
            .rsplit_once(") ")
            .and_then(|(_, rest)| rest.chars().next());
        if matches!(state_char, None | Some('Z') | Some('X'))
            || start_time(pid) != Some(state.dns_start)
        {
            return;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Runs the resolver when this process was started as one; never returns then.
pub fn serve_if_requested() {
    let Some(bridge) = std::env::var_os(DNS_ENV) else {
        return;
    };
    let bridge = bridge.to_string_lossy().into_owned();
    std::env::remove_var(DNS_ENV);
    let code = match serve(&bridge) {
        Ok(()) => 0,
        Err(e) => {
            println!("{e}");
            1
        }
    };
    std::process::exit(code)
}

fn upstreams() -> Vec<SocketAddr> {
    let text = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    let mut out: Vec<SocketAddr> = text
        .lines()
        .filter_map(|l| l.strip_prefix("nameserver"))
        .filter_map(|a| a.trim().parse::<std::net::IpAddr>().ok())
        .map(|ip| SocketAddr::new(ip, 53))
        .collect();
    if out.is_empty() {
        out.push(SocketAddr::from(([8, 8, 8, 8], 53)));
    }
    out
}

fn serve(bridge: &str) -> Result<()> {
    let _ = nix::unistd::setsid();
    let state = load(bridge)?;
    let gateway = state
        .gateway
        .ok_or_else(|| Error::new(format!("bridge {bridge} has no gateway")))?;
    // A resolver of a bridge removed a moment ago may still hold this
    // address (it notices within a second); wait for it a little.
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    let socket = loop {
        match UdpSocket::bind((gateway, 53)) {
            Ok(socket) => break socket,
            Err(e)
                if e.kind() == std::io::ErrorKind::AddrInUse
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => return Err(Error::io(&format!("listening on {gateway}:53"), e)),
        }
    };
    socket
        .set_read_timeout(Some(Duration::from_secs(1)))
        .map_err(|e| Error::io("setting a timeout", e))?;
    let tcp = std::net::TcpListener::bind((gateway, 53))
        .map_err(|e| Error::io(&format!("listening on {gateway}:53/tcp"), e))?;
    {
        let bridge = bridge.to_string();
        let upstreams = upstreams();
        std::thread::spawn(move || serve_tcp(&bridge, tcp, &upstreams));
    }
    println!("ok");
    let _ = std::io::stdout().flush();
    let upstreams = upstreams();
    let mut buf = [0u8; 4096];
    loop {
        match socket.recv_from(&mut buf) {
            Ok((n, from)) => {
                let query = buf[..n].to_vec();
                let reply_socket = socket
                    .try_clone()
                    .map_err(|e| Error::io("cloning the DNS socket", e))?;
                let bridge = bridge.to_string();
                let upstreams = upstreams.clone();
                std::thread::spawn(move || {
                    if let Some(answer) = answer(&bridge, &query, from.ip(), &upstreams) {
                        let _ = reply_socket.send_to(&answer, from);
                    }
                });
            }
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                let state = load(bridge)?;
                if state.endpoints.is_empty()
                    || !std::path::Path::new(&format!("/sys/class/net/{bridge}")).exists()
                {
                    return Ok(());
                }
            }
            Err(e) => return Err(Error::io("reading a DNS query", e)),
        }
    }
}

/// DNS over TCP: each message prefixed with its 2-byte length.
fn serve_tcp(bridge: &str, listener: std::net::TcpListener, upstreams: &[SocketAddr]) {
    use std::io::Read;
    for stream in listener.incoming() {
        let Ok(mut stream) = stream else { continue };
        let from = match stream.peer_addr() {
            Ok(a) => a.ip(),
            Err(_) => continue,
        };
        let bridge = bridge.to_string();
        let upstreams = upstreams.to_vec();
        std::thread::spawn(move || {
            let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
            loop {
                let mut len = [0u8; 2];
                if stream.read_exact(&mut len).is_err() {
                    return;
                }
                let mut query = vec![0u8; usize::from(u16::from_be_bytes(len))];
                if stream.read_exact(&mut query).is_err() {
                    return;
                }
                let Some(reply) = answer(&bridge, &query, from, &upstreams) else {
                    return;
                };
                let Ok(n) = u16::try_from(reply.len()) else {
                    return;
                };
                if stream.write_all(&n.to_be_bytes()).is_err() || stream.write_all(&reply).is_err()
                {
                    return;
                }
            }
        });
    }
}

/// The question of a query: (lower-case name, type, end offset of the question).
fn question(query: &[u8]) -> Option<(String, u16, usize)> {
    if query.len() < 12 || u16::from_be_bytes([query[4], query[5]]) != 1 {
        return None;
    }
    let mut pos = 12;
    let mut labels = Vec::new();
    loop {
        let len = *query.get(pos)? as usize;
        pos += 1;
        if len == 0 {
            break;
        }
        if len > 63 {
            return None;
        }
        labels.push(String::from_utf8_lossy(query.get(pos..pos + len)?).to_ascii_lowercase());
        pos += len;
    }
    let qtype = u16::from_be_bytes([*query.get(pos)?, *query.get(pos + 1)?]);
    Some((labels.join("."), qtype, pos + 4))
}

/// The address of `name` as the container at `from` sees it: a container
/// or alias on any network that container is on (this bridge's first).
fn lookup(bridge: &str, name: &str, from: std::net::IpAddr) -> Option<Ipv4Addr> {
    let own = load(bridge).ok()?;
    let find = |state: &BridgeState| {
        state.endpoints.values().find_map(|e| {
            (e.name.eq_ignore_ascii_case(name)
                || e.aliases.iter().any(|a| a.eq_ignore_ascii_case(name)))
            .then_some(e.ip)
        })
    };
    if let Some(ip) = find(&own) {
        return Some(ip);
    }
    let asker = own
        .endpoints
        .iter()
        .find(|(_, e)| std::net::IpAddr::V4(e.ip) == from)
        .map(|(id, _)| id.clone())?;
    super::all_states()
        .ok()?
        .iter()
        .filter(|s| s.bridge != bridge && s.resolve_names && s.endpoints.contains_key(&asker))
        .find_map(find)
}

fn answer(
    bridge: &str,
    query: &[u8],
    from: std::net::IpAddr,
    upstreams: &[SocketAddr],
) -> Option<Vec<u8>> {
    let (name, qtype, end) = question(query)?;
    if let Some(ip) = lookup(bridge, &name, from) {
        let mut out = query[..end].to_vec();
        // QR, opcode copied, AA, RD copied, RA; rcode 0.
        out[2] = 0x84 | (query[2] & 0x79);
        out[3] = 0x80;
        let answers: u16 = u16::from(qtype == 1 || qtype == 255);
        out[6..8].copy_from_slice(&answers.to_be_bytes());
        out[8..12].copy_from_slice(&[0, 0, 0, 0]);
        if answers == 1 {
            out.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4]);
            out.extend_from_slice(&ip.octets());
        }
        return Some(out);
    }
    for upstream in upstreams {
        let bind: SocketAddr = if upstream.is_ipv4() {
            SocketAddr::from(([0, 0, 0, 0], 0))
        } else {
            "[::]:0".parse().expect("valid address")
        };
        let Ok(socket) = UdpSocket::bind(bind) else {
            continue;
        };
        let _ = socket.set_read_timeout(Some(Duration::from_secs(3)));
        if socket.send_to(query, upstream).is_err() {
            continue;
        }
        let mut buf = [0u8; 4096];
        if let Ok((n, _)) = socket.recv_from(&mut buf) {
            return Some(buf[..n].to_vec());
        }
    }
    // SERVFAIL.
    let mut out = query[..end].to_vec();
    out[2] = 0x80 | (query[2] & 0x79);
    out[3] = 0x82;
    out[6..12].copy_from_slice(&[0; 6]);
    Some(out)
}
