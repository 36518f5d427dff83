//! Integration tests of the `kiln` binary: each module spawns the built binary
//! with its own temporary root.

mod common;
#[cfg(feature = "test-root")]
mod runtime;
