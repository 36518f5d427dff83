//! Layer diff: a directory (an overlayfs upper dir, or a whole rootfs)
//! becomes a deterministic layer tar, and both of its digests are computed
//! while it is written.
//!
//! overlayfs records (kernel Documentation/filesystems/overlayfs.rst)
//! become OCI whiteouts (image-spec layer.md, "Whiteouts"): a 0:0 character
//! device becomes an empty `.wh.NAME`, a directory with
//! `trusted.overlay.opaque=y` is written with an `.wh..wh..opq` member right
//! after it.
//!
//! Work is split three ways: a reading thread lists the tree, then stats,
//! reads xattrs and preloads small files in batches on a small rayon pool of
//! its own; the caller's thread formats and hashes in path order; gzip and
//! zstd compress blocks on the global rayon pool (parallel.rs).

use std::collections::HashMap;
use std::fs::{self, File, Metadata};
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::mpsc;

use rayon::prelude::*;

use crate::layer::compression::Compression;
use crate::layer::extract::is_whiteout;
use crate::layer::header::{self, EntryHeader};
use crate::layer::name::{whiteout_for, OPAQUE_MARKER};
use crate::layer::parallel::{Codec, ParallelEncoder};
use crate::{Digest, Error, HashingWriter, Result};

/// How to write a layer.
#[derive(Debug, Clone, Default)]
pub struct DiffOptions {
    /// Compression of the blob; the diff_id is always of the plain tar.
    pub compression: Compression,
    /// `SOURCE_DATE_EPOCH` (reproducible-builds.org/specs/source-date-epoch):
    /// mtimes later than this many seconds since the epoch are written as it.
    pub source_date_epoch: Option<i64>,
}

/// The digests of a written layer (image-spec config.md, "rootfs.diff_ids";
/// descriptor.md).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiffOutput {
    /// sha256 of the uncompressed tar: the image config's diff_id.
    pub diff_id: Digest,
    /// sha256 of the bytes written to `out`: the layer descriptor's digest.
    pub digest: Digest,
    /// Bytes written to `out`: the layer descriptor's size.
    pub size: u64,
    /// What the tree holds, as a snapshot records it: bytes of its regular
    /// files (each name counted) and its number of entries.
    pub usage: (u64, u64),
}

/// Files up to this size are read by the reading thread, in parallel;
/// larger ones are streamed by the writing thread.
const PRELOAD_MAX: u64 = 64 * 1024;
/// Paths prepared per batch; with two batches queued, memory stays below
/// about 3 × 256 × 64 KiB.
const BATCH: usize = 256;
/// Threads that stat and read ahead: enough to overlap I/O waits on a cold
/// cache, few enough to leave the cores to compression.
const READ_THREADS: usize = 2;

/// Writes the tree under `dir` to `out` as a layer tar, compressed as
/// `opts` asks, and returns its digests and size.
///
/// Members are sorted by path, bytewise; a directory's opaque marker comes
/// right after the directory (so no reader can apply it after the
/// directory's own new contents). Headers are normalized: ustar with PAX
/// records when needed, numeric ids only, mtime in whole seconds (clamped to
/// `source_date_epoch`, negative ones written as 0), no atime/ctime. Files
/// that share an inode are written once, later names as hardlinks to the
/// first. xattrs become `SCHILY.xattr.*` records, except overlayfs's own
/// (`trusted.overlay.*`, `user.overlay.*`). Sockets are skipped: tar cannot
/// hold them. The directory itself is not a member; only its opaque marker
/// is written, as `.wh..wh..opq`, when it has one.
///
/// The same tree gives the same bytes. An overlay upper dir written with
/// `redirect_dir` or `metacopy` cannot be expressed as a tar and is refused
/// ([`Error::UnsupportedFile`]). On error, `out` holds a partial layer.
pub fn diff(dir: &Path, out: impl Write, opts: &DiffOptions) -> Result<DiffOutput> {
    diff_excluding(dir, out, opts, &[])
}

