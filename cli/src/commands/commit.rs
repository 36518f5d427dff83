//! `kiln commit`: a container's writable layer on top of its image becomes
//! a new image.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::Args;
use kiln_runner::oci_spec::image::{HistoryBuilder, ImageConfiguration};
use kiln_store::layer::{Compression, DiffOptions};
use kiln_store::Store;

use crate::ExitStatus;

/// What of the upper directory `upper` exists only as a mount point of the
/// container's network files, relative to `upper`: each of /etc/hosts,
/// /etc/resolv.conf and /etc/hostname the container gets bind-mounted
/// (`mounted`) that is an empty file in the upper directory (what the container wrote
/// went to the mounted file), and etc/ itself when nothing else of it
/// changed. As with docker's init layer, a commit leaves them out; the
/// image's own files are never in the upper directory for these paths.
pub(crate) fn mount_stubs(upper: &Path, mounted: &[&str]) -> Vec<PathBuf> {
    let mut stubs: Vec<PathBuf> = mounted
        .iter()
        .map(PathBuf::from)
        .filter(|rel| {
            std::fs::symlink_metadata(upper.join(rel)).is_ok_and(|m| m.is_file() && m.len() == 0)
        })
        .collect();
    if stubs.is_empty() {
        return stubs;
    }
    let etc = upper.join("etc");
    let only_stubs = std::fs::read_dir(&etc).is_ok_and(|entries| {
        entries
            .flatten()
            .all(|e| stubs.contains(&Path::new("etc").join(e.file_name())))
    });
    // An opaque etc/ (the container replaced the whole directory) stays.
    let opaque = ["trusted.overlay.opaque", "user.overlay.opaque"]
        .iter()
        .any(|name| matches!(xattr::get(&etc, name), Ok(Some(v)) if v == b"y"));
    if only_stubs && !opaque {
        stubs.push(PathBuf::from("etc"));
    }
    stubs
}

// Arguments of `kiln commit`.
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
    let upper = container.dir.join("upper");
    let stubs = mount_stubs(&upper, crate::containers::net::mounted_files(&record.net));
    let exclude: Vec<&Path> = stubs.iter().map(PathBuf::as_path).collect();
    let layer = store
        .layer_from_dir_excluding(
            &upper,
            &lease,
            &DiffOptions {
                compression: Compression::None,
                source_date_epoch: None,
            },
            &exclude,
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
