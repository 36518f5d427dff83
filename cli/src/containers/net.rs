//! A container's networking: flags -> [`NetSettings`] at create time; at
//! start the network namespace (bridge networks: a fresh one attached
//! through `kiln_runner::network`), /etc/hosts, /etc/hostname and
//! /etc/resolv.conf; at exit everything given back.

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use kiln_runner::network::{self, Definitions, PortMapping, PortRequest};
use kiln_runner::oci_spec::image::Config;
use kiln_runner::oci_spec::runtime::{LinuxNamespaceType, MountBuilder, Spec};
use serde::{Deserialize, Serialize};

use super::{Container, Containers};
use crate::commands::run::CreateArgs;

/// The network flags of a container.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct NetSettings {
    /// bridge, a user network's name, none, host or container:NAME.
    pub mode: String,
    /// More networks (`kiln network connect` while stopped).
    #[serde(default)]
    pub extra_networks: Vec<String>,
    pub aliases: Vec<String>,
    pub publish: Vec<PortRequest>,
    pub dns: Vec<String>,
    /// `--add-host` (name, address).
    pub add_hosts: Vec<(String, String)>,
}

impl NetSettings {
    /// Whether the mode is a bridge network (default or user-defined).
    pub fn is_bridge(&self) -> bool {
        !matches!(self.mode.as_str(), "" | "none" | "host") && !self.mode.starts_with("container:")
    }
}

/// The network definitions of the root.
pub fn definitions(root: &Path) -> Definitions {
    Definitions::new(root.join("networks"))
}

/// Parses `[HOSTIP:][HOSTPORT:]CTRPORT[/tcp|udp]`.
pub fn parse_publish(text: &str) -> Result<PortRequest> {
    let bad =
        || anyhow::anyhow!("invalid port {text:?}: use [HOSTIP:][HOSTPORT:]CTRPORT[/tcp|udp]");
    let (rest, proto) = match text.rsplit_once('/') {
        Some((r, p)) => (r, p.to_ascii_lowercase()),
        None => (text, "tcp".to_string()),
    };
    if proto != "tcp" && proto != "udp" {
        bail!("invalid port {text:?}: the protocol must be tcp or udp");
    }
    let parts: Vec<&str> = rest.split(':').collect();
    let (ip, host, ctr) = match parts.as_slice() {
        [c] => (None, None, *c),
        [h, c] => (None, Some(*h), *c),
        [i, h, c] => (Some(*i), Some(*h), *c),
        _ => return Err(bad()),
    };
    let port = |p: &str| -> Result<u16> {
        match p.parse::<u16>() {
            Ok(n) if n > 0 => Ok(n),
            _ => bail!("invalid port {text:?}: {p:?} is not a port number (1-65535)"),
        }
    };
    let host_ip =
        match ip {
            None | Some("") | Some("0.0.0.0") => None,
            Some(i) => Some(i.parse::<Ipv4Addr>().map_err(|_| {
                anyhow::anyhow!("invalid port {text:?}: {i:?} is not an IPv4 address")
            })?),
        };
    let host_port = match host {
        None | Some("") => None,
        Some(h) => Some(port(h)?),
    };
    Ok(PortRequest {
        host_ip,
        host_port,
        container_port: port(ctr)?,
        proto,
    })
}

/// `--expose PORT[-PORT][/PROTO]`: the ports it names, as `PORT/PROTO`.
pub fn expose_ports(text: &str) -> Result<Vec<String>> {
    let (ports, proto) = text.split_once('/').unwrap_or((text, "tcp"));
    if !["tcp", "udp"].contains(&proto) {
        bail!("invalid --expose {text:?}: the protocol must be tcp or udp");
    }
    let port = |p: &str| -> Result<u16> {
        match p.parse::<u16>() {
            Ok(n) if n > 0 => Ok(n),
            _ => bail!("invalid --expose {text:?}: {p:?} is not a port number (1-65535)"),
        }
    };
    let (first, last) = match ports.split_once('-') {
        Some((a, b)) => (port(a)?, port(b)?),
        None => (port(ports)?, port(ports)?),
    };
    if first > last {
        bail!("invalid --expose {text:?}: the range ends before it starts");
    }
    Ok((first..=last).map(|p| format!("{p}/{proto}")).collect())
}

