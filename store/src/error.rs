//! The store's error type.

use std::io;
use std::path::PathBuf;

use crate::Digest;

/// Everything that can go wrong in the store. Each variant names the
/// operation and carries its operands.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid digest {text:?}: expected sha256:<64 hex characters>")]
    InvalidDigest { text: String },
    #[error("digest mismatch: expected {expected}, got {actual}")]
    DigestMismatch { expected: Digest, actual: Digest },
    #[error("size mismatch for {digest}: expected {expected} bytes, got {actual}")]
    SizeMismatch {
        digest: Digest,
        expected: u64,
        actual: u64,
    },
    #[error("blob {digest} not found")]
    BlobNotFound { digest: Digest },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("layer entry {entry:?}: {reason}")]
    UnsafeEntry { entry: String, reason: &'static str },
    #[error("layer entry {entry:?}: {source}")]
    Entry {
        entry: String,
        #[source]
        source: io::Error,
    },
    #[error("layer entry {entry:?}: unsupported tar entry type {kind:?}")]
    UnsupportedEntry { entry: String, kind: char },
    #[error("{path}: cannot be put in a layer: {reason}")]
    UnsupportedFile { path: PathBuf, reason: &'static str },
    #[error("reading layer: {source}")]
    LayerRead {
        #[source]
        source: io::Error,
    },
    #[error("writing layer: {source}")]
    LayerWrite {
        #[source]
        source: io::Error,
    },
    #[error("metadata database {path}: {message}")]
    Metadata { path: PathBuf, message: String },
    #[error("{what} {text:?} is malformed: {source}")]
    Json {
        what: &'static str,
        text: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("image {name:?} not found")]
    ImageNotFound { name: String },
    #[error("image reference {text:?} is invalid: {reason}")]
    InvalidName { text: String, reason: &'static str },
    #[error("image archive: {reason}")]
    Archive { reason: String },
    #[error("image {id} is ambiguous: {reason}")]
    Conflict { id: String, reason: String },
}

impl Error {
    /// True when the error means "no such thing" (blob or image).
    pub fn is_not_found(&self) -> bool {
        matches!(
            self,
            Error::BlobNotFound { .. } | Error::ImageNotFound { .. }
        )
    }

    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io { path, source }
    }
}

/// The store's result type.
pub type Result<T> = std::result::Result<T, Error>;
