//! `kiln pull NAME[:TAG|@DIGEST]`, and [`ensure_image`] for commands that
//! need an image and pull it when it is absent (`kiln run`, `kiln build`).

use std::io::IsTerminal;

use anyhow::{Context, Result};
use clap::Args;
use kiln_registry::{Platform, Reference};
use kiln_store::{Image, Store};

use crate::args::Cli;
use crate::progress::{Direction, Mode, Progress};
use crate::settings::{runtime, RegistrySettings};
use crate::transfer::pull::{pull, Pulled};
use crate::ExitStatus;

// Arguments of `kiln pull`.
#[derive(Debug, Args)]
pub struct PullArgs {
    /// The image: `[REGISTRY/]REPOSITORY[:TAG|@DIGEST]`.
    pub name: String,
    /// The platform to pull from a multi-platform image: `os/arch[/variant]`.
    #[arg(long, value_name = "OS/ARCH[/VARIANT]")]
    pub platform: Option<String>,
    /// Print only the image name.
    #[arg(short, long)]
    pub quiet: bool,
}

pub fn run(cli: &Cli, store: &Store, args: &PullArgs) -> Result<ExitStatus> {
    let settings = RegistrySettings::from_cli(cli);
    let platform = match &args.platform {
        Some(text) => Platform::parse(text)?,
        None => Platform::host(),
    };
    let reference = Reference::parse(&args.name)?;
    let progress = Progress::new(Mode::detect(args.quiet), Direction::Pull);
    let pulled = pull_with(store, &settings, &reference, &platform, &progress)?;
    if !args.quiet {
        progress.println(&format!("Digest: {}", pulled.digest));
        let familiar = Reference::parse(&pulled.name)
            .map(|r| r.familiar())
            .unwrap_or_else(|_| pulled.name.clone());
        if pulled.up_to_date {
            progress.println(&format!("Status: Image is up to date for {familiar}"));
        } else {
            progress.println(&format!("Status: Downloaded newer image for {familiar}"));
        }
    }
    println!("{}", pulled.name);
    Ok(ExitStatus::SUCCESS)
}

/// Pulls on a runtime of its own; errors say what was being pulled.
fn pull_with(
    store: &Store,
    settings: &RegistrySettings,
    reference: &Reference,
    platform: &Platform,
    progress: &std::sync::Arc<Progress>,
) -> Result<Pulled> {
    let client = settings.client(Some(progress.callback()));
    let result = runtime()?
        .block_on(pull(store, &client, reference, platform, progress))
        .with_context(|| format!("pulling {reference}"));
    progress.finish();
    result
}

/// The image `name` names, pulled for the host platform first when the
/// store does not have it (as `docker run` does, with its messages, all on
/// stderr; `quiet` leaves out the progress).
/// Progress on stderr: nothing when `quiet`, bars on a terminal, lines
/// otherwise.
fn stderr_mode(quiet: bool) -> Mode {
    if quiet {
        Mode::Quiet
    } else if std::io::stderr().is_terminal() {
        Mode::Bars
    } else {
        Mode::Lines
    }
}

pub fn ensure_image(
    store: &Store,
    settings: &RegistrySettings,
    name: &str,
    quiet: bool,
) -> Result<Image> {
    match crate::commands::find_image(store, name) {
        Ok(image) => return Ok(image),
        Err(error) if !is_not_found(&error) => return Err(error),
        Err(_) => {}
    }
    let reference = Reference::parse(name)?;
    eprintln!("Unable to find image '{}' locally", reference.familiar());
    let progress = Progress::on_stderr(stderr_mode(quiet), Direction::Pull);
    let pulled = pull_with(store, settings, &reference, &Platform::host(), &progress)?;
    progress.println(&format!("Digest: {}", pulled.digest));
    progress.println(&format!(
        "Status: Downloaded newer image for {}",
        reference.familiar()
    ));
    Ok(pulled.image)
}

/// The image `name` names, pulled from its registry even when the store
/// has it (`kiln build --pull`), so a tag that moved is fetched again.
/// Messages go to stderr; `quiet` leaves them out.
pub fn pull_image(
    store: &Store,
    settings: &RegistrySettings,
    name: &str,
    quiet: bool,
) -> Result<Image> {
    let reference = Reference::parse(name)?;
    let progress = Progress::on_stderr(stderr_mode(quiet), Direction::Pull);
    let pulled = pull_with(store, settings, &reference, &Platform::host(), &progress)?;
    progress.println(&format!("Digest: {}", pulled.digest));
    let status = if pulled.up_to_date {
        "Image is up to date for"
    } else {
        "Downloaded newer image for"
    };
    progress.println(&format!("Status: {status} {}", reference.familiar()));
    Ok(pulled.image)
}

fn is_not_found(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause
            .downcast_ref::<kiln_store::Error>()
            .is_some_and(kiln_store::Error::is_not_found)
    }) || error.to_string().starts_with("no such image")
}
