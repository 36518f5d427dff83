//! Leases: protection from garbage collection for content a live process is
//! still putting together (blobs written but not yet named, snapshots being
//! made). A lease belongs to a process; one whose process is gone protects
//! nothing and is removed by the next collection.

use std::sync::atomic::{AtomicBool, Ordering};

use serde::{Deserialize, Serialize};

use crate::meta::{self, LEASES};
use crate::{Digest, Result, Store};

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct LeaseRecord {
    pub pid: i32,
    /// The process's start time (clock ticks since boot), so a reused pid
    /// does not keep a dead lease alive.
    pub start_time: u64,
    pub digests: Vec<Digest>,
}

impl LeaseRecord {
    pub fn is_alive(&self) -> bool {
        process_start_time(self.pid) == Some(self.start_time)
    }
}

/// A lease held by this process; dropping it releases what it protects.
///
/// The lease's record is written with the first digest it protects (a
/// record without digests protects nothing), so a lease that ends up
/// protecting nothing, as in a fully cached build, costs no metadata write.
#[derive(Debug)]
pub struct Lease {
    store: Store,
    id: String,
    pid: i32,
    /// Whether the record exists in `meta.redb` (set once written).
    written: AtomicBool,
}

impl Store {
    /// Takes a new lease for this process.
    pub fn lease(&self) -> Result<Lease> {
        let pid = std::process::id() as i32;
        let id = format!("{pid}-{:016x}", rand::random::<u64>());
        Ok(Lease {
            store: self.clone(),
            id,
            pid,
            written: AtomicBool::new(false),
        })
    }
}

impl Lease {
    /// Protects `digest` (a blob digest or a snapshot chain id) until the
    /// lease is dropped. Call before the content appears.
    pub fn protect(&self, digest: &Digest) -> Result<()> {
        self.protect_all(std::slice::from_ref(digest))
    }

    /// Protects every digest of `digests` in one metadata write.
    pub fn protect_all(&self, digests: &[Digest]) -> Result<()> {
        let meta = &self.store.meta;
        meta.write(|txn| {
            let mut record: LeaseRecord = match meta::get(meta, txn, LEASES, &self.id)? {
                Some(bytes) => crate::images::parse_json("lease", &bytes)?,
                None => LeaseRecord {
                    pid: self.pid,
                    start_time: process_start_time(self.pid).unwrap_or(0),
                    digests: Vec::new(),
                },
            };
            for digest in digests {
                if !record.digests.contains(digest) {
                    record.digests.push(digest.clone());
                }
            }
            let bytes = serde_json::to_vec(&record).expect("a lease serializes");
            meta::put(meta, txn, LEASES, &self.id, &bytes)
        })?;
        self.written.store(true, Ordering::Release);
        Ok(())
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if !self.written.load(Ordering::Acquire) {
            return;
        }
        let meta = &self.store.meta;
        // A lease that cannot be removed now is dead once this process
        // exits, and the next collection removes it.
        let _ = meta.write(|txn| meta::remove(meta, txn, LEASES, &self.id));
    }
}

/// Field 22 of /proc/PID/stat: when the process started.
pub(crate) fn process_start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses; fields
    // after the last ')' are plain.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn records(store: &Store) -> Vec<LeaseRecord> {
        store
            .meta
            .read(|txn| meta::read_all(&store.meta, txn, LEASES))
            .unwrap()
            .into_iter()
            .map(|(_, v)| serde_json::from_slice(&v).unwrap())
            .collect()
    }

    #[test]
    fn a_lease_is_written_with_its_first_digests_and_removed_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let idle = store.lease().unwrap();
        assert!(records(&store).is_empty(), "no record before a digest");
        drop(idle);
        let lease = store.lease().unwrap();
        lease
            .protect_all(&[Digest::of(b"a"), Digest::of(b"b")])
            .unwrap();
        lease.protect(&Digest::of(b"a")).unwrap();
        let all = records(&store);
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].digests, [Digest::of(b"a"), Digest::of(b"b")]);
        assert!(all[0].is_alive());
        drop(lease);
        assert!(records(&store).is_empty());
    }
}
