//! Layers: apply a layer tar into a snapshot directory, and diff a directory
//! into a layer tar.
//!
//! A snapshot directory is in overlayfs format (kernel
//! Documentation/filesystems/overlayfs.rst): whiteouts are 0:0 character
//! devices and opaque directories carry `trusted.overlay.opaque=y`, so each
//! snapshot can be stacked as an overlay lowerdir as it is. A layer tar uses
//! OCI whiteouts instead (image-spec layer.md, "Whiteouts"); [`apply`] and
//! [`diff`] convert between the two.
//!
//! ```no_run
//! use kiln_store::layer::{self, Compression, DiffOptions};
//! # fn main() -> kiln_store::Result<()> {
//! let blob = std::fs::File::open("layer.tar.gz").unwrap();
//! layer::apply(blob, std::path::Path::new("/tmp/snapshot"))?;
//! let opts = DiffOptions { compression: Compression::Zstd, source_date_epoch: None };
//! let out = layer::diff(std::path::Path::new("/tmp/snapshot"), std::io::sink(), &opts)?;
//! println!("{} {} {}", out.diff_id, out.digest, out.size);
//! # Ok(()) }
//! ```

mod apply;
mod compression;
mod diff;
mod extract;
mod header;
mod name;
mod parallel;

pub use apply::{apply, apply_atomic, ApplyStats};
pub(crate) use compression::decoder;
pub use compression::Compression;
pub use diff::{diff, diff_excluding, DiffOptions, DiffOutput};

/// A gzip writer that compresses on every core, deterministically (the
/// output depends only on the input). Call `finish` to write the trailer.
pub(crate) fn gzip_writer<W: std::io::Write>(out: W) -> parallel::ParallelEncoder<W> {
    // Level 6: what `gzip` and Go's compress/gzip default to.
    parallel::ParallelEncoder::new(out, parallel::Codec::Gzip(6))
}
