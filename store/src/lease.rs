//! Leases: protection from garbage collection for content a live process is
//! still putting together (blobs written but not yet named, snapshots being
//! made). A lease belongs to a process; one whose process is gone protects
//! nothing and is removed by the next collection.

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
#[derive(Debug)]
pub struct Lease {
    store: Store,
    id: String,
}

impl Store {
    /// Takes a new lease for this process.
    pub fn lease(&self) -> Result<Lease> {
        let pid = std::process::id() as i32;
        let record = LeaseRecord {
            pid,
            start_time: process_start_time(pid).unwrap_or(0),
            digests: Vec::new(),
        };
        let id = format!("{pid}-{:016x}", rand::random::<u64>());
        let bytes = serde_json::to_vec(&record).expect("a lease serializes");
        self.meta
            .write(|txn| meta::put(&self.meta, txn, LEASES, &id, &bytes))?;
        Ok(Lease {
            store: self.clone(),
            id,
        })
    }
}

impl Lease {
    /// Protects `digest` (a blob digest or a snapshot chain id) until the
    /// lease is dropped. Call before the content appears.
    pub fn protect(&self, digest: &Digest) -> Result<()> {
        let meta = &self.store.meta;
        meta.write(|txn| {
            let mut record: LeaseRecord = match meta::get(meta, txn, LEASES, &self.id)? {
                Some(bytes) => crate::images::parse_json("lease", &bytes)?,
                None => LeaseRecord::default(),
            };
            if !record.digests.contains(digest) {
                record.digests.push(digest.clone());
            }
            let bytes = serde_json::to_vec(&record).expect("a lease serializes");
            meta::put(meta, txn, LEASES, &self.id, &bytes)
        })
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
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
