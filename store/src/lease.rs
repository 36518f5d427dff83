//! Leases: protection from garbage collection for content a live process is
//! still putting together (blobs written but not yet named, snapshots being
//! made). A lease belongs to a process; one whose process is gone protects
//! nothing and is removed by the next collection.
//!
//! A lease costs no metadata write until it protects something: its record
//! is written by the first [`Lease::protect`], rewritten only when a new
//! digest is added, and removed on drop only if it was written. So a
//! command that finds everything already in place (`kiln run` of an image
//! whose snapshots exist) writes no metadata at all.

use std::collections::BTreeSet;
use std::sync::Mutex;

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
    record: LeaseRecord,
    /// What this lease protects, and whether its record may be in the
    /// metadata (set before the first write is tried).
    state: Mutex<LeaseState>,
}

#[derive(Debug, Default)]
struct LeaseState {
    protected: BTreeSet<Digest>,
    written: bool,
}

impl Store {
    /// Takes a new lease for this process. Nothing is written until it
    /// protects something.
    pub fn lease(&self) -> Result<Lease> {
        let pid = std::process::id() as i32;
        let record = LeaseRecord {
            pid,
            start_time: process_start_time(pid).unwrap_or(0),
            digests: Vec::new(),
        };
        let id = format!("{pid}-{:016x}", rand::random::<u64>());
        Ok(Lease {
            store: self.clone(),
            id,
            record,
            state: Mutex::new(LeaseState::default()),
        })
    }
}

impl Lease {
    /// Protects `digest` (a blob digest or a snapshot chain id) until the
    /// lease is dropped. Call before the content appears.
    ///
    /// Protecting a digest this lease already protects writes nothing.
    pub fn protect(&self, digest: &Digest) -> Result<()> {
        self.protect_all(std::slice::from_ref(digest))
    }

    /// Protects every digest of `digests`, in one metadata write (none if
    /// all are protected already).
    pub fn protect_all(&self, digests: &[Digest]) -> Result<()> {
        // Held across the write: threads sharing this lease add digests one
        // write at a time, so no record written loses another's digest.
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let mut new: Vec<&Digest> = Vec::new();
        for digest in digests {
            if !state.protected.contains(digest) && !new.contains(&digest) {
                new.push(digest);
            }
        }
        if new.is_empty() {
            return Ok(());
        }
        let mut record = self.record.clone();
        record.digests = state.protected.iter().cloned().collect();
        record.digests.extend(new.iter().map(|d| (*d).clone()));
        let bytes = serde_json::to_vec(&record).expect("a lease serializes");
        state.written = true;
        let meta = &self.store.meta;
        meta.write(|txn| meta::put(meta, txn, LEASES, &self.id, &bytes))?;
        state.protected.extend(new.into_iter().cloned());
        Ok(())
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let written = match self.state.get_mut() {
            Ok(state) => state.written,
            Err(poisoned) => poisoned.into_inner().written,
        };
        if !written {
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
