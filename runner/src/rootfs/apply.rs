//! Performing a mount plan inside the container's new mount namespace. Runs
//! only in the re-executed init (single-threaded, before the user's program).

use std::path::{Component, Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sys::stat::{makedev, mknod, Mode, SFlag};
use nix::unistd::{chdir, chown, pivot_root, Gid, Uid};

use super::{DeviceKind, MountOp};
use crate::protocol::Failure;

const NONE: Option<&str> = None;

/// Performs the steps of `ops` up to and including the pivot into `rootfs`.
/// Returns the index of the first step after the pivot.
pub(crate) fn apply_before_pivot(rootfs: &Path, ops: &[MountOp]) -> Result<usize, Failure> {
    let mut links = Links::default();
    for (i, op) in ops.iter().enumerate() {
        match op {
            MountOp::PivotRoot => {
                pivot(rootfs)?;
                return Ok(i + 1);
            }
            op => apply_one(rootfs, op, &mut links)?,
        }
    }
    Ok(ops.len())
}

/// Performs the steps after the pivot, with container paths as they are.
pub(crate) fn apply_after_pivot(ops: &[MountOp]) -> Result<(), Failure> {
    let mut links = Links::default();
    for op in ops {
        apply_one(Path::new("/"), op, &mut links)?;
    }
    Ok(())
}

/// Binds the pty slave at `slave` (a container path) onto /dev/console.
pub(crate) fn bind_console(slave: &Path) -> Result<(), Failure> {
    let console = Path::new("/dev/console");
    if std::fs::symlink_metadata(console).is_err() {
        std::fs::File::create(console).map_err(|e| Failure::io("create /dev/console", &e))?;
    }
    mount(Some(slave), console, NONE, MsFlags::MS_BIND, NONE)
        .map_err(|e| Failure::sys("bind /dev/console", e))
}

/// What readlink(2) said of host paths while a plan is applied, so that
/// paths sharing a prefix (`/sys/fs/cgroup/*`, `/dev/*`) are resolved with
/// one system call per component, not one per mount. A mount invalidates
/// what lies below its target; a symbolic link, its own path.
#[derive(Debug, Default)]
pub(crate) struct Links {
    seen: std::collections::HashMap<PathBuf, Option<PathBuf>>,
}

impl Links {
    fn read(&mut self, path: &Path) -> Option<PathBuf> {
        if let Some(known) = self.seen.get(path) {
            return known.clone();
        }
        let link = std::fs::read_link(path).ok();
        self.seen.insert(path.to_path_buf(), link.clone());
        link
    }

    /// Something was mounted at `path`: what lay below it is hidden.
    fn mounted(&mut self, path: &Path) {
        self.seen.retain(|p, _| p == path || !p.starts_with(path));
    }

    /// `path` itself changed (a new link or node).
    fn changed(&mut self, path: &Path) {
        self.seen.retain(|p, _| !p.starts_with(path));
    }
}

/// mkdir that succeeds when `path` exists (the mount on it fails with a
/// clear error when it is no directory), and makes missing parents.
fn ensure_dir(path: &Path) -> std::io::Result<()> {
    match std::fs::create_dir(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => std::fs::create_dir_all(path),
        Err(e) => Err(e),
    }
}

fn apply_one(root: &Path, op: &MountOp, links: &mut Links) -> Result<(), Failure> {
    match op {
        MountOp::RootPropagation { flags } => {
            mount(NONE, "/", NONE, MsFlags::from_bits_truncate(*flags), NONE)
                .map_err(|e| Failure::sys("set propagation of /", e))
        }
        MountOp::BindRootfs => {
            links.mounted(root);
            mount(
                Some(root),
                root,
                NONE,
                MsFlags::MS_BIND | MsFlags::MS_REC,
                NONE,
            )
            .map_err(|e| Failure::sys(format!("bind rootfs {}", root.display()), e))
        }
        MountOp::Mount {
            source,
            target,
            fstype,
            flags,
            data,
            is_file,
        } => {
            let flags = MsFlags::from_bits_truncate(*flags);
            let path = resolve_in_root_with(root, target, links)?;
            let remount = flags.contains(MsFlags::MS_REMOUNT);
            if !remount {
                let want_file = *is_file || (flags.contains(MsFlags::MS_BIND) && !source.is_dir());
                create_target(&path, want_file)?;
                links.mounted(&path);
            }
            let fstype = (!fstype.is_empty()).then_some(fstype.as_str());
            let data = (!data.is_empty()).then_some(data.as_str());
            mount(Some(source.as_path()), &path, fstype, flags, data).map_err(|e| {
                Failure::sys(
                    format!("mount {} on {}", source.display(), target.display()),
                    e,
                )
            })
        }
        MountOp::RemountBind { target, flags } => {
            let path = resolve_in_root_with(root, target, links)?;
            let flags =
                MsFlags::from_bits_truncate(*flags) | MsFlags::MS_BIND | MsFlags::MS_REMOUNT;
            mount(NONE, &path, NONE, flags, NONE)
                .map_err(|e| Failure::sys(format!("remount {}", target.display()), e))
        }
        MountOp::Propagation { target, flags } => {
            let path = resolve_in_root_with(root, target, links)?;
            mount(NONE, &path, NONE, MsFlags::from_bits_truncate(*flags), NONE)
                .map_err(|e| Failure::sys(format!("set propagation of {}", target.display()), e))
        }
        MountOp::Mknod {
            target,
            kind,
            major,
            minor,
            mode,
            uid,
            gid,
        } => {
            let path = resolve_in_root_with(root, target, links)?;
            if let Some(parent) = path.parent() {
                ensure_dir(parent)
                    .map_err(|e| Failure::io(format!("create {}", parent.display()), &e))?;
            }
            links.changed(&path);
            let sflag = match kind {
                DeviceKind::Char => SFlag::S_IFCHR,
                DeviceKind::Block => SFlag::S_IFBLK,
                DeviceKind::Fifo => SFlag::S_IFIFO,
            };
            match mknod(
                &path,
                sflag,
                Mode::from_bits_truncate(*mode),
                makedev(*major, *minor),
            ) {
                Ok(()) | Err(nix::errno::Errno::EEXIST) => {}
                Err(e) => return Err(Failure::sys(format!("mknod {}", target.display()), e)),
            }
            if *uid != 0 || *gid != 0 {
                chown(&path, Some(Uid::from_raw(*uid)), Some(Gid::from_raw(*gid)))
                    .map_err(|e| Failure::sys(format!("chown {}", target.display()), e))?;
            }
            Ok(())
        }
        MountOp::Symlink { target, points_to } => {
            let parent = target.parent().unwrap_or(Path::new("/"));
            let dir = resolve_in_root_with(root, parent, links)?;
            let path = dir.join(target.file_name().unwrap_or_default());
            links.changed(&path);
            match std::os::unix::fs::symlink(points_to, &path) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
                Err(e) => Err(Failure::io(format!("symlink {}", target.display()), &e)),
            }
        }
        MountOp::PivotRoot => pivot(root),
        MountOp::Mask { target } => match std::fs::metadata(target) {
            Err(_) => Ok(()),
            Ok(meta) if meta.is_dir() => mount(
                Some("tmpfs"),
                target,
                Some("tmpfs"),
                MsFlags::MS_RDONLY,
                NONE,
            )
            .map_err(|e| Failure::sys(format!("mask {}", target.display()), e)),
            Ok(_) => mount(Some("/dev/null"), target, NONE, MsFlags::MS_BIND, NONE)
                .map_err(|e| Failure::sys(format!("mask {}", target.display()), e)),
        },
        MountOp::Readonly { target } => {
            if std::fs::symlink_metadata(target).is_err() {
                return Ok(());
            }
            mount(
                Some(target.as_path()),
                target,
                NONE,
                MsFlags::MS_BIND | MsFlags::MS_REC,
                NONE,
            )
            .map_err(|e| Failure::sys(format!("bind {} read-only", target.display()), e))?;
            let flags = MsFlags::MS_BIND
                | MsFlags::MS_REMOUNT
                | MsFlags::MS_RDONLY
                | MsFlags::MS_NOSUID
                | MsFlags::MS_NODEV
                | MsFlags::MS_NOEXEC;
            mount(NONE, target, NONE, flags, NONE)
                .map_err(|e| Failure::sys(format!("remount {} read-only", target.display()), e))
        }
        MountOp::RootReadonly => {
            let flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY;
            mount(NONE, "/", NONE, flags, NONE).map_err(|e| Failure::sys("remount / read-only", e))
        }
    }
}

