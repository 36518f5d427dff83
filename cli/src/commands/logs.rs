//! `kiln logs`: print a container's output from its json-file log.

use std::io::Write;
use std::time::Duration;

use anyhow::Result;
use chrono::SecondsFormat;
use clap::Args;

use crate::containers::logs::{read_from, Entry};
use crate::containers::{Container, Status};
use crate::ExitStatus;

/// Arguments of `kiln logs`.
#[derive(Debug, Args)]
pub struct LogsArgs {
    /// Keep printing new output until the container exits.
    #[arg(short, long)]
    pub follow: bool,
    /// Only the last N lines.
    #[arg(long)]
    pub tail: Option<usize>,
    /// Prefix every line with its time.
    #[arg(short, long)]
    pub timestamps: bool,
    /// Container: name or id.
    pub container: String,
}

fn print(entries: &[Entry], timestamps: bool) -> Result<()> {
    let mut out = std::io::stdout().lock();
    let mut err = std::io::stderr().lock();
    for e in entries {
        let w: &mut dyn Write = if e.stream == "stderr" {
            &mut err
        } else {
            &mut out
        };
        if timestamps {
            write!(w, "{} ", e.time.to_rfc3339_opts(SecondsFormat::Nanos, true))?;
        }
        w.write_all(e.log.as_bytes())?;
    }
    out.flush()?;
    Ok(())
}

pub fn run(root: &std::path::Path, args: &LogsArgs) -> Result<ExitStatus> {
    let container = super::run::containers_of(root).find(&args.container)?;
    let path = container.log_path();
    let (mut entries, offset) = read_from(&path, 0)?;
    if let Some(n) = args.tail {
        entries.drain(..entries.len().saturating_sub(n));
    }
    print(&entries, args.timestamps)?;
    if args.follow {
        follow(&container, offset, args.timestamps)?;
    }
    Ok(ExitStatus::SUCCESS)
}

/// Prints log entries from byte `offset` on until the container stopped.
pub fn follow(container: &Container, mut offset: u64, timestamps: bool) -> Result<()> {
    let path = container.log_path();
    loop {
        let running = container.state()?.effective().status == Status::Running;
        let (entries, next) = read_from(&path, offset)?;
        offset = next;
        print(&entries, timestamps)?;
        if !running {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
