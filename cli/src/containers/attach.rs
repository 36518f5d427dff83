//! Attaching to a container through its monitor: the monitor listens on an
//! abstract unix socket (`kiln/attach/<id>`, only the monitor's own uid may
//! connect) and copies the container's output to every attached client,
//! and a client's input to the container's terminal or stdin pipe.
//!
//! Frames both ways are `[kind: u8][length: u32 big-endian][payload]`.
//! Client to monitor: [`HELLO`] (payload: one flag byte, bit 0 = send
//! stdin), [`STDIN`] data, [`STDIN_CLOSE`], [`RESIZE`] (rows, cols as
//! u16). Monitor to client: [`STDOUT`], [`STDERR`] data, [`EXIT`] (the
//! exit code as i32) once the container has ended.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::AsFd;
use std::os::unix::net::{SocketAddr, UnixListener, UnixStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use nix::sys::socket::{getsockopt, sockopt};

pub const HELLO: u8 = 0;
pub const STDIN: u8 = 1;
pub const STDIN_CLOSE: u8 = 2;
pub const RESIZE: u8 = 3;
pub const STDOUT: u8 = 1;
pub const STDERR: u8 = 2;
pub const EXIT: u8 = 3;

/// Largest frame accepted (a read of the pty is at most 16 KiB).
const MAX_FRAME: u32 = 1 << 20;

/// The abstract socket address of container `id`'s monitor.
fn address(id: &str) -> io::Result<SocketAddr> {
    use std::os::linux::net::SocketAddrExt;
    SocketAddr::from_abstract_name(format!("kiln/attach/{id}").as_bytes())
}

pub fn write_frame(mut to: impl Write, kind: u8, payload: &[u8]) -> io::Result<()> {
    let mut frame = Vec::with_capacity(5 + payload.len());
    frame.push(kind);
    frame.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    frame.extend_from_slice(payload);
    to.write_all(&frame)
}

/// Reads one frame; `None` at end of stream.
pub fn read_frame(mut from: impl Read) -> io::Result<Option<(u8, Vec<u8>)>> {
    let mut head = [0u8; 5];
    match from.read_exact(&mut head) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]);
    if len > MAX_FRAME {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "attach frame too large",
        ));
    }
    let mut payload = vec![0u8; len as usize];
    from.read_exact(&mut payload)?;
    Ok(Some((head[0], payload)))
}

/// Where client input goes in the monitor.
#[derive(Debug)]
pub enum Input {
    /// The pty master (a terminal container): input and window size.
    Terminal(File),
    /// The stdin pipe of a container made with `-i`; closed at a client's
    /// end of input when `close_on_end` (docker's StdinOnce).
    Pipe {
        pipe: Mutex<Option<File>>,
        close_on_end: bool,
    },
    /// The container takes no input.
    None,
}

/// The monitor's side: the attached clients.
#[derive(Debug)]
pub struct Hub {
    clients: Mutex<Vec<UnixStream>>,
    /// The running program's input, replaced at each (re)start; input
    /// waits for the first.
    input: Mutex<Option<Arc<Input>>>,
    input_set: std::sync::Condvar,
}

impl Hub {
    /// A hub whose input is set later with [`Hub::set_input`].
    pub fn new() -> Arc<Hub> {
        Arc::new(Hub {
            clients: Mutex::new(Vec::new()),
            input: Mutex::new(None),
            input_set: std::sync::Condvar::new(),
        })
    }

    /// Where input goes from now on: the program just (re)started.
    pub fn set_input(&self, input: Input) {
        let mut current = self.input.lock().unwrap_or_else(|e| e.into_inner());
        *current = Some(Arc::new(input));
        self.input_set.notify_all();
    }

