//! kiln-builder: the Dockerfile frontend, the op graph and the solver.
#![forbid(unsafe_code)]

pub mod dockerfile;
mod error;

pub use error::{Error, ErrorKind, Location, Result};
