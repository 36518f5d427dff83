//! Answers of metadata reads kept on disk for the next kiln process
//! (`meta.memo/` in the root).
//!
//! A one-shot command such as `kiln run` pays more for opening `meta.redb`
//! (redb loads its allocator state) than for the lookup it opens it for.
//! An answer kept here is marked with the database state it was read from
//! ([`Meta::with_current_tag`]: the file and a digest of the super-header
//! that every commit rewrites) and is used only while the database is in
//! that state, which costs one read of the header under the shared root
//! lock. A stale answer is ignored and replaced, never used; the directory
//! holds nothing else and can be removed at any time.

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::meta::Meta;
use crate::Digest;

/// The kept answers of one root.
pub(crate) struct Memo {
    dir: PathBuf,
}

#[derive(Serialize, Deserialize)]
struct Entry<T> {
    /// The database state the answer was read from.
    state: String,
    /// The question, in full (the file name is a digest of it).
    key: String,
    value: T,
}

impl Memo {
    pub(crate) fn new(root: &Path) -> Memo {
        Memo {
            dir: root.join("meta.memo"),
        }
    }

    fn path(&self, key: &str) -> PathBuf {
        self.dir.join(&Digest::of(key.as_bytes()).hex()[..32])
    }

    /// The answer kept for `key`, if it was read from the database as it
    /// is now.
    pub(crate) fn get<T: DeserializeOwned>(&self, meta: &Meta, key: &str) -> Option<T> {
        let path = self.path(key);
        meta.with_current_tag(|state| {
            let state = state?;
            let bytes = std::fs::read(&path).ok()?;
            let entry: Entry<T> = serde_json::from_slice(&bytes).ok()?;
            (entry.state == state && entry.key == key).then_some(entry.value)
        })
        .ok()
        .flatten()
    }

    /// Keeps `value` as the answer for `key` in database state `state`.
    /// Best effort: without it the next process reads the database.
    pub(crate) fn put<T: Serialize>(&self, key: &str, state: &str, value: &T) {
        let entry = Entry {
            state: state.to_string(),
            key: key.to_string(),
            value,
        };
        let Ok(bytes) = serde_json::to_vec(&entry) else {
            return;
        };
        let _ = std::fs::create_dir_all(&self.dir);
        let path = self.path(key);
        // Renamed into place: a reader sees the old answer or the new one.
        // Not synced: a lost answer is only read from the database again.
        let temp = self
            .dir
            .join(format!(".tmp-{}", crate::fsutil::temp_suffix()));
        let written = std::fs::write(&temp, bytes).and_then(|()| std::fs::rename(&temp, &path));
        if written.is_err() {
            let _ = std::fs::remove_file(&temp);
        }
    }
}
