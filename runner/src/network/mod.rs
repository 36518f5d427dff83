//! Container networking: bridge networks, a network namespace per
//! container with a veth pair into its network's bridge, addresses from the
//! network's subnet, NAT out and published ports in.
//!
//! Two kinds of state:
//! - network definitions (name, bridge, subnet) of a kiln root, in
//!   `<root>/networks/<name>.json` ([`Definitions`]);
//! - what is in use on this host now (the address, veth, netns and DNAT
//!   rules of each attached container), in `/run/kiln/net/<bridge>.json`,
//!   one file per bridge, changed only under the flock of
//!   `/run/kiln/net/.lock`: two kiln processes never hand out one address.
//!   It lives in /run, as the links and rules it describes do: a reboot
//!   clears both.
//!
//! Every attachment names its owner (the process that waits for the
//! container: a monitor or a foreground `kiln run`) and the container's pid,
//! each with its start time. When both are gone, the next kiln command that
//! touches networks ([`reap`]) gives back what the container held, so a
//! `kill -9` leaks nothing for long.
//!
//! Links, addresses and routes are made through netlink in this process
//! ([`netlink`]); NAT and forwarding rules through iptables ([`firewall`]),
//! once per network, plus one `iptables-restore` per container that
//! publishes ports.

pub mod dns;
pub mod firewall;
pub mod netlink;

use std::collections::BTreeMap;
use std::fs::File;
use std::net::{Ipv4Addr, TcpListener, UdpSocket};
use std::os::fd::{AsFd, AsRawFd};
use std::path::{Path, PathBuf};

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use netlink::Netlink;

/// Where per-host network state lives.
pub const RUN_DIR: &str = "/run/kiln/net";
/// Where container network namespaces are bind-mounted.
pub const NETNS_DIR: &str = "/run/kiln/netns";
/// Name of the default network.
pub const DEFAULT_NETWORK: &str = "bridge";
/// Bridge of the default network.
pub const DEFAULT_BRIDGE: &str = "kiln0";
/// Subnet of the default network unless `KILN_BRIDGE_SUBNET` says otherwise
/// when it is first defined.
pub const DEFAULT_SUBNET: &str = "10.88.0.0/16";

/// A networking failure, with what was being done.
#[derive(Debug)]
pub enum Error {
    /// A message for the user.
    Msg(String),
    /// An OS error (netlink answers carry errno).
    Os(std::io::Error),
}

impl Error {
    pub fn new(msg: impl Into<String>) -> Error {
        Error::Msg(msg.into())
    }
    pub fn io(what: &str, e: std::io::Error) -> Error {
        Error::Msg(format!("{what}: {e}"))
    }
    fn context(self, what: &str) -> Error {
        match self {
            Error::Msg(m) => Error::Msg(format!("{what}: {m}")),
            Error::Os(e) => Error::Msg(format!("{what}: {e}")),
        }
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Msg(m) => f.write_str(m),
            Error::Os(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for Error {}

pub type Result<T> = std::result::Result<T, Error>;

/// A network of a kiln root.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Network {
    pub name: String,
    /// 64 hex digits.
    pub id: String,
    /// The host bridge (kiln0, or kiln-<8 hex> for user networks).
    pub bridge: String,
    pub subnet: Ipv4Net,
    pub gateway: Ipv4Addr,
    /// Containers resolve each other by name (user networks).
    pub resolve_names: bool,
    /// Seconds since the epoch.
    pub created: u64,
}

/// The network definitions of one kiln root (`<root>/networks`).
#[derive(Debug, Clone)]
pub struct Definitions {
    dir: PathBuf,
}

impl Definitions {
    pub fn new(dir: PathBuf) -> Definitions {
        Definitions { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.json"))
    }

    /// Every network, the default one first.
    pub fn list(&self) -> Result<Vec<Network>> {
        let mut out = vec![self.default_network()?];
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(_) => return Ok(out),
        };
        let mut others = Vec::new();
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(name) = name.strip_suffix(".json") else {
                continue;
            };
            if name == DEFAULT_NETWORK {
                continue;
            }
            if let Some(n) = self.get(name)? {
                others.push(n);
            }
        }
        others.sort_by(|a, b| a.name.cmp(&b.name));
        out.extend(others);
        Ok(out)
    }

    /// The network called `name` (or with that id or id prefix).
    pub fn get(&self, name: &str) -> Result<Option<Network>> {
        if name == DEFAULT_NETWORK {
            return self.default_network().map(Some);
        }
        if crate_name_ok(name) {
            match std::fs::read(self.path(name)) {
                Ok(bytes) => {
                    return serde_json::from_slice(&bytes)
                        .map(Some)
                        .map_err(|e| Error::new(format!("network {name}: bad definition: {e}")))
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io(&format!("reading network {name}"), e)),
            }
        }
        if name.len() >= 3 && name.bytes().all(|b| b.is_ascii_hexdigit()) {
            let all = self.list_no_default()?;
            let mut m = all.into_iter().filter(|n| n.id.starts_with(name));
            if let (Some(n), None) = (m.next(), m.next()) {
                return Ok(Some(n));
            }
        }
        Ok(None)
    }

    fn list_no_default(&self) -> Result<Vec<Network>> {
        Ok(self
            .list()?
            .into_iter()
            .filter(|n| n.name != DEFAULT_NETWORK)
            .collect())
    }

    /// The default network (defined on first use).
    pub fn default_network(&self) -> Result<Network> {
        let path = self.path(DEFAULT_NETWORK);
        let damaged = match std::fs::read(&path) {
            Ok(bytes) => match serde_json::from_slice(&bytes) {
                Ok(n) => return Ok(n),
                Err(_) => true,
            },
            Err(_) => false,
        };
        let subnet_text =
            std::env::var("KILN_BRIDGE_SUBNET").unwrap_or_else(|_| DEFAULT_SUBNET.to_string());
        let subnet: Ipv4Net = subnet_text.parse().map_err(|_| {
            Error::new(format!(
                "KILN_BRIDGE_SUBNET {subnet_text:?} is not a subnet"
            ))
        })?;
        let subnet = subnet.trunc();
        let network = Network {
            name: DEFAULT_NETWORK.into(),
            id: random_id(),
            bridge: DEFAULT_BRIDGE.into(),
            subnet,
            gateway: first_host(subnet)?,
            resolve_names: false,
            created: now(),
        };
        if damaged {
            // A definition that does not parse is replaced.
            self.write(&network)?;
            return Ok(network);
        }
        // Two processes (or two RUN steps of one build) may get here at once:
        // the first definition published wins and every caller uses it.
        std::fs::create_dir_all(&self.dir)
            .map_err(|e| Error::io(&format!("creating {}", self.dir.display()), e))?;
        let bytes = serde_json::to_vec_pretty(&network).map_err(|e| Error::new(e.to_string()))?;
        let tmp = temp_path(&path);
        std::fs::write(&tmp, &bytes)
            .map_err(|e| Error::io(&format!("writing {}", tmp.display()), e))?;
        let linked = std::fs::hard_link(&tmp, &path);
        let _ = std::fs::remove_file(&tmp);
        match linked {
            Ok(()) => Ok(network),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let bytes = std::fs::read(&path)
                    .map_err(|e| Error::io(&format!("reading {}", path.display()), e))?;
                serde_json::from_slice(&bytes).map_err(|e| {
                    Error::new(format!("network {DEFAULT_NETWORK}: bad definition: {e}"))
                })
            }
            Err(e) => Err(Error::io(&format!("creating {}", path.display()), e)),
        }
    }

