//! kiln-store: the content store, image records, snapshots and layers.
//!
//! The store root is itself an OCI image layout (image-spec image-layout.md):
//! `oci-layout`, `index.json` and `blobs/sha256/`, plus kiln's own `ingest/`,
//! `snapshots/`, `containers/`, `cache/` and `meta.redb`. See DESIGN.md,
//! "Data on disk".
//!
//! ```no_run
//! let store = kiln_store::Store::open("/var/lib/kiln")?;
//! let image = store.find_image("docker.io/library/busybox:latest")?;
//! let lower_dirs = store.ensure_snapshots(&image)?;
//! # Ok::<(), kiln_store::Error>(())
//! ```
#![forbid(unsafe_code)]

mod archive;
mod cache;
mod commit;
mod content;
mod digest;
mod error;
mod fsck;
mod fsutil;
mod gc;
mod images;
pub mod layer;
mod lease;
mod memo;
mod meta;
mod snapshot;
mod store;
mod transfer;

pub use archive::LoadedImage;
pub use cache::{CacheRecord, CachedLayer};
pub use commit::{layer_media_type, NewLayer};
pub use content::{BlobWriter, ContentStore};
pub use digest::{Digest, HashingReader, HashingWriter};
pub use error::{Error, Result};
pub use fsck::{FsckReport, Problem};
pub use gc::{DiskUsage, PruneOptions, PruneReport};
pub use images::{
    choose_platform, descriptor, descriptor_digest, familiar_name, host_platform, is_index, Image,
};
pub use layer::{apply, diff, ApplyStats, Compression, DiffOptions, DiffOutput};
pub use lease::Lease;
pub use meta::MetaHold;
pub use snapshot::{chain_ids, SnapshotInfo};
pub use store::Store;
