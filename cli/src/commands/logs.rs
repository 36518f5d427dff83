//! `kiln logs`: print a container's output from its json-file log.

use std::io::Write;
use std::time::Duration;

use anyhow::Result;
use chrono::{DateTime, SecondsFormat, Utc};
use clap::Args;

use crate::containers::logs::{read_from, Entry};
use crate::containers::{Container, Status};
use crate::ExitStatus;

// Arguments of `kiln logs`.
#[derive(Debug, Args)]
pub struct LogsArgs {
    /// Keep printing new output until the container exits.
    #[arg(short, long)]
    pub follow: bool,
    /// Only the last N lines (`all`: every line).
    #[arg(short = 'n', long, default_value = "all")]
    pub tail: String,
    /// Only lines from this time on: RFC 3339 (`2026-11-24T10:00:00Z`), a
    /// date, Unix seconds (`1700000000.5`) or an age (`10m`, `1h30m`).
    #[arg(long)]
    pub since: Option<String>,
    /// Only lines before this time (same forms as --since).
    #[arg(long)]
    pub until: Option<String>,
    /// Prefix every line with its time.
    #[arg(short, long)]
    pub timestamps: bool,
    /// Container: name or id.
    pub container: String,
}

/// Which entries are printed.
struct Window {
    since: Option<DateTime<Utc>>,
    until: Option<DateTime<Utc>>,
}

impl Window {
    fn keep(&self, e: &Entry) -> bool {
        self.since.is_none_or(|s| e.time >= s) && self.until.is_none_or(|u| e.time < u)
    }
}

/// A time as `docker logs --since/--until` reads it, relative to `now`.
fn parse_time(text: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>> {
    let bad = || {
        anyhow::anyhow!("invalid time {text:?}: use RFC 3339 (2026-11-24T10:00:00Z), a date, Unix seconds or an age such as 10m")
    };
    let text = text.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Ok(t.with_timezone(&Utc));
    }
    for layout in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%dT%H:%M"] {
        if let Ok(t) = chrono::NaiveDateTime::parse_from_str(text, layout) {
            return Ok(t.and_utc());
        }
    }
    if let Ok(d) = chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        return Ok(d.and_hms_opt(0, 0, 0).ok_or_else(bad)?.and_utc());
    }
    if let Some((secs, frac)) = text.split_once('.').or(Some((text, ""))) {
        let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        if digits(secs) && (frac.is_empty() || (digits(frac) && frac.len() <= 9)) {
            let nanos = format!("{frac:0<9}").parse::<u32>().map_err(|_| bad())?;
            return DateTime::from_timestamp(secs.parse().map_err(|_| bad())?, nanos)
                .ok_or_else(bad);
        }
    }
    // An age: a Go duration (`1h30m`, `90s`), back from now.
    let nanos = kiln_builder::dockerfile::parse_duration(text)
        .filter(|n| *n >= 0)
        .ok_or_else(bad)?;
    Ok(now - chrono::Duration::nanoseconds(nanos))
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
    let tail = match args.tail.as_str() {
        "all" => None,
        n => match n.parse::<i64>() {
            Ok(n) if n < 0 => None,
            Ok(n) => Some(n as usize),
            Err(_) => anyhow::bail!("invalid --tail {n:?}: a number of lines or all"),
        },
    };
    let now = Utc::now();
    let window = Window {
        since: args
            .since
            .as_deref()
            .map(|t| parse_time(t, now))
            .transpose()?,
        until: args
            .until
            .as_deref()
            .map(|t| parse_time(t, now))
            .transpose()?,
    };
    let container = super::run::containers_of(root).find(&args.container)?;
    let path = container.log_path();
    let (mut entries, offset) = read_from(&path, 0)?;
    entries.retain(|e| window.keep(e));
    if let Some(n) = tail {
        entries.drain(..entries.len().saturating_sub(n));
    }
    print(&entries, args.timestamps)?;
    if args.follow {
        follow(&container, offset, args.timestamps, &window)?;
    }
    Ok(ExitStatus::SUCCESS)
}

/// Prints log entries from byte `offset` on until the container stopped
/// (or the window's end passed).
fn follow(container: &Container, mut offset: u64, timestamps: bool, window: &Window) -> Result<()> {
    let path = container.log_path();
    loop {
        let running = container.state()?.effective().status == Status::Running;
        let (mut entries, next) = read_from(&path, offset)?;
        offset = next;
        entries.retain(|e| window.keep(e));
        print(&entries, timestamps)?;
        if !running || window.until.is_some_and(|u| Utc::now() >= u) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_as_docker_reads_them() {
        let now = DateTime::parse_from_rfc3339("2026-11-24T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let at = |t: &str| parse_time(t, now).unwrap().to_rfc3339();
        assert_eq!(at("2026-11-24T10:00:00Z"), "2026-11-24T10:00:00+00:00");
        assert_eq!(at("2026-11-24T10:00:00+02:00"), "2026-11-24T08:00:00+00:00");
        assert_eq!(at("2026-11-24T10:00:00"), "2026-11-24T10:00:00+00:00");
        assert_eq!(at("2026-11-24"), "2026-11-24T00:00:00+00:00");
        assert_eq!(at("1700000000"), "2023-11-14T22:13:20+00:00");
        assert_eq!(at("1700000000.5"), "2023-11-14T22:13:20.500+00:00");
        assert_eq!(at("10m"), "2026-11-24T11:50:00+00:00");
        assert_eq!(at("1h30m"), "2026-11-24T10:30:00+00:00");
        assert_eq!(at("1.5h"), "2026-11-24T10:30:00+00:00");
        for bad in ["", "yesterday", "10x", "1700000000.1234567890", "h"] {
            assert!(parse_time(bad, now).is_err(), "{bad}");
        }
    }
}
