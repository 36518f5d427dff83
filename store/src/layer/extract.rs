//! The file system half of an apply: every call that creates, replaces or
//! changes a file in the destination. It runs on its own thread and takes
//! parsed members from the reading half (apply.rs) in tar order.
//!
//! Nothing is written outside the destination: each parent of a member is
//! checked with lstat(2) to be a real directory, never a symlink, and the
//! last component is always created fresh (`O_CREAT|O_EXCL`, `mknod`,
//! `symlink`, `link`), which never follows a symlink. The destination is a
//! fresh private directory, so no other process races these checks.

use std::collections::HashSet;
use std::fs::{self, Metadata};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::mpsc::Receiver;

use filetime::FileTime;
use nix::sys::stat::{mknod, Mode, SFlag};

use crate::layer::apply::{ApplyStats, Kind, Meta, Node, Op};
use crate::{Error, Result};

/// xattr that marks an overlayfs directory opaque (overlayfs.rst).
const OPAQUE_XATTR: &str = "trusted.overlay.opaque";

/// The writing half: every file system call of an apply.
pub(crate) struct Writer<'a> {
    root: &'a Path,
    /// Whether to chown: only root may give files away (chown(2)).
    chown: bool,
    /// Relative directories known to be real directories (not symlinks).
    checked_dirs: HashSet<PathBuf>,
    /// Directories whose mode and mtime are set at the end, in tar order.
    dirs: Vec<(PathBuf, u32, FileTime)>,
    stats: ApplyStats,
}

impl<'a> Writer<'a> {
    pub(crate) fn new(root: &'a Path) -> Self {
        Writer {
            root,
            chown: nix::unistd::geteuid().is_root(),
            checked_dirs: HashSet::new(),
            dirs: Vec::new(),
            stats: ApplyStats::default(),
        }
    }

    pub(crate) fn run(mut self, rx: Receiver<Op>) -> Result<ApplyStats> {
        while let Ok(op) = rx.recv() {
            match op {
                Op::Node(node) => self.apply_node(*node, &rx)?,
                // Data always follows its node and is consumed there.
                Op::Data(_) => {}
            }
        }
        self.finish_dirs()?;
        Ok(self.stats)
    }