    /// The current program's input, once there is one.
    fn input(&self) -> Arc<Input> {
        let mut current = self.input.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if let Some(input) = &*current {
                return input.clone();
            }
            current = self
                .input_set
                .wait(current)
                .unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Sends a frame to every client; a client that cannot take it is dropped.
    pub fn broadcast(&self, kind: u8, payload: &[u8]) {
        if let Ok(mut clients) = self.clients.lock() {
            clients.retain(|c| write_frame(c, kind, payload).is_ok());
        }
    }

    /// Sends the exit code and disconnects everyone (at every exit, also
    /// one the monitor restarts after, as docker ends attach sessions).
    pub fn finish(&self, code: i32) {
        self.broadcast(EXIT, &code.to_be_bytes());
        if let Ok(mut clients) = self.clients.lock() {
            for c in clients.drain(..) {
                let _ = c.shutdown(std::net::Shutdown::Both);
            }
        }
    }

    /// A writer that broadcasts as `kind` (for the log pumps).
    pub fn writer(self: &Arc<Hub>, kind: u8) -> HubWriter {
        HubWriter {
            hub: self.clone(),
            kind,
        }
    }

    /// Takes a new connection: checks it comes from our uid, reads its
    /// hello, and starts forwarding its input when it asked to send some.
    fn admit(self: &Arc<Hub>, stream: UnixStream) -> Result<()> {
        let cred = getsockopt(&stream.as_fd(), sockopt::PeerCredentials)
            .context("reading the peer's credentials")?;
        if cred.uid() != nix::unistd::geteuid().as_raw() {
            bail!("refusing an attach from uid {}", cred.uid());
        }
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        let Some((HELLO, flags)) = read_frame(&stream)? else {
            bail!("attach client sent no hello");
        };
        stream.set_read_timeout(None)?;
        // A client that stops reading must not stall the container's output for long.
        stream.set_write_timeout(Some(Duration::from_secs(30)))?;
        let wants_stdin = flags.first().is_some_and(|f| f & 1 != 0);
        self.clients
            .lock()
            .map_err(|_| anyhow::anyhow!("attach state poisoned"))?
            .push(stream.try_clone()?);
        if wants_stdin {
            let hub = self.clone();
            std::thread::spawn(move || hub.forward_input(stream));
        }
        Ok(())
    }

    fn forward_input(&self, stream: UnixStream) {
        while let Ok(Some((kind, payload))) = read_frame(&stream) {
            let input = self.input();
            match (kind, &*input) {
                (STDIN, Input::Terminal(master)) => {
                    let _ = (&*master).write_all(&payload);
                }
                (STDIN, Input::Pipe { pipe, .. }) => {
                    if let Ok(mut pipe) = pipe.lock() {
                        if let Some(p) = pipe.as_mut() {
                            if p.write_all(&payload).is_err() {
                                *pipe = None;
                            }
                        }
                    }
                }
                (STDIN_CLOSE, Input::Pipe { pipe, close_on_end }) => {
                    if *close_on_end {
                        if let Ok(mut pipe) = pipe.lock() {
                            *pipe = None;
                        }
                    }
                    return;
                }
                (RESIZE, Input::Terminal(master)) if payload.len() == 4 => {
                    let size = kiln_runner::pty::WindowSize {
                        rows: u16::from_be_bytes([payload[0], payload[1]]),
                        cols: u16::from_be_bytes([payload[2], payload[3]]),
                    };
                    let _ = kiln_runner::pty::set_window_size(master.as_fd(), size);
                }
                _ => {}
            }
        }
    }
}

/// Broadcasts everything written to it; never fails.
pub struct HubWriter {
    hub: Arc<Hub>,
    kind: u8,
}

impl Write for HubWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.hub.broadcast(self.kind, buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The monitor's listening socket.
#[derive(Debug)]
pub struct Listener {
    listener: UnixListener,
}

impl Listener {
    /// Listens for container `id`'s clients.
    pub fn bind(id: &str) -> Result<Listener> {
        let listener =
            UnixListener::bind_addr(&address(id)?).context("listening for attach clients")?;
        Ok(Listener { listener })
    }

    /// Waits (up to 30 s) for the first client and admits it.
    pub fn admit_first(&self, hub: &Arc<Hub>) -> Result<()> {
        self.listener.set_nonblocking(true)?;
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            match self.listener.accept() {
                Ok((stream, _)) => {
                    stream.set_nonblocking(false)?;
                    return hub.admit(stream);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if std::time::Instant::now() >= deadline {
                        bail!("no attach client came");
                    }
                    std::thread::sleep(Duration::from_millis(2));
                }
                Err(e) => return Err(e).context("accepting an attach client"),
            }
        }
    }

    /// Admits clients on a thread for as long as the process lives.
    pub fn serve(self, hub: Arc<Hub>) {
        std::thread::spawn(move || {
            let _ = self.listener.set_nonblocking(false);
            for stream in self.listener.incoming() {
                match stream {
                    Ok(stream) => {
                        let hub = hub.clone();
                        // Admission reads a frame: not on the accept loop.
                        std::thread::spawn(move || {
                            if let Err(e) = hub.admit(stream) {
                                tracing::warn!("attach: {e:#}");
                            }
                        });
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(50)),
                }
            }
        });
    }
}

/// Connects to container `id`'s monitor and says hello.
pub fn connect(id: &str, stdin: bool) -> Result<UnixStream> {
    let stream =
        UnixStream::connect_addr(&address(id)?).context("connecting to the container monitor")?;
    write_frame(&stream, HELLO, &[u8::from(stdin)])?;
    Ok(stream)
}

/// Parses docker's `--detach-keys`: comma-separated `ctrl-X` (X in a-z,
/// @, [, \, ], ^, _) or single characters.
pub fn parse_detach_keys(text: &str) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    if text.is_empty() {
        return Ok(out);
    }
    for key in text.split(',') {
        let lower = key.to_ascii_lowercase();
        let byte = if let Some(rest) = lower.strip_prefix("ctrl-") {
            match rest.as_bytes() {
                [c @ b'a'..=b'z'] => c - b'a' + 1,
                [b'@'] => 0,
                [b'['] => 27,
                [b'\\'] => 28,
                [b']'] => 29,
                [b'^'] => 30,
                [b'_'] => 31,
                _ => bail!("invalid detach keys {text:?}: unknown key {key:?}"),
            }
        } else if key.len() == 1 {
            key.as_bytes()[0]
        } else {
            bail!("invalid detach keys {text:?}: unknown key {key:?}");
        };
        out.push(byte);
    }
    Ok(out)
}

