//! `kiln commit`: a container's writable layer on top of its image becomes
//! a new image.

use anyhow::{Context, Result};
use clap::Args;
use kiln_runner::oci_spec::image::{HistoryBuilder, ImageConfiguration};
use kiln_store::layer::{Compression, DiffOptions};
use kiln_store::Store;

use crate::ExitStatus;

/// Arguments of `kiln commit`.
#[derive(Debug, Args)]
pub struct CommitArgs {
    /// Commit message recorded in the image history.
    #[arg(short, long)]
    pub message: Option<String>,
    /// Container: name or id.
    pub container: String,
    /// Name of the new image (default: untagged).
    pub image: Option<String>,
}

pub fn run(store: &Store, args: &CommitArgs) -> Result<ExitStatus> {
    let name = args
        .image
        .as_deref()
        .map(crate::names::normalize)
        .transpose()?;
    let container = crate::containers::Containers::new(store.containers_dir().to_path_buf())
        .find(&args.container)?;
    let record = &container.record;
    let base = store
        .find_image(&record.image_id)
        .with_context(|| format!("the image of container {} is gone", record.name))?;
    let lease = store.lease()?;
    // The overlay upper directory: changed files plus whiteouts for deletions.
    let layer = store
        .layer_from_dir(
            &container.dir.join("upper"),
            &lease,
            &DiffOptions {
                compression: Compression::None,
                source_date_epoch: None,
            },
        )
        .with_context(|| format!("reading the changes of container {}", record.name))?;
    let mut config: ImageConfiguration = base.config.clone();
    let mut rootfs = config.rootfs().clone();
    let mut diff_ids = rootfs.diff_ids().clone();
    diff_ids.push(layer.diff_id.to_string());
    rootfs.set_diff_ids(diff_ids);
    config.set_rootfs(rootfs);
    let created = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
    let mut history = config.history().clone().unwrap_or_default();
    history.push(
        HistoryBuilder::default()
            .created(created.clone())
            .created_by(record.command().join(" "))
            .comment(args.message.clone().unwrap_or_default())
            .build()
            .expect("a history entry builds"),
    );
    config.set_history(Some(history));
    config.set_created(Some(created));
    let mut layers = base.manifest.layers().clone();
    layers.push(layer.descriptor);
    let target = store.commit_image(&config, &layers, &lease)?;
    match &name {
        Some(name) => store.set_name(name, &target)?,
        None => store.keep_untagged(&target)?,
    }
    let id = kiln_store::Digest::of(&serde_json::to_vec(&config)?);
    println!("{id}");
    Ok(ExitStatus::SUCCESS)
}
