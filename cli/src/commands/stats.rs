//! `kiln stats`: CPU, memory, network, block I/O and processes of running
//! containers, from their cgroups and network namespaces, as `docker stats`
//! shows them.

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use anyhow::Result;
use clap::Args;
use kiln_runner::cgroup::{read_stats, CpuUsage};
use serde_json::json;

use crate::containers::Container;
use crate::output::{binary_size, human_size, write_table};
use crate::ExitStatus;

// Arguments of `kiln stats`.
#[derive(Debug, Args)]
pub struct StatsArgs {
    /// Stopped containers too (default: running ones).
    #[arg(short, long)]
    pub all: bool,
    /// Print one reading and exit (default: refresh every second).
    #[arg(long)]
    pub no_stream: bool,
    /// Full container ids.
    #[arg(long)]
    pub no_trunc: bool,
    /// Output format: table (default) or json (one object per container).
    #[arg(long, default_value = "table", value_parser = ["table", "json"])]
    pub format: String,
    /// Containers: names or ids (default: every running container).
    pub containers: Vec<String>,
}

/// One container's reading.
struct Reading {
    id: String,
    name: String,
    cpu: Option<Duration>,
    at: Instant,
    stats: Option<kiln_runner::cgroup::Stats>,
    net: (u64, u64),
}

/// Received and sent bytes on every interface but loopback, as the
/// process `pid` sees them (its network namespace).
fn net_bytes(pid: i32) -> (u64, u64) {
    let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/net/dev")) else {
        return (0, 0);
    };
    let mut total = (0, 0);
    for line in text.lines().skip(2) {
        let Some((name, rest)) = line.split_once(':') else {
            continue;
        };
        if name.trim() == "lo" {
            continue;
        }
        let fields: Vec<u64> = rest
            .split_whitespace()
            .map(|f| f.parse().unwrap_or(0))
            .collect();
        if fields.len() > 8 {
            total.0 += fields[0];
            total.1 += fields[8];
        }
    }
    total
}

fn host_memory() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

fn read(c: &Container, no_trunc: bool) -> Reading {
    let state = c.state().unwrap_or_default().effective();
    let alive = state.is_alive();
    let cgroup = c.cgroup_path();
    Reading {
        id: if no_trunc {
            c.record.id.clone()
        } else {
            c.record.short_id().to_string()
        },
        name: c.record.name.clone(),
        cpu: alive
            .then(|| CpuUsage::new(&cgroup).and_then(|u| u.read()))
            .flatten(),
        at: Instant::now(),
        stats: alive.then(|| read_stats(&cgroup)).flatten(),
        net: if alive { net_bytes(state.pid) } else { (0, 0) },
    }
}

fn selected(root: &std::path::Path, args: &StatsArgs) -> Result<Vec<Container>> {
    let containers = super::run::containers_of(root);
    if !args.containers.is_empty() {
        return args.containers.iter().map(|n| containers.find(n)).collect();
    }
    Ok(containers
        .list()?
        .into_iter()
        .filter(|c| args.all || c.state().unwrap_or_default().effective().is_alive())
        .collect())
}

pub fn run(root: &std::path::Path, args: &StatsArgs) -> Result<ExitStatus> {
    let memory_total = host_memory();
    let terminal = std::io::stdout().is_terminal();
    let mut before: HashMap<String, Reading> = HashMap::new();
    for c in selected(root, args)? {
        before.insert(c.record.id.clone(), read(&c, args.no_trunc));
    }
    loop {
        // CPU % needs two readings: the first comes after a short wait.
        std::thread::sleep(Duration::from_millis(if args.no_stream {
            500
        } else {
            1000
        }));
        let containers = selected(root, args)?;
        let mut rows = vec![[
            "CONTAINER ID",
            "NAME",
            "CPU %",
            "MEM USAGE / LIMIT",
            "MEM %",
            "NET I/O",
            "BLOCK I/O",
            "PIDS",
        ]
        .map(String::from)
        .to_vec()];
        let mut out = std::io::stdout().lock();
        let mut now_readings = HashMap::new();
        for c in &containers {
            let now = read(c, args.no_trunc);
            let cpu = match (before.get(&c.record.id), now.cpu) {
                (Some(prev), Some(cpu)) => match prev.cpu {
                    Some(prev_cpu) => {
                        let wall = now.at.duration_since(prev.at).as_secs_f64();
                        cpu.saturating_sub(prev_cpu).as_secs_f64() / wall.max(1e-3) * 100.0
                    }
                    None => 0.0,
                },
                _ => 0.0,
            };
            let s = now.stats.clone().unwrap_or_default();
            let limit = s
                .memory_limit
                .filter(|l| *l > 0 && *l < memory_total.max(1))
                .unwrap_or(memory_total);
            let mem_perc = if limit > 0 {
                s.memory as f64 / limit as f64 * 100.0
            } else {
                0.0
            };
            let fields = [
                format!("{cpu:.2}%"),
                format!("{} / {}", binary_size(s.memory), binary_size(limit)),
                format!("{mem_perc:.2}%"),
                format!("{} / {}", human_size(now.net.0), human_size(now.net.1)),
                format!(
                    "{} / {}",
                    human_size(s.block_read),
                    human_size(s.block_write)
                ),
                s.pids.to_string(),
            ];
            if args.format == "json" {
                let line = json!({
                    "BlockIO": fields[4],
                    "CPUPerc": fields[0],
                    "Container": now.id,
                    "ID": now.id,
                    "MemPerc": fields[2],
                    "MemUsage": fields[1],
                    "Name": now.name,
                    "NetIO": fields[3],
                    "PIDs": fields[5],
                });
                writeln!(out, "{line}")?;
            } else {
                let mut row = vec![now.id.clone(), now.name.clone()];
                row.extend(fields);
                rows.push(row);
            }
            now_readings.insert(c.record.id.clone(), now);
        }
        if args.format != "json" {
            if terminal && !args.no_stream {
                // Redraw in place, as docker does.
                write!(out, "\x1b[2J\x1b[H")?;
            }
            write_table(&mut out, &rows)?;
        }
        out.flush()?;
        if args.no_stream {
            return Ok(ExitStatus::SUCCESS);
        }
        before = now_readings;
    }
}
