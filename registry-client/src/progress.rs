//! Progress events of blob transfers. The library only reports; `cli` draws.

use std::sync::Arc;

use oci_spec::image::Digest;

/// What happened to a blob.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProgressKind {
    /// Bytes arrived (`bytes_done` counts all verified-so-far bytes).
    Download,
    /// Bytes were sent.
    Upload,
    /// A transfer failed transiently and resumes or restarts.
    Retry,
    /// A push found the blob already in the repository.
    Exists,
    /// A push mounted the blob from another repository.
    Mounted,
    /// The transfer finished and the content checked out.
    Done,
}

/// One progress report.
#[derive(Clone, Debug)]
pub struct ProgressEvent {
    /// The blob.
    pub digest: Digest,
    /// What happened.
    pub kind: ProgressKind,
    /// Bytes done so far, in bytes.
    pub bytes_done: u64,
    /// The blob's size in bytes.
    pub total: u64,
}

pub(crate) type ProgressFn = Arc<dyn Fn(&ProgressEvent) + Send + Sync>;
