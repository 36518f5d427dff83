//! Metadata in `meta.redb`: image names, snapshot records, leases, build
//! cache records.
//!
//! Several kiln processes may share one root. redb allows one open handle
//! per file, so the database is only open while this process holds the
//! root lock `meta.lock` (flock, blocking). By default each operation takes
//! the lock, opens the database, runs one transaction and closes it again,
//! so a long-running command (`run`, `build`, `pull`) never keeps other
//! kiln processes waiting. A short command that does several operations
//! wraps them in a [`MetaHold`] (see [`crate::Store::hold_metadata`]): the
//! first operation takes the lock and opens the database, the rest reuse
//! it, and dropping the hold closes it. Opening and closing cost three
//! fsyncs of their own, so this saves those per extra operation.
//!
//! Reads never write the file: they open it through a private
//! copy-on-write view ([`SnapshotFile`]) under a shared root lock, so they
//! cost no fsync and readers do not wait for each other. Writes take the
//! root lock exclusively and open the file itself.
//!
//! A killed process releases its flock with its file descriptors, and redb
//! recovers an interrupted write on the next open. Every write transaction
//! commits with redb's default (immediate) durability: each record here
//! (names, cache records, leases of live processes) must survive a crash
//! once the operation that wrote it has returned.

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use nix::fcntl::{Flock, FlockArg};
use redb::{Database, ReadableTable, StorageBackend, TableDefinition};

use crate::{Error, Result};

/// name -> JSON [`crate::images::NameRecord`].
pub(crate) const NAMES: TableDefinition<&str, &[u8]> = TableDefinition::new("names");
/// manifest digest of an untagged image -> JSON record.
pub(crate) const DANGLING: TableDefinition<&str, &[u8]> = TableDefinition::new("dangling");
/// uncompressed layer digest -> JSON descriptor of its gzip twin.
pub(crate) const COMPRESSED: TableDefinition<&str, &[u8]> = TableDefinition::new("compressed");
/// blob digest -> JSON list of `registry/repository` known to hold it.
pub(crate) const BLOB_SOURCES: TableDefinition<&str, &[u8]> = TableDefinition::new("blob_sources");
/// build cache key -> JSON [`crate::CacheRecord`].
pub(crate) const CACHE_RECORDS: TableDefinition<&str, &[u8]> =
    TableDefinition::new("cache_records");
/// lease id -> JSON [`crate::lease::LeaseRecord`].
pub(crate) const LEASES: TableDefinition<&str, &[u8]> = TableDefinition::new("leases");

/// A handle on the metadata database; cheap to clone (clones share one
/// hold), opens per operation unless held.
#[derive(Debug, Clone)]
pub(crate) struct Meta {
    db_path: PathBuf,
    lock_path: PathBuf,
    held: Arc<Mutex<Held>>,
}

/// The database kept open while [`MetaHold`]s are alive.
#[derive(Default)]
struct Held {
    holds: usize,
    open: Option<Locked>,
}

impl std::fmt::Debug for Held {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Held")
            .field("holds", &self.holds)
            .field("open", &self.open.is_some())
            .finish()
    }
}

/// The open database while the root lock is held.
struct Locked {
    // Dropped in this order: the database is closed before the lock is
    // released.
    db: Database,
    /// The file itself under the exclusive lock, or a read-only view under
    /// the shared lock.
    writable: bool,
    _lock: Flock<File>,
}

/// Keeps the metadata database open (and the root lock held) from the
/// first operation until the last hold is dropped. Other kiln processes
/// wait for the root lock meanwhile: hold only around quick work.
#[must_use = "the database is closed again when the hold is dropped"]
pub struct MetaHold {
    held: Arc<Mutex<Held>>,
}

impl Drop for MetaHold {
    fn drop(&mut self) {
        let mut held = lock_held(&self.held);
        held.holds -= 1;
        if held.holds == 0 {
            held.open = None;
        }
    }
}

fn lock_held(held: &Mutex<Held>) -> MutexGuard<'_, Held> {
    held.lock().unwrap_or_else(|e| e.into_inner())
}

impl Meta {
    pub fn new(root: &Path) -> Meta {
        Meta {
            db_path: root.join("meta.redb"),
            lock_path: root.join("meta.lock"),
            held: Arc::default(),
        }
    }

    /// Keeps the database open until the returned hold is dropped.
    pub fn hold(&self) -> MetaHold {
        lock_held(&self.held).holds += 1;
        MetaHold {
            held: self.held.clone(),
        }
    }

