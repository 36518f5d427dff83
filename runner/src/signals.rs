//! Forwarding the caller's signals to a container running in the
//! foreground, as `runc run` does: Ctrl-C or `kill` on the kiln process
//! reaches the program, and kiln stays alive to reap it and clean up.

use std::io;
use std::thread::JoinHandle;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use signal_hook::iterator::{Handle, Signals};

/// Signals forwarded by [`forward_signals`].
const FORWARDED: &[i32] = &[
    libc::SIGINT,
    libc::SIGTERM,
    libc::SIGHUP,
    libc::SIGQUIT,
    libc::SIGUSR1,
    libc::SIGUSR2,
];

/// Forwards SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1 and SIGUSR2 sent to
/// this process to `pid` (from a helper thread) until dropped; meanwhile
/// those signals no longer end this process.
#[derive(Debug)]
pub struct SignalForwarder {
    handle: Handle,
    thread: Option<JoinHandle<()>>,
}

/// Starts forwarding to host pid `pid`; see [`SignalForwarder`].
pub fn forward_signals(pid: i32) -> io::Result<SignalForwarder> {
    let mut signals = Signals::new(FORWARDED)?;
    let handle = signals.handle();
    let thread = std::thread::Builder::new()
        .name("kiln-signals".into())
        .spawn(move || {
            for sig in signals.forever() {
                if let Ok(sig) = Signal::try_from(sig) {
                    let _ = kill(Pid::from_raw(pid), sig);
                }
            }
        })?;
    Ok(SignalForwarder {
        handle,
        thread: Some(thread),
    })
}

impl SignalForwarder {
    /// Stops forwarding without waiting for the helper thread to end (the
    /// drop waits): call it once the program is reaped, so the thread ends
    /// while the caller cleans up.
    pub fn stop(&self) {
        self.handle.close();
    }
}

impl Drop for SignalForwarder {
    fn drop(&mut self) {
        self.handle.close();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
