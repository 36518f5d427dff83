//! Errors of the runner and the exit codes docker derives from them.

use std::io;
use std::path::PathBuf;

/// Result of runner operations.
pub type Result<T> = std::result::Result<T, Error>;

/// What went wrong while starting, joining or cleaning up a container.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The spec asks for something this runner does not do.
    #[error("unsupported in spec: {what}")]
    Unsupported { what: String },
    /// A required part of the spec is missing.
    #[error("invalid spec: {what}")]
    InvalidSpec { what: String },
    /// A capability name in the spec is unknown.
    #[error("unknown capability {name}")]
    UnknownCapability { name: String },
    /// Building the seccomp filter failed.
    #[error("failed to build seccomp filter")]
    Seccomp {
        #[source]
        source: libseccomp::error::SeccompError,
    },
    /// A cgroup operation failed.
    #[error("failed to {op} cgroup {path}")]
    Cgroup {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// A system call in the caller's process failed.
    #[error("failed to {op}")]
    Sys {
        op: &'static str,
        #[source]
        source: nix::Error,
    },
    /// Talking to the container's init process failed.
    #[error("failed to {op} the container init")]
    Protocol {
        op: &'static str,
        #[source]
        source: io::Error,
    },
    /// The container set-up, inside the new namespaces, failed.
    #[error("container set-up failed: {step}: {detail}")]
    Setup { step: String, detail: String },
    /// The caller's gate (see `WhileStarting::gate`) stopped the
    /// container before its program started.
    #[error("the container was stopped before its program started")]
    Cancelled,
    /// The command was not found (docker exit code 127).
    #[error("exec {command}: no such file or directory")]
    CommandNotFound { command: String },
    /// The command exists but cannot be executed (docker exit code 126).
    #[error("exec {command}: {reason}")]
    CommandNotExecutable { command: String, reason: String },
}

impl Error {
    /// The exit code docker reports for a container that failed to start
    /// this way: 127 not found, 126 not executable, 125 anything else.
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::CommandNotFound { .. } => 127,
            Error::CommandNotExecutable { .. } => 126,
            _ => 125,
        }
    }

    pub(crate) fn sys(op: &'static str) -> impl FnOnce(nix::Error) -> Error {
        move |source| Error::Sys { op, source }
    }

    pub(crate) fn protocol(op: &'static str) -> impl FnOnce(io::Error) -> Error {
        move |source| Error::Protocol { op, source }
    }
}

/// How a container process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum ExitStatus {
    /// It called exit with this code.
    Exited(i32),
    /// It was killed by this signal number.
    Signaled(i32),
}

impl ExitStatus {
    /// The exit code docker reports: the code itself, or 128+N for signal N.
    pub fn code(&self) -> u8 {
        match *self {
            ExitStatus::Exited(code) => (code & 0xff) as u8,
            ExitStatus::Signaled(sig) => (128 + sig).clamp(0, 255) as u8,
        }
    }

    /// True for exit code 0.
    pub fn success(&self) -> bool {
        *self == ExitStatus::Exited(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_follow_docker() {
        assert_eq!(ExitStatus::Exited(0).code(), 0);
        assert_eq!(ExitStatus::Exited(3).code(), 3);
        assert_eq!(ExitStatus::Signaled(9).code(), 137);
        assert_eq!(ExitStatus::Signaled(15).code(), 143);
        assert_eq!(
            Error::CommandNotFound {
                command: "x".into()
            }
            .exit_code(),
            127
        );
        let e = Error::CommandNotExecutable {
            command: "x".into(),
            reason: "permission denied".into(),
        };
        assert_eq!(e.exit_code(), 126);
        assert_eq!(
            Error::Setup {
                step: "mount".into(),
                detail: "EPERM".into()
            }
            .exit_code(),
            125
        );
    }
}
