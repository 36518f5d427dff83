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
//! Opening a view costs more than most reads (redb loads its allocator
//! state), so a process keeps one view per database ([`Views`]) and reuses
//! it while the file is unchanged: every use checks, under the shared
//! lock, that the path still names the file the view reads and that the
//! file's super-header (both commit slots with their roots and transaction
//! ids, which every commit rewrites) is byte for byte the one seen when the
//! view was opened. redb never rewrites a page reachable from the current
//! roots, so an unchanged header means an unchanged database; any change,
//! by this process or another, opens a fresh view. The kept view is never
//! closed: a one-read command pays one open and no close.
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
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock, Mutex, MutexGuard};

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
    views: Arc<Views>,
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
    db: Db,
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

/// The database of a [`Locked`]: opened for it, or this process's kept
/// read view.
enum Db {
    Own(Database),
    View(Arc<ReadView>),
}

impl std::ops::Deref for Db {
    type Target = Database;

    fn deref(&self) -> &Database {
        match self {
            Db::Own(db) => db,
            Db::View(view) => &view.db,
        }
    }
}

/// The read views a process keeps open, by database path (see the module
/// docs). Never dropped in the process-wide instance.
#[derive(Default)]
pub(crate) struct Views {
    open: Mutex<HashMap<PathBuf, Arc<ReadView>>>,
}

/// The views of this process.
static PROCESS_VIEWS: LazyLock<Arc<Views>> = LazyLock::new(Arc::default);

impl std::fmt::Debug for Views {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Views").finish_non_exhaustive()
    }
}

impl Views {
    /// A current read view of `meta`'s database, or None when the file
    /// does not exist. Called with the shared root lock held.
    fn current(&self, meta: &Meta) -> Result<Option<Arc<ReadView>>> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let stale = match open.get(&meta.db_path) {
            Some(view) if view.is_current(&meta.db_path) => return Ok(Some(view.clone())),
            Some(_) => open.remove(&meta.db_path),
            None => None,
        };
        // A stale view reads nothing more from the changed file, so its
        // closing work (which redb does in memory, on the view) sees only
        // what it read while the file was current.
        if let Some(stale) = &stale {
            stale.backend.close();
        }
        let file = match File::open(&meta.db_path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io(&meta.db_path)(e)),
        };
        let view = Arc::new(ReadView::open(file, meta)?);
        open.insert(meta.db_path.clone(), view.clone());
        drop(open);
        drop(stale);
        Ok(Some(view))
    }
}

/// A read view of the database with what identifies the file state it
/// shows.
struct ReadView {
    // Dropped before the backend handle below.
    db: Database,
    backend: Arc<SnapshotFile>,
    /// Device and inode of the file.
    id: (u64, u64),
    /// The file's first bytes (redb's super-header) when opened.
    header: Vec<u8>,
}

impl ReadView {
    fn open(file: File, meta: &Meta) -> Result<ReadView> {
        let stat = file.metadata().map_err(Error::io(&meta.db_path))?;
        let backend = Arc::new(SnapshotFile::new(file, stat.len()));
        let header = backend.file_header().map_err(Error::io(&meta.db_path))?;
        let db = Database::builder()
            .create_with_backend(SharedSnapshot(backend.clone()))
            .map_err(|e| meta.error(e))?;
        Ok(ReadView {
            db,
            backend,
            id: (stat.dev(), stat.ino()),
            header,
        })
    }

    /// Whether `path` still names the file this view reads, unchanged
    /// since the view was opened.
    fn is_current(&self, path: &Path) -> bool {
        let Ok(stat) = std::fs::metadata(path) else {
            return false;
        };
        (stat.dev(), stat.ino()) == self.id
            && self
                .backend
                .file_header()
                .is_ok_and(|header| header == self.header)
    }
}

impl Meta {
    pub fn new(root: &Path) -> Meta {
        Meta::with_views(root, PROCESS_VIEWS.clone())
    }