    fn write(&self, network: &Network) -> Result<()> {
        std::fs::create_dir_all(&self.dir)
            .map_err(|e| Error::io(&format!("creating {}", self.dir.display()), e))?;
        let bytes = serde_json::to_vec_pretty(network).map_err(|e| Error::new(e.to_string()))?;
        write_atomic(&self.path(&network.name), &bytes)
    }

    /// Defines a user network; `subnet` None picks a free /24 in 10.89.0.0/16.
    /// Errors when the name is taken or the subnet overlaps another network or
    /// a host address.
    pub fn create(
        &self,
        name: &str,
        subnet: Option<Ipv4Net>,
        gateway: Option<Ipv4Addr>,
    ) -> Result<Network> {
        if !crate_name_ok(name) || name == DEFAULT_NETWORK || name == "host" || name == "none" {
            return Err(Error::new(format!(
                "invalid network name {name:?}: use [a-zA-Z0-9][a-zA-Z0-9_.-]+, not bridge, host or none"
            )));
        }
        let _lock = lock()?;
        if self.get(name)?.is_some() {
            return Err(Error::new(format!(
                "network with name {name} already exists"
            )));
        }
        let mut used: Vec<(String, Ipv4Net)> = self
            .list()?
            .into_iter()
            .map(|n| (format!("network {}", n.name), n.subnet))
            .collect();
        for state in all_states()? {
            if let Ok(s) = state.subnet.parse() {
                used.push((format!("bridge {}", state.bridge), s));
            }
        }
        let mut nl = Netlink::open()?;
        let links: BTreeMap<u32, String> =
            nl.links()?.into_iter().map(|l| (l.index, l.name)).collect();
        for (index, ip, prefix) in nl.addresses()? {
            if ip.is_loopback() {
                continue;
            }
            if let Ok(net) = Ipv4Net::new(ip, prefix) {
                let dev = links.get(&index).cloned().unwrap_or_default();
                used.push((
                    format!("address {ip}/{prefix} of host interface {dev}"),
                    net.trunc(),
                ));
            }
        }
        let overlaps =
            |a: &Ipv4Net, b: &Ipv4Net| a.contains(&b.network()) || b.contains(&a.network());
        let subnet = match subnet {
            Some(s) => {
                let s = s.trunc();
                if s.prefix_len() > 30 {
                    return Err(Error::new(format!(
                        "subnet {s} is too small: use at most /30"
                    )));
                }
                if let Some((what, _)) = used.iter().find(|(_, u)| overlaps(u, &s)) {
                    return Err(Error::new(format!("subnet {s} overlaps with {what}")));
                }
                s
            }
            None => {
                // Networks of other kiln roots on this host have no bridge
                // until a container joins: their reservations count too.
                let reserved = reserved_subnets();
                (0..=255u8)
                    .map(|i| Ipv4Net::new(Ipv4Addr::new(10, 89, i, 0), 24).expect("valid prefix"))
                    .find(|s| {
                        !used.iter().any(|(_, u)| overlaps(u, s))
                            && !reserved.iter().any(|r| overlaps(r, s))
                    })
                    .ok_or_else(|| {
                        Error::new("no free subnet left in 10.89.0.0/16: give --subnet")
                    })?
            }
        };
        let gateway = match gateway {
            Some(g) if !subnet.contains(&g) || g == subnet.network() || g == subnet.broadcast() => {
                return Err(Error::new(format!(
                    "gateway {g} is not a host address of {subnet}"
                )))
            }
            Some(g) => g,
            None => first_host(subnet)?,
        };
        let id = random_id();
        let network = Network {
            name: name.to_string(),
            bridge: format!("kiln-{}", &id[..8]),
            id,
            subnet,
            gateway,
            resolve_names: true,
            created: now(),
        };
        self.write(&network)?;
        reserve_subnet(&network);
        Ok(network)
    }

