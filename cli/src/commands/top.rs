//! `kiln top`: the processes of a running container, as the host's `ps`
//! shows them (docker's default columns, `ps -ef`).

use std::collections::BTreeSet;

use anyhow::{bail, Context, Result};
use clap::Args;

use crate::ExitStatus;

// Arguments of `kiln top`.
#[derive(Debug, Args)]
pub struct TopArgs {
    /// Container: name or id.
    pub container: String,
}

pub fn run(root: &std::path::Path, args: &TopArgs) -> Result<ExitStatus> {
    let container = super::run::containers_of(root).find(&args.container)?;
    let state = container.state()?;
    if !state.is_alive() {
        bail!("container {} is not running", args.container);
    }
    // Every process in the container's cgroup (any hierarchy lists them all).
    let mut pids = BTreeSet::new();
    for dir in &state.cgroup_dirs {
        if let Ok(procs) = std::fs::read_to_string(dir.join("cgroup.procs")) {
            pids.extend(procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
        }
    }
    pids.insert(state.pid);
    let list: Vec<String> = pids.iter().map(|p| p.to_string()).collect();
    let status = std::process::Command::new("ps")
        .args([
            "-o",
            "uid,pid,ppid,c,stime,tty,time,cmd",
            "-p",
            &list.join(","),
        ])
        .status()
        .context("running ps (Debian package procps)")?;
    Ok(ExitStatus(if status.success() { 0 } else { 1 }))
}
