//! Integration tests of the `kiln` binary: each module spawns the built binary
//! with its own temporary root.

mod build_check;
mod common;
#[cfg(feature = "test-root")]
mod runtime;
