//! `kiln ps`: list containers.

use std::io::Write;

use anyhow::Result;
use chrono::Utc;
use clap::Args;
use serde_json::json;

use crate::containers::{State, Status};
use crate::output::{human_since, write_table};
use crate::ExitStatus;

/// Arguments of `kiln ps`.
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
            format!("Up {}", since_text(since))
        }
        Status::Exited => {
            let code = state
                .exit_code
                .map_or_else(|| "unknown".to_string(), |c| c.to_string());
            match state.finished_at {
                Some(t) => format!("Exited ({code}) {} ago", since_text(t)),
                None => format!("Exited ({code})"),
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
    let containers = super::run::containers_of(root);
    let mut rows = vec![[
        "CONTAINER ID",
        "IMAGE",
        "COMMAND",
        "CREATED",
        "STATUS",
        "NAMES",
    ]
    .map(String::from)
    .to_vec()];
    let mut out = std::io::stdout().lock();
    for container in containers.list()?.into_iter().rev() {
        let state = container.state().unwrap_or_default().effective();
        if !args.all && state.status != Status::Running {
            continue;
        }
        let r = &container.record;
        if args.quiet {
            writeln!(out, "{}", r.short_id())?;
            continue;
        }
        let mut command = r.command().join(" ");
        if command.chars().count() > 20 {
            command = command.chars().take(19).collect::<String>() + "…";
        }
        if args.format == "json" {
            let line = json!({
                "ID": r.short_id(),
                "Image": r.image,
                "Command": format!("\"{command}\""),
                "CreatedAt": r.created.to_rfc3339(),
                "RunningFor": since_text(r.created),
                "State": state.status.as_str(),
                "Status": status_text(&state),
                "Names": r.name,
            });
            writeln!(out, "{line}")?;
            continue;
        }
        rows.push(vec![
            r.short_id().to_string(),
            r.image.clone(),
            format!("\"{command}\""),
            format!("{} ago", since_text(r.created)),
            status_text(&state),
            r.name.clone(),
        ]);
    }
    if !args.quiet && args.format == "table" {
        write_table(&mut out, &rows)?;
    }
    Ok(ExitStatus::SUCCESS)
}