/// [`diff`], leaving out the paths in `exclude` (relative to `dir`, each
/// one path only, not what is below it).
pub fn diff_excluding(
    dir: &Path,
    out: impl Write,
    opts: &DiffOptions,
    exclude: &[&Path],
) -> Result<DiffOutput> {
    let mut paths = list(dir)?;
    if !exclude.is_empty() {
        paths.retain(|p| {
            !exclude
                .iter()
                .any(|e| e.as_os_str().as_bytes() == p.as_slice())
        });
    }
    let root_opaque = xattrs_of(dir, b"")?.1;

    let (tx, rx) = mpsc::sync_channel::<Vec<Result<Option<Prepared>>>>(2);
    std::thread::scope(|scope| {
        let paths = &paths;
        scope.spawn(move || {
            // Reading gets a pool of its own: on the global pool its small
            // tasks would queue behind compression jobs, and the writer
            // would starve for input while the compressor waits for it.
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(READ_THREADS)
                .build()
                .ok();
            let prepare_all = |batch: &[Vec<u8>]| {
                batch
                    .par_iter()
                    .map(|rel| prepare(dir, rel))
                    .collect::<Vec<_>>()
            };
            for batch in paths.chunks(BATCH) {
                let prepared = match &pool {
                    Some(pool) => pool.install(|| prepare_all(batch)),
                    // No threads to be had: read on this one.
                    None => batch.iter().map(|rel| prepare(dir, rel)).collect(),
                };
                if tx.send(prepared).is_err() {
                    // The writer stopped on an error; it reports it.
                    return;
                }
            }
        });
        let mut layer = LayerWriter::new(out, opts);
        if root_opaque {
            layer.marker(OPAQUE_MARKER, 0)?;
        }
        // Dropping `rx` on an early return stops the reading thread.
        for batch in rx {
            for item in batch {
                if let Some(item) = item? {
                    layer.append(dir, item)?;
                }
            }
        }
        layer.finish(paths.len() as u64)
    })
}

/// Every path below `dir`, relative, sorted bytewise.
fn list(dir: &Path) -> Result<Vec<Vec<u8>>> {
    let mut paths = Vec::new();
    for entry in walkdir::WalkDir::new(dir).min_depth(1).follow_links(false) {
        let entry = entry.map_err(|e| Error::Io {
            path: e.path().unwrap_or(dir).to_path_buf(),
            source: e.into(),
        })?;
        let rel = entry
            .path()
            .strip_prefix(dir)
            .expect("walkdir yields paths below its root");
        paths.push(rel.as_os_str().as_bytes().to_vec());
    }
    // Sort the whole path, not each directory: `a.txt` < `a/b` bytewise.
    paths.par_sort_unstable();
    Ok(paths)
}

/// Extended attributes as (name, value) pairs, sorted by name.
type Xattrs = Vec<(Vec<u8>, Vec<u8>)>;

/// One path, statted, with what the writer needs.
struct Prepared {
    rel: Vec<u8>,
    meta: Metadata,
    xattrs: Xattrs,
    opaque: bool,
    link_target: Vec<u8>,
    /// The content of a small regular file.
    data: Option<Vec<u8>>,
}

/// Stats one path and reads what can be read ahead. `None` for what a tar
/// cannot hold (sockets).
fn prepare(dir: &Path, rel: &[u8]) -> Result<Option<Prepared>> {
    let path = dir.join(std::ffi::OsStr::from_bytes(rel));
    let at = |source| Error::Io {
        path: path.clone(),
        source,
    };
    let meta = fs::symlink_metadata(&path).map_err(at)?;
    let file_type = meta.file_type();
    if file_type.is_socket() {
        return Ok(None);
    }
    let (xattrs, opaque) = if is_whiteout(&meta) {
        (Vec::new(), false)
    } else {
        xattrs_of(&path, rel)?
    };
    let link_target = if file_type.is_symlink() {
        fs::read_link(&path)
            .map_err(at)?
            .into_os_string()
            .into_vec()
    } else {
        Vec::new()
    };
    let data = if file_type.is_file() && meta.len() <= PRELOAD_MAX {
        let mut buf = Vec::with_capacity(meta.len() as usize);
        open_nofollow(&path)
            .and_then(|f| f.take(meta.len()).read_to_end(&mut buf))
            .map_err(at)?;
        Some(buf)
    } else {
        None
    };
    Ok(Some(Prepared {
        rel: rel.to_vec(),
        meta,
        xattrs,
        opaque,
        link_target,
        data,
    }))
}

