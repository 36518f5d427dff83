//! Layer apply: a (compressed) layer tar becomes a directory in overlayfs
//! format, fit to be a lowerdir of its own.
//!
//! OCI whiteouts (image-spec layer.md, "Whiteouts") become what overlayfs
//! reads (kernel Documentation/filesystems/overlayfs.rst, "whiteouts and
//! opaque directories"): `.wh.NAME` becomes a 0:0 character device `NAME`,
//! `.wh..wh..opq` becomes the xattr `trusted.overlay.opaque=y` on its
//! directory. A whiteout only hides what lower layers hold, so an entry the
//! same layer writes before or after it stays, whatever the order.
//!
//! Two threads share the work: the caller's thread decompresses and parses
//! the tar (gzip inflate is the bottleneck), a second thread does the file
//! system calls. They talk over a bounded channel, so memory stays small.
//!
//! Nothing is written outside the destination. Names with `..` or a leading
//! `/` are refused before any write. Each parent of an entry is checked to be
//! a real directory (never a symlink) before the entry is written, and the
//! last component is always created fresh (`O_CREAT|O_EXCL`, `mknod`,
//! `symlink`, `link`), which never follows a symlink. The destination is a
//! fresh private directory, so no other process races these checks.

use std::collections::HashSet;
use std::ffi::OsString;
use std::fs::{self, Metadata};
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, SyncSender};

use filetime::FileTime;
use nix::sys::stat::{makedev, mknod, Mode, SFlag};

use crate::layer::compression::{decoder, Compression};
use crate::layer::name::{self, Marker};
use crate::{Error, Result};

/// What an apply did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApplyStats {
    /// The compression found by its magic bytes.
    pub compression: Compression,
    /// Tar members applied (markers included, extension headers not).
    pub entries: u64,
    /// Bytes of regular file content written.
    pub bytes: u64,
    /// Whiteouts and opaque markers turned into their overlayfs form.
    pub whiteouts: u64,
}

/// File data travels in pieces of at most this size; with [`QUEUE`] pieces
/// in flight, at most 16 MiB wait between the threads.
const CHUNK: usize = 128 * 1024;
const QUEUE: usize = 128;

/// xattr that marks an overlayfs directory opaque (overlayfs.rst).
const OPAQUE_XATTR: &str = "trusted.overlay.opaque";

/// Extracts the layer tar read from `reader` (plain, gzip or zstd, found by
/// magic bytes) into `dest`, which must be an existing, empty directory that
/// no other process writes to.
///
/// Owners are kept when running as root (otherwise files belong to the
/// caller), as are modes with setuid/setgid/sticky bits, mtimes (directories
/// included, set after their contents), `SCHILY.xattr.*` PAX records,
/// hardlinks, symlinks and device nodes.
///
/// The reader is read to its end, so a [`crate::HashingReader`] around it sees
/// the whole blob. On error `dest` holds a partial tree, to be removed by the
/// caller; an entry that would write outside `dest` is
/// [`Error::UnsafeEntry`], naming the entry.
pub fn apply(reader: impl Read, dest: &Path) -> Result<ApplyStats> {
    let (tx, rx) = mpsc::sync_channel(QUEUE);
    let (read, written) = std::thread::scope(|scope| {
        let writer = scope.spawn(|| Writer::new(dest).run(rx));
        let read = read_layer(reader, tx);
        (read, writer.join())
    });
    // A panic in the writer is a bug; pass it on unchanged.
    let written = written.unwrap_or_else(|panic| std::panic::resume_unwind(panic));
    match (read, written) {
        // The writer stopped first: its error is the cause.
        (_, Err(e)) => Err(e),
        (Err(e), Ok(_)) => Err(e),
        (Ok(read), Ok(stats)) => Ok(ApplyStats {
            compression: read.compression,
            entries: read.entries,
            ..stats
        }),
    }
}

/// Applies a layer into a fresh temporary directory next to `final_path`
/// and renames it to `final_path` when complete, so `final_path` appears
/// whole or not at all (DESIGN.md, "Data on disk").
///
/// If `final_path` already exists (another process applied the same layer),
/// the fresh copy is dropped and the stats of this apply are returned. On
/// error the temporary directory is removed; if that removal fails too, the
/// leftover `.<name>.tmp-*` directory is garbage for the store's GC.
pub fn apply_atomic(reader: impl Read, final_path: &Path) -> Result<ApplyStats> {
    let parent = final_path.parent().unwrap_or(Path::new("."));
    let base = final_path.file_name().unwrap_or_default().as_bytes();
    let tmp = parent.join(format!(
        ".{}.tmp-{}-{:016x}",
        String::from_utf8_lossy(base),
        std::process::id(),
        rand::random::<u64>()
    ));
    fs::DirBuilder::new()
        .mode(0o755)
        .create(&tmp)
        .map_err(Error::io(&tmp))?;
    let stats = match apply(reader, &tmp) {
        Ok(stats) => stats,
        Err(e) => {
            let _ = fs::remove_dir_all(&tmp);
            return Err(e);
        }
    };
    match fs::rename(&tmp, final_path) {
        Ok(()) => Ok(stats),
        // rename(2): a non-empty directory at the target gives EEXIST or
        // ENOTEMPTY; a snapshot is content-addressed, so it is the same.
        Err(e) if matches!(e.raw_os_error(), Some(libc::EEXIST | libc::ENOTEMPTY)) => {
            let _ = fs::remove_dir_all(&tmp);
            Ok(stats)
        }
        Err(e) => {
            let _ = fs::remove_dir_all(&tmp);
            Err(Error::Io {
                path: final_path.to_path_buf(),
                source: e,
            })
        }
    }
}

