//! `kiln export`: a container's file system (its image with the
//! container's changes; no volumes or other mounts) as one tar, as
//! `docker export` writes it. `kiln diff`: what the container changed in
//! its image, as `docker diff` lists it.

use std::io::{IsTerminal, Write};
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Args;
use kiln_runner::overlay::OverlayMount;
use kiln_store::layer::DiffOptions;

use crate::containers::Container;
use crate::ExitStatus;

// Arguments of `kiln export`.
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// Write to this file (default: standard output).
    #[arg(short, long)]
    pub output: Option<PathBuf>,
    /// Container: name or id.
    pub container: String,
}

// Arguments of `kiln diff`.
#[derive(Debug, Args)]
pub struct DiffArgs {
    /// Container: name or id.
    pub container: String,
}

/// A read-only view mounted in a mount namespace of this process alone:
/// nothing shows on the host, and it goes away with this process whatever
/// happens to it.
struct View {
    root: PathBuf,
    _mount: Option<OverlayMount>,
}

/// Stacks `lowers` (topmost first) read-only on `target`, in a private
/// mount namespace; one layer is used as it is, none gives no view.
fn view(lowers: &[PathBuf], target: &Path) -> Result<Option<View>> {
    match lowers {
        [] => Ok(None),
        [only] => Ok(Some(View {
            root: only.clone(),
            _mount: None,
        })),
        _ => {
            crate::containers::private_mount_namespace()?;
            let mount = OverlayMount::mount(lowers, None, target)?;
            Ok(Some(View {
                root: target.to_path_buf(),
                _mount: Some(mount),
            }))
        }
    }
}

fn find(root: &Path, given: &str) -> Result<Container> {
    super::run::containers_of(root).find(given)
}

pub fn export(root: &Path, args: &ExportArgs) -> Result<ExitStatus> {
    if args.output.is_none() && std::io::stdout().is_terminal() {
        bail!("refusing to write a tar to a terminal: use -o FILE or redirect the output");
    }
    let container = find(root, &args.container)?;
    // The changes over the image's layers, as one read-only stack: the same
    // tree for a running container and a stopped one, without its mounts.
    let mut lowers = vec![container.dir.join("upper")];
    lowers.extend(container.record.lowers.iter().rev().cloned());
    let view = view(&lowers, &container.rootfs())
        .with_context(|| format!("mounting the file system of container {}", args.container))?
        .expect("the upper directory is always there");
    let write = |out: &mut dyn Write| -> Result<()> {
        kiln_store::layer::diff(&view.root, &mut *out, &DiffOptions::default())
            .with_context(|| format!("reading the file system of container {}", args.container))?;
        Ok(())
    };
    match &args.output {
        Some(path) => super::build_output::write_atomic(path, write)?,
        None => {
            let stdout = std::io::stdout();
            let mut out = std::io::BufWriter::with_capacity(1 << 20, stdout.lock());
            write(&mut out)?;
            out.flush().context("writing to stdout")?;
        }
    }
    Ok(ExitStatus::SUCCESS)
}

/// One line of `kiln diff`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Change {
    path: String,
    kind: char,
}

pub fn diff(root: &Path, args: &DiffArgs) -> Result<ExitStatus> {
    let container = find(root, &args.container)?;
    let upper = container.dir.join("upper");
    let lowers: Vec<PathBuf> = container.record.lowers.iter().rev().cloned().collect();
    let image = view(&lowers, &container.rootfs())
        .with_context(|| format!("mounting the image of container {}", args.container))?;
    let stubs = super::commit::mount_stubs(
        &upper,
        crate::containers::net::mounted_files(&container.record.net),
    );
    let changes = changes(&upper, image.as_ref().map(|v| v.root.as_path()), &stubs)
        .with_context(|| format!("reading the changes of container {}", args.container))?;
    let mut out = std::io::stdout().lock();
    for c in changes {
        writeln!(out, "{} {}", c.kind, c.path)?;
    }
    Ok(ExitStatus::SUCCESS)
}

