//! `kiln rmi`: remove image names, and images with no name left.

use std::io::Write;

use anyhow::{bail, Result};
use clap::Args;
use kiln_store::{descriptor_digest, PruneOptions, Store};

use crate::ExitStatus;

// Arguments of `kiln rmi`.
#[derive(Debug, Args)]
pub struct RmiArgs {
    /// Remove every name of an image given by id.
    #[arg(short, long)]
    pub force: bool,
    /// Images: names or ids.
    #[arg(required = true)]
    pub images: Vec<String>,
}

pub fn run(store: &Store, args: &RmiArgs) -> Result<ExitStatus> {
    // One metadata open for every removal and the collection after them.
    let _hold = store.hold_metadata();
    let mut out = std::io::stdout().lock();
    let mut failed = false;
    for given in &args.images {
        if let Err(err) = remove_one(store, given, args.force, &mut out) {
            eprintln!("kiln: {err:#}");
            failed = true;
        }
    }
    // Free what the removed images held now, not at the next prune.
    store.prune(&PruneOptions::default())?;
    Ok(if failed {
        ExitStatus::FAILURE
    } else {
        ExitStatus::SUCCESS
    })
}

fn remove_one(store: &Store, given: &str, force: bool, out: &mut impl Write) -> Result<()> {
    let image = crate::commands::find_image(store, given)?;
    let by_name = crate::names::normalize(given)
        .ok()
        .filter(|n| image.names.contains(n));
    match by_name {
        Some(name) => {
            store.remove_name(&name)?;
            writeln!(out, "Untagged: {}", kiln_store::familiar_name(&name))?;
            if image.names.len() == 1 {
                writeln!(out, "Deleted: {}", image.id())?;
            }
        }
        None => {
            if image.names.len() > 1 && !force {
                bail!(
                    "image {given} is referenced by {} names ({}): remove them one by one, or use -f",
                    image.names.len(),
                    image.names.iter().map(|n| kiln_store::familiar_name(n)).collect::<Vec<_>>().join(", ")
                );
            }
            for name in &image.names {
                store.remove_name(name)?;
                writeln!(out, "Untagged: {}", kiln_store::familiar_name(name))?;
            }
            store.remove_untagged(&descriptor_digest(&image.target)?)?;
            writeln!(out, "Deleted: {}", image.id())?;
        }
    }
    Ok(())
}
