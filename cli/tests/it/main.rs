//! Integration tests of the `kiln` binary: each test spawns the built binary
//! with its own temporary root.

#[cfg(feature = "test-root")]
mod build;
mod build_check;
#[cfg(feature = "test-root")]
mod build_corpus;
#[cfg(feature = "test-root")]
mod build_diff;
#[cfg(feature = "test-root")]
mod build_mounts;
#[cfg(feature = "test-root")]
mod build_network;
mod build_outputs;
mod common;
#[cfg(feature = "test-root")]
mod containers;
#[cfg(feature = "test-root")]
mod containers_more;
mod images;
#[cfg(feature = "test-root")]
mod network;
#[cfg(feature = "test-registry")]
mod registry;
#[cfg(feature = "test-root")]
mod run_flags;
#[cfg(feature = "test-root")]
mod runtime;
