//! Integration tests of the `kiln` binary: each test spawns the built binary
//! with its own temporary root.

mod common;
mod images;
#[cfg(feature = "test-registry")]
mod registry;
