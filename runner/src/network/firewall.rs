//! NAT, port publishing and forwarding rules, through `iptables`.
//!
//! Why iptables and not an nftables table of kiln's own: a Docker engine on
//! the same host sets the filter FORWARD policy to DROP through iptables (on
//! nf_tables, `iptables-nft`). A packet dropped by one nftables base chain is
//! dropped whatever another table accepts, so kiln's accept rules must sit in
//! that same FORWARD chain: kiln puts a jump to its own chain KILN-FORWARD
//! there, and its NAT in KILN-POSTROUTING and KILN-DNAT (nat table). It never
//! touches another chain's rules but the jumps to its own.
//!
//! Rules for a network are added once, when its bridge is made; per
//! container only the DNAT rules of published ports, in one
//! `iptables-restore --noflush` run.

use std::io::Write;
use std::process::{Command, Stdio};

use super::{Error, Result};

const FORWARD: &str = "KILN-FORWARD";
const POSTROUTING: &str = "KILN-POSTROUTING";
const DNAT: &str = "KILN-DNAT";

/// Runs `iptables -w ARGS`.
fn run(args: &[&str]) -> Result<std::process::Output> {
    Command::new("iptables")
        .arg("-w")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| Error::io("running iptables (is the iptables package installed?)", e))
}

/// Runs `iptables -w ARGS`; Ok(false) when it exits non-zero.
fn iptables(args: &[&str]) -> Result<bool> {
    Ok(run(args)?.status.success())
}

