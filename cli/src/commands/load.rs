//! `kiln load`: images from a docker-archive or OCI archive tar.

use std::fs::File;
use std::io::{BufReader, IsTerminal, Read};
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;
use kiln_store::Store;

use crate::ExitStatus;

// Arguments of `kiln load`.
#[derive(Debug, Args)]
pub struct LoadArgs {
    /// Read from this file instead of standard input.
    #[arg(short, long)]
    pub input: Option<PathBuf>,
    /// Print nothing.
    #[arg(short, long)]
    pub quiet: bool,
}

pub fn run(store: &Store, args: &LoadArgs) -> Result<ExitStatus> {
    let (reader, what): (Box<dyn Read>, String) = match &args.input {
        Some(path) => (
            Box::new(File::open(path).with_context(|| format!("opening {}", path.display()))?),
            path.display().to_string(),
        ),
        None => {
            if std::io::stdin().is_terminal() {
                bail!("no archive given: use -i FILE or pipe one to standard input");
            }
            (
                Box::new(std::io::stdin().lock()),
                "standard input".to_string(),
            )
        }
    };
    let normalize = |name: &str| crate::names::normalize(name).map_err(|e| e.to_string());
    let loaded = store
        .load(BufReader::with_capacity(1 << 20, reader), &normalize)
        .with_context(|| format!("loading {what}"))?;
    if !args.quiet {
        for image in loaded {
            if image.names.is_empty() {
                let id = image
                    .id
                    .map(|d| d.to_string())
                    .unwrap_or_else(|| image.target.digest().to_string());
                println!("Loaded image ID: {id}");
            }
            for name in image.names {
                println!("Loaded image: {}", kiln_store::familiar_name(&name));
            }
        }
    }
    Ok(ExitStatus::SUCCESS)
}
