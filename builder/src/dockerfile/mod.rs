//! The Dockerfile frontend: text to typed stages (parser, directives,
//! heredocs, flags, instructions, the shell lexer, .dockerignore). Variables
//! are expanded per stage by `graph::compile`.

pub mod directives;
pub mod dockerignore;
pub mod dump;
pub(crate) mod flags;
pub use flags::parse_duration;
pub mod heredoc;
pub mod instructions;
pub(crate) mod line_parsers;
pub mod mounts;
pub mod parser;
pub mod platform;
pub mod shell;
pub mod stages;
