//! `kiln container-monitor ID` (hidden): the per-container monitor of a
//! detached container, like conmon. It starts the program, reports "ok" or
//! "CODE message" on its stdout to the `kiln` that started it, then keeps
//! the program's output in the log, reaps it and records the exit.

use std::io::Write;

use anyhow::Result;
use clap::Args;
use kiln_runner::Stdio;

use crate::containers::logs::LogWriter;
use crate::containers::supervise::{self, exit_code_of};
use crate::ExitStatus;

/// Arguments of the hidden monitor entry.
#[derive(Debug, Args)]
pub struct MonitorArgs {
    /// Container id.
    pub id: String,
}

pub fn run(root: &std::path::Path, args: &MonitorArgs) -> Result<ExitStatus> {
    // Its own session: no terminal's hang-up or Ctrl-C reaches it.
    let _ = nix::unistd::setsid();
    let containers = super::run::containers_of(root);
    let container = containers.find(&args.id)?;
    let log = LogWriter::open(&container.log_path())?;
    let tty = container.record.tty();
    let (out, err) = if tty {
        (Stdio::Null, Stdio::Null)
    } else {
        (Stdio::Piped, Stdio::Piped)
    };
    let mut started = match supervise::start(&container, Stdio::Null, out, err) {
        Ok(s) => s,
        Err(e) => {
            let message = format!("{e:#}").replace('\n', " ");
            println!("{} {message}", exit_code_of(&e));
            // `run -d --rm` removes the container itself after reading this.
            return Ok(ExitStatus(exit_code_of(&e)));
        }
    };
    println!("ok");
    let _ = std::io::stdout().flush();
    let mut pumps = Vec::new();
    if let Some(master) = started.child.pty.take() {
        let log = log.clone();
        pumps.push(std::thread::spawn(move || log.pump("stdout", master, None)));
    }
    for (stream, pipe) in [
        ("stdout", started.child.stdout.take()),
        ("stderr", started.child.stderr.take()),
    ] {
        if let Some(pipe) = pipe {
            let log = log.clone();
            pumps.push(std::thread::spawn(move || log.pump(stream, pipe, None)));
        }
    }
    for pump in pumps {
        let _ = pump.join();
    }
    let code = supervise::finish(&container, started)?;
    if container.record.auto_remove {
        let _lock = containers.lock()?;
        containers.remove(&container)?;
    }
    Ok(ExitStatus(code))
}