    /// A handle reading through `views` rather than the process's own (as
    /// another process would).
    pub(crate) fn with_views(root: &Path, views: Arc<Views>) -> Meta {
        Meta {
            db_path: root.join("meta.redb"),
            lock_path: root.join("meta.lock"),
            held: Arc::default(),
            views,
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
        let lock = self.flock(if writable {
            FlockArg::LockExclusive
        } else {
            FlockArg::LockShared
        })?;
        if writable {
            if !self.db_path.exists() {
                self.create_db()?;
            }
            let db = Database::create(&self.db_path).map_err(|e| self.error(e))?;
            return Ok(Locked {
                db: Db::Own(db),
                writable,
                _lock: lock,
            });
        }
        match self.views.current(self)? {
            Some(view) => Ok(Locked {
                db: Db::View(view),
                writable,
                _lock: lock,
            }),
            None => {
                // A new root: make the file for real, once.
                drop(lock);
                self.lock(true)
            }
        }
    }

    /// Takes the root lock in `mode`.
    fn flock(&self, mode: FlockArg) -> Result<Flock<File>> {
        let file = File::options()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&self.lock_path)
            .map_err(Error::io(&self.lock_path))?;
        Flock::lock(file, mode).map_err(|(_, errno)| Error::io(&self.lock_path)(errno.into()))
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
        self.with_locked(writable, |db| f(db))
    }

