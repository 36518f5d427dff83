//! `kiln cp`: copy files between a container and the host, or a tar stream
//! (`-`) on stdin/stdout. Works on running containers (through the
//! container's own root, so its volumes are seen) and on stopped ones (their
//! layers and volumes mounted in a private mount namespace of this process).

use std::path::Path;

use anyhow::{bail, Context, Result};
use clap::Args;
use kiln_runner::overlay::{OverlayMount, Writable};

use crate::containers::copy::{self, Owner, Root};
use crate::containers::Container;
use crate::ExitStatus;

// Arguments of `kiln cp`.
#[derive(Debug, Args)]
pub struct CpArgs {
    /// Archive mode: keep the uid and gid of the source.
    #[arg(short, long)]
    pub archive: bool,
    /// Follow a symlink given as the source.
    #[arg(short = 'L', long)]
    pub follow_link: bool,
    /// CONTAINER:SRC_PATH, a host path, or - for a tar stream on stdin.
    pub source: String,
    /// CONTAINER:DEST_PATH, a host path, or - for a tar stream on stdout.
    pub destination: String,
}

/// One side of a copy.
enum Side<'a> {
    Container(&'a str, &'a str),
    Host(&'a str),
    Stream,
}

/// docker's split: `-` is a stream; a path starting with `/` or `.` (or
/// without a colon) is on the host; else `NAME:PATH`.
fn side(text: &str) -> Result<Side<'_>> {
    if text == "-" {
        return Ok(Side::Stream);
    }
    if text.starts_with('/') || text.starts_with('.') {
        return Ok(Side::Host(text));
    }
    match text.split_once(':') {
        Some(("", _)) => bail!("invalid path {text:?}: empty container name"),
        Some((name, path)) => {
            if path.is_empty() {
                bail!("invalid path {text:?}: no path after the container name");
            }
            Ok(Side::Container(name, path))
        }
        None => Ok(Side::Host(text)),
    }
}

/// The root of a container, and the mount that keeps a stopped one's
/// filesystem up while it is used.
struct ContainerRoot {
    root: Root,
    _mount: Option<OverlayMount>,
}

fn open_container(root: &Path, given: &str) -> Result<ContainerRoot> {
    let containers = super::run::containers_of(root);
    let container = containers.find(given)?;
    let state = container.state()?.effective();
    if state.is_alive() {
        // The container's root as its first process sees it: with its
        // volumes and other mounts.
        let proc_root = format!("/proc/{}/root", state.pid);
        return Ok(ContainerRoot {
            root: Root::open(Path::new(&proc_root))
                .with_context(|| format!("opening the root of container {given}"))?,
            _mount: None,
        });
    }
    mount_stopped(&container)
        .with_context(|| format!("mounting the filesystem of container {given}"))
}

/// Mounts a stopped container's layers on its rootfs directory, and its
/// volumes and bind mounts on top, in a mount namespace of this process
/// alone: nothing shows on the host, and the mounts go away with this
/// process whatever happens to it.
fn mount_stopped(container: &Container) -> Result<ContainerRoot> {
    use nix::mount::MsFlags;
    crate::containers::private_mount_namespace()?;
    let lowers: Vec<_> = container.record.lowers.iter().rev().cloned().collect();
    let upper = container.dir.join("upper");
    let work = container.dir.join("work");
    let target = container.rootfs();
    let mount = OverlayMount::mount(
        &lowers,
        Some(Writable {
            upper: &upper,
            work: &work,
            volatile: false,
        }),
        &target,
    )?;
    let root = Root::open(&target)?;
    // Its volumes and bind mounts too, as the running container sees them.
    // Each target is looked up inside the root and mounted on through its
    // descriptor, so a symlink in the image cannot send the mount elsewhere.
    for m in container.record.spec.mounts().iter().flatten() {
        let Some(source) = m.source() else { continue };
        if m.typ().as_deref() != Some("bind") || !source.is_dir() {
            continue;
        }
        let Some(fd) = root.open_dir(m.destination())? else {
            continue;
        };
        let through = format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&fd));
        nix::mount::mount(
            Some(source.as_path()),
            through.as_str(),
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None::<&str>,
        )
        .with_context(|| format!("mounting {} for the copy", m.destination().display()))?;
    }
    Ok(ContainerRoot {
        root,
        _mount: Some(mount),
    })
}

pub fn run(root: &Path, args: &CpArgs) -> Result<ExitStatus> {
    let follow = args.follow_link;
    let to_container_owner = if args.archive {
        Owner::Keep
    } else {
        Owner::Fixed(0, 0)
    };
    let to_host_owner = if args.archive {
        Owner::Keep
    } else {
        Owner::Fixed(
            nix::unistd::getuid().as_raw(),
            nix::unistd::getgid().as_raw(),
        )
    };
    match (side(&args.source)?, side(&args.destination)?) {
        (Side::Container(name, src), Side::Host(dest)) => {
            let from = open_container(root, name)?;
            let (to, dest) = copy::host(dest)?;
            copy::copy(from.root, src, follow, to, &dest, to_host_owner)
                .with_context(|| format!("copying {name}:{src} to {}", args.destination))?;
        }
        (Side::Host(src), Side::Container(name, dest)) => {
            let to = open_container(root, name)?;
            let (from, src) = copy::host(src)?;
            copy::copy(from, &src, follow, to.root, dest, to_container_owner)
                .with_context(|| format!("copying {} to {name}:{dest}", args.source))?;
        }
        (Side::Container(name, src), Side::Stream) => {
            let from = open_container(root, name)?;
            let stdout = std::io::stdout().lock();
            copy::copy_to_stream(&from.root, src, follow, stdout)
                .with_context(|| format!("copying {name}:{src} to stdout"))?;
        }
        (Side::Stream, Side::Container(name, dest)) => {
            let to = open_container(root, name)?;
            let stdin = std::io::stdin().lock();
            copy::copy_from_stream(&to.root, dest, stdin, to_container_owner)
                .with_context(|| format!("copying stdin to {name}:{dest}"))?;
        }
        (Side::Container(..), Side::Container(..)) => {
            bail!("copying between containers is not supported")
        }
        (Side::Stream, Side::Stream) => bail!("source and destination cannot both be -"),
        _ => bail!(
            "one of {} and {} must be CONTAINER:PATH",
            args.source,
            args.destination
        ),
    }
    Ok(ExitStatus::SUCCESS)
}
