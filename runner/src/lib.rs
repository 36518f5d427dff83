//! kiln-runner: runs one OCI runtime spec on a root filesystem path.
//!
//! It knows specs and paths, not images: the caller prepares the rootfs (an
//! overlay mount, a plain directory) and the spec ([`default_spec`] gives
//! docker's defaults to adjust), and gets a [`Child`] back: pid, wait, kill,
//! stdio pipes or a pty master, and what [`exec`] needs to join later.
//!
//! Set-up runs in a re-execution of the caller's own binary (as `runc init`
//! does), cloned straight into the new namespaces, so nothing but
//! async-signal-safe calls run between clone and exec in the multi-threaded
//! caller. That binary must call [`init_if_requested`] first thing in `main`.
//!
//! ```no_run
//! use kiln_runner::{default_spec, Container, Stdio};
//!
//! let mut spec = default_spec();
//! spec.process_mut().as_mut().unwrap().set_args(Some(vec!["echo".into(), "hi".into()]));
//! let mut child = Container::builder(spec, "/var/lib/kiln/containers/c1/rootfs")
//!     .cgroup("kiln/c1")
//!     .stdout(Stdio::Piped)
//!     .spawn()?;
//! let status = child.wait()?;
//! println!("exit code {}", status.code());
//! # Ok::<(), kiln_runner::Error>(())
//! ```
//!
//! With a terminal (`docker run -it`): the pty is opened inside the
//! container's devpts, its master handed back in [`Child::pty`].
//!
//! ```no_run
//! use std::os::fd::AsFd;
//! use kiln_runner::{default_spec, pty, Container};
//!
//! let mut spec = default_spec();
//! spec.process_mut().as_mut().unwrap().set_terminal(Some(true));
//! let mut child = Container::builder(spec, "/rootfs").cgroup("kiln/c2").init(true).spawn()?;
//! let master = child.pty.take().expect("terminal was requested");
//! let stdin = std::io::stdin();
//! let raw = pty::RawMode::enable(stdin.as_fd())?; // restored on drop
//! pty::proxy(&master, stdin.as_fd(), std::io::stdout().as_fd(), Some(stdin.as_fd()))?;
//! drop(raw);
//! let code = child.wait()?.code();
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![deny(unsafe_code)]

pub mod cgroup;
pub mod cleanup;
mod container;
mod error;
mod init;
pub mod network;
pub mod overlay;
mod protocol;
pub mod pty;
pub mod rootfs;
mod seccomp;
mod signals;
mod spec;
#[allow(unsafe_code)]
mod sys;
pub mod timing;

pub use container::{
    exec, Child, Container, ContainerBuilder, ExecBuilder, JoinInfo, Stdio, WhileStarting,
};
pub use error::{Error, ExitStatus, Result};
pub use nix::sys::signal::Signal;
pub use oci_spec;
pub use oci_spec::runtime::{Process, Spec};
pub use signals::{forward_signals, SignalForwarder};
pub use spec::{
    default_spec, docker_seccomp, DEFAULT_CAPABILITIES, DEFAULT_MASKED_PATHS,
    DEFAULT_READONLY_PATHS,
};

/// Checks that a seccomp profile compiles to a filter (as a start would).
pub fn check_seccomp(profile: &oci_spec::runtime::LinuxSeccomp) -> std::result::Result<(), String> {
    seccomp::compile(profile)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// Hidden entry of the re-executed kiln binary that sets a container up in a
/// single-threaded process. Called first thing in `main`; returns when this
/// process is not such a re-exec, and never returns when it is.
pub fn init_if_requested() {
    network::dns::serve_if_requested();
    let Some(value) = std::env::var_os(protocol::INIT_ENV) else {
        return;
    };
    let fd = value
        .to_str()
        .and_then(|v| v.parse::<i32>().ok())
        .unwrap_or(-1);
    init::main(fd)
}