/// The xattrs worth keeping, sorted, and whether the directory is opaque.
fn xattrs_of(path: &Path, rel: &[u8]) -> Result<(Xattrs, bool)> {
    let at = |source| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    let names = match xattr::list(path) {
        Ok(names) => names,
        // A file system without xattrs has none to keep.
        Err(e) if e.raw_os_error() == Some(libc::ENOTSUP) => return Ok((Vec::new(), false)),
        Err(e) => return Err(at(e)),
    };
    let mut kept = Vec::new();
    let mut opaque = false;
    for name in names {
        let key = name.as_bytes();
        let overlay = key
            .strip_prefix(b"trusted.overlay.")
            .or_else(|| key.strip_prefix(b"user.overlay."));
        if let Some(what) = overlay {
            match what {
                b"opaque" => opaque = xattr::get(path, &name).map_err(at)?.as_deref() == Some(b"y"),
                // A renamed directory or a metadata-only copy refers to a
                // lower layer by path or inode: no tar member can say that
                // (overlayfs.rst, "Redirect dir", "Metadata only copy up").
                b"redirect" | b"metacopy" => {
                    return Err(Error::UnsupportedFile {
                        path: PathBuf::from(std::ffi::OsStr::from_bytes(rel)),
                        reason: "overlayfs redirect_dir or metacopy entry",
                    })
                }
                _ => {}
            }
            continue;
        }
        // Gone between list and get (a racing writer): nothing to keep.
        if let Some(value) = xattr::get(path, &name).map_err(at)? {
            kept.push((key.to_vec(), value));
        }
    }
    kept.sort();
    Ok((kept, opaque))
}

fn open_nofollow(path: &Path) -> io::Result<File> {
    fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
}

/// The bytes after the tar: compressor and hashers.
enum Encoder<W: Write> {
    Plain(W),
    Parallel(Box<ParallelEncoder<HashingWriter<W>>>),
}

impl<W: Write> Write for Encoder<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Encoder::Plain(w) => w.write(buf),
            Encoder::Parallel(w) => w.write(buf),
        }
    }
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        match self {
            Encoder::Plain(w) => w.write_all(buf),
            Encoder::Parallel(w) => w.write_all(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Encoder::Plain(w) => w.flush(),
            Encoder::Parallel(w) => w.flush(),
        }
    }
}

/// Formats members in order and keeps the hardlink table.
struct LayerWriter<W: Write> {
    /// Uncompressed tar → diff_id hasher → compressor → blob hasher → out.
    out: BufWriter<HashingWriter<Encoder<W>>>,
    source_date_epoch: Option<i64>,
    /// First path written for each (device, inode) with several links.
    links: HashMap<(u64, u64), Vec<u8>>,
    header: Vec<u8>,
    buf: Vec<u8>,
    /// Bytes of the regular files appended (hardlinks counted again).
    file_bytes: u64,
}

impl<W: Write> LayerWriter<W> {
    fn new(out: W, opts: &DiffOptions) -> Self {
        // gzip level 6 is what `gzip` and Go's compress/gzip default to;
        // zstd level 3 is zstd's own default.
        let codec = match opts.compression {
            Compression::None => None,
            Compression::Gzip => Some(Codec::Gzip(6)),
            Compression::Zstd => Some(Codec::Zstd(3)),
        };
        let encoder = match codec {
            None => Encoder::Plain(out),
            Some(codec) => Encoder::Parallel(Box::new(ParallelEncoder::new(
                HashingWriter::new(out),
                codec,
            ))),
        };
        LayerWriter {
            out: BufWriter::with_capacity(256 * 1024, HashingWriter::new(encoder)),
            source_date_epoch: opts.source_date_epoch,
            links: HashMap::new(),
            header: Vec::with_capacity(2 * header::BLOCK),
            buf: vec![0; 256 * 1024],
            file_bytes: 0,
        }
    }

    fn mtime(&self, meta: &Metadata) -> u64 {
        let mut t = meta.mtime();
        if let Some(epoch) = self.source_date_epoch {
            t = t.min(epoch);
        }
        t.max(0) as u64
    }

    fn write_header(&mut self, h: &EntryHeader<'_>) -> Result<()> {
        self.header.clear();
        header::encode(h, &mut self.header);
        self.out
            .write_all(&self.header)
            .map_err(|source| Error::LayerWrite { source })
    }

    fn pad(&mut self, size: u64) -> Result<()> {
        let zeros = [0u8; header::BLOCK];
        self.out
            .write_all(&zeros[..header::padding(size)])
            .map_err(|source| Error::LayerWrite { source })
    }

    /// An empty marker member (`.wh.NAME` or `.wh..wh..opq`).
    fn marker(&mut self, name: &[u8], mtime: u64) -> Result<()> {
        self.write_header(&EntryHeader {
            name,
            typeflag: header::REGULAR,
            mode: 0o644,
            mtime,
            ..EntryHeader::default()
        })
    }

