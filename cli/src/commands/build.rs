//! `kiln build`.

use clap::Args;

use crate::ExitStatus;

/// Arguments of `kiln build`.
#[derive(Debug, Args)]
pub struct BuildArgs {
    /// Build context: a directory, or `-` for a Dockerfile on stdin.
    pub context: String,
}

pub fn run(_global: &crate::args::Cli, _args: &BuildArgs) -> anyhow::Result<ExitStatus> {
    anyhow::bail!("kiln build: not available yet")
}