    /// Removes a user network: its bridge, rules and definition. Errors
    /// while a live container is attached.
    pub fn remove(&self, network: &Network) -> Result<()> {
        if network.name == DEFAULT_NETWORK {
            return Err(Error::new(
                "bridge is the default network and cannot be removed",
            ));
        }
        let _lock = lock()?;
        reap_locked()?;
        let state = load(&network.bridge)?;
        if let Some(ep) = state.endpoints.values().next() {
            return Err(Error::new(format!(
                "network {} has active endpoints ({})",
                network.name, ep.name
            )));
        }
        remove_bridge_locked(&network.bridge, &network.subnet.to_string())?;
        // Its resolver lets go of the gateway address before the subnet
        // can be picked again.
        dns::stop(&state);
        let _ = std::fs::remove_file(reservation_path(&network.subnet));
        match std::fs::remove_file(self.path(&network.name)) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io("removing the network definition", e)),
        }
    }
}

/// A container's /etc/resolv.conf: the host's without loopback name
/// servers (they do not answer in another network namespace), with `dns`
/// instead of the host's servers when given, and Google's public servers
/// when none is left, as docker and BuildKit do.
pub fn resolv_conf(dns: &[String]) -> String {
    let host = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    let mut out = String::new();
    let mut servers = 0;
    for line in host.lines() {
        let mut words = line.split_whitespace();
        if words.next() == Some("nameserver") {
            let loopback = words
                .next()
                .and_then(|a| a.parse::<std::net::IpAddr>().ok())
                .is_some_and(|a| a.is_loopback());
            if !dns.is_empty() || loopback {
                continue;
            }
            servers += 1;
        }
        out.push_str(line);
        out.push('\n');
    }
    for d in dns {
        out.push_str(&format!("nameserver {d}\n"));
        servers += 1;
    }
    if servers == 0 {
        out.push_str("nameserver 8.8.8.8\nnameserver 8.8.4.4\n");
    }
    out
}

/// Where the host-wide reservation of a user network's subnet lives (a
/// file named after the subnet, holding the network's id).
fn reservation_path(subnet: &Ipv4Net) -> PathBuf {
    Path::new(RUN_DIR)
        .join("subnets")
        .join(subnet.to_string().replace('/', "_"))
}

/// Records `network`'s subnet for every kiln root on the host. Best effort:
/// without it only an unlikely clash of two roots' picks is possible.
fn reserve_subnet(network: &Network) {
    let path = reservation_path(&network.subnet);
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    let _ = std::fs::write(path, &network.id);
}

/// Subnets user networks of any kiln root on this host hold.
fn reserved_subnets() -> Vec<Ipv4Net> {
    let Ok(entries) = std::fs::read_dir(Path::new(RUN_DIR).join("subnets")) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.replace('_', "/").parse().ok())
        .collect()
}

fn crate_name_ok(name: &str) -> bool {
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphanumeric())
        && bytes.all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
        && name.len() <= 64
}

fn first_host(subnet: Ipv4Net) -> Result<Ipv4Addr> {
    subnet
        .hosts()
        .next()
        .ok_or_else(|| Error::new(format!("subnet {subnet} has no host addresses")))
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// `N` bytes from /dev/urandom.
fn random_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    if let Ok(mut f) = File::open("/dev/urandom") {
        use std::io::Read;
        let _ = f.read_exact(&mut bytes);
    }
    bytes
}

fn random_id() -> String {
    random_bytes::<32>()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A random unicast, locally administered hardware address.
fn random_mac() -> [u8; 6] {
    let mut mac = random_bytes::<6>();
    mac[0] = (mac[0] & 0xfe) | 0x02;
    mac
}

/// A temporary name beside `path` that no other process or thread uses.
fn temp_path(path: &Path) -> PathBuf {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    path.with_extension(format!("tmp{}-{n}", std::process::id()))
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = temp_path(path);
    std::fs::write(&tmp, bytes).map_err(|e| Error::io(&format!("writing {}", tmp.display()), e))?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io(&format!("renaming {}", path.display()), e))
}

/// A port to publish.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortRequest {
    pub host_ip: Option<Ipv4Addr>,
    /// None: a free port is chosen.
    pub host_port: Option<u16>,
    pub container_port: u16,
    /// "tcp" or "udp".
    pub proto: String,
}

/// A published port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortMapping {
    pub host_ip: Option<Ipv4Addr>,
    pub host_port: u16,
    pub container_port: u16,
    pub proto: String,
}

/// One container's place on one bridge.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Endpoint {
    pub name: String,
    pub aliases: Vec<String>,
    pub hostname: String,
    pub ip: Ipv4Addr,
    /// Host end of the veth pair.
    pub veth: String,
    pub netns: PathBuf,
    /// The netns was made for this attachment (removed with it).
    pub owns_netns: bool,
    pub owner_pid: i32,
    pub owner_start: u64,
    pub pid: i32,
    pub pid_start: u64,
    pub ports: Vec<PortMapping>,
    /// DNAT rule specs, deleted on release.
    pub rules: Vec<String>,
    pub hosts_file: Option<PathBuf>,
    pub extra_hosts: Vec<(String, String)>,
}

