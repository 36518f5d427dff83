//! Metadata in `meta.redb`: image names, snapshot records, leases, build
//! cache records.
//!
//! Several kiln processes may share one root. redb allows one open handle
//! per file, so every operation takes `meta.lock` (flock, blocking) for the
//! duration of one transaction, opens the database, and closes it again.
//! A killed process releases its flock with its file descriptors, and redb
//! recovers an interrupted write on the next open.

use std::fs::File;
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};
use redb::{Database, ReadableTable, TableDefinition};

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

/// A handle on the metadata database; cheap to clone, opens per operation.
#[derive(Debug, Clone)]
pub(crate) struct Meta {
    db_path: PathBuf,
    lock_path: PathBuf,
}

/// The open database while the root lock is held.
pub(crate) struct Locked {
    pub db: Database,
    _lock: Flock<File>,
}

impl Meta {
    pub fn new(root: &Path) -> Meta {
        Meta {
            db_path: root.join("meta.redb"),
            lock_path: root.join("meta.lock"),
        }
    }

    /// Takes the root lock and opens the database.
    pub fn lock(&self) -> Result<Locked> {
        let file = File::options()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&self.lock_path)
            .map_err(Error::io(&self.lock_path))?;
        let lock = Flock::lock(file, FlockArg::LockExclusive)
            .map_err(|(_, errno)| Error::io(&self.lock_path)(errno.into()))?;
        let db = Database::create(&self.db_path).map_err(|e| self.error(e))?;
        Ok(Locked { db, _lock: lock })
    }

    /// Runs `f` in one write transaction and commits it.
    pub fn write<T>(&self, f: impl FnOnce(&redb::WriteTransaction) -> Result<T>) -> Result<T> {
        let locked = self.lock()?;
        let txn = locked.db.begin_write().map_err(|e| self.error(e))?;
        let value = f(&txn)?;
        txn.commit().map_err(|e| self.error(e))?;
        Ok(value)
    }

    /// Runs `f` in one read transaction.
    pub fn read<T>(&self, f: impl FnOnce(&redb::ReadTransaction) -> Result<T>) -> Result<T> {
        let locked = self.lock()?;
        let txn = locked.db.begin_read().map_err(|e| self.error(e))?;
        f(&txn)
    }

    pub fn error(&self, e: impl std::fmt::Display) -> Error {
        Error::Metadata {
            path: self.db_path.clone(),
            message: e.to_string(),
        }
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
