//! `kiln push NAME[:TAG]`.

use anyhow::{bail, Context, Result};
use clap::Args;
use kiln_registry::Reference;
use kiln_store::Store;

use crate::args::Cli;
use crate::progress::{Direction, Mode, Progress};
use crate::settings::{runtime, RegistrySettings};
use crate::transfer::push::push;
use crate::ExitStatus;

// Arguments of `kiln push`.
#[derive(Debug, Args)]
pub struct PushArgs {
    /// The image to push, by its name: `REGISTRY/REPOSITORY[:TAG]`.
    pub name: String,
    /// Print only the image name.
    #[arg(short, long)]
    pub quiet: bool,
}

pub fn run(cli: &Cli, store: &Store, args: &PushArgs) -> Result<ExitStatus> {
    let settings = RegistrySettings::from_cli(cli);
    let reference = Reference::parse(&args.name)?;
    if reference.digest().is_some() {
        bail!("push {}: push a tag, not a digest", args.name);
    }
    let name = reference.to_string();
    let image = store.find_image(&name).map_err(|e| {
        if e.is_not_found() {
            anyhow::anyhow!("no such image: {}", args.name)
        } else {
            e.into()
        }
    })?;
    let progress = Progress::new(Mode::detect(args.quiet), Direction::Push);
    let client = settings.client(Some(progress.callback()));
    let result = runtime()?
        .block_on(push(store, &client, &reference, &image, &progress))
        .with_context(|| format!("pushing {reference}"));
    progress.finish();
    let pushed = result?;
    if args.quiet {
        println!("{name}");
    } else {
        let tag = reference.tag().unwrap_or(kiln_registry::DEFAULT_TAG);
        progress.println(&format!(
            "{tag}: digest: {} size: {}",
            pushed.digest, pushed.size
        ));
    }
    Ok(ExitStatus::SUCCESS)
}