/// Checks the network flags and turns them into settings (nothing is made).
pub fn settings(root: &Path, args: &CreateArgs, config: Option<&Config>) -> Result<NetSettings> {
    let mode = args.network.clone();
    let mut publish = args
        .publish
        .iter()
        .map(|p| parse_publish(p))
        .collect::<Result<Vec<_>>>()?;
    let mut flag_exposed = Vec::new();
    for e in &args.expose {
        flag_exposed.extend(expose_ports(e)?);
    }
    if args.publish_all {
        for exposed in config
            .and_then(|c| c.exposed_ports().clone())
            .unwrap_or_default()
            .into_iter()
            .chain(flag_exposed)
        {
            let mut r =
                parse_publish(&exposed).with_context(|| format!("the image's EXPOSE {exposed}"))?;
            r.host_port = None;
            if !publish
                .iter()
                .any(|p| p.container_port == r.container_port && p.proto == r.proto)
            {
                publish.push(r);
            }
        }
    }
    let mut dns = Vec::new();
    for d in &args.dns {
        d.parse::<IpAddr>()
            .map_err(|_| anyhow::anyhow!("invalid --dns {d:?}: not an IP address"))?;
        dns.push(d.clone());
    }
    let mut add_hosts = Vec::new();
    for h in &args.add_host {
        let (name, addr) = h
            .split_once([':', '='])
            .filter(|(n, a)| !n.is_empty() && a.parse::<IpAddr>().is_ok() || *a == "host-gateway")
            .ok_or_else(|| anyhow::anyhow!("invalid --add-host {h:?}: use HOST:IP"))?;
        add_hosts.push((name.to_string(), addr.to_string()));
    }
    let settings = NetSettings {
        mode: mode.clone(),
        extra_networks: Vec::new(),
        aliases: args.network_alias.clone(),
        publish,
        dns,
        add_hosts,
    };
    match mode.as_str() {
        "none" | "host" => {
            if !settings.publish.is_empty() && mode == "none" {
                bail!("conflicting options: port publishing and --network none");
            }
            if !settings.publish.is_empty() {
                // docker's behaviour: the container's ports are the host's.
                eprintln!("WARNING: published ports are discarded when using host network mode");
            }
        }
        m if m.starts_with("container:") => {
            if !settings.publish.is_empty() {
                bail!("conflicting options: port publishing and --network {m}");
            }
        }
        name => {
            let network = definitions(root)
                .get(name)
                .map_err(anyhow::Error::new)?
                .ok_or_else(|| anyhow::anyhow!("network {name} not found"))?;
            if !network.resolve_names && !settings.aliases.is_empty() {
                bail!("--network-alias works only on user-defined networks, not on {name}");
            }
        }
    }
    Ok(settings)
}

/// What a started container holds.
#[derive(Debug, Default)]
pub struct NetUp {
    pub addresses: Vec<(String, String)>,
    pub ports: Vec<PortMapping>,
    /// Something to release when the container ends.
    pub attached: bool,
}

fn hostname_of(spec: &Spec, id: &str) -> String {
    spec.hostname()
        .clone()
        .unwrap_or_else(|| id[..12].to_string())
}

fn bind_file(spec: &mut Spec, source: &Path, target: &str) -> Result<()> {
    let mut mounts = spec.mounts().clone().unwrap_or_default();
    mounts.retain(|m| m.destination() != Path::new(target));
    mounts.push(
        MountBuilder::default()
            .destination(target)
            .typ("bind")
            .source(source)
            .options(vec!["rbind".to_string(), "rw".to_string()])
            .build()?,
    );
    spec.set_mounts(Some(mounts));
    Ok(())
}

fn set_netns(spec: &mut Spec, path: &Path) -> Result<()> {
    let linux = spec.linux_mut().as_mut().context("spec has linux")?;
    let mut namespaces = linux.namespaces().clone().unwrap_or_default();
    for ns in namespaces.iter_mut() {
        if ns.typ() == LinuxNamespaceType::Network {
            ns.set_path(Some(PathBuf::from(path)));
        }
    }
    linux.set_namespaces(Some(namespaces));
    Ok(())
}

/// The files under /etc (relative to the root) that [`prepare`] bind-mounts
/// for a container with these settings: the runtime makes them as empty
/// mount points when the image has none.
pub fn mounted_files(net: &NetSettings) -> &'static [&'static str] {
    match net.mode.as_str() {
        "host" => &[],
        m if m.starts_with("container:") => &["etc/hosts", "etc/resolv.conf"],
        _ => &["etc/hosts", "etc/resolv.conf", "etc/hostname"],
    }
}

/// The attachments of a container to its bridge networks, to make (see
/// [`prepare`]).
#[derive(Debug)]
pub struct Attach {
    networks: Vec<network::Network>,
    extra_hosts: Vec<(String, String)>,
    hostname: String,
    hosts: PathBuf,
}