    fn apply_node(&mut self, node: Node, rx: &Receiver<Op>) -> Result<()> {
        let at = |source| Error::Entry {
            entry: node.name.clone(),
            source,
        };
        let Some(rel) = &node.path else {
            return self.apply_root(&node);
        };
        self.check_parents(&node.name, rel, true)?;
        let abs = self.root.join(rel);
        let existing = lstat(&abs).map_err(at)?;

        match &node.kind {
            Kind::Opaque => {
                match &existing {
                    Some(m) if m.is_dir() => {}
                    // xattr::set does not follow it, but the marker says
                    // "this directory": through a symlink, that is outside.
                    Some(m) if m.file_type().is_symlink() => {
                        return Err(Error::UnsafeEntry {
                            entry: node.name,
                            reason: "opaque marker in a symlinked directory",
                        })
                    }
                    Some(_) => return Err(at(io::ErrorKind::NotADirectory.into())),
                    None => self.mkdir(&abs).map_err(at)?,
                }
                self.checked_dirs.insert(rel.clone());
                xattr::set(&abs, OPAQUE_XATTR, b"y").map_err(at)?;
                self.stats.whiteouts += 1;
                return Ok(());
            }
            Kind::Whiteout => {
                self.stats.whiteouts += 1;
                match &existing {
                    // This layer's own directory replaces the lower one
                    // whole: that is an opaque directory.
                    Some(m) if m.is_dir() => {
                        return xattr::set(&abs, OPAQUE_XATTR, b"y").map_err(at);
                    }
                    // This layer's own file already hides the lower one.
                    Some(_) => return Ok(()),
                    None => {}
                }
                mknod(
                    &abs,
                    SFlag::S_IFCHR,
                    Mode::from_bits_truncate(node.meta.mode & 0o777),
                    0,
                )
                .map_err(|e| at(e.into()))?;
                return self.finish_path(&abs, &node.meta, false).map_err(at);
            }
            Kind::Dir => {
                let mut opaque = false;
                match &existing {
                    Some(m) if m.is_dir() => {}
                    Some(m) => {
                        // A whiteout of this layer for the same name: the
                        // lower directory must stay hidden.
                        opaque = is_whiteout(m);
                        fs::remove_file(&abs).map_err(at)?;
                        self.mkdir(&abs).map_err(at)?;
                    }
                    None => self.mkdir(&abs).map_err(at)?,
                }
                self.checked_dirs.insert(rel.clone());
                if opaque {
                    xattr::set(&abs, OPAQUE_XATTR, b"y").map_err(at)?;
                }
                self.own(&abs, &node.meta).map_err(at)?;
                set_xattrs_path(&abs, &node.meta).map_err(at)?;
                self.dirs.push((abs, node.meta.mode, node.meta.mtime));
                return Ok(());
            }
            Kind::Link(target) => {
                if target == rel {
                    // A link to itself leaves the file as it is.
                    return Ok(());
                }
                self.check_parents(&node.name, target, false)?;
                match lstat(&self.root.join(target)).map_err(at)? {
                    None => return Err(at(io::ErrorKind::NotFound.into())),
                    Some(m) if m.is_dir() => {
                        return Err(Error::UnsafeEntry {
                            entry: node.name,
                            reason: "hardlink to a directory",
                        })
                    }
                    Some(_) => {}
                }
            }
            _ => {}
        }

        // Every other kind replaces what is there (tar semantics: the
        // later member wins).
        if let Some(m) = &existing {
            if m.is_dir() {
                fs::remove_dir_all(&abs).map_err(at)?;
                // Directories below are gone; check again from scratch.
                self.checked_dirs.clear();
            } else {
                fs::remove_file(&abs).map_err(at)?;
            }
        }

        match &node.kind {
            Kind::File { size } => {
                let size = *size;
                self.write_file(&abs, &node, size, rx).map_err(at)?;
            }
            Kind::Symlink(target) => {
                std::os::unix::fs::symlink(target, &abs).map_err(at)?;
                self.finish_path(&abs, &node.meta, true).map_err(at)?;
            }
            Kind::Link(target) => {
                // link(2) does not follow a symlink at the source: a link
                // to a symlink is a second name of that symlink.
                fs::hard_link(self.root.join(target), &abs).map_err(at)?;
            }
            Kind::Char(dev) | Kind::Block(dev) => {
                let flag = if matches!(node.kind, Kind::Char(_)) {
                    SFlag::S_IFCHR
                } else {
                    SFlag::S_IFBLK
                };
                mknod(&abs, flag, Mode::from_bits_truncate(0o600), *dev)
                    .map_err(|e| at(e.into()))?;
                self.finish_path(&abs, &node.meta, false).map_err(at)?;
            }
            Kind::Fifo => {
                mknod(&abs, SFlag::S_IFIFO, Mode::from_bits_truncate(0o600), 0)
                    .map_err(|e| at(e.into()))?;
                self.finish_path(&abs, &node.meta, false).map_err(at)?;
            }
            Kind::Dir | Kind::Whiteout | Kind::Opaque => unreachable!("handled above"),
        }
        Ok(())
    }

    /// A member naming the root (`./`): its metadata goes on `dest` itself.
    fn apply_root(&mut self, node: &Node) -> Result<()> {
        let at = |source| Error::Entry {
            entry: node.name.clone(),
            source,
        };
        match node.kind {
            Kind::Dir => {
                self.own(self.root, &node.meta).map_err(at)?;
                set_xattrs_path(self.root, &node.meta).map_err(at)?;
                self.dirs
                    .push((self.root.to_path_buf(), node.meta.mode, node.meta.mtime));
                Ok(())
            }
            Kind::Opaque => {
                self.stats.whiteouts += 1;
                xattr::set(self.root, OPAQUE_XATTR, b"y").map_err(at)
            }
            _ => Err(Error::UnsafeEntry {
                entry: node.name.clone(),
                reason: "entry replaces the destination root",
            }),
        }
    }

    /// Checks that every parent of `rel` is a real directory inside the
    /// root, creating missing ones when `create` is set (tar members may
    /// come without their parent directories).
    fn check_parents(&mut self, entry: &str, rel: &Path, create: bool) -> Result<()> {
        let Some(parent) = rel.parent() else {
            return Ok(());
        };
        if parent.as_os_str().is_empty() || self.checked_dirs.contains(parent) {
            return Ok(());
        }
        let mut ancestors: Vec<&Path> = parent
            .ancestors()
            .take_while(|p| !p.as_os_str().is_empty())
            .collect();
        ancestors.reverse();
        for dir in ancestors {
            if self.checked_dirs.contains(dir) {
                continue;
            }
            let abs = self.root.join(dir);
            let at = |source| Error::Entry {
                entry: entry.to_string(),
                source,
            };
            match lstat(&abs).map_err(at)? {
                Some(m) if m.is_dir() => {}
                // A whiteout of this layer, then members below the same
                // name: the lower directory is gone and a new one begins,
                // which overlayfs spells as an opaque directory.
                Some(m) if create && is_whiteout(&m) => {
                    fs::remove_file(&abs).map_err(at)?;
                    self.mkdir(&abs).map_err(at)?;
                    xattr::set(&abs, OPAQUE_XATTR, b"y").map_err(at)?;
                }
                Some(m) if m.file_type().is_symlink() => {
                    return Err(Error::UnsafeEntry {
                        entry: entry.to_string(),
                        reason: "a parent directory is a symlink",
                    })
                }
                Some(_) => {
                    return Err(Error::UnsafeEntry {
                        entry: entry.to_string(),
                        reason: "a parent is not a directory",
                    })
                }
                None if create => self.mkdir(&abs).map_err(at)?,
                None => return Err(at(io::ErrorKind::NotFound.into())),
            }
            self.checked_dirs.insert(dir.to_path_buf());
        }
        Ok(())
    }

