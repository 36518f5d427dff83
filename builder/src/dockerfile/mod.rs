//! The Dockerfile frontend: text to typed, expanded stages.

pub mod directives;
pub mod dump;
pub mod heredoc;
pub(crate) mod line_parsers;
pub mod parser;
pub mod shell;
pub(crate) mod flags;
pub mod instructions;
pub mod mounts;