    /// Takes the root lock (exclusive to write, shared to read) and opens
    /// the database (a read-only view of it to read).
    fn lock(&self, writable: bool) -> Result<Locked> {
        let file = File::options()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&self.lock_path)
            .map_err(Error::io(&self.lock_path))?;
        let mode = if writable {
            FlockArg::LockExclusive
        } else {
            FlockArg::LockShared
        };
        let lock = Flock::lock(file, mode)
            .map_err(|(_, errno)| Error::io(&self.lock_path)(errno.into()))?;
        if writable {
            if !self.db_path.exists() {
                self.create_db()?;
            }
            let db = Database::create(&self.db_path).map_err(|e| self.error(e))?;
            return Ok(Locked {
                db,
                writable,
                _lock: lock,
            });
        }
        let file = match File::open(&self.db_path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                // A new root: make the file for real, once.
                drop(lock);
                return self.lock(true);
            }
            Err(e) => return Err(Error::io(&self.db_path)(e)),
        };
        let view = SnapshotFile::new(file).map_err(Error::io(&self.db_path))?;
        let db = Database::builder()
            .create_with_backend(view)
            .map_err(|e| self.error(e))?;
        Ok(Locked {
            db,
            writable,
            _lock: lock,
        })
    }

    /// Makes a new, empty database beside the final name and renames it
    /// into place, so a process killed while redb lays the file out leaves
    /// no half-made `meta.redb` (only a temporary file the next one
    /// replaces). Called with the exclusive root lock held.
    fn create_db(&self) -> Result<()> {
        let temp = self.db_path.with_extension("redb.new");
        let _ = std::fs::remove_file(&temp);
        drop(Database::create(&temp).map_err(|e| self.error(e))?);
        File::open(&temp)
            .and_then(|f| f.sync_all())
            .map_err(Error::io(&temp))?;
        std::fs::rename(&temp, &self.db_path).map_err(Error::io(&self.db_path))?;
        if let Some(dir) = self.db_path.parent() {
            File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(Error::io(dir))?;
        }
        Ok(())
    }

    /// Runs `f` on the open database: the held one, or one opened (under
    /// the root lock) for this call only. `writable` false gives a
    /// read-only view unless a writable database is already held.
    fn with_db<T>(&self, writable: bool, f: impl FnOnce(&Database) -> Result<T>) -> Result<T> {
        // Threads of this process take turns on a held database as
        // processes take turns on the root lock.
        let mut held = lock_held(&self.held);
        if held.holds == 0 {
            drop(held);
            let locked = self.lock(writable)?;
            return f(&locked.db);
        }
        if writable && held.open.as_ref().is_some_and(|l| !l.writable) {
            // Close the view and give up the shared lock before taking the
            // exclusive one.
            held.open = None;
        }
        if held.open.is_none() {
            held.open = Some(self.lock(writable)?);
        }
        let db = &held.open.as_ref().expect("opened above").db;
        f(db)
    }

    /// Runs `f` with the database open for writing under the exclusive
    /// root lock (for work that must not interleave with other writers).
    pub fn with_writable<T>(&self, f: impl FnOnce(&Database) -> Result<T>) -> Result<T> {
        self.with_db(true, f)
    }

    /// Runs `f` in one write transaction and commits it.
    pub fn write<T>(&self, f: impl FnOnce(&redb::WriteTransaction) -> Result<T>) -> Result<T> {
        // Closing the database after a commit writes redb's allocator
        // state in one more commit; a quick-repair commit records it in the
        // same commit. Worth it when the database is closed right after.
        let closes_after = lock_held(&self.held).holds == 0;
        self.with_db(true, |db| {
            let mut txn = db.begin_write().map_err(|e| self.error(e))?;
            txn.set_quick_repair(closes_after);
            let value = f(&txn)?;
            txn.commit().map_err(|e| self.error(e))?;
            Ok(value)
        })
    }

    /// Runs `f` in one read transaction.
    pub fn read<T>(&self, f: impl FnOnce(&redb::ReadTransaction) -> Result<T>) -> Result<T> {
        self.with_db(false, |db| {
            let txn = db.begin_read().map_err(|e| self.error(e))?;
            f(&txn)
        })
    }

    pub fn error(&self, e: impl std::fmt::Display) -> Error {
        Error::Metadata {
            path: self.db_path.clone(),
            message: e.to_string(),
        }
    }
}

/// Page size of [`SnapshotFile`]'s overlay.
const PAGE: u64 = 4096;