/// Finds the detach sequence in the input stream, holding back a partial
/// match until it is complete or broken (as docker does).
#[derive(Debug)]
pub struct Escape {
    keys: Vec<u8>,
    matched: usize,
}

impl Escape {
    pub fn new(keys: Vec<u8>) -> Escape {
        Escape { keys, matched: 0 }
    }

    /// Appends to `out` the bytes of `input` to forward; true when the
    /// sequence is complete (the rest of `input` is dropped).
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) -> bool {
        for &b in input {
            if self.keys.is_empty() {
                out.push(b);
                continue;
            }
            if b == self.keys[self.matched] {
                self.matched += 1;
                if self.matched == self.keys.len() {
                    self.matched = 0;
                    return true;
                }
            } else {
                out.extend_from_slice(&self.keys[..self.matched]);
                self.matched = 0;
                if b == self.keys[0] {
                    self.matched = 1;
                } else {
                    out.push(b);
                }
            }
        }
        false
    }
}

/// How an attached session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The container exited with this code.
    Exited(i32),
    /// The user typed the detach keys; the container runs on.
    Detached,
    /// The monitor went away without an exit code.
    Lost,
}

/// What the client forwards.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Forward this process's stdin.
    pub stdin: bool,
    /// The container has a terminal: raw mode here, window size forwarded.
    pub tty: bool,
    /// The detach sequence (empty: none).
    pub detach_keys: Vec<u8>,
    /// Forward signals to this host pid (non-tty `--sig-proxy`).
    pub signal_pid: Option<i32>,
}

