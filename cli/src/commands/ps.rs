//! `kiln ps`: list containers.

use std::io::Write;

use anyhow::Result;
use chrono::Utc;
use clap::Args;
use serde_json::json;

use crate::containers::{State, Status};
use crate::output::{human_since, write_table};
use crate::ExitStatus;

// Arguments of `kiln ps`.
#[derive(Debug, Args)]
pub struct PsArgs {
    /// Show all containers (default: running ones).
    #[arg(short, long)]
    pub all: bool,
    /// Only print ids.
    #[arg(short, long)]
    pub quiet: bool,
    /// Output format: table (default) or json (one object per line).
    #[arg(long, default_value = "table")]
    pub format: String,
    /// Only containers matching KEY=VALUE: id, name, status
    /// (created|running|exited), exited=CODE, ancestor=IMAGE, network,
    /// volume, label=KEY[=VALUE]. Repeated keys match any value; different keys all must match.
    #[arg(short, long = "filter")]
    pub filters: Vec<String>,
    /// Only the newest container (any state).
    #[arg(short, long)]
    pub latest: bool,
    /// Only the N newest containers (any state).
    #[arg(short = 'n', long = "last")]
    pub last: Option<usize>,
    /// Full ids and commands.
    #[arg(long)]
    pub no_trunc: bool,
}

/// The values of `--filter status=` (docker's container states).
const STATUSES: &[&str] = &["created", "restarting", "running", "paused", "exited"];

const FILTER_KEYS: &[&str] = &[
    "id", "name", "status", "exited", "ancestor", "network", "volume", "label",
];

/// `--filter` values by key.
struct Filters(Vec<(String, String)>);

impl Filters {
    fn parse(raw: &[String]) -> Result<Filters> {
        let mut out = Vec::new();
        for f in raw {
            let Some((k, v)) = f.split_once('=') else {
                anyhow::bail!("bad format of filter {f:?} (expected name=value)");
            };
            let k = k.trim().to_ascii_lowercase();
            if !FILTER_KEYS.contains(&k.as_str()) {
                anyhow::bail!(
                    "invalid filter '{k}': use one of {}",
                    FILTER_KEYS.join(", ")
                );
            }
            if k == "status" && !STATUSES.contains(&v) {
                anyhow::bail!(
                    "invalid filter 'status={v}': use created, restarting, running, paused or exited"
                );
            }
            if k == "exited" && v.parse::<i32>().is_err() {
                anyhow::bail!("invalid filter 'exited={v}': an exit code");
            }
            out.push((k, v.to_string()));
        }
        Ok(Filters(out))
    }

    fn has(&self, key: &str) -> bool {
        self.0.iter().any(|(k, _)| k == key)
    }

    /// True when, for every key given, one of its values matches.
    fn matches(&self, container: &crate::containers::Container, state: &State) -> bool {
        let r = &container.record;
        FILTER_KEYS.iter().all(|key| {
            let mut values = self
                .0
                .iter()
                .filter(|(k, _)| k == key)
                .map(|(_, v)| v.as_str());
            let mut any = |test: &dyn Fn(&str) -> bool| values.any(test);
            match *key {
                "id" => !self.has(key) || any(&|v| r.id.starts_with(v)),
                "name" => !self.has(key) || any(&|v| r.name.contains(v.trim_start_matches('/'))),
                "status" => !self.has(key) || any(&|v| state.docker_status() == v),
                "exited" => {
                    !self.has(key)
                        || any(&|v| {
                            state.status == Status::Exited
                                && state.exit_code.map(|c| c.to_string()).as_deref() == Some(v)
                        })
                }
                "ancestor" => {
                    !self.has(key)
                        || any(&|v| {
                            r.image == v
                                || r.image == format!("{v}:latest")
                                || r.image_id
                                    .trim_start_matches("sha256:")
                                    .starts_with(v.trim_start_matches("sha256:"))
                        })
                }
                "network" => {
                    !self.has(key)
                        || any(&|v| {
                            (r.net.is_bridge() && r.net.mode == v)
                                || r.net.extra_networks.iter().any(|n| n == v)
                        })
                }
                "volume" => {
                    !self.has(key)
                        || any(&|v| {
                            r.volumes
                                .iter()
                                .chain(&r.anonymous_volumes)
                                .any(|spec| spec == v || spec.split(':').any(|part| part == v))
                        })
                }
                // Unlike the others, every label filter must match (docker).
                "label" => {
                    self.0
                        .iter()
                        .filter(|(k, _)| k == key)
                        .all(|(_, v)| match v.split_once('=') {
                            Some((k, v)) => r.labels.get(k).is_some_and(|have| have == v),
                            None => r.labels.contains_key(v.as_str()),
                        })
                }
                _ => true,
            }
        })
    }
}

