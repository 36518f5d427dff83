//! One module per subcommand; each exposes `run(...) -> anyhow::Result<ExitStatus>`.

pub mod build;
pub mod runtime;
