//! The Dockerfile frontend: text to typed, expanded stages.

pub mod directives;
pub mod dockerignore;
pub mod dump;
pub(crate) mod flags;
pub mod heredoc;
pub mod instructions;
pub(crate) mod line_parsers;
pub mod mounts;
pub mod parser;
pub mod platform;
pub mod shell;
pub mod stages;
