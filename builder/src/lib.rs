//! kiln-builder: the Dockerfile frontend, the op graph, the solver that
//! runs it with a build cache, and the export of the result as an image.
//!
//! It sits between the CLI and the solver: text in, a checked, typed graph
//! of ops out (DESIGN.md, "How data flows: build", steps 1 and 2).
//!
//! ```
//! use kiln_builder::{compile, CompileOptions, Dockerfile, NoImages};
//!
//! let df = Dockerfile::parse("Dockerfile", "FROM alpine\nRUN echo hi\n").unwrap();
//! let graph = compile(&df, &CompileOptions::default(), &NoImages).unwrap();
//! assert_eq!(graph.nodes.len(), 2); // the image, then the RUN
//! ```
#![forbid(unsafe_code)]
// Errors carry their location and source line; they are rare, so their
// size on the error path does not matter.
#![allow(clippy::result_large_err)]
#![warn(missing_docs)]

pub mod check;
pub mod dockerfile;
mod error;
pub mod export;
pub mod graph;
pub mod solve;
pub mod timing;

pub use check::{lint, Level, Problem};
pub use dockerfile::platform::Platform;
pub use dockerfile::stages::{Dockerfile, Stage};
pub use error::{Error, ErrorKind, Location, Result};
pub use graph::compile::{compile, compile_with_problems, CompileOptions};
pub use graph::image::{HealthConfig, History, ImageConfig, ImageSource, NoImages};
pub use graph::ops::{
    ExecMount, ExecOp, FileAction, FileOp, Graph, Input, Node, NodeId, Op, StageOutput,
};
pub use solve::{
    solve, ImageResolver, NoProgress, Progress, SolveError, SolveOptions, Solved, StepEvent,
};
