//! `kiln network`: user-defined bridge networks (create, ls, rm, inspect,
//! connect, disconnect, prune), and `kiln port`.

use std::io::Write;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use kiln_runner::network::{self, Network};
use serde_json::json;

use crate::containers::net::definitions;
use crate::containers::Status;
use crate::output::write_table;
use crate::ExitStatus;

// Arguments of `kiln network`.
#[derive(Debug, Args)]
pub struct NetworkArgs {
    #[command(subcommand)]
    pub command: NetworkCommand,
}

#[derive(Debug, Subcommand)]
pub enum NetworkCommand {
    /// Create a bridge network.
    Create {
        /// Subnet in CIDR form (default: a free /24 in 10.89.0.0/16).
        #[arg(long)]
        subnet: Option<String>,
        /// Gateway address (default: the subnet's first address).
        #[arg(long)]
        gateway: Option<String>,
        /// Driver: only bridge.
        #[arg(short, long, default_value = "bridge")]
        driver: String,
        name: String,
    },
    /// List networks.
    #[command(alias = "list")]
    Ls {
        /// Only print ids.
        #[arg(short, long)]
        quiet: bool,
    },
    /// Remove networks no running container uses.
    #[command(alias = "remove")]
    Rm {
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Show networks as JSON.
    Inspect {
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Connect a container to a network (a running one at once, as eth1...).
    Connect {
        /// Another name of the container on this network.
        #[arg(long)]
        alias: Vec<String>,
        network: String,
        container: String,
    },
    /// Disconnect a container from a network.
    Disconnect { network: String, container: String },
    /// Remove every user network no container uses.
    Prune {
        /// Do not ask (kiln never asks; accepted for docker's scripts).
        #[arg(short, long)]
        force: bool,
    },
}

fn find(root: &std::path::Path, name: &str) -> Result<Network> {
    definitions(root)
        .get(name)
        .map_err(anyhow::Error::new)?
        .ok_or_else(|| anyhow::anyhow!("network {name} not found"))
}

/// Names of the containers (of this root) whose settings name `network`.
fn users(root: &std::path::Path, network: &Network) -> Result<Vec<String>> {
    let containers = super::run::containers_of(root);
    Ok(containers
        .list()?
        .into_iter()
        .filter(|c| {
            c.record.net.mode == network.name
                || c.record.net.mode == network.id
                || c.record.net.extra_networks.contains(&network.name)
        })
        .map(|c| c.record.name)
        .collect())
}

pub fn run(root: &std::path::Path, args: &NetworkArgs) -> Result<ExitStatus> {
    network::reap().map_err(anyhow::Error::new)?;
    let defs = definitions(root);
    let mut out = std::io::stdout().lock();
    match &args.command {
        NetworkCommand::Create {
            subnet,
            gateway,
            driver,
            name,
        } => {
            if driver != "bridge" {
                bail!("unsupported network driver {driver:?}: use bridge");
            }
            let subnet = subnet
                .as_deref()
                .map(|s| {
                    s.parse::<ipnet::Ipv4Net>().map_err(|_| {
                        anyhow::anyhow!("invalid --subnet {s:?}: use CIDR, e.g. 10.90.0.0/24")
                    })
                })
                .transpose()?;
            let gateway = gateway
                .as_deref()
                .map(|g| {
                    g.parse::<std::net::Ipv4Addr>().map_err(|_| {
                        anyhow::anyhow!("invalid --gateway {g:?}: not an IPv4 address")
                    })
                })
                .transpose()?;
            let n = defs
                .create(name, subnet, gateway)
                .map_err(anyhow::Error::new)?;
            writeln!(out, "{}", n.id)?;
        }
        NetworkCommand::Ls { quiet } => {
            let all = defs.list().map_err(anyhow::Error::new)?;
            if *quiet {
                for n in all {
                    writeln!(out, "{}", &n.id[..12])?;
                }
            } else {
                let mut rows = vec![["NETWORK ID", "NAME", "DRIVER", "SUBNET"]
                    .map(String::from)
                    .to_vec()];
                for n in all {
                    rows.push(vec![
                        n.id[..12].to_string(),
                        n.name,
                        "bridge".into(),
                        n.subnet.to_string(),
                    ]);
                }
                write_table(&mut out, &rows)?;
            }
        }
        NetworkCommand::Rm { names } => {
            let mut failed = false;
            for name in names {
                let result = find(root, name).and_then(|n| {
                    let used = users(root, &n)?;
                    if let Some(c) = used.first() {
                        bail!("network {} is used by container {c}", n.name);
                    }
                    defs.remove(&n).map_err(anyhow::Error::new)
                });
                match result {
                    Ok(()) => writeln!(out, "{name}")?,
                    Err(e) => {
                        failed = true;
                        eprintln!("kiln: {e:#}");
                    }
                }
            }
            if failed {
                return Ok(ExitStatus(1));
            }
        }
        NetworkCommand::Inspect { names } => {
            let states = network::all_states().map_err(anyhow::Error::new)?;
            let containers = super::run::containers_of(root);
            let mut list = Vec::new();
            for name in names {
                let n = find(root, name)?;
                let mut members = serde_json::Map::new();
                if let Some(s) = states.iter().find(|s| s.bridge == n.bridge) {
                    for (id, ep) in &s.endpoints {
                        if containers.try_find(id)?.is_none() {
                            continue;
                        }
                        members.insert(
                            id.clone(),
                            json!({
                                "Name": ep.name,
                                "IPv4Address": format!("{}/{}", ep.ip, n.subnet.prefix_len()),
                                "Aliases": ep.aliases,
                            }),
                        );
                    }
                }
                list.push(json!({
                    "Name": n.name,
                    "Id": n.id,
                    "Created": n.created,
                    "Driver": "bridge",
                    "IPAM": {"Config": [{"Subnet": n.subnet.to_string(), "Gateway": n.gateway.to_string()}]},
                    "Options": {"com.docker.network.bridge.name": n.bridge},
                    "Containers": members,
                }));
            }
            serde_json::to_writer_pretty(&mut out, &list)?;
            writeln!(out)?;
        }
        NetworkCommand::Connect {
            alias,
            network: name,
            container,
        } => {
            let n = find(root, name)?;
            change(root, container, |c, running| {
                let net = &mut c.record.net;
                if !net.is_bridge() {
                    bail!(
                        "container {container} has network {}: it cannot join a bridge network",
                        net.mode
                    );
                }
                if net.mode == n.name || net.extra_networks.contains(&n.name) {
                    bail!(
                        "container {container} is already connected to network {}",
                        n.name
                    );
                }
                if let Some(state) = running {
                    let held = network::endpoints_of(&c.record.id).map_err(anyhow::Error::new)?;
                    let (_, first) = held
                        .first()
                        .with_context(|| format!("container {container} holds no network"))?;
                    let attached = network::attach(
                        &n,
                        &network::AttachRequest {
                            id: c.record.id.clone(),
                            name: c.record.name.clone(),
                            aliases: alias.clone(),
                            hostname: first.hostname.clone(),
                            netns: Some(first.netns.clone()),
                            ifname: format!("eth{}", held.len()),
                            default_route: false,
                            ..network::AttachRequest::default()
                        },
                    )
                    .map_err(anyhow::Error::new)?;
                    network::set_pid(&c.record.id, state.pid).map_err(anyhow::Error::new)?;
                    state
                        .addresses
                        .push((n.name.clone(), attached.ip.to_string()));
                }
                let net = &mut c.record.net;
                net.extra_networks.push(n.name.clone());
                net.aliases.extend(alias.iter().cloned());
                Ok(())
            })?;
        }
        NetworkCommand::Disconnect {
            network: name,
            container,
        } => {
            let n = find(root, name)?;
            change(root, container, |c, running| {
                let net = &mut c.record.net;
                if let Some(i) = net.extra_networks.iter().position(|x| *x == n.name) {
                    net.extra_networks.remove(i);
                } else if net.mode == n.name {
                    if net.extra_networks.is_empty() {
                        net.mode = "none".into();
                    } else {
                        net.mode = net.extra_networks.remove(0);
                    }
                } else {
                    bail!(
                        "container {container} is not connected to network {}",
                        n.name
                    );
                }
                if let Some(state) = running {
                    network::release_from(&c.record.id, &n.bridge).map_err(anyhow::Error::new)?;
                    state.addresses.retain(|(net, _)| *net != n.name);
                }
                Ok(())
            })?;
        }
        NetworkCommand::Prune { force: _ } => {
            for n in defs.list().map_err(anyhow::Error::new)? {
                if n.name == network::DEFAULT_NETWORK || !users(root, &n)?.is_empty() {
                    continue;
                }
                if defs.remove(&n).is_ok() {
                    writeln!(out, "{}", n.name)?;
                }
            }
        }
    }
    Ok(ExitStatus::SUCCESS)
}

/// Changes the network settings of a container (and, when it runs, its
/// live attachments: `change` gets its state then).
fn change(
    root: &std::path::Path,
    name: &str,
    change: impl FnOnce(
        &mut crate::containers::Container,
        Option<&mut crate::containers::State>,
    ) -> Result<()>,
) -> Result<()> {
    let containers = super::run::containers_of(root);
    let _lock = containers.lock()?;
    let mut c = containers.find(name)?;
    let mut state = c.state()?;
    let running = state.clone().effective().status == Status::Running;
    change(&mut c, running.then_some(&mut state))?;
    if running {
        c.set_state(&state)?;
    }
    crate::containers::write_atomic(
        &c.dir.join("config.json"),
        &serde_json::to_vec_pretty(&c.record)?,
    )
    .with_context(|| format!("updating container {name}"))
}

// Arguments of `kiln port`.
#[derive(Debug, Args)]
pub struct PortArgs {
    pub container: String,
    /// Only this container port (PORT[/tcp|udp]).
    pub port: Option<String>,
}

/// `kiln port CTR [PORT]`: the published ports of a running container.
pub fn port(root: &std::path::Path, args: &PortArgs) -> Result<ExitStatus> {
    let containers = super::run::containers_of(root);
    let c = containers.find(&args.container)?;
    let state = c.state()?.effective();
    let filter = args.port.as_deref().map(|p| {
        let (n, proto) = p.split_once('/').unwrap_or((p, "tcp"));
        (n.to_string(), proto.to_string())
    });
    let mut out = std::io::stdout().lock();
    let mut shown = false;
    if state.status == Status::Running {
        for p in &state.ports {
            if let Some((n, proto)) = &filter {
                if *n != p.container_port.to_string() || *proto != p.proto {
                    continue;
                }
            }
            let ip = p
                .host_ip
                .map(|i| i.to_string())
                .unwrap_or_else(|| "0.0.0.0".into());
            if filter.is_some() {
                writeln!(out, "{ip}:{}", p.host_port)?;
            } else {
                writeln!(
                    out,
                    "{}/{} -> {ip}:{}",
                    p.container_port, p.proto, p.host_port
                )?;
            }
            shown = true;
        }
    }
    if let (Some(p), false) = (&args.port, shown) {
        bail!("no public port '{p}' published for {}", args.container);
    }
    Ok(ExitStatus::SUCCESS)
}
