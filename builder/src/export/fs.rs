//! The final file system of a build, written out as BuildKit's `local`
//! and `tar` exporters do: a directory, or one tar stream. Both read a
//! merged (read-only) view of the layer stack, so deleted files are gone
//! and only the last version of each path is written.

use std::collections::HashMap;
use std::io::Write;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use kiln_store::{CachedLayer, Lease, Store};

use crate::solve::rootfs::View;
use crate::solve::SolveError;

/// Extended attributes of `path` (not of a symlink's target), without
/// overlayfs' own.
fn xattrs(path: &Path) -> Result<Vec<(std::ffi::OsString, Vec<u8>)>, SolveError> {
    let names = match xattr::list(path) {
        Ok(names) => names,
        // A file system without xattrs has none to copy.
        Err(e) if e.raw_os_error() == Some(nix::libc::ENOTSUP) => return Ok(Vec::new()),
        Err(e) => return Err(SolveError::io("list xattrs of", path)(e)),
    };
    let mut out = Vec::new();
    for name in names {
        if name.to_string_lossy().starts_with("trusted.overlay.") {
            continue;
        }
        let value = xattr::get(path, &name).map_err(SolveError::io("read xattr of", path))?;
        if let Some(value) = value {
            out.push((name, value));
        }
    }
    Ok(out)
}

/// Entries of the tree under `root`, parents before children, sorted by
/// name (a deterministic order), without `root` itself.
fn entries(root: &Path) -> Result<Vec<walkdir::DirEntry>, SolveError> {
    walkdir::WalkDir::new(root)
        .min_depth(1)
        .follow_links(false)
        .sort_by_file_name()
        .into_iter()
        .map(|e| {
            e.map_err(|e| {
                let path = e.path().unwrap_or(root).to_path_buf();
                let source = e
                    .into_io_error()
                    .unwrap_or_else(|| std::io::Error::other("file system loop"));
                SolveError::io("read", &path)(source)
            })
        })
        .collect()
}

/// Writes the file system of `layers` into the directory `dest` (created
/// when missing; files already there are overwritten, others kept):
/// files, directories, symlinks, hard links, devices and fifos with their
/// modes and times, and owners when running as root.
pub fn write_dir(
    store: &Store,
    lease: &Lease,
    layers: &[CachedLayer],
    dest: &Path,
) -> Result<(), SolveError> {
    let view = View::open(store, lease, layers)?;
    let root = view.root();
    std::fs::create_dir_all(dest).map_err(SolveError::io("create directory", dest))?;
    let as_root = nix::unistd::geteuid().is_root();
    let mut links: HashMap<(u64, u64), PathBuf> = HashMap::new();
    // Directory modes and times are set last: writing their contents
    // would change the times, and a read-only mode would stop the writes.
    let mut dirs: Vec<(PathBuf, std::fs::Metadata, PathBuf)> = Vec::new();
    for entry in entries(root)? {
        let rel = entry.path().strip_prefix(root).expect("under the root");
        let target = dest.join(rel);
        let meta = entry
            .path()
            .symlink_metadata()
            .map_err(SolveError::io("stat", entry.path()))?;
        let kind = meta.file_type();
        // Something of another kind in the way is replaced.
        if let Ok(existing) = target.symlink_metadata() {
            let same_dir = existing.is_dir() && kind.is_dir();
            if !same_dir {
                let removed = if existing.is_dir() {
                    std::fs::remove_dir_all(&target)
                } else {
                    std::fs::remove_file(&target)
                };
                removed.map_err(SolveError::io("replace", &target))?;
            }
        }
        if kind.is_dir() {
            if !target.is_dir() {
                std::fs::create_dir(&target)
                    .map_err(SolveError::io("create directory", &target))?;
            }
            // Writable for the owner until the contents are in.
            std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o755))
                .map_err(SolveError::io("chmod", &target))?;
            dirs.push((target, meta, entry.path().to_path_buf()));
            continue;
        }
        if kind.is_file() && meta.nlink() > 1 {
            if let Some(first) = links.get(&(meta.dev(), meta.ino())) {
                std::fs::hard_link(first, &target).map_err(SolveError::io("link", &target))?;
                continue;
            }
            links.insert((meta.dev(), meta.ino()), target.clone());
        }
        if kind.is_symlink() {
            let to = std::fs::read_link(entry.path())
                .map_err(SolveError::io("readlink", entry.path()))?;
            std::os::unix::fs::symlink(&to, &target).map_err(SolveError::io("symlink", &target))?;
        } else if kind.is_file() {
            std::fs::copy(entry.path(), &target).map_err(SolveError::io("copy", &target))?;
        } else if kind.is_fifo() || kind.is_char_device() || kind.is_block_device() {
            use nix::sys::stat::{mknod, Mode, SFlag};
            let flag = if kind.is_fifo() {
                SFlag::S_IFIFO
            } else if kind.is_char_device() {
                SFlag::S_IFCHR
            } else {
                SFlag::S_IFBLK
            };
            mknod(
                &target,
                flag,
                Mode::from_bits_truncate(meta.mode() & 0o7777),
                meta.rdev(),
            )
            .map_err(|e| SolveError::io("mknod", &target)(e.into()))?;
        } else {
            // Sockets are not part of an image.
            continue;
        }
        set_attributes(&target, &meta, as_root, entry.path())?;
    }
    for (dir, meta, source) in dirs.iter().rev() {
        set_attributes(dir, meta, as_root, source)?;
    }
    Ok(())
}

