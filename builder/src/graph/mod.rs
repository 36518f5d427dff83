//! The op graph: compiling stages to ops, digests, printing.

pub mod compile;
mod format;
pub mod image;
pub mod ops;
pub mod output;
mod steps;