/// What is in use on one bridge now.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct BridgeState {
    pub bridge: String,
    pub subnet: String,
    pub gateway: Option<Ipv4Addr>,
    pub resolve_names: bool,
    /// By owner id (a container id).
    pub endpoints: BTreeMap<String, Endpoint>,
    /// The network's DNS resolver (user networks), pid and start time.
    #[serde(default)]
    pub dns_pid: i32,
    #[serde(default)]
    pub dns_start: u64,
    /// The address handed out last.
    #[serde(default)]
    pub last_ip: Option<Ipv4Addr>,
}

/// What to attach.
#[derive(Debug, Clone, Default)]
pub struct AttachRequest {
    /// Owner id: a container id (64 hex digits) or any unique string of
    /// [0-9a-z].
    pub id: String,
    /// Container name (resolvable on user networks).
    pub name: String,
    pub aliases: Vec<String>,
    pub hostname: String,
    pub ports: Vec<PortRequest>,
    /// A hosts file to keep current (bind-mounted as the container's /etc/hosts).
    pub hosts_file: Option<PathBuf>,
    /// `--add-host` entries (name, address).
    pub extra_hosts: Vec<(String, String)>,
    /// Join this existing namespace instead of making one (second network).
    pub netns: Option<PathBuf>,
    /// Interface name inside (eth0, eth1, ...).
    pub ifname: String,
    /// Add a default route via the gateway.
    pub default_route: bool,
}

/// The result of [`attach`].
#[derive(Debug, Clone)]
pub struct Attachment {
    pub netns: PathBuf,
    pub ip: Ipv4Addr,
    pub prefix: u8,
    pub gateway: Ipv4Addr,
    pub ports: Vec<PortMapping>,
    pub bridge: String,
}

/// Takes the host-wide network lock (held until dropped).
pub fn lock() -> Result<File> {
    std::fs::create_dir_all(RUN_DIR).map_err(|e| Error::io(&format!("creating {RUN_DIR}"), e))?;
    let path = Path::new(RUN_DIR).join(".lock");
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| Error::io(&format!("opening {}", path.display()), e))?;
    file.lock()
        .map_err(|e| Error::io(&format!("locking {}", path.display()), e))?;
    Ok(file)
}

fn state_path(bridge: &str) -> PathBuf {
    Path::new(RUN_DIR).join(format!("{bridge}.json"))
}

fn load(bridge: &str) -> Result<BridgeState> {
    match std::fs::read(state_path(bridge)) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map_err(|e| Error::new(format!("parsing {}: {e}", state_path(bridge).display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BridgeState {
            bridge: bridge.to_string(),
            ..BridgeState::default()
        }),
        Err(e) => Err(Error::io("reading network state", e)),
    }
}

fn save(state: &BridgeState) -> Result<()> {
    let bytes = serde_json::to_vec_pretty(state).map_err(|e| Error::new(e.to_string()))?;
    write_atomic(&state_path(&state.bridge), &bytes)
}

/// Every bridge's state.
pub fn all_states() -> Result<Vec<BridgeState>> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(RUN_DIR) else {
        return Ok(out);
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(bridge) = name.strip_suffix(".json") {
            out.push(load(bridge)?);
        }
    }
    Ok(out)
}

/// Start time of `pid` in clock ticks since boot.
fn start_time(pid: i32) -> Option<u64> {
    if pid <= 0 {
        return None;
    }
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    // A zombie (Z) or dead (X) process holds nothing.
    if rest.starts_with('Z') || rest.starts_with('X') {
        return None;
    }
    rest.split_whitespace().nth(19)?.parse().ok()
}

impl Endpoint {
    fn alive(&self) -> bool {
        start_time(self.owner_pid) == Some(self.owner_start)
            || (self.pid > 0 && start_time(self.pid) == Some(self.pid_start))
    }
}

fn veth_name(id: &str, bridge: &str) -> String {
    // FNV-1a over id and bridge: a container on two networks has two veths.
    let mut h: u64 = 0xcbf29ce484222325;
    for b in id.bytes().chain([0]).chain(bridge.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x100000001b3);
    }
    format!("kv{:010x}", h & 0xff_ffff_ffff)
}

/// A network namespace made for one container, held only by descriptors
/// (it goes with them until [`attach_with`] pins it on disk), holding only
/// `lo`, up, and a netlink socket inside it. See [`spawn_namespace`].
pub struct NewNamespace {
    ns: File,
    inside: Netlink,
}

impl std::fmt::Debug for NewNamespace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewNamespace")
            .field("ns", &self.ns)
            .finish_non_exhaustive()
    }
}

impl NewNamespace {
    /// Makes one and enters it: run on a thread of its own that ends
    /// after it.
    fn make_on_own_thread() -> Result<NewNamespace> {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
            .map_err(|e| Error::new(format!("making a network namespace: {e}")))?;
        let ns = File::open("/proc/thread-self/ns/net")
            .map_err(|e| Error::io("opening the new network namespace", e))?;
        let mut inside = Netlink::open()?;
        inside
            .set_up(1, None)
            .map_err(|e| e.context("bringing up lo"))?;
        Ok(NewNamespace { ns, inside })
    }

    /// Another descriptor of the namespace, for the container's init
    /// ([`crate::ContainerBuilder::network_namespace`]).
    pub fn try_clone_file(&self) -> Result<File> {
        self.ns
            .try_clone()
            .map_err(|e| Error::io("duplicating the network namespace descriptor", e))
    }

