//! What can go wrong while solving a graph.

use std::path::PathBuf;

/// An error of the solver (running ops, caching, exporting).
#[derive(Debug, thiserror::Error)]
pub enum SolveError {
    /// One step failed; `source` says why.
    #[error("{step}")]
    Step {
        /// The step's description (`[build 2/3] RUN make`).
        step: String,
        /// Why it failed.
        #[source]
        source: Box<SolveError>,
    },
    /// A base image could not be found or fetched.
    #[error("resolving image {reference}")]
    Image {
        /// As written in the Dockerfile.
        reference: String,
        /// The resolver's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The store failed.
    #[error("{what}")]
    Store {
        /// What the solver was doing.
        what: &'static str,
        /// The store's error.
        #[source]
        source: kiln_store::Error,
    },
    /// Starting or waiting for a RUN container failed.
    #[error("running the container")]
    Runner {
        /// The runner's error.
        #[source]
        source: kiln_runner::Error,
    },
    /// A RUN command exited with a non-zero status.
    #[error("process {command:?} did not complete successfully: exit code: {code}")]
    ExecFailed {
        /// argv joined with spaces.
        command: String,
        /// Exit code (128 + signal for a signalled process).
        code: i32,
        /// The last lines the command printed.
        output_tail: Vec<String>,
    },
    /// A file operation failed.
    #[error("{op} {path}")]
    Io {
        /// What was done (`copy`, `create directory`...).
        op: &'static str,
        /// The path it was done to.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// A COPY/ADD source does not exist (or is excluded by .dockerignore).
    #[error("\"/{path}\": not found")]
    SourceNotFound {
        /// Source path as given.
        path: String,
    },
    /// Several sources need a directory destination.
    #[error("When using {keyword} with more than one source file, the destination must be a directory and end with a /")]
    DestinationNotDirectory {
        /// COPY or ADD.
        keyword: &'static str,
    },
    /// A user name not in the image's /etc/passwd.
    #[error("unable to find user {name}: no matching entries in passwd file")]
    UnknownUser {
        /// The name.
        name: String,
    },
    /// A group name not in the image's /etc/group.
    #[error("unable to find group {name}: no matching entries in group file")]
    UnknownGroup {
        /// The name.
        name: String,
    },
    /// A `--chmod` value kiln cannot apply.
    #[error("invalid --chmod value {value:?}")]
    InvalidChmod {
        /// The value.
        value: String,
    },
    /// A RUN mount that cannot be made (missing secret, missing source).
    #[error("{message}")]
    Mount {
        /// What is wrong (never a secret's value).
        message: String,
    },
    /// A RUN step's network that cannot be set up.
    #[error("{message}")]
    Network {
        /// What failed.
        message: String,
    },
    /// A RUN needing an entitlement kiln does not grant.
    #[error("entitlement {name} is not granted")]
    Entitlement {
        /// `security.insecure`.
        name: &'static str,
    },
    /// A feature the solver does not have yet.
    #[error("{what} is not supported yet")]
    Unsupported {
        /// The feature.
        what: String,
    },
    /// ADD of a local archive that does not unpack.
    #[error("unpacking archive {name}")]
    Archive {
        /// The archive's file name.
        name: String,
        /// What the tar reader said.
        #[source]
        source: std::io::Error,
    },
    /// ADD of a URL that could not be downloaded.
    #[error("failed to download {url}: {problem}")]
    Download {
        /// The URL (without user info).
        url: String,
        /// What went wrong.
        problem: String,
    },
    /// ADD --checksum of a URL whose content differs.
    #[error("checksum mismatch for {url}: expected {expected}, got {actual}")]
    ChecksumMismatch {
        /// The URL.
        url: String,
        /// The `--checksum` value.
        expected: String,
        /// The digest of what was downloaded.
        actual: String,
    },
    /// The build got SIGINT or SIGTERM; running steps were killed.
    #[error("interrupted")]
    Interrupted,
    /// Another step failed first; this one did not run.
    #[error("cancelled because another step failed")]
    Cancelled,
}

impl SolveError {
    pub(crate) fn io(
        op: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> SolveError {
        let path = path.into();
        move |source| SolveError::Io { op, path, source }
    }

    pub(crate) fn store(what: &'static str) -> impl FnOnce(kiln_store::Error) -> SolveError {
        move |source| SolveError::Store { what, source }
    }

    pub(crate) fn unsupported(what: impl Into<String>) -> SolveError {
        SolveError::Unsupported { what: what.into() }
    }

    /// The innermost error, below any [`SolveError::Step`] wrappers.
    pub fn root_cause(&self) -> &SolveError {
        match self {
            SolveError::Step { source, .. } => source.root_cause(),
            other => other,
        }
    }
}
