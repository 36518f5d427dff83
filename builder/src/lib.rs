//! kiln-builder: the Dockerfile frontend, the op graph and the solver.
//!
//! The frontend and the solver arrive with their issues.
#![forbid(unsafe_code)]