/// Runs an attached session on a connected `stream` until the container
/// exits, the user detaches, or the monitor goes away.
pub fn session(stream: UnixStream, options: &ClientOptions) -> Result<Outcome> {
    let host_stdin = io::stdin();
    let stdin_is_tty = nix::unistd::isatty(host_stdin.as_fd()).unwrap_or(false);
    let raw = if options.tty && options.stdin && stdin_is_tty {
        kiln_runner::pty::RawMode::enable(host_stdin.as_fd()).ok()
    } else {
        None
    };
    let forwarder = match options.signal_pid {
        Some(pid) if !options.tty => Some(kiln_runner::forward_signals(pid)?),
        _ => None,
    };
    let writer = Arc::new(Mutex::new(stream.try_clone()?));
    if options.tty {
        let terminal = [io::stdout().as_fd(), host_stdin.as_fd()]
            .into_iter()
            .find(|fd| nix::unistd::isatty(fd).unwrap_or(false))
            .map(|fd| fd.try_clone_to_owned())
            .transpose()?;
        if let Some(terminal) = terminal {
            let send_size = {
                let writer = writer.clone();
                move |terminal: &std::os::fd::OwnedFd| {
                    if let Ok(size) = kiln_runner::pty::window_size(terminal.as_fd()) {
                        let mut payload = size.rows.to_be_bytes().to_vec();
                        payload.extend_from_slice(&size.cols.to_be_bytes());
                        if let Ok(w) = writer.lock() {
                            let _ = write_frame(&*w, RESIZE, &payload);
                        }
                    }
                }
            };
            send_size(&terminal);
            let changes = kiln_runner::pty::WindowChanges::watch()?;
            std::thread::spawn(move || {
                while changes.wait() {
                    send_size(&terminal);
                }
            });
        }
    }
    let detached = Arc::new(AtomicBool::new(false));
    if options.stdin {
        let writer = writer.clone();
        let detached = detached.clone();
        let mut escape = Escape::new(options.detach_keys.clone());
        let closer = stream.try_clone()?;
        std::thread::spawn(move || {
            let mut input = io::stdin();
            let mut buf = [0u8; 16 * 1024];
            let mut out = Vec::new();
            loop {
                let n = match input.read(&mut buf) {
                    Ok(0) | Err(_) => {
                        if let Ok(w) = writer.lock() {
                            let _ = write_frame(&*w, STDIN_CLOSE, &[]);
                        }
                        return;
                    }
                    Ok(n) => n,
                };
                out.clear();
                let done = escape.feed(&buf[..n], &mut out);
                if !out.is_empty() {
                    if let Ok(w) = writer.lock() {
                        if write_frame(&*w, STDIN, &out).is_err() {
                            return;
                        }
                    }
                }
                if done {
                    detached.store(true, Ordering::SeqCst);
                    let _ = closer.shutdown(std::net::Shutdown::Both);
                    return;
                }
            }
        });
    }
    let mut stdout = io::stdout();
    let mut stderr = io::stderr();
    let outcome = loop {
        let frame = match read_frame(&stream) {
            Ok(f) => f,
            Err(_) if detached.load(Ordering::SeqCst) => break Outcome::Detached,
            Err(e) => return Err(e).context("reading from the container monitor"),
        };
        match frame {
            Some((STDOUT, data)) => {
                stdout.write_all(&data)?;
                stdout.flush()?;
            }
            Some((STDERR, data)) => {
                stderr.write_all(&data)?;
                stderr.flush()?;
            }
            Some((EXIT, data)) if data.len() == 4 => {
                break Outcome::Exited(i32::from_be_bytes([data[0], data[1], data[2], data[3]]))
            }
            Some(_) => {}
            None if detached.load(Ordering::SeqCst) => break Outcome::Detached,
            None => break Outcome::Lost,
        }
    };
    drop(forwarder);
    drop(raw);
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detach_keys_parse_as_docker() {
        assert_eq!(parse_detach_keys("ctrl-p,ctrl-q").unwrap(), [16, 17]);
        assert_eq!(parse_detach_keys("a,ctrl-@,ctrl-_").unwrap(), [b'a', 0, 31]);
        assert!(parse_detach_keys("ctrl-1").is_err());
        assert!(parse_detach_keys("ab").is_err());
    }

    #[test]
    fn escape_holds_back_a_partial_sequence() {
        let mut e = Escape::new(vec![16, 17]);
        let mut out = Vec::new();
        assert!(!e.feed(b"ab\x10", &mut out));
        assert_eq!(out, b"ab");
        out.clear();
        assert!(!e.feed(b"c", &mut out));
        assert_eq!(out, b"\x10c");
        out.clear();
        assert!(!e.feed(b"\x10\x10", &mut out));
        assert_eq!(out, b"\x10");
        out.clear();
        assert!(e.feed(b"\x11rest", &mut out));
        assert!(out.is_empty());
    }
}
