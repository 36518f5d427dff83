//! `kiln stop` and `kiln restart`: the stop signal (the image's STOPSIGNAL,
//! else SIGTERM), then SIGKILL after a grace period.

use std::str::FromStr;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;
use kiln_runner::Signal;

use crate::containers::{Container, Status};
use crate::ExitStatus;

// Arguments of `kiln stop` and `kiln restart`.
#[derive(Debug, Args)]
pub struct StopArgs {
    /// Seconds to wait after the stop signal before SIGKILL (default: the
    /// container's --stop-timeout, else 10; -1 waits forever).
    #[arg(short, long, allow_negative_numbers = true)]
    pub time: Option<i64>,
    /// Containers: names or ids.
    #[arg(required = true)]
    pub containers: Vec<String>,
}

/// Parses a signal as docker does: `KILL`, `SIGKILL` or `9`.
pub fn parse_signal(text: &str) -> Result<Signal> {
    if let Ok(n) = text.parse::<i32>() {
        return Signal::try_from(n).with_context(|| format!("invalid signal {text}"));
    }
    let upper = text.to_ascii_uppercase();
    let name = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    Signal::from_str(&name).with_context(|| format!("invalid signal {text}"))
}

/// Sends `signal` to the container's program; false when it is not running.
pub fn signal(container: &Container, signal: Signal) -> Result<bool> {
    let mut state = container.state()?;
    if !state.is_alive() {
        return Ok(false);
    }
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(state.pid), signal)
        .with_context(|| format!("signalling container {}", container.record.name))?;
    if state.paused {
        // As docker: the signal is delivered once the processes thaw.
        super::pause::thaw(container, &mut state)?;
    }
    Ok(true)
}

/// The grace period of `stop -t`, else the container's `--stop-timeout`, else 10 s.
pub fn grace(container: &Container, time: Option<i64>) -> Option<Duration> {
    let secs = match time {
        Some(t) if t < 0 => return None,
        Some(t) => t as u64,
        None => match container.record.stop_timeout {
            Some(u64::MAX) => return None,
            Some(t) => t,
            None => 10,
        },
    };
    Some(Duration::from_secs(secs))
}

/// Stops one container and waits until it exited (`grace` `None`: no SIGKILL).
pub fn stop(container: &Container, grace: Option<Duration>) -> Result<()> {
    let first = match &container.record.stop_signal {
        Some(s) => parse_signal(s)?,
        None => Signal::SIGTERM,
    };
    {
        // Under the lock: a --restart monitor is not between its check and a start.
        let dir = container.dir.parent().context("container directory")?;
        let _lock = crate::containers::Containers::new(dir.to_path_buf()).lock()?;
        container.request_stop()?;
    }
    if !signal(container, first)? {
        container.wait_stopped(Some(Duration::from_secs(5)))?;
        return Ok(());
    }
    if container.wait_stopped(grace)?.is_none() {
        signal(container, Signal::SIGKILL)?;
        container
            .wait_stopped(None)?
            .context("waiting for the container to exit")?;
    }
    Ok(())
}

pub fn run(root: &std::path::Path, args: &StopArgs) -> Result<ExitStatus> {
    let containers = super::run::containers_of(root);
    for given in &args.containers {
        let container = containers.find(given)?;
        stop(&container, grace(&container, args.time))?;
        println!("{given}");
    }
    Ok(ExitStatus::SUCCESS)
}

pub fn restart(root: &std::path::Path, args: &StopArgs) -> Result<ExitStatus> {
    let containers = super::run::containers_of(root);
    for given in &args.containers {
        let container = containers.find(given)?;
        stop(&container, grace(&container, args.time))?;
        if container.state()?.effective().status == Status::Running {
            anyhow::bail!("container {given} did not stop");
        }
        if let Err(err) = super::run::start_detached(root, &container) {
            eprintln!("kiln: restarting container {given}: {err:#}");
            return Ok(ExitStatus(super::run::start_exit_code(&err)));
        }
        println!("{given}");
    }
    Ok(ExitStatus::SUCCESS)
}