    fn append(&mut self, dir: &Path, item: Prepared) -> Result<()> {
        let meta = &item.meta;
        let file_type = meta.file_type();
        if file_type.is_file() {
            self.file_bytes += meta.len();
        }
        let mtime = self.mtime(meta);
        let (parent, base) = match item.rel.iter().rposition(|&b| b == b'/') {
            Some(i) => (&item.rel[..=i], &item.rel[i + 1..]),
            None => (&b""[..], &item.rel[..]),
        };

        if is_whiteout(meta) {
            // Keep the device's owner and mode so apply, then diff, gives
            // the same bytes.
            let name = [parent, &whiteout_for(base)].concat();
            return self.write_header(&EntryHeader {
                name: &name,
                typeflag: header::REGULAR,
                mode: meta.mode() & 0o7777,
                uid: meta.uid().into(),
                gid: meta.gid().into(),
                mtime,
                ..EntryHeader::default()
            });
        }

        let mut h = EntryHeader {
            name: &item.rel,
            mode: meta.mode() & 0o7777,
            uid: meta.uid().into(),
            gid: meta.gid().into(),
            mtime,
            xattrs: &item.xattrs,
            ..EntryHeader::default()
        };

        let dir_name;
        if file_type.is_dir() {
            dir_name = [&item.rel[..], b"/"].concat();
            h.name = &dir_name;
            h.typeflag = header::DIRECTORY;
            self.write_header(&h)?;
            if item.opaque {
                let marker = [&dir_name[..], OPAQUE_MARKER].concat();
                self.marker(&marker, mtime)?;
            }
            return Ok(());
        }

        // Hardlinks: the first name in path order carries the data.
        if meta.nlink() > 1 {
            let key = (meta.dev(), meta.ino());
            if let Some(first) = self.links.get(&key) {
                let first = first.clone();
                h.typeflag = header::HARDLINK;
                h.linkname = &first;
                h.xattrs = &[];
                return self.write_header(&h);
            }
            self.links.insert(key, item.rel.clone());
        }

        if file_type.is_symlink() {
            h.typeflag = header::SYMLINK;
            h.linkname = &item.link_target;
            return self.write_header(&h);
        }
        if file_type.is_char_device() || file_type.is_block_device() {
            h.typeflag = if file_type.is_char_device() {
                header::CHAR
            } else {
                header::BLOCK_DEVICE
            };
            let rdev = meta.rdev();
            h.dev_major = nix::sys::stat::major(rdev) as u32;
            h.dev_minor = nix::sys::stat::minor(rdev) as u32;
            return self.write_header(&h);
        }
        if file_type.is_fifo() {
            h.typeflag = header::FIFO;
            return self.write_header(&h);
        }

        // A regular file.
        let size = item.data.as_ref().map_or(meta.len(), |d| d.len() as u64);
        h.typeflag = header::REGULAR;
        h.size = size;
        self.write_header(&h)?;
        let write_err = |source| Error::LayerWrite { source };
        match &item.data {
            Some(data) => self.out.write_all(data).map_err(write_err)?,
            None => {
                let path = dir.join(std::ffi::OsStr::from_bytes(&item.rel));
                let at = |source| Error::Io {
                    path: path.clone(),
                    source,
                };
                let mut file = open_nofollow(&path).map_err(at)?.take(size);
                let mut copied = 0u64;
                loop {
                    let n = match file.read(&mut self.buf) {
                        Ok(0) => break,
                        Ok(n) => n,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(e) => return Err(at(e)),
                    };
                    self.out.write_all(&self.buf[..n]).map_err(write_err)?;
                    copied += n as u64;
                }
                if copied != size {
                    // The header already promised `size` bytes.
                    return Err(Error::UnsupportedFile {
                        path: PathBuf::from(std::ffi::OsStr::from_bytes(&item.rel)),
                        reason: "file shrank while it was read",
                    });
                }
            }
        }
        self.pad(size)
    }

    fn finish(mut self, entries: u64) -> Result<DiffOutput> {
        let usage = (self.file_bytes, entries);
        let write_err = |source| Error::LayerWrite { source };
        // End of archive: two zero blocks (POSIX ustar).
        self.out
            .write_all(&[0u8; 2 * header::BLOCK])
            .map_err(write_err)?;
        let hashing = self
            .out
            .into_inner()
            .map_err(|e| write_err(e.into_error()))?;
        let (encoder, diff_id, plain_size) = hashing.finish();
        let compressed = match encoder {
            Encoder::Plain(mut w) => {
                w.flush().map_err(write_err)?;
                None
            }
            Encoder::Parallel(z) => Some(z.finish().map_err(write_err)?),
        };
        Ok(match compressed {
            None => DiffOutput {
                digest: diff_id.clone(),
                diff_id,
                size: plain_size,
                usage,
            },
            Some(hashing) => {
                let (mut w, digest, size) = hashing.finish();
                w.flush().map_err(write_err)?;
                DiffOutput {
                    diff_id,
                    digest,
                    size,
                    usage,
                }
            }
        })
    }
}