/// Runs `iptables -w ARGS`; its error output is the error when it fails.
fn must(args: &[&str]) -> Result<()> {
    let out = run(args)?;
    if out.status.success() {
        Ok(())
    } else {
        Err(Error::new(format!(
            "iptables {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

/// Adds `rule` to `chain` of `table` unless it is there (at the top when `first`).
fn ensure(table: &str, chain: &str, rule: &[&str], first: bool) -> Result<()> {
    let mut check = vec!["-t", table, "-C", chain];
    check.extend_from_slice(rule);
    if iptables(&check)? {
        return Ok(());
    }
    let mut add = vec!["-t", table];
    if first {
        add.extend_from_slice(&["-I", chain, "1"]);
    } else {
        add.extend_from_slice(&["-A", chain]);
    }
    add.extend_from_slice(rule);
    must(&add)
}

/// Deletes `rule` from `chain` while it is there.
fn delete(table: &str, chain: &str, rule: &[&str]) -> Result<()> {
    let mut del = vec!["-t", table, "-D", chain];
    del.extend_from_slice(rule);
    for _ in 0..8 {
        if !iptables(&del)? {
            break;
        }
    }
    Ok(())
}

fn ensure_chain(table: &str, chain: &str) -> Result<()> {
    if iptables(&["-t", table, "-S", chain])? {
        return Ok(());
    }
    must(&["-t", table, "-N", chain])
}

/// kiln's chains, the jumps to them and the rules common to every kiln
/// bridge (all named kiln*).
pub fn ensure_base() -> Result<()> {
    ensure_chain("filter", FORWARD)?;
    ensure_chain("nat", POSTROUTING)?;
    ensure_chain("nat", DNAT)?;
    let established = [
        "-o",
        "kiln+",
        "-m",
        "conntrack",
        "--ctstate",
        "RELATED,ESTABLISHED",
        "-j",
        "ACCEPT",
    ];
    let published = [
        "-o",
        "kiln+",
        "-m",
        "conntrack",
        "--ctstate",
        "DNAT",
        "-j",
        "ACCEPT",
    ];
    let isolate = ["-i", "kiln+", "-o", "kiln+", "-j", "DROP"];
    let outbound = ["-i", "kiln+", "-j", "ACCEPT"];
    for rule in [&established[..], &published, &isolate, &outbound] {
        ensure("filter", FORWARD, rule, false)?;
    }
    ensure(
        "nat",
        POSTROUTING,
        &["-s", "127.0.0.0/8", "-o", "kiln+", "-j", "MASQUERADE"],
        false,
    )?;
    ensure("filter", "FORWARD", &["-j", FORWARD], true)?;
    ensure("nat", "POSTROUTING", &["-j", POSTROUTING], true)?;
    let local = ["-m", "addrtype", "--dst-type", "LOCAL", "-j", DNAT];
    ensure("nat", "PREROUTING", &local, true)?;
    ensure("nat", "OUTPUT", &local, true)?;
    Ok(())
}

/// The rules of one bridge: (table, chain, rule, at the top).
fn bridge_rules(
    bridge: &str,
    subnet: &str,
) -> Vec<(&'static str, &'static str, Vec<String>, bool)> {
    let split = |r: String| r.split(' ').map(String::from).collect::<Vec<_>>();
    vec![
        // Containers of one network reach each other.
        (
            "filter",
            FORWARD,
            split(format!("-i {bridge} -o {bridge} -j ACCEPT")),
            true,
        ),
        // Out to the world under the host's address.
        (
            "nat",
            POSTROUTING,
            split(format!("-s {subnet} ! -o {bridge} -j MASQUERADE")),
            false,
        ),
        // A container reaching a published port of its own network (hairpin).
        (
            "nat",
            POSTROUTING,
            split(format!(
                "-s {subnet} -o {bridge} -m conntrack --ctstate DNAT -j MASQUERADE"
            )),
            false,
        ),
    ]
}

/// The rules of one network: traffic within its bridge, masquerade out.
pub fn add_bridge(bridge: &str, subnet: &str) -> Result<()> {
    ensure_base()?;
    for (table, chain, rule, first) in bridge_rules(bridge, subnet) {
        let rule: Vec<&str> = rule.iter().map(String::as_str).collect();
        ensure(table, chain, &rule, first)?;
    }
    Ok(())
}

/// Removes the rules [`add_bridge`] added.
pub fn remove_bridge(bridge: &str, subnet: &str) -> Result<()> {
    for (table, chain, rule, _) in bridge_rules(bridge, subnet) {
        let rule: Vec<&str> = rule.iter().map(String::as_str).collect();
        delete(table, chain, &rule)?;
    }
    Ok(())
}

/// The DNAT rule of one published port (a rule spec without the chain).
pub fn port_rule(
    host_ip: Option<std::net::Ipv4Addr>,
    host_port: u16,
    proto: &str,
    ip: std::net::Ipv4Addr,
    port: u16,
    owner: &str,
) -> String {
    let dest = host_ip.map(|h| format!("-d {h}/32 ")).unwrap_or_default();
    format!(
        "{dest}-p {proto} -m {proto} --dport {host_port} -m comment --comment kiln:{owner} -j DNAT --to-destination {ip}:{port}"
    )
}

/// Adds or deletes DNAT rules in one `iptables-restore --noflush` run.
pub fn apply_ports(rules: &[String], add: bool) -> Result<()> {
    if rules.is_empty() {
        return Ok(());
    }
    let mut text = String::from("*nat\n");
    for r in rules {
        text.push_str(&format!("{} {DNAT} {r}\n", if add { "-A" } else { "-D" }));
    }
    text.push_str("COMMIT\n");
    let mut child = Command::new("iptables-restore")
        .args(["-w", "--noflush"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| Error::io("running iptables-restore", e))?;
    child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(text.as_bytes())
        .map_err(|e| Error::io("writing to iptables-restore", e))?;
    let out = child
        .wait_with_output()
        .map_err(|e| Error::io("waiting for iptables-restore", e))?;
    if out.status.success() {
        Ok(())
    } else if !add {
        // Some rule was gone already: delete the rest one by one.
        for r in rules {
            let spec: Vec<&str> = r.split(' ').collect();
            delete("nat", DNAT, &spec)?;
        }
        Ok(())
    } else {
        Err(Error::new(format!(
            "publishing ports (iptables-restore): {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}
