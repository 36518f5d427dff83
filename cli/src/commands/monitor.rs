//! `kiln container-monitor ID` (hidden): the per-container monitor of a
//! detached container, like conmon. It starts the program, reports "ok" or
//! "CODE message" on its stdout to the `kiln` that started it, then keeps
//! the program's output in the log and sends it to attached clients (see
//! `containers::attach`), forwards their input, reaps the program and
//! records the exit.

use std::io::Write;

use anyhow::Result;
use clap::Args;
use kiln_runner::Stdio;

use crate::containers::attach::{self, Hub, Input, Listener};
use crate::containers::logs::LogWriter;
use crate::containers::supervise::{self, exit_code_of};
use crate::containers::Container;
use crate::ExitStatus;

// Arguments of the hidden monitor entry.
#[derive(Debug, Args)]
pub struct MonitorArgs {
    /// Container id.
    pub id: String,
    /// Wait for one attach client before starting the program (`run -it`,
    /// `start -a`): it then sees all of the output.
    #[arg(long)]
    pub attach_first: bool,
}

pub fn run(root: &std::path::Path, args: &MonitorArgs) -> Result<ExitStatus> {
    // Its own session: no terminal's hang-up or Ctrl-C reaches it.
    let _ = nix::unistd::setsid();
    let containers = super::run::containers_of(root);
    let container = containers.find(&args.id)?;
    let log = LogWriter::open(&container.log_path())?;
    let tty = container.record.tty();
    let open_stdin = container.record.open_stdin && !tty;
    let stdio = || -> (Stdio, Stdio, Stdio) {
        if tty {
            (Stdio::Null, Stdio::Null, Stdio::Null)
        } else {
            let stdin = if open_stdin {
                Stdio::Piped
            } else {
                Stdio::Null
            };
            (stdin, Stdio::Piped, Stdio::Piped)
        }
    };
    let listener = match Listener::bind(&container.record.id) {
        Ok(l) => Some(l),
        // Attaching is a bonus for a detached container, not a reason to fail it.
        Err(e) if !args.attach_first => {
            tracing::warn!("{e:#}");
            None
        }
        Err(e) => return Err(e),
    };
    // With --attach-first the first client connects before the program
    // starts, so it sees all of its output.
    let early_hub = if args.attach_first {
        println!("listening");
        let _ = std::io::stdout().flush();
        let hub = Hub::new();
        if let Some(l) = &listener {
            l.admit_first(&hub)?;
        }
        Some(hub)
    } else {
        None
    };
    let (stdin, out, err) = stdio();
    let mut started = match supervise::start(&container, [stdin, out, err], None, false) {
        Ok(s) => s,
        Err(e) => {
            let message = format!("{e:#}").replace('\n', " ");
            println!("{} {message}", exit_code_of(&e));
            // `run -d --rm` removes the container itself after reading this.
            return Ok(ExitStatus(exit_code_of(&e)));
        }
    };
    let hub = early_hub.unwrap_or_else(Hub::new);
    let mut listener = listener;
    let mut first = true;
    let me = std::process::id() as i32;
    let my_start = crate::containers::process_start_time(me).unwrap_or(0);
    let mut restarts = 0u32;
    // docker's backoff: 100 ms, doubled after every restart, at most a
    // minute, back to 100 ms after a run of 10 s or more.
    let mut delay = std::time::Duration::from_millis(100);
    let code = loop {
        let began = std::time::Instant::now();
        hub.set_input(input_of(&container, &mut started)?);
        if let Some(l) = listener.take() {
            l.serve(hub.clone());
        }
        if first {
            println!("ok");
            let _ = std::io::stdout().flush();
            first = false;
        }
        let code = pump_and_finish(&container, &log, &hub, started)?;
        // Attached clients end with this exit, as docker's do; the next
        // run takes new ones.
        hub.finish(code as i32);
        let policy = &container.record.restart;
        if !policy.wants_restart(code, restarts) || container.stop_requested(me, my_start) {
            break code;
        }
        if began.elapsed() >= std::time::Duration::from_secs(10) {
            delay = std::time::Duration::from_millis(100);
        }
        // `ps` says "Restarting" until the next start writes its state.
        {
            let _lock = containers.lock()?;
            if let Ok(mut state) = container.state() {
                state.restarting = true;
                container.set_state(&state)?;
            }
        }
        std::thread::sleep(delay);
        delay = (delay * 2).min(std::time::Duration::from_secs(60));
        let lock = containers.lock()?;
        if !container.dir.exists() || container.stop_requested(me, my_start) {
            break code;
        }
        let (stdin, out, err) = stdio();
        started = match supervise::start(&container, [stdin, out, err], None, false) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!("restarting container {}: {e:#}", container.record.name);
                break code;
            }
        };
        restarts += 1;
        let mut state = container.state()?;
        state.restart_count = restarts;
        container.set_state(&state)?;
        drop(lock);
    };
    hub.finish(code as i32);
    // Stopped (or failed to start again) during a backoff: not restarting.
    if let Ok(_lock) = containers.lock() {
        if let Ok(mut state) = container.state() {
            if state.restarting && container.dir.exists() {
                state.restarting = false;
                let _ = container.set_state(&state);
            }
        }
    }
    if container.record.auto_remove {
        let _lock = containers.lock()?;
        containers.remove_with_volumes(&container)?;
    }
    Ok(ExitStatus(code))
}

/// The input attach clients write to: the pty or the stdin pipe.
fn input_of(container: &Container, started: &mut supervise::Started) -> Result<Input> {
    Ok(if let Some(master) = &started.child.pty {
        Input::Terminal(master.try_clone()?)
    } else if let Some(pipe) = started.child.stdin.take() {
        Input::Pipe {
            pipe: std::sync::Mutex::new(Some(pipe)),
            close_on_end: container.record.stdin_once,
        }
    } else {
        Input::None
    })
}

/// Copies the program's output to the log and attach clients until it
/// ends, then records its exit; returns the exit code.
fn pump_and_finish(
    container: &Container,
    log: &LogWriter,
    hub: &std::sync::Arc<Hub>,
    mut started: supervise::Started,
) -> Result<u8> {
    let mut pumps = Vec::new();
    if let Some(master) = started.child.pty.take() {
        let log = log.clone();
        let echo = hub.writer(attach::STDOUT);
        pumps.push(std::thread::spawn(move || {
            log.pump("stdout", master, Some(Box::new(echo)))
        }));
    }
    for (stream, kind, pipe) in [
        ("stdout", attach::STDOUT, started.child.stdout.take()),
        ("stderr", attach::STDERR, started.child.stderr.take()),
    ] {
        if let Some(pipe) = pipe {
            let log = log.clone();
            let echo = hub.writer(kind);
            pumps.push(std::thread::spawn(move || {
                log.pump(stream, pipe, Some(Box::new(echo)))
            }));
        }
    }
    for pump in pumps {
        let _ = pump.join();
    }
    supervise::finish(container, started)
}