/// One message from the reading thread to the writing thread.
enum Op {
    /// A member; a regular file's first bytes ride along in `data`.
    Node(Box<Node>),
    /// More bytes of the regular file announced last.
    Data(Vec<u8>),
}

/// A tar member, parsed and with its name already cleaned.
struct Node {
    /// The member name as written in the tar, for error messages.
    name: String,
    /// Relative path; `None` is the destination root itself.
    path: Option<PathBuf>,
    kind: Kind,
    meta: Meta,
    data: Vec<u8>,
}

#[derive(Debug)]
enum Kind {
    File {
        size: u64,
    },
    Dir,
    Symlink(PathBuf),
    /// A hardlink to this cleaned path, relative to the root.
    Link(PathBuf),
    Char(u64),
    Block(u64),
    Fifo,
    /// `.wh.NAME`: `path` is the hidden sibling `NAME`.
    Whiteout,
    /// `.wh..wh..opq`: `path` is the directory holding the marker.
    Opaque,
}

struct Meta {
    /// Permission bits with setuid/setgid/sticky (`mode & 0o7777`).
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: FileTime,
    xattrs: Vec<(OsString, Vec<u8>)>,
}

struct ReadSummary {
    compression: Compression,
    entries: u64,
}

/// The reading half: decompress, parse, clean names, send.
fn read_layer(reader: impl Read, tx: SyncSender<Op>) -> Result<ReadSummary> {
    let read_err = |source| Error::LayerRead { source };
    let (decoded, compression) = decoder(reader).map_err(read_err)?;
    let mut archive = tar::Archive::new(decoded);
    let mut entries = 0;
    for entry in archive.entries().map_err(read_err)? {
        let mut entry = entry.map_err(read_err)?;
        let Some(node) = parse_entry(&mut entry)? else {
            continue;
        };
        entries += 1;
        let (size, first) = match node.kind {
            Kind::File { size } => (size, node.data.len() as u64),
            _ => (0, 0),
        };
        if tx.send(Op::Node(node)).is_err() {
            // The writer failed; apply() reports its error.
            return Ok(ReadSummary {
                compression,
                entries,
            });
        }
        let mut sent = first;
        while sent < size {
            let piece = read_exactly(&mut entry, (size - sent).min(CHUNK as u64) as usize)?;
            sent += piece.len() as u64;
            if tx.send(Op::Data(piece)).is_err() {
                return Ok(ReadSummary {
                    compression,
                    entries,
                });
            }
        }
    }
    drop(tx);
    // Read to the end: the gzip trailer (CRC, length) is checked only there,
    // tar writers pad past the end-of-archive blocks, and a hashing reader
    // around the blob must see every byte.
    io::copy(&mut archive.into_inner(), &mut io::sink()).map_err(read_err)?;
    Ok(ReadSummary {
        compression,
        entries,
    })
}

fn read_exactly(reader: &mut impl Read, n: usize) -> Result<Vec<u8>> {
    let mut buf = Vec::with_capacity(n);
    reader
        .take(n as u64)
        .read_to_end(&mut buf)
        .map_err(|source| Error::LayerRead { source })?;
    if buf.len() < n {
        return Err(Error::LayerRead {
            source: io::ErrorKind::UnexpectedEof.into(),
        });
    }
    Ok(buf)
}

