//! `kiln runtime`: run an OCI bundle directly (hidden; used by tests and benchmarks).

use clap::Args;

use crate::ExitStatus;

/// Arguments of `kiln runtime`.
#[derive(Debug, Args)]
pub struct RuntimeArgs {
    /// Bundle directory holding config.json and the root filesystem.
    #[arg(long)]
    pub bundle: std::path::PathBuf,
}

pub fn run(_global: &crate::args::Cli, _args: &RuntimeArgs) -> anyhow::Result<ExitStatus> {
    anyhow::bail!("kiln runtime: not available yet")
}