    /// [`Meta::with_db`], with the handle itself (view or own).
    fn with_locked<T>(&self, writable: bool, f: impl FnOnce(&Db) -> Result<T>) -> Result<T> {
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

    /// Runs `f` in one read transaction, and names the database state it
    /// read (see [`Meta::with_current_tag`]); None when it read through a
    /// handle this process holds open for writing.
    pub fn read_tagged<T>(
        &self,
        f: impl FnOnce(&redb::ReadTransaction) -> Result<T>,
    ) -> Result<(T, Option<String>)> {
        self.with_locked(false, |db| {
            let txn = db.begin_read().map_err(|e| self.error(e))?;
            let value = f(&txn)?;
            let tag = match db {
                Db::View(view) => Some(state_tag(view.id, &view.header)),
                Db::Own(_) => None,
            };
            Ok((value, tag))
        })
    }

    /// Runs `f` with the name of the database's current state, under the
    /// shared root lock, without opening the database: the file's identity
    /// and a digest of its super-header, which every commit rewrites (see
    /// the module docs), so equal tags mean equal contents. `f` gets None
    /// when there is no database yet or this process holds it open.
    pub fn with_current_tag<T>(&self, f: impl FnOnce(Option<&str>) -> T) -> Result<T> {
        if lock_held(&self.held).holds > 0 {
            return Ok(f(None));
        }
        let _lock = self.flock(FlockArg::LockShared)?;
        let file = match File::open(&self.db_path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(f(None)),
            Err(e) => return Err(Error::io(&self.db_path)(e)),
        };
        let stat = file.metadata().map_err(Error::io(&self.db_path))?;
        let header = read_header(&file).map_err(Error::io(&self.db_path))?;
        Ok(f(Some(&state_tag((stat.dev(), stat.ino()), &header))))
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
    /// Set once the file may have changed under the view: every access
    /// fails from then on.
    closed: AtomicBool,
}

/// A [`SnapshotFile`] shared with the [`ReadView`] that checks its file.
#[derive(Debug)]
struct SharedSnapshot(Arc<SnapshotFile>);

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
    /// A view of `file`, `len` bytes long.
    fn new(file: File, len: u64) -> SnapshotFile {
        SnapshotFile {
            file,
            view: Mutex::new(View {
                len,
                file_len: len,
                pages: HashMap::new(),
            }),
            closed: AtomicBool::new(false),
        }
    }

    fn view(&self) -> io::Result<MutexGuard<'_, View>> {
        if self.closed.load(Ordering::Acquire) {
            return Err(io::Error::other("the metadata view was closed"));
        }
        Ok(self.view.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Fails every later access.
    fn close(&self) {
        self.closed.store(true, Ordering::Release);
    }

    /// The file's first page (redb's super-header and padding) as it is
    /// on disk now, shorter if the file is.
    fn file_header(&self) -> io::Result<Vec<u8>> {
        read_header(&self.file)
    }
}

/// The first page of a database file: redb's super-header.
fn read_header(file: &File) -> io::Result<Vec<u8>> {
    let mut header = vec![0; PAGE as usize];
    let mut read = 0;
    while read < header.len() {
        match file.read_at(&mut header[read..], read as u64) {
            Ok(0) => break,
            Ok(n) => read += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    header.truncate(read);
    Ok(header)
}

/// Names a database state: the file (device, inode) and a digest of its
/// super-header.
fn state_tag(id: (u64, u64), header: &[u8]) -> String {
    format!("{}:{}:{}", id.0, id.1, crate::Digest::of(header).hex())
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

impl StorageBackend for SharedSnapshot {
    fn len(&self) -> io::Result<u64> {
        self.0.len()
    }

    fn read(&self, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        self.0.read(offset, len)
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.0.set_len(len)
    }

    fn sync_data(&self, eventual: bool) -> io::Result<()> {
        self.0.sync_data(eventual)
    }

    fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.0.write(offset, data)
    }
}

impl StorageBackend for SnapshotFile {
    fn len(&self) -> io::Result<u64> {
        Ok(self.view()?.len)
    }

    fn read(&self, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        let mut buf = vec![0; len];
        self.view()?.read_into(&self.file, offset, &mut buf)?;
        Ok(buf)
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        let mut view = self.view()?;
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
        self.view().map(drop)
    }

    fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        if data.is_empty() {
            return Ok(());
        }
        let mut view = self.view()?;
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

    fn set(meta: &Meta, key: &str, value: &str) {
        meta.write(|txn| put(meta, txn, NAMES, key, value.as_bytes()))
            .unwrap();
    }

    fn value(meta: &Meta, key: &str) -> Option<String> {
        meta.read(|txn| read_one(meta, txn, NAMES, key))
            .unwrap()
            .map(|v| String::from_utf8(v).unwrap())
    }

    /// A read after a write sees it, though the first read's view is kept.
    #[test]
    fn a_kept_view_sees_later_writes() {
        let dir = tempfile::tempdir().unwrap();
        let reader = Meta::new(dir.path());
        set(&reader, "a", "1");
        assert_eq!(value(&reader, "a").as_deref(), Some("1"));
        assert_eq!(value(&reader, "b"), None);
        // Another handle of this process.
        set(&Meta::new(dir.path()), "b", "2");
        assert_eq!(value(&reader, "b").as_deref(), Some("2"));
        // A held writable database of another handle.
        let writer = Meta::new(dir.path());
        {
            let _hold = writer.hold();
            set(&writer, "c", "3");
            set(&writer, "d", "4");
        }
        assert_eq!(value(&reader, "c").as_deref(), Some("3"));
        assert_eq!(value(&reader, "d").as_deref(), Some("4"));
        // A handle reading through views of its own, as another process.
        let other = Meta::with_views(dir.path(), Arc::default());
        assert_eq!(value(&other, "d").as_deref(), Some("4"));
        set(&reader, "e", "5");
        assert_eq!(value(&other, "e").as_deref(), Some("5"));
    }

    /// A write that leaves the file's size as it was is still seen.
    #[test]
    fn a_kept_view_sees_a_write_of_the_same_size() {
        let dir = tempfile::tempdir().unwrap();
        let meta = Meta::new(dir.path());
        set(&meta, "name", "aaaa");
        assert_eq!(value(&meta, "name").as_deref(), Some("aaaa"));
        let size = std::fs::metadata(dir.path().join("meta.redb"))
            .unwrap()
            .len();
        set(&meta, "name", "bbbb");
        let after = std::fs::metadata(dir.path().join("meta.redb"))
            .unwrap()
            .len();
        assert_eq!(size, after, "the test wants a write that keeps the size");
        assert_eq!(value(&meta, "name").as_deref(), Some("bbbb"));
    }

    /// A database file replaced by another (renamed over it) is read anew,
    /// and a view dropped after its file changed closes cleanly.
    #[test]
    fn a_kept_view_follows_a_replaced_file() {
        let dir = tempfile::tempdir().unwrap();
        let meta = Meta::new(dir.path());
        set(&meta, "name", "old");
        let db = dir.path().join("meta.redb");
        let copy = dir.path().join("copy.redb");
        std::fs::copy(&db, &copy).unwrap();
        for i in 0..200 {
            set(&meta, &format!("filler{i}"), &"x".repeat(300));
        }
        set(&meta, "name", "new");
        assert_eq!(value(&meta, "name").as_deref(), Some("new"));
        std::fs::rename(&copy, &db).unwrap();
        assert_eq!(value(&meta, "name").as_deref(), Some("old"));
        assert_eq!(value(&meta, "filler0"), None);
        // Rewrite most pages under a kept view, then read again.
        for i in 0..200 {
            meta.write(|txn| remove(&meta, txn, NAMES, &format!("filler{i}")).map(drop))
                .unwrap();
            set(&meta, &format!("other{i}"), &"y".repeat(500));
        }
        assert_eq!(value(&meta, "other199").as_deref(), Some(&*"y".repeat(500)));
    }

    /// Threads of one process share the kept view while another writes.
    #[test]
    fn threads_share_a_kept_view_and_see_writes() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        set(&Meta::new(&root), "start", "0");
        let (sent, received) = std::sync::mpsc::channel::<usize>();
        let readers: Vec<_> = (0..3)
            .map(|_| {
                let root = root.clone();
                std::thread::spawn(move || {
                    let meta = Meta::new(&root);
                    for _ in 0..100 {
                        assert_eq!(value(&meta, "start").as_deref(), Some("0"));
                    }
                })
            })
            .collect();
        let checker = std::thread::spawn({
            let root = root.clone();
            move || {
                let meta = Meta::new(&root);
                for i in received {
                    let expected = i.to_string();
                    assert_eq!(value(&meta, &format!("k{i}")), Some(expected));
                }
            }
        });
        let writer = Meta::new(&root);
        for i in 0..50 {
            set(&writer, &format!("k{i}"), &i.to_string());
            sent.send(i).unwrap();
        }
        drop(sent);
        checker.join().unwrap();
        for reader in readers {
            reader.join().unwrap();
        }
    }

    /// Where [`a_kept_view_sees_a_write_of_another_process`] runs its child.
    const CHILD_DIR: &str = "KILN_META_TEST_CHILD_DIR";

    /// The child half of [`a_kept_view_sees_a_write_of_another_process`]:
    /// writes `child` = `written` into the database it is given.
    #[test]
    #[ignore = "run by a_kept_view_sees_a_write_of_another_process"]
    fn child_writes_a_name() {
        let dir = std::env::var_os(CHILD_DIR).expect("run by its parent test");
        set(&Meta::new(Path::new(&dir)), "child", "written");
    }

    #[test]
    fn a_kept_view_sees_a_write_of_another_process() {
        let dir = tempfile::tempdir().unwrap();
        let meta = Meta::new(dir.path());
        set(&meta, "parent", "here");
        assert_eq!(value(&meta, "child"), None);
        let status = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "meta::tests::child_writes_a_name",
                "--ignored",
                "--quiet",
            ])
            .env(CHILD_DIR, dir.path())
            .stdout(std::process::Stdio::null())
            .status()
            .unwrap();
        assert!(status.success());
        assert_eq!(value(&meta, "child").as_deref(), Some("written"));
        assert_eq!(value(&meta, "parent").as_deref(), Some("here"));
    }

    /// The view reads what was written over the file, and sizes like a file.
    #[test]
    fn snapshot_view_is_copy_on_write() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let original: Vec<u8> = (0..3 * PAGE + 100).map(|i| (i % 251) as u8).collect();
        std::fs::write(&path, &original).unwrap();
        let file = File::open(&path).unwrap();
        let len = file.metadata().unwrap().len();
        let view = SnapshotFile::new(file, len);
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
