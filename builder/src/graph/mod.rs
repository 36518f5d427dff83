//! The op graph: compiling stages to ops, digests, printing.

pub mod compile;
pub mod image;
pub mod ops;
pub mod output;