/// A private, copy-on-write view of `meta.redb` for read-only sessions.
///
/// redb writes to its file even when only reading: its recovery flag when
/// it opens, and its allocator state when it closes, each followed by an
/// fsync (three per open and close). Through this view redb reads the
/// file, and what it writes stays in memory and is dropped with the view.
/// The file is never written, so a read session costs no fsync, leaves the
/// file exactly as it found it whenever it is killed, and can share the
/// root lock with other readers. (A file left by a killed writer is
/// repaired in the view for this session; the next writer repairs it on
/// disk.)
#[derive(Debug)]
struct SnapshotFile {
    file: File,
    view: Mutex<View>,
}

#[derive(Debug)]
struct View {
    /// The length redb sees.
    len: u64,
    /// Bytes of the file at or past this offset read as zero (redb
    /// shortened its view below them).
    file_len: u64,
    /// Pages redb has written, by page number.
    pages: HashMap<u64, Box<[u8]>>,
}

impl SnapshotFile {
    fn new(file: File) -> io::Result<SnapshotFile> {
        let len = file.metadata()?.len();
        Ok(SnapshotFile {
            file,
            view: Mutex::new(View {
                len,
                file_len: len,
                pages: HashMap::new(),
            }),
        })
    }

    fn view(&self) -> MutexGuard<'_, View> {
        self.view.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl View {
    /// Fills `buf` (zeroed) with the view's bytes at `offset`.
    fn read_into(&self, file: &File, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        if buf.is_empty() {
            return Ok(());
        }
        let end = offset + buf.len() as u64;
        let file_end = end.min(self.file_len);
        if offset < file_end {
            file.read_exact_at(&mut buf[..(file_end - offset) as usize], offset)?;
        }
        if self.pages.is_empty() {
            return Ok(());
        }
        for page in offset / PAGE..=(end - 1) / PAGE {
            if let Some(data) = self.pages.get(&page) {
                let start = page * PAGE;
                let from = offset.max(start);
                let to = end.min(start + PAGE);
                buf[(from - offset) as usize..(to - offset) as usize]
                    .copy_from_slice(&data[(from - start) as usize..(to - start) as usize]);
            }
        }
        Ok(())
    }
}

impl StorageBackend for SnapshotFile {
    fn len(&self) -> io::Result<u64> {
        Ok(self.view().len)
    }

    fn read(&self, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        let mut buf = vec![0; len];
        self.view().read_into(&self.file, offset, &mut buf)?;
        Ok(buf)
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        let mut view = self.view();
        if len < view.len {
            view.file_len = view.file_len.min(len);
            view.pages.retain(|page, _| page * PAGE < len);
            if let Some(data) = view.pages.get_mut(&(len / PAGE)) {
                data[(len % PAGE) as usize..].fill(0);
            }
        }
        view.len = len;
        Ok(())
    }

    fn sync_data(&self, _eventual: bool) -> io::Result<()> {
        Ok(())
    }

    fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        if data.is_empty() {
            return Ok(());
        }
        let mut view = self.view();
        let end = offset + data.len() as u64;
        for page in offset / PAGE..=(end - 1) / PAGE {
            let start = page * PAGE;
            if !view.pages.contains_key(&page) {
                let mut fresh = vec![0; PAGE as usize];
                view.read_into(&self.file, start, &mut fresh)?;
                view.pages.insert(page, fresh.into_boxed_slice());
            }
            let from = offset.max(start);
            let to = end.min(start + PAGE);
            let target = view.pages.get_mut(&page).expect("inserted above");
            target[(from - start) as usize..(to - start) as usize]
                .copy_from_slice(&data[(from - offset) as usize..(to - offset) as usize]);
        }
        Ok(())
    }
}

/// Reads every (key, value) of a table; a table never written reads empty.
pub(crate) fn read_all(
    meta: &Meta,
    txn: &redb::ReadTransaction,
    table: TableDefinition<&str, &[u8]>,
) -> Result<Vec<(String, Vec<u8>)>> {
    let table = match txn.open_table(table) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
        Err(e) => return Err(meta.error(e)),
    };
    let mut out = Vec::new();
    for item in table.iter().map_err(|e| meta.error(e))? {
        let (k, v) = item.map_err(|e| meta.error(e))?;
        out.push((k.value().to_string(), v.value().to_vec()));
    }
    Ok(out)
}

