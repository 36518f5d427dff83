//! Integration tests of kiln-store.

mod content;
mod layer_hostile;
#[cfg(feature = "test-root")]
mod layer_root;
mod layer_roundtrip;
mod layer_support;
mod meta;