/// pivot_root(2) with the old root stacked under the new one, then detached:
/// no temporary directory is needed in the rootfs.
fn pivot(rootfs: &Path) -> Result<(), Failure> {
    chdir(rootfs).map_err(|e| Failure::sys(format!("chdir {}", rootfs.display()), e))?;
    pivot_root(".", ".").map_err(|e| Failure::sys("pivot_root", e))?;
    // The old root now sits on top; keep its unmount from propagating anywhere.
    mount(NONE, ".", NONE, MsFlags::MS_SLAVE | MsFlags::MS_REC, NONE)
        .map_err(|e| Failure::sys("make old root slave", e))?;
    umount2(".", MntFlags::MNT_DETACH).map_err(|e| Failure::sys("detach old root", e))?;
    chdir("/").map_err(|e| Failure::sys("chdir /", e))
}

fn create_target(path: &Path, is_file: bool) -> Result<(), Failure> {
    if is_file {
        if let Some(parent) = path.parent() {
            ensure_dir(parent)
                .map_err(|e| Failure::io(format!("create {}", parent.display()), &e))?;
        }
        if std::fs::symlink_metadata(path).is_err() {
            std::fs::File::create(path)
                .map_err(|e| Failure::io(format!("create {}", path.display()), &e))?;
        }
        Ok(())
    } else {
        ensure_dir(path).map_err(|e| Failure::io(format!("create {}", path.display()), &e))
    }
}