    /// The namespace's descriptor alone.
    pub fn into_file(self) -> File {
        self.ns
    }

    /// Bind-mounts the namespace at `path` (in `/run/kiln/netns`), where it
    /// stays until [`remove_netns`].
    fn pin(&self, path: &Path) -> Result<()> {
        std::fs::create_dir_all(NETNS_DIR)
            .map_err(|e| Error::io(&format!("creating {NETNS_DIR}"), e))?;
        File::create(path).map_err(|e| Error::io(&format!("creating {}", path.display()), e))?;
        nix::mount::mount(
            Some(&PathBuf::from(format!(
                "/proc/self/fd/{}",
                self.ns.as_raw_fd()
            ))),
            path,
            None::<&str>,
            nix::mount::MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(|e| {
            let _ = std::fs::remove_file(path);
            Error::new(format!("bind-mounting the network namespace: {e}"))
        })
    }
}

/// The namespace [`attach_with`] attaches into: made by its caller, or
/// being made on a thread meanwhile.
enum Fresh {
    Made(NewNamespace),
    Making(std::thread::JoinHandle<Result<NewNamespace>>),
}

impl Fresh {
    fn get(self) -> Result<NewNamespace> {
        match self {
            Fresh::Made(made) => Ok(made),
            Fresh::Making(thread) => thread
                .join()
                .map_err(|_| Error::new("network namespace thread panicked"))?,
        }
    }
}

/// Starts making a [`NewNamespace`] on a thread of its own (left inside it
/// when it ends), to be joined when needed: meanwhile the caller goes on.
/// Nothing but its descriptors hold it: dropped unused, the namespace goes.
pub fn spawn_namespace() -> std::io::Result<std::thread::JoinHandle<Result<NewNamespace>>> {
    std::thread::Builder::new()
        .name("kiln-netns".into())
        .spawn(NewNamespace::make_on_own_thread)
}

/// Unmounts and removes a namespace pinned by [`NewNamespace::pin`].
pub fn remove_netns(path: &Path) {
    let _ = nix::mount::umount2(path, nix::mount::MntFlags::MNT_DETACH);
    let _ = std::fs::remove_file(path);
}

/// Makes the bridge of `network` with its address and rules, unless it is there.
///
/// The bridge gets a hardware address of its own. Without one, Linux gives
/// a bridge the lowest address of its ports, so it changes as containers
/// come and go; containers that cached the old one lose the gateway (and
/// the DNS resolver on it) until their ARP entry expires.
fn ensure_bridge(nl: &mut Netlink, network: &Network) -> Result<u32> {
    if let Some(link) = nl.link(&network.bridge)? {
        // A bridge made before its address was set (NET_ADDR_SET is 3).
        let assigned = std::fs::read_to_string(format!(
            "/sys/class/net/{}/addr_assign_type",
            network.bridge
        ));
        if assigned.is_ok_and(|t| t.trim() != "3") {
            nl.set_address(link.index, random_mac()).map_err(|e| {
                e.context(&format!("setting the address of bridge {}", network.bridge))
            })?;
        }
        return Ok(link.index);
    }
    nl.add_bridge(&network.bridge, random_mac())
        .map_err(|e| e.context(&format!("creating bridge {}", network.bridge)))?;
    let link = nl
        .link(&network.bridge)?
        .ok_or_else(|| Error::new(format!("bridge {} vanished", network.bridge)))?;
    let made = (|| {
        nl.add_address(link.index, network.gateway, network.subnet.prefix_len())?;
        nl.set_up(link.index, None)?;
        let _ = std::fs::write(
            format!("/proc/sys/net/ipv4/conf/{}/route_localnet", network.bridge),
            "1",
        );
        if std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward")
            .map(|s| s.trim() != "1")
            .unwrap_or(true)
        {
            std::fs::write("/proc/sys/net/ipv4/ip_forward", "1")
                .map_err(|e| Error::io("switching on ip forwarding", e))?;
        }
        firewall::add_bridge(&network.bridge, &network.subnet.to_string())
    })();
    if let Err(e) = made {
        let _ = nl.delete_link(link.index);
        return Err(e.context(&format!("setting up bridge {}", network.bridge)));
    }
    Ok(link.index)
}

fn check_port_free(p: &PortMapping) -> Result<()> {
    let ip = p.host_ip.unwrap_or(Ipv4Addr::UNSPECIFIED);
    let free = if p.proto == "udp" {
        UdpSocket::bind((ip, p.host_port)).is_ok()
    } else {
        TcpListener::bind((ip, p.host_port)).is_ok()
    };
    if free {
        Ok(())
    } else {
        Err(Error::new(format!(
            "host port {}:{}/{} is already in use",
            ip, p.host_port, p.proto
        )))
    }
}

fn resolve_ports(requests: &[PortRequest], states: &[BridgeState]) -> Result<Vec<PortMapping>> {
    let mut taken: Vec<(PortMapping, String)> = states
        .iter()
        .flat_map(|s| s.endpoints.values())
        .flat_map(|e| e.ports.iter().map(move |p| (p.clone(), e.name.clone())))
        .collect();
    let clash = |a: &PortMapping, b: &PortMapping| {
        a.proto == b.proto
            && a.host_port == b.host_port
            && (a.host_ip.is_none() || b.host_ip.is_none() || a.host_ip == b.host_ip)
    };
    let mut out = Vec::new();
    for r in requests {
        if r.proto != "tcp" && r.proto != "udp" {
            return Err(Error::new(format!(
                "unsupported protocol {:?}: use tcp or udp",
                r.proto
            )));
        }
        let mapping = match r.host_port {
            Some(port) => {
                let m = PortMapping {
                    host_ip: r.host_ip,
                    host_port: port,
                    container_port: r.container_port,
                    proto: r.proto.clone(),
                };
                if let Some((_, by)) = taken.iter().find(|(t, _)| clash(t, &m)) {
                    return Err(Error::new(format!(
                        "host port {port}/{} is already published by container {by}",
                        r.proto
                    )));
                }
                check_port_free(&m)?;
                m
            }
            None => {
                let ip = r.host_ip.unwrap_or(Ipv4Addr::UNSPECIFIED);
                let mut found = None;
                for _ in 0..50 {
                    let port = if r.proto == "udp" {
                        UdpSocket::bind((ip, 0)).and_then(|s| s.local_addr())
                    } else {
                        TcpListener::bind((ip, 0)).and_then(|s| s.local_addr())
                    }
                    .map_err(|e| Error::io("finding a free host port", e))?
                    .port();
                    let m = PortMapping {
                        host_ip: r.host_ip,
                        host_port: port,
                        container_port: r.container_port,
                        proto: r.proto.clone(),
                    };
                    if !taken.iter().any(|(t, _)| clash(t, &m)) {
                        found = Some(m);
                        break;
                    }
                }
                found.ok_or_else(|| Error::new("no free host port found"))?
            }
        };
        taken.push((mapping.clone(), String::new()));
        out.push(mapping);
    }
    Ok(out)
}

/// Attaches a container to `network`: address, veth, routes, published
/// ports, hosts files. Everything is undone when a step fails.
pub fn attach(network: &Network, req: &AttachRequest) -> Result<Attachment> {
    attach_with(network, req, None)
}

/// [`attach`] into `made`, a namespace made beforehand (without
/// `req.netns`).
pub fn attach_with(
    network: &Network,
    req: &AttachRequest,
    made: Option<NewNamespace>,
) -> Result<Attachment> {
    // A namespace of its own is made beside the bookkeeping below (it is
    // what takes longest), unless it was made before. Until the record is
    // saved it is only held by descriptors, so a process killed before then
    // leaves nothing behind.
    let fresh = match (made, &req.netns) {
        (_, Some(_)) => None,
        (Some(made), None) => Some(Fresh::Made(made)),
        (None, None) => Some(Fresh::Making(
            spawn_namespace().map_err(|e| Error::io("starting a thread", e))?,
        )),
    };
    let _lock = lock()?;
    let states = reap_locked()?;
    let mut nl = Netlink::open()?;
    let bridge_index = ensure_bridge(&mut nl, network)?;
    let mut state = states
        .iter()
        .find(|s| s.bridge == network.bridge)
        .cloned()
        .unwrap_or_else(|| BridgeState {
            bridge: network.bridge.clone(),
            ..BridgeState::default()
        });
    state.subnet = network.subnet.to_string();
    state.gateway = Some(network.gateway);
    state.resolve_names = network.resolve_names;
    if state.endpoints.contains_key(&req.id) {
        return Err(Error::new(format!(
            "container {} is already attached to network {}",
            req.name, network.name
        )));
    }
    let ports = resolve_ports(&req.ports, &states)?;
    // The next free address after the last one handed out (wrapping), so a
    // just-freed address (whose old namespace the kernel may still be
    // tearing down) is not handed out again at once.
    let used: std::collections::HashSet<Ipv4Addr> =
        state.endpoints.values().map(|e| e.ip).collect();
    let free = |h: &Ipv4Addr| *h != network.gateway && !used.contains(h);
    let last = state.last_ip.filter(|l| network.subnet.contains(l));
    let ip = network
        .subnet
        .hosts()
        .filter(|h| !matches!(last, Some(l) if *h <= l))
        .find(free)
        .or_else(|| network.subnet.hosts().find(free))
        .ok_or_else(|| Error::new(format!("no free address left in network {}", network.name)))?;
    state.last_ip = Some(ip);
    let (netns, owns_netns) = match &req.netns {
        Some(p) => (p.clone(), false),
        None => (Path::new(NETNS_DIR).join(&req.id), true),
    };
    let veth = veth_name(&req.id, &network.bridge);
    let rules: Vec<String> = ports
        .iter()
        .map(|p| {
            firewall::port_rule(
                p.host_ip,
                p.host_port,
                &p.proto,
                ip,
                p.container_port,
                &req.id,
            )
        })
        .collect();
    let ifname = if req.ifname.is_empty() {
        "eth0"
    } else {
        &req.ifname
    };
    let me = std::process::id() as i32;
    let endpoint = Endpoint {
        name: req.name.clone(),
        aliases: req.aliases.clone(),
        hostname: req.hostname.clone(),
        ip,
        veth: veth.clone(),
        netns: netns.clone(),
        owns_netns,
        owner_pid: me,
        owner_start: start_time(me).unwrap_or(0),
        pid: 0,
        pid_start: 0,
        ports: ports.clone(),
        rules: rules.clone(),
        hosts_file: req.hosts_file.clone(),
        extra_hosts: req.extra_hosts.clone(),
    };
    // Recorded before anything is made: if this process is killed half-way,
    // the next reap finds its owner dead and takes it all down.
    state.endpoints.insert(req.id.clone(), endpoint.clone());
    save(&state)?;
    let made = (|| -> Result<()> {
        let (ns, mut inside) = match fresh {
            Some(fresh) => {
                let fresh = fresh.get()?;
                fresh.pin(&netns)?;
                (fresh.ns, Some(fresh.inside))
            }
            None => {
                let ns = File::open(&netns)
                    .map_err(|e| Error::io(&format!("opening {}", netns.display()), e))?;
                (ns, None)
            }
        };
        // The name is the container's: a link that has it is left from the
        // container's last run, whose namespace the kernel may still be
        // taking down (asynchronously). Delete it, or wait for it to go.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
        loop {
            if let Ok(Some(old)) = nl.link(&veth) {
                let _ = nl.delete_link(old.index);
            }
            match nl.add_veth(&veth, ifname, ns.as_fd()) {
                Ok(()) => break,
                Err(Error::Os(e))
                    if e.raw_os_error() == Some(nix::errno::Errno::EEXIST as i32)
                        && std::time::Instant::now() < deadline =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                Err(e) => return Err(e.context(&format!("creating veth {veth}"))),
            }
        }
        let link = nl
            .link(&veth)?
            .ok_or_else(|| Error::new(format!("veth {veth} vanished")))?;
        nl.set_up(link.index, Some(bridge_index))
            .map_err(|e| e.context(&format!("adding {veth} to {}", network.bridge)))?;
        nl.set_hairpin(link.index)
            .map_err(|e| e.context(&format!("switching on hairpin mode of {veth}")))?;
        let mut inside = match inside.take() {
            Some(inside) => inside,
            None => Netlink::open_in(ns.as_fd())?,
        };
        let eth = inside
            .link(ifname)?
            .ok_or_else(|| Error::new(format!("{ifname} is missing in the container")))?;
        inside
            .add_address(eth.index, ip, network.subnet.prefix_len())
            .map_err(|e| e.context(&format!("adding {ip} to {ifname}")))?;
        inside.set_up(eth.index, None)?;
        if req.default_route {
            inside
                .add_default_route(network.gateway)
                .map_err(|e| e.context("adding the default route"))?;
        }
        firewall::apply_ports(&rules, true)
    })();
    if let Err(e) = made {
        if let Ok(Some(link)) = nl.link(&veth) {
            let _ = nl.delete_link(link.index);
        }
        if owns_netns {
            remove_netns(&netns);
        }
        state.endpoints.remove(&req.id);
        save(&state)?;
        return Err(e);
    }
    write_hosts_files(&state, Some(&req.id));
    if state.resolve_names {
        if let Err(e) = dns::ensure_running(&mut state) {
            drop(_lock);
            let _ = release_from(&req.id, &network.bridge);
            return Err(e);
        }
        save(&state)?;
    }
    Ok(Attachment {
        netns,
        ip,
        prefix: network.subnet.prefix_len(),
        gateway: network.gateway,
        ports,
        bridge: network.bridge.clone(),
    })
}

/// The /etc/hosts of one endpoint: itself, `--add-host` entries and, on
/// user networks, every other container of the network by name and alias.
pub fn hosts_text(state: &BridgeState, id: &str) -> String {
    let mut text = String::from(
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\nff00::0\tip6-mcastprefix\nff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n",
    );
    let Some(me) = state.endpoints.get(id) else {
        return text;
    };
    for (name, addr) in &me.extra_hosts {
        text.push_str(&format!("{addr}\t{name}\n"));
    }
    text.push_str(&format!("{}\t{}\n", me.ip, me.hostname));
    if state.resolve_names {
        for (other_id, ep) in &state.endpoints {
            if other_id == id {
                continue;
            }
            let mut names = vec![ep.name.clone()];
            names.extend(ep.aliases.iter().cloned());
            text.push_str(&format!("{}\t{}\n", ep.ip, names.join(" ")));
        }
        if !me.aliases.is_empty() {
            text.push_str(&format!(
                "{}\t{} {}\n",
                me.ip,
                me.name,
                me.aliases.join(" ")
            ));
        }
    }
    text
}

/// Rewrites the hosts files a change of `state` shows in: on a network
/// with name resolution every endpoint's (each lists the others), else only
/// `own`'s, the endpoint added or renamed (None: endpoints were removed).
fn write_hosts_files(state: &BridgeState, own: Option<&str>) {
    for (id, ep) in &state.endpoints {
        if !state.resolve_names && own != Some(id.as_str()) {
            continue;
        }
        if let Some(path) = &ep.hosts_file {
            // Written in place: the file is bind-mounted, a rename would not show.
            let _ = std::fs::write(path, hosts_text(state, id));
        }
    }
}

/// Records the container's pid (and start time) with its attachments, so
/// they stay while it runs even if its owner dies.
pub fn set_pid(id: &str, pid: i32) -> Result<()> {
    let _lock = lock()?;
    for mut state in all_states()? {
        if let Some(ep) = state.endpoints.get_mut(id) {
            ep.pid = pid;
            ep.pid_start = start_time(pid).unwrap_or(0);
            save(&state)?;
        }
    }
    Ok(())
}

/// Container `id` is now called `name`: its endpoints answer to it (DNS
/// and the other containers' hosts files on its user networks).
pub fn rename(id: &str, name: &str) -> Result<()> {
    let _lock = lock()?;
    for mut state in all_states()? {
        if let Some(ep) = state.endpoints.get_mut(id) {
            ep.name = name.to_string();
            save(&state)?;
            write_hosts_files(&state, Some(id));
        }
    }
    Ok(())
}

fn teardown(nl: &mut Netlink, ep: &Endpoint) {
    let _ = firewall::apply_ports(&ep.rules, false);
    if ep.owns_netns {
        // The container's processes are gone: dropping the last reference
        // to its namespace makes the kernel destroy it, veth pair included,
        // in the background. Deleting the veth here would wait for an RCU
        // grace period (tens of milliseconds) on every container exit.
        remove_netns(&ep.netns);
    } else if let Ok(Some(link)) = nl.link(&ep.veth) {
        let _ = nl.delete_link(link.index);
    }
}

/// Gives back everything container `id` holds on every network.
pub fn release(id: &str) -> Result<()> {
    let _lock = lock()?;
    release_locked(id, None)
}

/// Gives back what container `id` holds on one bridge only (disconnect).
pub fn release_from(id: &str, bridge: &str) -> Result<()> {
    let _lock = lock()?;
    release_locked(id, Some(bridge))
}

fn release_locked(id: &str, only: Option<&str>) -> Result<()> {
    let mut nl = Netlink::open()?;
    for mut state in all_states()? {
        if only.is_some_and(|b| b != state.bridge) {
            continue;
        }
        if let Some(ep) = state.endpoints.remove(id) {
            teardown(&mut nl, &ep);
            save(&state)?;
            write_hosts_files(&state, None);
        }
    }
    Ok(())
}

/// Gives back what dead containers hold (their owner and pid both gone).
pub fn reap() -> Result<()> {
    let _lock = lock()?;
    reap_locked().map(drop)
}

/// Returns every bridge's state after the reaping.
fn reap_locked() -> Result<Vec<BridgeState>> {
    let mut nl: Option<Netlink> = None;
    let mut states = all_states()?;
    for state in &mut states {
        let dead: Vec<String> = state
            .endpoints
            .iter()
            .filter(|(_, e)| !e.alive())
            .map(|(id, _)| id.clone())
            .collect();
        if dead.is_empty() {
            continue;
        }
        if nl.is_none() {
            nl = Some(Netlink::open()?);
        }
        let handle = nl.as_mut().expect("opened above");
        for id in dead {
            if let Some(ep) = state.endpoints.remove(&id) {
                teardown(handle, &ep);
            }
        }
        save(state)?;
        write_hosts_files(state, None);
    }
    Ok(states)
}

fn remove_bridge_locked(bridge: &str, subnet: &str) -> Result<()> {
    let mut nl = Netlink::open()?;
    if let Some(link) = nl.link(bridge)? {
        nl.delete_link(link.index)
            .map_err(|e| e.context(&format!("deleting bridge {bridge}")))?;
    }
    firewall::remove_bridge(bridge, subnet)?;
    let _ = std::fs::remove_file(state_path(bridge));
    Ok(())
}

/// Where container `id` is attached now: (bridge, endpoint).
pub fn endpoints_of(id: &str) -> Result<Vec<(String, Endpoint)>> {
    Ok(all_states()?
        .into_iter()
        .filter_map(|mut s| s.endpoints.remove(id).map(|e| (s.bridge, e)))
        .collect())
}

/// For the builder: puts a fresh network namespace for `id` on the default
/// network of the root whose network definitions are in `networks_dir`.
/// Pass the returned [`Attachment::netns`] as the spec's network namespace
/// path; call [`release`] with the same id afterwards.
pub fn attach_default(networks_dir: &Path, id: &str) -> Result<Attachment> {
    let network = Definitions::new(networks_dir.to_path_buf()).default_network()?;
    attach(
        &network,
        &AttachRequest {
            id: id.to_string(),
            name: id.to_string(),
            hostname: id.chars().take(12).collect(),
            ifname: "eth0".into(),
            default_route: true,
            ..AttachRequest::default()
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concurrent_first_uses_agree_on_one_default_network() {
        for _ in 0..20 {
            let dir = tempfile::tempdir().unwrap();
            let defs = dir.path().join("networks");
            let ids: Vec<String> = std::thread::scope(|s| {
                let handles: Vec<_> = (0..8)
                    .map(|_| {
                        let defs = defs.clone();
                        s.spawn(move || Definitions::new(defs).default_network().unwrap().id)
                    })
                    .collect();
                handles.into_iter().map(|h| h.join().unwrap()).collect()
            });
            assert!(ids.iter().all(|id| *id == ids[0]), "ids differ: {ids:?}");
            let stored = Definitions::new(defs.clone()).default_network().unwrap();
            assert_eq!(stored.id, ids[0]);
            let names: Vec<_> = std::fs::read_dir(&defs)
                .unwrap()
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .collect();
            assert_eq!(names, vec!["bridge.json".to_string()], "temporaries left");
        }
    }

    #[test]
    fn resolv_conf_drops_loopback_servers() {
        let text = resolv_conf(&[]);
        assert!(text.contains("nameserver "), "{text}");
        assert!(!text.contains("nameserver 127."), "{text}");
        assert!(!text.contains("nameserver ::1"), "{text}");
        let text = resolv_conf(&["10.0.0.53".to_string()]);
        assert!(text.contains("nameserver 10.0.0.53\n"));
        assert!(!text.contains("127.0.0."));
    }

    #[test]
    fn a_damaged_default_definition_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("bridge.json"), b"").unwrap();
        let defs = Definitions::new(dir.path().to_path_buf());
        let n = defs.default_network().unwrap();
        assert_eq!(defs.default_network().unwrap().id, n.id);
    }
}
