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
//! Nothing is written outside the destination: names with `..` or a leading
//! `/` are refused here, before any write, and the writing half
//! (extract.rs) never writes through a symlink.

use std::ffi::OsString;
use std::fs;
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, SyncSender};

use filetime::FileTime;
use nix::sys::stat::makedev;

use crate::layer::compression::{decoder, Compression};
use crate::layer::extract::Writer;
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
///
/// Whiteouts and device nodes need `CAP_MKNOD` and opaque markers need
/// `CAP_SYS_ADMIN` (trusted.* xattrs, xattr(7)); without them such a layer
/// fails with [`Error::Entry`].
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
pub(crate) enum Op {
    /// A member; a regular file's first bytes ride along in `data`.
    Node(Box<Node>),
    /// More bytes of the regular file announced last.
    Data(Vec<u8>),
}

/// A tar member, parsed and with its name already cleaned.
pub(crate) struct Node {
    /// The member name as written in the tar, for error messages.
    pub(crate) name: String,
    /// Relative path; `None` is the destination root itself.
    pub(crate) path: Option<PathBuf>,
    pub(crate) kind: Kind,
    pub(crate) meta: Meta,
    pub(crate) data: Vec<u8>,
}

#[derive(Debug)]
pub(crate) enum Kind {
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

pub(crate) struct Meta {
    /// Permission bits with setuid/setgid/sticky (`mode & 0o7777`).
    pub(crate) mode: u32,
    pub(crate) uid: u32,
    pub(crate) gid: u32,
    pub(crate) mtime: FileTime,
    pub(crate) xattrs: Vec<(OsString, Vec<u8>)>,
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