    fn mkdir(&self, abs: &Path) -> io::Result<()> {
        // Mode and mtime come at the end (finish_dirs): a read-only
        // directory must stay writable while its contents are written.
        fs::DirBuilder::new().mode(0o755).create(abs)
    }

    fn write_file(
        &mut self,
        abs: &Path,
        node: &Node,
        size: u64,
        rx: &Receiver<Op>,
    ) -> io::Result<()> {
        // O_EXCL: never follows a symlink that might sit at `abs`.
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(abs)?;
        file.write_all(&node.data)?;
        let mut written = node.data.len() as u64;
        while written < size {
            match rx.recv() {
                Ok(Op::Data(piece)) => {
                    file.write_all(&piece)?;
                    written += piece.len() as u64;
                }
                // The reader failed mid-file; apply() reports its error.
                Ok(Op::Node(_)) | Err(_) => return Ok(()),
            }
        }
        self.stats.bytes += written;
        let meta = &node.meta;
        if self.chown {
            std::os::unix::fs::fchown(&file, Some(meta.uid), Some(meta.gid))?;
        }
        // chmod after chown: chown(2) clears setuid and setgid.
        file.set_permissions(permissions(meta.mode))?;
        for (key, value) in &meta.xattrs {
            xattr::FileExt::set_xattr(&file, key, value)?;
        }
        filetime::set_file_handle_times(&file, Some(meta.mtime), Some(meta.mtime))
    }

    fn own(&self, abs: &Path, meta: &Meta) -> io::Result<()> {
        if self.chown {
            std::os::unix::fs::lchown(abs, Some(meta.uid), Some(meta.gid))?;
        }
        Ok(())
    }

    /// Owner, mode, xattrs and mtime of a node just created at `abs`.
    fn finish_path(&self, abs: &Path, meta: &Meta, is_symlink: bool) -> io::Result<()> {
        self.own(abs, meta)?;
        if !is_symlink {
            // Safe to follow: `abs` was just created and is not a symlink.
            fs::set_permissions(abs, permissions(meta.mode))?;
        }
        set_xattrs_path(abs, meta)?;
        filetime::set_symlink_file_times(abs, meta.mtime, meta.mtime)
    }

    /// Sets directory modes and mtimes after everything inside was written
    /// (each write in a directory updates its mtime). Deepest first, so a
    /// directory made unsearchable does not block its children; a later
    /// member for the same directory wins.
    fn finish_dirs(&mut self) -> Result<()> {
        let mut done = HashSet::new();
        for (abs, mode, mtime) in self.dirs.iter().rev() {
            if !done.insert(abs) {
                continue;
            }
            let at = |source| Error::Io {
                path: abs.clone(),
                source,
            };
            // Replaced by a non-directory or removed since: nothing to do.
            match lstat(abs).map_err(at)? {
                Some(m) if m.is_dir() => {}
                _ => continue,
            }
            fs::set_permissions(abs, permissions(*mode)).map_err(at)?;
            filetime::set_symlink_file_times(abs, *mtime, *mtime).map_err(at)?;
        }
        Ok(())
    }
}

fn set_xattrs_path(abs: &Path, meta: &Meta) -> io::Result<()> {
    for (key, value) in &meta.xattrs {
        xattr::set(abs, key, value)?;
    }
    Ok(())
}

/// lstat(2), with "does not exist" as `None`.
fn lstat(path: &Path) -> io::Result<Option<Metadata>> {
    match fs::symlink_metadata(path) {
        Ok(m) => Ok(Some(m)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// An overlayfs whiteout: a character device with device number 0:0.
pub(crate) fn is_whiteout(meta: &Metadata) -> bool {
    meta.file_type().is_char_device() && meta.rdev() == 0
}

/// Permissions from mode bits, setuid/setgid/sticky included.
fn permissions(mode: u32) -> fs::Permissions {
    std::os::unix::fs::PermissionsExt::from_mode(mode & 0o7777)
}