/// What the overlay upper directory `upper` changed over the image tree
/// `image`: `A` added, `C` changed (a directory: something in it
/// changed), `D` deleted (a whiteout, or what an opaque directory hides).
/// The network-file mount points in `stubs` are left out, as docker's init
/// layer keeps them out of `docker diff`.
fn changes(upper: &Path, image: Option<&Path>, stubs: &[PathBuf]) -> Result<Vec<Change>> {
    let in_image = |rel: &Path| image.is_some_and(|i| i.join(rel).symlink_metadata().is_ok());
    let mut out = Vec::new();
    let walk = walkdir::WalkDir::new(upper)
        .min_depth(1)
        .follow_links(false);
    for entry in walk {
        let entry = entry.with_context(|| format!("reading {}", upper.display()))?;
        let rel = entry.path().strip_prefix(upper).expect("under upper");
        if stubs.iter().any(|s| s == rel) {
            continue;
        }
        let path = format!("/{}", rel.display());
        let kind = entry.file_type();
        if kind.is_char_device() {
            use std::os::unix::fs::MetadataExt;
            let meta = entry.metadata()?;
            if meta.rdev() == 0 {
                out.push(Change { path, kind: 'D' });
                continue;
            }
        }
        out.push(Change {
            path: path.clone(),
            kind: if in_image(rel) { 'C' } else { 'A' },
        });
        if kind.is_dir() && is_opaque(entry.path()) {
            // What the image had here and the container did not make again.
            if let Some(dir) = image.map(|i| i.join(rel)).filter(|d| d.is_dir()) {
                for hidden in std::fs::read_dir(&dir)
                    .with_context(|| format!("reading {}", dir.display()))?
                    .flatten()
                {
                    let name = hidden.file_name();
                    if entry.path().join(&name).symlink_metadata().is_err() {
                        let gone = rel.join(&name);
                        out.push(Change {
                            path: format!("/{}", gone.display()),
                            kind: 'D',
                        });
                    }
                }
            }
        }
    }
    out.sort();
    Ok(out)
}

fn is_opaque(dir: &Path) -> bool {
    ["trusted.overlay.opaque", "user.overlay.opaque"]
        .iter()
        .any(|name| matches!(xattr::get(dir, name), Ok(Some(v)) if v == b"y"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_added_changed_and_deleted_paths() {
        let image = tempfile::tempdir().unwrap();
        let upper = tempfile::tempdir().unwrap();
        let (i, u) = (image.path(), upper.path());
        for d in ["etc", "bin", "tmp"] {
            std::fs::create_dir(i.join(d)).unwrap();
        }
        std::fs::write(i.join("etc/passwd"), "root\n").unwrap();
        std::fs::write(i.join("bin/ls"), "").unwrap();
        std::fs::create_dir_all(u.join("etc")).unwrap();
        std::fs::write(u.join("etc/passwd"), "root\nme\n").unwrap();
        std::fs::write(u.join("etc/hosts"), "").unwrap();
        std::fs::create_dir_all(u.join("tmp/new")).unwrap();
        std::fs::write(u.join("tmp/new/f"), "f").unwrap();
        std::fs::create_dir(u.join("bin")).unwrap();
        nix::sys::stat::mknod(
            &u.join("bin/ls"),
            nix::sys::stat::SFlag::S_IFCHR,
            nix::sys::stat::Mode::empty(),
            0,
        )
        .unwrap();
        let got: Vec<String> = changes(u, Some(i), &[PathBuf::from("etc/hosts")])
            .unwrap()
            .into_iter()
            .map(|c| format!("{} {}", c.kind, c.path))
            .collect();
        assert_eq!(
            got,
            [
                "C /bin",
                "D /bin/ls",
                "C /etc",
                "C /etc/passwd",
                "C /tmp",
                "A /tmp/new",
                "A /tmp/new/f"
            ]
        );
    }
}
