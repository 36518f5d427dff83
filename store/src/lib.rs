//! kiln-store: the content store, image records, snapshots and layers.
//!
//! The store root is itself an OCI image layout (image-spec image-layout.md):
//! `oci-layout`, `index.json` and `blobs/sha256/`, plus kiln's own `ingest/`,
//! `snapshots/`, `containers/`, `cache/` and `meta.redb`. See DESIGN.md,
//! "Data on disk".
#![forbid(unsafe_code)]

mod digest;
mod error;
pub mod layer;

pub use digest::{Digest, HashingReader, HashingWriter};
pub use error::{Error, Result};
pub use layer::{apply, diff, ApplyStats, Compression, DiffOptions, DiffOutput};
