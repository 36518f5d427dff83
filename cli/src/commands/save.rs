//! `kiln save`: images to a tar that docker and OCI tools both load.

use std::fs;
use std::io::{BufWriter, IsTerminal};
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;
use kiln_store::Store;

use crate::ExitStatus;

// Arguments of `kiln save`.
#[derive(Debug, Args)]
pub struct SaveArgs {
    /// Write to this file instead of standard output.
    #[arg(short, long)]
    pub output: Option<PathBuf>,
    /// Images: names or ids.
    #[arg(required = true)]
    pub images: Vec<String>,
}

pub fn run(store: &Store, args: &SaveArgs) -> Result<ExitStatus> {
    let mut images = Vec::new();
    for given in &args.images {
        let image = crate::commands::find_image(store, given)?;
        // A name saves that name; an id saves every name the image has.
        let names = match crate::names::normalize(given)
            .ok()
            .filter(|n| image.names.contains(n))
        {
            Some(name) => vec![name],
            None => image.names.clone(),
        };
        images.push((image, names));
    }
    match &args.output {
        Some(path) => {
            // Written beside the target and renamed, so a failure leaves no half file.
            let temp = path.with_file_name(format!(
                ".{}.partial",
                path.file_name()
                    .and_then(|n| n.to_str())
                    .unwrap_or("kiln-save")
            ));
            let result = (|| {
                let file = fs::File::create(&temp)
                    .with_context(|| format!("creating {}", temp.display()))?;
                let mut writer = BufWriter::with_capacity(1 << 20, file);
                store.save(&images, &mut writer)?;
                let file = writer.into_inner().map_err(|e| e.into_error())?;
                file.sync_all()?;
                fs::rename(&temp, path).with_context(|| format!("writing {}", path.display()))
            })();
            if result.is_err() {
                let _ = fs::remove_file(&temp);
            }
            result?;
        }
        None => {
            let stdout = std::io::stdout();
            if stdout.is_terminal() {
                bail!("refusing to write an archive to a terminal: use -o FILE or redirect standard output");
            }
            store.save(&images, BufWriter::with_capacity(1 << 20, stdout.lock()))?;
        }
    }
    Ok(ExitStatus::SUCCESS)
}
