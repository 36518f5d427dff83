//! The content store: immutable, verified blobs under `blobs/sha256/`.
//!
//! A blob is first written under `ingest/`, hashed while it streams, fsynced,
//! and renamed into `blobs/sha256/<hex>` only when its digest (and size, when
//! known) match. A killed writer leaves at most a file in `ingest/`, which
//! garbage collection removes; `blobs/` never holds a partial blob.

use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use crate::digest::HashingWriter;
use crate::{Digest, Error, Result};

/// The blob half of the store.
#[derive(Debug, Clone)]
pub struct ContentStore {
    blobs: PathBuf,
    ingest: PathBuf,
}

impl ContentStore {
    pub(crate) fn new(root: &Path) -> ContentStore {
        ContentStore {
            blobs: root.join("blobs").join("sha256"),
            ingest: root.join("ingest"),
        }
    }

    /// Where the blob with `digest` lives (it may not exist).
    pub fn path(&self, digest: &Digest) -> PathBuf {
        self.blobs.join(digest.hex())
    }

    /// True when the blob is present.
    pub fn contains(&self, digest: &Digest) -> bool {
        self.path(digest).is_file()
    }

    /// Size in bytes of a present blob.
    pub fn size(&self, digest: &Digest) -> Result<u64> {
        let path = self.path(digest);
        match fs::metadata(&path) {
            Ok(m) => Ok(m.len()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(Error::BlobNotFound {
                digest: digest.clone(),
            }),
            Err(e) => Err(Error::io(path)(e)),
        }
    }

    /// Opens a blob for reading.
    pub fn open(&self, digest: &Digest) -> Result<File> {
        let path = self.path(digest);
        File::open(&path).map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                Error::BlobNotFound {
                    digest: digest.clone(),
                }
            } else {
                Error::io(path)(e)
            }
        })
    }

    /// Reads a whole (small) blob: a manifest, a config, an index.
    pub fn read(&self, digest: &Digest) -> Result<Vec<u8>> {
        let mut buf = Vec::new();
        let path = self.path(digest);
        self.open(digest)?
            .read_to_end(&mut buf)
            .map_err(Error::io(path))?;
        Ok(buf)
    }

    /// Stores `bytes` and returns their digest.
    pub fn write(&self, bytes: &[u8]) -> Result<Digest> {
        let digest = Digest::of(bytes);
        if self.contains(&digest) {
            return Ok(digest);
        }
        let mut writer = self.writer()?;
        writer.write_all(bytes).map_err(writer.io_error())?;
        writer.commit(Some(&digest), Some(bytes.len() as u64))
    }

    /// Copies everything `reader` yields into a new blob.
    pub fn write_from(&self, reader: &mut impl Read, expected: Option<&Digest>) -> Result<Digest> {
        let mut writer = self.writer()?;
        io::copy(reader, &mut writer).map_err(writer.io_error())?;
        writer.commit(expected, None)
    }

    /// Starts a new blob under `ingest/`. Write to it, then [`BlobWriter::commit`].
    pub fn writer(&self) -> Result<BlobWriter> {
        let name = crate::fsutil::temp_suffix();
        let path = self.ingest.join(name);
        let file = File::options()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(Error::io(&path))?;
        Ok(BlobWriter {
            inner: Some(HashingWriter::new(BufWriter::with_capacity(1 << 20, file))),
            temp: path,
            blobs: self.blobs.clone(),
        })
    }

    /// Removes a blob. Missing blobs are not an error.
    pub(crate) fn remove(&self, digest: &Digest) -> Result<()> {
        let path = self.path(digest);
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io(path)(e)),
        }
    }

    /// Every blob digest present (names that are not digests are skipped).
    pub fn list(&self) -> Result<Vec<Digest>> {
        crate::fsutil::digests_in(&self.blobs)
    }

    pub(crate) fn ingest_dir(&self) -> &Path {
        &self.ingest
    }
}

/// A blob being written. Dropping it without `commit` removes the partial file.
pub struct BlobWriter {
    inner: Option<HashingWriter<BufWriter<File>>>,
    temp: PathBuf,
    blobs: PathBuf,
}

impl BlobWriter {
    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.inner.as_ref().map_or(0, |w| w.written())
    }

    /// Maps an I/O error of this writer to a store error naming its file.
    pub fn io_error(&self) -> impl FnOnce(io::Error) -> Error {
        Error::io(self.temp.clone())
    }

    /// Writes out and fsyncs what was written so far, so that the commit
    /// (which callers often make under the root lock) has nothing left to
    /// sync.
    pub fn sync(&mut self) -> Result<()> {
        let inner = self.inner.as_mut().expect("writer used after commit");
        inner.flush().map_err(Error::io(&self.temp))?;
        inner
            .get_ref()
            .get_ref()
            .sync_all()
            .map_err(Error::io(&self.temp))
    }

    /// Verifies, fsyncs and renames the blob into place; returns its digest.
    ///
    /// On a digest or size mismatch nothing reaches `blobs/` and the partial
    /// file is removed.
    pub fn commit(self, expected: Option<&Digest>, size: Option<u64>) -> Result<Digest> {
        self.commit_inner(expected, size, None)
    }

    /// As [`BlobWriter::commit`], protecting the blob with `lease` before it
    /// becomes visible, so a concurrent collection cannot remove it before
    /// the caller names it.
    pub fn commit_leased(
        self,
        lease: &crate::Lease,
        expected: Option<&Digest>,
        size: Option<u64>,
    ) -> Result<Digest> {
        self.commit_inner(expected, size, Some(lease))
    }

    fn commit_inner(
        mut self,
        expected: Option<&Digest>,
        size: Option<u64>,
        lease: Option<&crate::Lease>,
    ) -> Result<Digest> {
        let writer = self.inner.take().expect("commit takes the writer once");
        let (buffered, digest, written) = writer.finish();
        let file = buffered
            .into_inner()
            .map_err(|e| Error::io(&self.temp)(e.into_error()))?;
        if let Some(expected) = expected {
            if *expected != digest {
                return Err(Error::DigestMismatch {
                    expected: expected.clone(),
                    actual: digest,
                });
            }
        }
        if let Some(size) = size {
            if size != written {
                return Err(Error::SizeMismatch {
                    digest,
                    expected: size,
                    actual: written,
                });
            }
        }
        if let Some(lease) = lease {
            lease.protect(&digest)?;
        }
        let target = self.blobs.join(digest.hex());
        if target.exists() {
            // Someone stored the same content first; ours is redundant.
            return Ok(digest);
        }
        file.sync_all().map_err(Error::io(&self.temp))?;
        drop(file);
        fs::rename(&self.temp, &target).map_err(Error::io(&target))?;
        Ok(digest)
    }
}

impl Write for BlobWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.inner
            .as_mut()
            .expect("writer used after commit")
            .write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner
            .as_mut()
            .expect("writer used after commit")
            .flush()
    }
}

impl Drop for BlobWriter {
    fn drop(&mut self) {
        // After a successful rename the temp path is gone; otherwise this
        // removes the partial write.
        let _ = fs::remove_file(&self.temp);
    }
}