/// [`resolve_in_root_with`] without what readlink(2) said before.
#[cfg(test)]
pub(crate) fn resolve_in_root(root: &Path, path: &Path) -> Result<PathBuf, Failure> {
    resolve_in_root_with(root, path, &mut Links::default())
}

/// Resolves container path `path` under `root`, following symbolic links as
/// if `root` were `/`, so a link in the image cannot point a mount outside
/// the rootfs. Missing components are kept as they are (they get created).
fn resolve_in_root_with(root: &Path, path: &Path, links: &mut Links) -> Result<PathBuf, Failure> {
    if root == Path::new("/") {
        return Ok(path.to_path_buf());
    }
    let mut pending: Vec<std::ffi::OsString> = path
        .components()
        .rev()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_os_string()),
            Component::ParentDir => Some("..".into()),
            _ => None,
        })
        .collect();
    let mut resolved: Vec<std::ffi::OsString> = Vec::new();
    let mut hops = 0;
    while let Some(name) = pending.pop() {
        if name == ".." {
            resolved.pop();
            continue;
        }
        let mut candidate = root.to_path_buf();
        candidate.extend(&resolved);
        candidate.push(&name);
        match links.read(&candidate).ok_or(()) {
            Ok(link) => {
                hops += 1;
                if hops > 40 {
                    return Err(Failure::plain(
                        format!("resolve {}", path.display()),
                        "too many symbolic links",
                    ));
                }
                if link.is_absolute() {
                    resolved.clear();
                }
                for c in link.components().rev() {
                    match c {
                        Component::Normal(n) => pending.push(n.to_os_string()),
                        Component::ParentDir => pending.push("..".into()),
                        _ => {}
                    }
                }
            }
            Err(_) => resolved.push(name),
        }
    }
    let mut out = root.to_path_buf();
    out.extend(resolved);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symlinks_resolve_inside_root() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("real/dir")).unwrap();
        std::os::unix::fs::symlink("/real", root.join("abs")).unwrap();
        std::os::unix::fs::symlink("../../../../etc", root.join("real/escape")).unwrap();
        assert_eq!(
            resolve_in_root(root, Path::new("/abs/dir")).unwrap(),
            root.join("real/dir")
        );
        assert_eq!(
            resolve_in_root(root, Path::new("/real/escape/x")).unwrap(),
            root.join("etc/x")
        );
        assert_eq!(
            resolve_in_root(root, Path::new("/new/path")).unwrap(),
            root.join("new/path")
        );
    }
}