/// Reads one value in a read transaction; a table never written reads empty.
pub(crate) fn read_one(
    meta: &Meta,
    txn: &redb::ReadTransaction,
    table: TableDefinition<&str, &[u8]>,
    key: &str,
) -> Result<Option<Vec<u8>>> {
    let table = match txn.open_table(table) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
        Err(e) => return Err(meta.error(e)),
    };
    let value = table.get(key).map_err(|e| meta.error(e))?;
    Ok(value.map(|v| v.value().to_vec()))
}

/// Reads one value from a table in a write transaction.
pub(crate) fn get(
    meta: &Meta,
    txn: &redb::WriteTransaction,
    table: TableDefinition<&str, &[u8]>,
    key: &str,
) -> Result<Option<Vec<u8>>> {
    let table = txn.open_table(table).map_err(|e| meta.error(e))?;
    let value = table.get(key).map_err(|e| meta.error(e))?;
    Ok(value.map(|v| v.value().to_vec()))
}

/// Inserts or replaces one value.
pub(crate) fn put(
    meta: &Meta,
    txn: &redb::WriteTransaction,
    table: TableDefinition<&str, &[u8]>,
    key: &str,
    value: &[u8],
) -> Result<()> {
    let mut table = txn.open_table(table).map_err(|e| meta.error(e))?;
    table.insert(key, value).map_err(|e| meta.error(e))?;
    Ok(())
}

/// Removes one key; returns whether it was there.
pub(crate) fn remove(
    meta: &Meta,
    txn: &redb::WriteTransaction,
    table: TableDefinition<&str, &[u8]>,
    key: &str,
) -> Result<bool> {
    let mut table = txn.open_table(table).map_err(|e| meta.error(e))?;
    let removed = table.remove(key).map_err(|e| meta.error(e))?.is_some();
    Ok(removed)
}

/// Reads every (key, value) of a table in a write transaction.
pub(crate) fn all_in_write(
    meta: &Meta,
    txn: &redb::WriteTransaction,
    table: TableDefinition<&str, &[u8]>,
) -> Result<Vec<(String, Vec<u8>)>> {
    let table = txn.open_table(table).map_err(|e| meta.error(e))?;
    let mut out = Vec::new();
    for item in table.iter().map_err(|e| meta.error(e))? {
        let (k, v) = item.map_err(|e| meta.error(e))?;
        out.push((k.value().to_string(), v.value().to_vec()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A new database appears whole: a half-made one left by a killed
    /// process is only a temporary file, replaced by the next opener.
    #[test]
    fn a_new_database_is_renamed_into_place() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("meta.redb.new"), b"half a header").unwrap();
        let meta = Meta::new(dir.path());
        meta.read(|_| Ok(())).unwrap();
        assert!(dir.path().join("meta.redb").is_file());
        assert!(!dir.path().join("meta.redb.new").exists());
        Meta::new(dir.path()).write(|_| Ok(())).unwrap();
    }

    /// The view reads what was written over the file, and sizes like a file.
    #[test]
    fn snapshot_view_is_copy_on_write() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let original: Vec<u8> = (0..3 * PAGE + 100).map(|i| (i % 251) as u8).collect();
        std::fs::write(&path, &original).unwrap();
        let view = SnapshotFile::new(File::open(&path).unwrap()).unwrap();
        let mut model = original.clone();

        let mut write = |offset: u64, data: &[u8]| {
            view.write(offset, data).unwrap();
            let end = offset as usize + data.len();
            if model.len() < end {
                model.resize(end, 0);
            }
            model[offset as usize..end].copy_from_slice(data);
        };
        write(10, &[1; 20]);
        write(PAGE - 5, &[2; 10]);
        write(2 * PAGE, &vec![3; PAGE as usize + 7]);
        assert_eq!(view.read(0, model.len()).unwrap(), model);
        assert_eq!(
            view.read(PAGE - 8, 16).unwrap(),
            model[PAGE as usize - 8..][..16]
        );

        // Shrink into a written page and a file page, then grow: zeros.
        view.set_len(PAGE + 3).unwrap();
        model.truncate(PAGE as usize + 3);
        view.set_len(4 * PAGE).unwrap();
        model.resize(4 * PAGE as usize, 0);
        assert_eq!(view.len().unwrap(), 4 * PAGE);
        assert_eq!(view.read(0, model.len()).unwrap(), model);
        view.sync_data(false).unwrap();

        assert_eq!(
            std::fs::read(&path).unwrap(),
            original,
            "the file was written"
        );
    }
}
