//! The caller's side of a container terminal: raw mode on the host
//! terminal (restored on drop), window size copied at start and on every
//! SIGWINCH, and a loop that moves bytes between the host terminal and the
//! pty master. See termios(3), ioctl_tty(2).

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::termios::{cfmakeraw, tcgetattr, tcsetattr, SetArg, Termios};

pub use crate::sys::WindowSize;

/// Raw mode on a terminal for as long as this guard lives.
#[derive(Debug)]
pub struct RawMode {
    fd: OwnedFd,
    saved: Termios,
}

impl RawMode {
    /// Puts terminal `fd` into raw mode (no echo, no line editing, no
    /// signals from keys: Ctrl-C reaches the container as a byte).
    /// Errors when `fd` is not a terminal.
    pub fn enable(fd: BorrowedFd<'_>) -> io::Result<RawMode> {
        let saved = tcgetattr(fd)?;
        let mut raw = saved.clone();
        cfmakeraw(&mut raw);
        tcsetattr(fd, SetArg::TCSANOW, &raw)?;
        Ok(RawMode {
            fd: fd.try_clone_to_owned()?,
            saved,
        })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = tcsetattr(&self.fd, SetArg::TCSANOW, &self.saved);
    }
}

/// Reads the window size of terminal `fd`.
pub fn window_size(fd: BorrowedFd<'_>) -> io::Result<WindowSize> {
    Ok(crate::sys::window_size(fd)?)
}

/// Sets the window size of terminal `fd` (the container gets SIGWINCH).
pub fn set_window_size(fd: BorrowedFd<'_>, size: WindowSize) -> io::Result<()> {
    Ok(crate::sys::set_window_size(fd, size)?)
}

/// Copies the window size of `from` (the host terminal) to `to` (the pty).
pub fn copy_window_size(from: BorrowedFd<'_>, to: BorrowedFd<'_>) -> io::Result<()> {
    set_window_size(to, window_size(from)?)
}

/// Moves bytes between the host and the container's pty until the
/// container side closes: `input` -> `master`, `master` -> `output`. With
/// `host_terminal`, its window size is copied to the pty now and on every
/// SIGWINCH. End of `input` stops forwarding input only. Returns when the
/// pty reports end-of-file or EIO (every slave descriptor closed).
pub fn proxy(
    master: &File,
    input: BorrowedFd<'_>,
    output: BorrowedFd<'_>,
    host_terminal: Option<BorrowedFd<'_>>,
) -> io::Result<()> {
    let (winch_read, winch_write) = std::os::unix::net::UnixStream::pair()?;
    winch_read.set_nonblocking(true)?;
    let winch_id = match host_terminal {
        Some(term) => {
            let _ = copy_window_size(term, master.as_fd());
            Some(signal_hook::low_level::pipe::register(
                libc::SIGWINCH,
                winch_write,
            )?)
        }
        None => None,
    };
    let result = proxy_loop(master, input, output, host_terminal, &winch_read);
    if let Some(id) = winch_id {
        signal_hook::low_level::unregister(id);
    }
    result
}

fn proxy_loop(
    master: &File,
    input: BorrowedFd<'_>,
    output: BorrowedFd<'_>,
    host_terminal: Option<BorrowedFd<'_>>,
    winch: &std::os::unix::net::UnixStream,
) -> io::Result<()> {
    let mut buf = [0u8; 16 * 1024];
    let mut input_open = true;
    let mut out = File::from(output.try_clone_to_owned()?);
    let mut inp = File::from(input.try_clone_to_owned()?);
    let mut master_w: &File = master;
    loop {
        let mut fds = vec![
            PollFd::new(master.as_fd(), PollFlags::POLLIN),
            PollFd::new(winch.as_fd(), PollFlags::POLLIN),
        ];
        if input_open {
            fds.push(PollFd::new(input, PollFlags::POLLIN));
        }
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
        let ready = |i: usize| {
            fds.get(i)
                .and_then(|f| f.revents())
                .unwrap_or(PollFlags::empty())
        };
        let (m, w, i) = (ready(0), ready(1), ready(2));
        if w.contains(PollFlags::POLLIN) {
            let mut drain = [0u8; 64];
            let _ = (&*winch).read(&mut drain);
            if let Some(term) = host_terminal {
                let _ = copy_window_size(term, master.as_fd());
            }
        }
        if input_open && !i.is_empty() {
            match inp.read(&mut buf) {
                Ok(0) => input_open = false,
                Ok(n) => master_w.write_all(&buf[..n])?,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => input_open = false,
            }
        }
        if !m.is_empty() {
            match (&*master).read(&mut buf) {
                Ok(0) => return Ok(()),
                Ok(n) => {
                    out.write_all(&buf[..n])?;
                    out.flush()?;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // EIO: the last slave descriptor closed; the container is gone.
                Err(e) if e.raw_os_error() == Some(libc::EIO) => return Ok(()),
                Err(e) => return Err(e),
            }
        }
    }
}

/// Opens a new pty pair on the host (openpty(3)): (master, slave), both
/// close-on-exec. For callers and tests that drive a terminal themselves.
pub fn open_pair() -> io::Result<(File, File)> {
    let pair = nix::pty::openpty(None, None)?;
    for fd in [&pair.master, &pair.slave] {
        nix::fcntl::fcntl(
            fd,
            nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
        )?;
    }
    Ok((File::from(pair.master), File::from(pair.slave)))
}

/// Notice of SIGWINCH (the host terminal's size changed) for as long as
/// it lives: [`WindowChanges::wait`] blocks until the next one.
#[derive(Debug)]
pub struct WindowChanges {
    read: std::os::unix::net::UnixStream,
    id: signal_hook::SigId,
}

impl WindowChanges {
    /// Starts watching for SIGWINCH.
    pub fn watch() -> io::Result<WindowChanges> {
        let (read, write) = std::os::unix::net::UnixStream::pair()?;
        let id = signal_hook::low_level::pipe::register(libc::SIGWINCH, write)?;
        Ok(WindowChanges { read, id })
    }

    /// Blocks until the next SIGWINCH; false when watching failed.
    pub fn wait(&self) -> bool {
        let mut byte = [0u8; 64];
        loop {
            match (&self.read).read(&mut byte) {
                Ok(0) => return false,
                Ok(_) => return true,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return false,
            }
        }
    }
}

impl Drop for WindowChanges {
    fn drop(&mut self) {
        signal_hook::low_level::unregister(self.id);
    }
}
