//! kiln-store: the content store, image records, snapshots and layers.
#![forbid(unsafe_code)]