/// docker's PORTS column: `0.0.0.0:8080->80/tcp, ...` while it runs.
fn ports_text(state: &State) -> String {
    if state.status != Status::Running {
        return String::new();
    }
    state
        .ports
        .iter()
        .map(|p| {
            let ip = p
                .host_ip
                .map_or_else(|| "0.0.0.0".to_string(), |i| i.to_string());
            format!("{ip}:{}->{}/{}", p.host_port, p.container_port, p.proto)
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn since_text(t: chrono::DateTime<Utc>) -> String {
    human_since((Utc::now() - t).num_seconds())
        .trim_end_matches(" ago")
        .to_string()
}

/// docker's STATUS column: "Up 5 minutes", "Exited (0) 2 seconds ago", "Created".
fn status_text(state: &State) -> String {
    match state.status {
        Status::Created => "Created".into(),
        Status::Running => {
            let since = state.started_at.unwrap_or_else(Utc::now);
            let paused = if state.paused { " (Paused)" } else { "" };
            format!("Up {}{paused}", since_text(since))
        }
        Status::Exited => {
            let code = state
                .exit_code
                .map_or_else(|| "unknown".to_string(), |c| c.to_string());
            let word = if state.is_restarting() {
                "Restarting"
            } else {
                "Exited"
            };
            match state.finished_at {
                Some(t) => format!("{word} ({code}) {} ago", since_text(t)),
                None => format!("{word} ({code})"),
            }
        }
    }
}

pub fn run(root: &std::path::Path, args: &PsArgs) -> Result<ExitStatus> {
    // Gives back the network of containers whose monitor was killed.
    let _ = kiln_runner::network::reap();
    if args.format != "table" && args.format != "json" {
        anyhow::bail!("unsupported format {:?}: use table or json", args.format);
    }
    let filters = Filters::parse(&args.filters)?;
    let containers = super::run::containers_of(root);
    let mut rows = vec![[
        "CONTAINER ID",
        "IMAGE",
        "COMMAND",
        "CREATED",
        "STATUS",
        "PORTS",
        "NAMES",
    ]
    .map(String::from)
    .to_vec()];
    let mut out = std::io::stdout().lock();
    // Newest first; -l and -n count every container, as docker does.
    let mut listed = containers.list()?;
    listed.reverse();
    if let Some(n) = args.last.or(args.latest.then_some(1)) {
        listed.truncate(n);
    }
    let all = args.all || args.latest || args.last.is_some() || filters.has("status");
    for container in listed {
        let state = container.state().unwrap_or_default().effective();
        if !all && state.status != Status::Running {
            continue;
        }
        if !filters.matches(&container, &state) {
            continue;
        }
        let r = &container.record;
        let id = if args.no_trunc {
            r.id.as_str()
        } else {
            r.short_id()
        };
        if args.quiet {
            writeln!(out, "{id}")?;
            continue;
        }
        let mut command = r.command().join(" ");
        if !args.no_trunc && command.chars().count() > 20 {
            command = command.chars().take(19).collect::<String>() + "…";
        }
        if args.format == "json" {
            let line = json!({
                "ID": id,
                "Image": r.image,
                "Command": format!("\"{command}\""),
                "CreatedAt": r.created.to_rfc3339(),
                "RunningFor": since_text(r.created),
                "State": if state.paused { "paused" } else { state.status.as_str() },
                "Status": status_text(&state),
                "Ports": ports_text(&state),
                "Names": r.name,
                "Labels": r.labels.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(","),
            });
            writeln!(out, "{line}")?;
            continue;
        }
        rows.push(vec![
            id.to_string(),
            r.image.clone(),
            format!("\"{command}\""),
            format!("{} ago", since_text(r.created)),
            status_text(&state),
            ports_text(&state),
            r.name.clone(),
        ]);
    }
    if !args.quiet && args.format == "table" {
        write_table(&mut out, &rows)?;
    }
    Ok(ExitStatus::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_are_checked() {
        assert!(Filters::parse(&["status=exited".into(), "name=web".into()]).is_ok());
        for bad in ["status", "colour=red", "status=sleeping", "exited=x"] {
            let err = Filters::parse(&[bad.to_string()])
                .err()
                .map(|e| e.to_string());
            assert!(err.is_some_and(|e| !e.contains('\n')), "{bad}");
        }
    }
}