/// Owner (as root), mode (not for symlinks), extended attributes (of
/// `source`, as root) and times of `path` from `meta`.
fn set_attributes(
    path: &Path,
    meta: &std::fs::Metadata,
    as_root: bool,
    source: &Path,
) -> Result<(), SolveError> {
    let symlink = meta.file_type().is_symlink();
    if as_root {
        std::os::unix::fs::lchown(path, Some(meta.uid()), Some(meta.gid()))
            .map_err(SolveError::io("chown", path))?;
    }
    if !symlink {
        // After chown, which clears setuid and setgid bits.
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(meta.mode() & 0o7777))
            .map_err(SolveError::io("chmod", path))?;
        // After chown and chmod, which clear `security.capability`.
        if as_root {
            for (name, value) in xattrs(source)? {
                xattr::set(path, &name, &value).map_err(SolveError::io("set xattr of", path))?;
            }
        }
    }
    let mtime = filetime::FileTime::from_last_modification_time(meta);
    let atime = filetime::FileTime::from_last_access_time(meta);
    filetime::set_symlink_file_times(path, atime, mtime)
        .map_err(SolveError::io("set times of", path))
}

/// Writes the file system of `layers` as one tar stream to `out` (names
/// relative, no leading `./`; owners, modes and times kept; hard links as
/// link entries).
pub fn write_tar(
    store: &Store,
    lease: &Lease,
    layers: &[CachedLayer],
    out: impl Write,
) -> Result<(), SolveError> {
    let view = View::open(store, lease, layers)?;
    let root = view.root();
    let mut tar = tar::Builder::new(out);
    let mut links: HashMap<(u64, u64), PathBuf> = HashMap::new();
    let write_err = |e: std::io::Error| SolveError::io("write", Path::new("the tar output"))(e);
    for entry in entries(root)? {
        let rel = entry.path().strip_prefix(root).expect("under the root");
        let meta = entry
            .path()
            .symlink_metadata()
            .map_err(SolveError::io("stat", entry.path()))?;
        let kind = meta.file_type();
        if kind.is_socket() {
            continue;
        }
        let mut header = tar::Header::new_gnu();
        header.set_metadata_in_mode(&meta, tar::HeaderMode::Complete);
        // A directory's name ends in `/`, as in BuildKit's tar output.
        let mut name = rel.to_path_buf().into_os_string();
        if kind.is_dir() {
            name.push("/");
        }
        if kind.is_file() && meta.nlink() > 1 {
            if let Some(first) = links.get(&(meta.dev(), meta.ino())) {
                header.set_entry_type(tar::EntryType::Link);
                header.set_size(0);
                tar.append_link(&mut header, &name, first)
                    .map_err(write_err)?;
                continue;
            }
            links.insert((meta.dev(), meta.ino()), rel.to_path_buf());
        }
        if !kind.is_symlink() {
            let attrs = xattrs(entry.path())?;
            let records: Vec<(String, &[u8])> = attrs
                .iter()
                .map(|(k, v)| {
                    (
                        format!("SCHILY.xattr.{}", k.to_string_lossy()),
                        v.as_slice(),
                    )
                })
                .collect();
            tar.append_pax_extensions(records.iter().map(|(k, v)| (k.as_str(), *v)))
                .map_err(write_err)?;
        }
        if kind.is_symlink() {
            let to = std::fs::read_link(entry.path())
                .map_err(SolveError::io("readlink", entry.path()))?;
            header.set_size(0);
            tar.append_link(&mut header, &name, &to)
                .map_err(write_err)?;
        } else if kind.is_file() {
            let file =
                std::fs::File::open(entry.path()).map_err(SolveError::io("open", entry.path()))?;
            tar.append_data(&mut header, &name, file)
                .map_err(write_err)?;
        } else {
            header.set_size(0);
            tar.append_data(&mut header, &name, std::io::empty())
                .map_err(write_err)?;
        }
    }
    let mut out = tar.into_inner().map_err(write_err)?;
    out.flush().map_err(write_err)
}
