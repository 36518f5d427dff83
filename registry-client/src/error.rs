//! The crate's error type. Every message is one line and never contains a
//! password or token: secrets live in [`crate::Secret`] and are not formatted.

use std::path::PathBuf;

/// Result alias for this crate.
pub type Result<T> = std::result::Result<T, Error>;

/// What can go wrong talking to a registry. `target` fields name what was
/// asked for (a reference, `name@digest`, a path); `registry` is a host.
#[derive(Debug, thiserror::Error)]
#[allow(missing_docs)] // variant fields are the operands the messages name
pub enum Error {
    /// The text is not a valid image reference.
    #[error("invalid reference {input:?}: {reason}")]
    InvalidReference { input: String, reason: &'static str },

    /// The platform text is not `os/arch[/variant]`.
    #[error("invalid platform {input:?}: expected os/arch[/variant]")]
    InvalidPlatform { input: String },

    /// The registry answered that the manifest, blob or repository does not exist.
    #[error("{what} not found: {target}")]
    NotFound { what: &'static str, target: String },

    /// The registry (or its token server) refused our credentials, or wants
    /// credentials we do not have.
    #[error("unauthorized: {registry} refused access to {target}{}", if *.has_credentials { " with the given credentials" } else { " without credentials (it may not exist, or need kiln login)" })]
    Unauthorized {
        registry: String,
        target: String,
        has_credentials: bool,
    },

    /// The registry understood who we are and denied the operation (HTTP 403).
    #[error("access denied by {registry} to {target}")]
    Denied { registry: String, target: String },

    /// Content did not hash to the digest it was fetched or announced by.
    #[error("digest mismatch for {target}: expected {expected}, got {actual}")]
    DigestMismatch {
        target: String,
        expected: String,
        actual: String,
    },

    /// Content had another length than its descriptor says.
    #[error("size mismatch for {target}: expected {expected} bytes, got {actual}")]
    SizeMismatch {
        target: String,
        expected: u64,
        actual: u64,
    },

    /// A manifest or index could not be parsed.
    #[error("malformed manifest {target}: {source}")]
    MalformedManifest {
        target: String,
        #[source]
        source: serde_json::Error,
    },

    /// A manifest larger than we accept (the distribution spec suggests 4 MiB).
    #[error("manifest {target} is larger than {limit} bytes")]
    ManifestTooLarge { target: String, limit: u64 },

    /// The manifest has a media type this client cannot use.
    #[error("unsupported manifest media type {media_type:?} for {target}")]
    UnsupportedMediaType { target: String, media_type: String },

    /// An index has no manifest for the wanted platform.
    #[error("no manifest for platform {platform} in {target} (it has: {available})")]
    PlatformNotFound {
        target: String,
        platform: String,
        available: String,
    },

    /// The registry answered with a status we did not expect.
    #[error("{method} {target} on {registry}: HTTP {status}{}", message_suffix(.message))]
    Status {
        registry: String,
        method: &'static str,
        target: String,
        status: u16,
        message: String,
    },

    /// The registry answered something that breaks the protocol (missing
    /// Location header, bad Content-Range, unparsable JSON, ...).
    #[error("protocol error from {registry}: {detail}")]
    Protocol { registry: String, detail: String },

    /// A network error: connect, TLS, reset, timeout.
    #[error("request to {registry} failed: {}", transport_message(.cause))]
    Transport {
        registry: String,
        /// Not a `#[source]`: the message already carries its useful part.
        cause: reqwest::Error,
    },

    /// Transient failures went on after every retry.
    #[error("{target}: giving up after {attempts} attempts")]
    RetriesExhausted {
        target: String,
        attempts: u32,
        #[source]
        source: Box<Error>,
    },

    /// A `WWW-Authenticate` challenge we cannot answer.
    #[error("unsupported authentication challenge from {registry}: {challenge}")]
    Challenge { registry: String, challenge: String },

    /// Building an HTTP client (TLS roots, CA files) failed.
    #[error("setting up HTTP client for {registry}: {detail}")]
    ClientSetup { registry: String, detail: String },

    /// A certificate file could not be used.
    #[error("CA file {path}: {detail}")]
    Certificate { path: PathBuf, detail: String },

    /// A `docker-credential-*` helper failed.
    #[error(
        "credential helper docker-credential-{helper} {action} for {registry} failed: {detail}"
    )]
    CredentialHelper {
        helper: String,
        action: &'static str,
        registry: String,
        detail: String,
    },

    /// The docker config file is not valid JSON of the expected shape.
    #[error("docker config {path}: {detail}")]
    Config { path: PathBuf, detail: String },

    /// A file operation failed.
    #[error("{action} {path}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// Reading the caller's blob source failed during a push.
    #[error("reading blob {digest} for upload")]
    Source {
        digest: String,
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// True when the registry said the thing does not exist (manifest, blob,
    /// repository, tag, or a platform missing from an index).
    pub fn is_not_found(&self) -> bool {
        match self {
            Error::NotFound { .. } | Error::PlatformNotFound { .. } => true,
            Error::RetriesExhausted { source, .. } => source.is_not_found(),
            _ => false,
        }
    }

    /// True when credentials are missing or wrong (HTTP 401) or access was denied (403).
    pub fn is_unauthorized(&self) -> bool {
        matches!(self, Error::Unauthorized { .. } | Error::Denied { .. })
    }

    /// True when content failed verification (digest or size).
    pub fn is_corrupt(&self) -> bool {
        match self {
            Error::DigestMismatch { .. } | Error::SizeMismatch { .. } => true,
            Error::RetriesExhausted { source, .. } => source.is_corrupt(),
            _ => false,
        }
    }
}

fn message_suffix(message: &str) -> String {
    if message.is_empty() {
        String::new()
    } else {
        format!(": {message}")
    }
}

/// reqwest's Display is "error sending request for url (...)"; the useful
/// part is further down the chain (connection refused, certificate unknown).
fn transport_message(error: &reqwest::Error) -> String {
    let mut parts = Vec::new();
    let mut source: Option<&dyn std::error::Error> = std::error::Error::source(error);
    while let Some(inner) = source {
        let text = inner.to_string();
        if !parts.contains(&text) {
            parts.push(text);
        }
        source = inner.source();
    }
    let kind = if error.is_timeout() {
        "timed out"
    } else if error.is_connect() {
        "could not connect"
    } else if error.is_body() || error.is_decode() {
        "reading the response body failed"
    } else {
        "error"
    };
    if parts.is_empty() {
        kind.to_owned()
    } else {
        format!("{kind}: {}", parts.join(": ").replace('\n', " "))
    }
}
