//! Image archives: `save` writes one tar that is both a docker-archive
//! (`manifest.json`, `repositories`) and an OCI image layout (`oci-layout`,
//! `index.json`, `blobs/`), as current docker writes; `load` reads either.

mod load;
mod save;

pub use load::LoadedImage;
