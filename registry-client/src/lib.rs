//! kiln-registry: an OCI distribution client (references, auth, manifests,
//! blob streams).
//!
//! It speaks the distribution protocol and hands out parsed manifests and
//! verified byte streams; it knows nothing of kiln's store. `cli` joins the
//! two (see DESIGN.md, "How data flows").
//!
//! ```no_run
//! # async fn example() -> kiln_registry::Result<()> {
//! use futures_util::StreamExt;
//! use kiln_registry::{Client, CredentialStore, Platform, Reference};
//!
//! let client = Client::builder().credential_store(CredentialStore::from_env()).build();
//! let reference = Reference::parse("busybox")?; // docker.io/library/busybox:latest
//! let image = client.resolve(&reference, &Platform::host()).await?;
//! let config = client.fetch_blob_bytes(&reference, image.config()).await?;
//! for layer in image.layers() {
//!     let mut stream = client.fetch_blob(&reference, layer);
//!     while let Some(chunk) = stream.next().await {
//!         let _bytes = chunk?; // write to ingest; commit only after the stream ends Ok
//!     }
//! }
//! # let _ = config; Ok(()) }
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod auth;
mod blob;
mod client;
mod error;
mod image;
mod manifest;
mod progress;
mod reference;
mod transport;
mod upload;

pub use auth::{Credential, CredentialStore, Secret};
pub use blob::{BlobStream, BlockingBlobReader};
pub use client::{Client, ClientBuilder};
pub use error::{Error, Result};
pub use image::{sha256_digest, ResolvedImage};
pub use manifest::{
    is_non_distributable, Manifest, ManifestDocument, Platform, DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST, OCI_INDEX, OCI_MANIFEST,
};
pub use progress::{ProgressEvent, ProgressKind};
pub use reference::{Reference, DEFAULT_TAG, DOCKER_HUB};
pub use transport::DEFAULT_CERTS_DIRS;
pub use upload::{BlobReader, BlobSource, PushOutcome};

/// The OCI types this API uses, re-exported so callers need not pin oci-spec.
pub use oci_spec::image::{Descriptor, Digest, ImageIndex, ImageManifest};
