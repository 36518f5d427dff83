//! kiln's tiny init (`--init`): PID 1 that runs the program as its child,
//! forwards every signal it gets to it, reaps zombies (orphans are
//! re-parented to PID 1) and exits with the program's status, 128+N when the
//! program was killed by signal N (as tini and docker-init do).

use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd};

use nix::errno::Errno;
use nix::sys::signal::{kill, sigprocmask, SigSet, SigmaskHow, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use super::{process, Never};
use crate::protocol::{Failure, ProcessConfig};
use crate::sys;

/// Forks the program under this PID 1 and supervises it.
pub(crate) fn run(
    sock: &File,
    config: &ProcessConfig,
    terminal: Option<OwnedFd>,
    bpf: &[u8],
) -> Result<Never, Failure> {
    // Block every signal before the fork, so none is lost before the loop
    // waits for them; the child unblocks all before exec.
    let all = SigSet::all();
    sigprocmask(SigmaskHow::SIG_BLOCK, Some(&all), None)
        .map_err(|e| Failure::sys("block signals", e))?;
    process::prepare(config, bpf)?;
    let child = match sys::fork_single_threaded(false).map_err(|e| Failure::sys("fork", e))? {
        None => {
            if let Some(slave) = terminal {
                process::attach_terminal(slave)?;
            }
            return process::exec(sock, config, bpf);
        }
        Some(pid) => pid,
    };
    drop(terminal);
    // The child reports its own exec failure; the caller sees end-of-file
    // once the child's copy closes on exec.
    sys::close_protocol_socket(sock.as_raw_fd());
    supervise(child, &all)
}

fn supervise(child: Pid, signals: &SigSet) -> ! {
    loop {
        let sig = match signals.wait() {
            Ok(sig) => sig,
            Err(_) => continue,
        };
        if sig != Signal::SIGCHLD {
            let _ = kill(child, sig);
            continue;
        }
        loop {
            match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) if pid == child => std::process::exit(code),
                Ok(WaitStatus::Signaled(pid, sig, _)) if pid == child => {
                    std::process::exit(128 + sig as i32)
                }
                Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => break,
                Ok(_) | Err(_) => continue,
            }
        }
    }
}