/// Prepares the network of `container` before it starts: writes its /etc
/// files and adjusts `spec` (their bind mounts; the namespace path of
/// `container:` mode). Returns the attachments still to make for a bridge
/// network, which the container's namespace joins while it starts.
pub fn prepare(
    container: &Container,
    containers: &Containers,
    root: &Path,
    spec: &mut Spec,
) -> Result<Option<Attach>> {
    let record = &container.record;
    let net = &record.net;
    let mode = if net.mode.is_empty() {
        "none"
    } else {
        net.mode.as_str()
    };
    let hostname = hostname_of(spec, &record.id);
    let dir = &container.dir;
    let (hosts, hostname_file, resolv) = (
        dir.join("hosts"),
        dir.join("hostname"),
        dir.join("resolv.conf"),
    );
    if mode == "host" {
        return Ok(None);
    }
    if let Some(other) = mode.strip_prefix("container:") {
        let target = containers
            .find(other)
            .with_context(|| format!("--network {mode}"))?;
        let state = target.state()?.effective();
        if !state.is_alive() {
            bail!("--network {mode}: container {other} is not running");
        }
        set_netns(spec, Path::new(&format!("/proc/{}/ns/net", state.pid)))?;
        for (file, target_path) in [("hosts", "/etc/hosts"), ("resolv.conf", "/etc/resolv.conf")] {
            let source = target.dir.join(file);
            if source.exists() {
                bind_file(spec, &source, target_path)?;
            }
        }
        return Ok(None);
    }
    std::fs::write(&hostname_file, format!("{hostname}\n")).context("writing /etc/hostname")?;
    let defs = definitions(root);
    let resolvers = match defs.get(mode) {
        // User networks: the network's embedded resolver, on its gateway.
        Ok(Some(n)) if n.resolve_names && net.dns.is_empty() => vec![n.gateway.to_string()],
        _ => net.dns.clone(),
    };
    std::fs::write(&resolv, kiln_runner::network::resolv_conf(&resolvers))
        .context("writing /etc/resolv.conf")?;
    bind_file(spec, &hostname_file, "/etc/hostname")?;
    bind_file(spec, &resolv, "/etc/resolv.conf")?;
    bind_file(spec, &hosts, "/etc/hosts")?;
    if mode == "none" {
        let mut text =
            String::from("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n");
        for (n, a) in &net.add_hosts {
            text.push_str(&format!("{a}\t{n}\n"));
        }
        std::fs::write(&hosts, text).context("writing /etc/hosts")?;
        return Ok(None);
    }
    let mut names = vec![mode.to_string()];
    names.extend(net.extra_networks.iter().cloned());
    let mut networks = Vec::new();
    for name in &names {
        let n = defs
            .get(name)
            .map_err(anyhow::Error::new)?
            .ok_or_else(|| anyhow::anyhow!("network {name} not found"))?;
        networks.push(n);
    }
    let mut extra_hosts = Vec::new();
    for (n, a) in &net.add_hosts {
        let addr = if a == "host-gateway" {
            networks[0].gateway.to_string()
        } else {
            a.clone()
        };
        extra_hosts.push((n.clone(), addr));
    }
    // Filled in by the attachment; bind-mounted before.
    std::fs::write(&hosts, "").context("writing /etc/hosts")?;
    Ok(Some(Attach {
        networks,
        extra_hosts,
        hostname,
        hosts,
    }))
}

impl Attach {
    /// Attaches `container` to its networks, in `made` (its namespace, made
    /// beforehand) or else in a namespace of its own pinned under
    /// /run/kiln/netns. On error nothing is left attached.
    pub fn run(
        self,
        container: &Container,
        mut made: Option<network::NewNamespace>,
    ) -> Result<NetUp> {
        let record = &container.record;
        let net = &record.net;
        let mut up = NetUp {
            attached: true,
            ..NetUp::default()
        };
        let mut netns: Option<PathBuf> = None;
        for (i, network) in self.networks.iter().enumerate() {
            let request = network::AttachRequest {
                id: record.id.clone(),
                name: record.name.clone(),
                aliases: if network.resolve_names {
                    net.aliases.clone()
                } else {
                    Vec::new()
                },
                hostname: self.hostname.clone(),
                ports: if i == 0 {
                    net.publish.clone()
                } else {
                    Vec::new()
                },
                hosts_file: (i == 0).then(|| self.hosts.clone()),
                extra_hosts: self.extra_hosts.clone(),
                netns: netns.clone(),
                ifname: format!("eth{i}"),
                default_route: i == 0,
            };
            match network::attach_with(network, &request, made.take()) {
                Ok(a) => {
                    netns.get_or_insert(a.netns.clone());
                    up.addresses.push((network.name.clone(), a.ip.to_string()));
                    up.ports.extend(a.ports);
                }
                Err(e) => {
                    let _ = network::release(&record.id);
                    return Err(anyhow::Error::new(e).context(format!(
                        "attaching {} to network {}",
                        record.name, network.name
                    )));
                }
            }
        }
        Ok(up)
    }
}

/// Gives back the network of a container that ended.
pub fn teardown(container: &Container) -> Result<()> {
    network::release(&container.record.id).map_err(anyhow::Error::new)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_flags_parse_as_docker_spells_them() {
        let p = parse_publish("8080:80").unwrap();
        assert_eq!(
            (p.host_ip, p.host_port, p.container_port),
            (None, Some(8080), 80)
        );
        assert_eq!(p.proto, "tcp");
        let p = parse_publish("127.0.0.1:9000:53/udp").unwrap();
        assert_eq!(p.host_ip, Some(Ipv4Addr::LOCALHOST));
        assert_eq!(
            (p.host_port, p.container_port, p.proto.as_str()),
            (Some(9000), 53, "udp")
        );
        let p = parse_publish("80").unwrap();
        assert_eq!((p.host_port, p.container_port), (None, 80));
        let p = parse_publish("127.0.0.1::80").unwrap();
        assert_eq!((p.host_ip, p.host_port), (Some(Ipv4Addr::LOCALHOST), None));
        for bad in ["", "x", "80:0", "1:2:3:4", "80/sctp", "host:80:80", "70000"] {
            assert!(parse_publish(bad).is_err(), "{bad}");
        }
    }
}