/// Turns one tar member into a [`Node`]; `None` for members that carry
/// nothing to apply (global PAX headers, reserved `.wh..wh.` names).
fn parse_entry<R: Read>(entry: &mut tar::Entry<'_, R>) -> Result<Option<Box<Node>>> {
    let raw_name = entry.path_bytes().into_owned();
    let name = String::from_utf8_lossy(&raw_name).into_owned();
    let unsafe_entry = |reason| Error::UnsafeEntry {
        entry: name.clone(),
        reason,
    };
    let read_err = |source| Error::LayerRead { source };
    let header = entry.header();
    let entry_type = header.entry_type();
    if entry_type.is_pax_global_extensions() {
        return Ok(None);
    }
    let mut path = name::clean(&raw_name).map_err(unsafe_entry)?;

    let mut kind = match entry_type {
        tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::GNUSparse => {
            Kind::File { size: entry.size() }
        }
        tar::EntryType::Directory => Kind::Dir,
        tar::EntryType::Symlink => {
            let target = entry
                .link_name_bytes()
                .ok_or_else(|| unsafe_entry("symlink without a target"))?;
            Kind::Symlink(PathBuf::from(std::ffi::OsStr::from_bytes(&target)))
        }
        tar::EntryType::Link => {
            let target = entry
                .link_name_bytes()
                .ok_or_else(|| unsafe_entry("hardlink without a target"))?;
            // Hardlink targets are member names of this archive (POSIX
            // pax, "typeflag 1"), so the same rules apply; an absolute or
            // `..` target would link to a file outside the layer.
            let target = name::clean(&target)
                .map_err(|_| unsafe_entry("hardlink target outside the layer"))?
                .ok_or_else(|| unsafe_entry("hardlink to the root directory"))?;
            Kind::Link(target)
        }
        tar::EntryType::Char | tar::EntryType::Block => {
            let major = header.device_major().map_err(read_err)?.unwrap_or(0);
            let minor = header.device_minor().map_err(read_err)?.unwrap_or(0);
            let dev = makedev(major.into(), minor.into());
            if entry_type == tar::EntryType::Char {
                Kind::Char(dev)
            } else {
                Kind::Block(dev)
            }
        }
        tar::EntryType::Fifo => Kind::Fifo,
        other => {
            return Err(Error::UnsupportedEntry {
                entry: name,
                kind: other.as_byte() as char,
            })
        }
    };

    if let Some(rel) = &path {
        let file_name = rel.file_name().expect("a cleaned path ends in a name");
        match name::classify(file_name).map_err(unsafe_entry)? {
            Marker::Plain => {}
            Marker::Reserved => return Ok(None),
            Marker::Opaque => {
                kind = Kind::Opaque;
                path = rel
                    .parent()
                    .filter(|p| !p.as_os_str().is_empty())
                    .map(Path::to_path_buf);
            }
            Marker::Whiteout(hidden) => {
                let hidden = rel.with_file_name(hidden);
                kind = Kind::Whiteout;
                path = Some(hidden);
            }
        }
    }

    let uid = header.uid().map_err(read_err)?;
    let gid = header.gid().map_err(read_err)?;
    let too_big = |_| unsafe_entry("uid or gid above 2^32-1");
    let mut meta = Meta {
        mode: header.mode().map_err(read_err)? & 0o7777,
        uid: u32::try_from(uid).map_err(too_big)?,
        gid: u32::try_from(gid).map_err(too_big)?,
        mtime: FileTime::from_unix_time(header.mtime().map_err(read_err)? as i64, 0),
        xattrs: Vec::new(),
    };
    if let Some(records) = entry.pax_extensions().map_err(read_err)? {
        for record in records {
            let record = record.map_err(read_err)?;
            let key = record.key_bytes();
            if let Some(xattr) = key.strip_prefix(b"SCHILY.xattr.") {
                meta.xattrs.push((
                    std::ffi::OsStr::from_bytes(xattr).to_os_string(),
                    record.value_bytes().to_vec(),
                ));
            } else if key == b"mtime" {
                if let Some(mtime) = parse_pax_time(record.value_bytes()) {
                    meta.mtime = mtime;
                }
            }
        }
    }

    let data = match kind {
        Kind::File { size } => read_exactly(entry, size.min(CHUNK as u64) as usize)?,
        _ => Vec::new(),
    };
    Ok(Some(Box::new(Node {
        name,
        path,
        kind,
        meta,
        data,
    })))
}

/// Parses a PAX time (`seconds[.fraction]`, POSIX pax "mtime").
fn parse_pax_time(value: &[u8]) -> Option<FileTime> {
    let text = std::str::from_utf8(value).ok()?;
    let (secs, frac) = text.split_once('.').unwrap_or((text, ""));
    let secs: i64 = secs.parse().ok()?;
    let mut nanos = 0u32;
    if !frac.is_empty() {
        if !frac.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let digits = &frac[..frac.len().min(9)];
        nanos = digits.parse::<u32>().ok()? * 10u32.pow(9 - digits.len() as u32);
    }
    // A negative time with a fraction counts down from the seconds.
    if secs < 0 && nanos > 0 {
        return Some(FileTime::from_unix_time(secs - 1, 1_000_000_000 - nanos));
    }
    Some(FileTime::from_unix_time(secs, nanos))
}

/// The writing half: every file system call of an apply.
struct Writer<'a> {
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
    fn new(root: &'a Path) -> Self {
        Writer {
            root,
            chown: nix::unistd::geteuid().is_root(),
            checked_dirs: HashSet::new(),
            dirs: Vec::new(),
            stats: ApplyStats::default(),
        }
    }

    fn run(mut self, rx: Receiver<Op>) -> Result<ApplyStats> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_pax_times() {
        let t = |s: &str| parse_pax_time(s.as_bytes());
        assert_eq!(
            t("1700000000"),
            Some(FileTime::from_unix_time(1700000000, 0))
        );
        assert_eq!(
            t("1700000000.5"),
            Some(FileTime::from_unix_time(1700000000, 500_000_000))
        );
        assert_eq!(
            t("1.1234567891"),
            Some(FileTime::from_unix_time(1, 123_456_789))
        );
        assert_eq!(t("-1.5"), Some(FileTime::from_unix_time(-2, 500_000_000)));
        assert_eq!(t("abc"), None);
        assert_eq!(t("1.x"), None);
    }
}
