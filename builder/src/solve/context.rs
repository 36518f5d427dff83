//! The build context: which files the build may read (after
//! `.dockerignore`) and their content digests. Files are hashed in parallel
//! (rayon); a stat cache in the store's `cache/` maps (path, inode, size,
//! mtime, ctime) to the digest, so an unchanged context is not read again.

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::dockerfile::dockerignore::Matcher;
use crate::solve::error::SolveError;
use crate::solve::paths::{glob_match, has_wildcard};

/// Kind of a context entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    File,
    Dir,
    Symlink,
}

/// One path of the context.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Entry {
    pub kind: Kind,
    /// Permission bits (and setuid/setgid/sticky).
    pub mode: u32,
    /// Content digest (hex) of a file; link target of a symlink.
    pub digest: String,
}

/// The included paths of a context, `/`-separated and relative.
#[derive(Debug, Clone, Default)]
pub(crate) struct ContextIndex {
    pub root: PathBuf,
    pub entries: BTreeMap<String, Entry>,
}

impl ContextIndex {
    /// Whether `path` (relative) is part of the context.
    pub fn contains(&self, path: &str) -> bool {
        path.is_empty() || path == "." || self.entries.contains_key(path)
    }

    /// The entries a COPY source reads: the matches of `source` (wildcards
    /// allowed) and everything below them, as (path, entry).
    pub fn selection(&self, source: &str) -> Vec<(&str, &Entry)> {
        let source = clean_relative(source);
        if source.is_empty() {
            return self.entries.iter().map(|(k, v)| (k.as_str(), v)).collect();
        }
        let parts: Vec<&str> = source.split('/').collect();
        let wild = has_wildcard(&source);
        self.entries
            .iter()
            .filter(|(path, _)| {
                let mut comps = path.split('/');
                for p in &parts {
                    match comps.next() {
                        Some(c) if (wild && glob_match(p, c)) || c == *p => {}
                        _ => return false,
                    }
                }
                true
            })
            .map(|(k, v)| (k.as_str(), v))
            .collect()
    }
}

/// A relative, cleaned path (`""` for the root).
pub(crate) fn clean_relative(path: &str) -> String {
    let cleaned = crate::dockerfile::dockerignore::clean(path.trim_start_matches('/'));
    let cleaned = cleaned.trim_start_matches("../").to_string();
    if cleaned == "." || cleaned == ".." {
        String::new()
    } else {
        cleaned
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct StatEntry {
    inode: u64,
    size: u64,
    mtime: i64,
    mtime_ns: i64,
    ctime: i64,
    ctime_ns: i64,
    digest: String,
}

impl StatEntry {
    fn matches(&self, m: &std::fs::Metadata) -> bool {
        self.inode == m.ino()
            && self.size == m.size()
            && self.mtime == m.mtime()
            && self.mtime_ns == m.mtime_nsec()
            && self.ctime == m.ctime()
            && self.ctime_ns == m.ctime_nsec()
    }
}

/// The stat cache file: absolute path -> last known digest.
#[derive(Debug, Default, Serialize, Deserialize)]
struct StatCache {
    files: HashMap<String, StatEntry>,
}

/// A hashed path: its entry and, for files, the stat cache line to keep.
type Hashed = (String, Entry, Option<(String, StatEntry)>);

/// Walks `root`, drops what `exclude` (.dockerignore) ignores and what
/// `include` does not name (empty: everything), and hashes the files.
pub(crate) fn index(
    root: &Path,
    include: &[String],
    exclude: &[String],
    cache_dir: &Path,
) -> Result<ContextIndex, SolveError> {
    let matcher = if exclude.is_empty() {
        None
    } else {
        Some(
            Matcher::new(exclude)
                .map_err(|_| SolveError::unsupported("this .dockerignore pattern"))?,
        )
    };
    let can_prune = !exclude.iter().any(|p| p.starts_with('!'));
    let include: Vec<String> = include.iter().map(|p| clean_relative(p)).collect();
    let everything = include.is_empty() || include.iter().any(|p| p.is_empty() || has_wildcard(p));
    let wanted = |rel: &str| {
        everything
            || include.iter().any(|p| {
                rel == p
                    || rel
                        .strip_prefix(p.as_str())
                        .is_some_and(|r| r.starts_with('/'))
                    || p.strip_prefix(rel).is_some_and(|r| r.starts_with('/'))
            })
    };
    let mut listed: Vec<(String, PathBuf, std::fs::Metadata)> = Vec::new();
    let mut walker = walkdir::WalkDir::new(root)
        .min_depth(1)
        .sort_by_file_name()
        .into_iter();
    while let Some(item) = walker.next() {
        let item = item.map_err(|e| {
            let path = e
                .path()
                .map(Path::to_path_buf)
                .unwrap_or_else(|| root.to_path_buf());
            SolveError::Io {
                op: "read the build context at",
                path,
                source: e.into(),
            }
        })?;
        let rel = item
            .path()
            .strip_prefix(root)
            .expect("walkdir yields paths below its root")
            .to_string_lossy()
            .into_owned();
        let is_dir = item.file_type().is_dir();
        let ignored = matcher.as_ref().is_some_and(|m| m.matches(&rel));
        if (ignored && is_dir && can_prune) || (is_dir && !wanted(&rel)) {
            walker.skip_current_dir();
            continue;
        }
        if ignored || !wanted(&rel) {
            continue;
        }
        let meta = item
            .metadata()
            .map_err(|e| SolveError::io("stat", item.path())(e.into()))?;
        listed.push((rel, item.path().to_path_buf(), meta));
    }
    let cache_path = cache_dir.join("context-stat.json");
    let cache: StatCache = std::fs::read(&cache_path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    let hashed: Vec<Result<Hashed, SolveError>> = listed
        .par_iter()
        .map(|(rel, path, meta)| {
            let mode = meta.mode() & 0o7777;
            let ft = meta.file_type();
            if ft.is_dir() {
                return Ok((
                    rel.clone(),
                    Entry {
                        kind: Kind::Dir,
                        mode,
                        digest: String::new(),
                    },
                    None,
                ));
            }
            if ft.is_symlink() {
                let target = std::fs::read_link(path).map_err(SolveError::io("read link", path))?;
                return Ok((
                    rel.clone(),
                    Entry {
                        kind: Kind::Symlink,
                        mode,
                        digest: target.to_string_lossy().into_owned(),
                    },
                    None,
                ));
            }
            let key = path.to_string_lossy().into_owned();
            let digest = match cache.files.get(&key) {
                Some(known) if known.matches(meta) => known.digest.clone(),
                _ => hash_file(path)?,
            };
            let stat = StatEntry {
                inode: meta.ino(),
                size: meta.size(),
                mtime: meta.mtime(),
                mtime_ns: meta.mtime_nsec(),
                ctime: meta.ctime(),
                ctime_ns: meta.ctime_nsec(),
                digest: digest.clone(),
            };
            Ok((
                rel.clone(),
                Entry {
                    kind: Kind::File,
                    mode,
                    digest,
                },
                Some((key, stat)),
            ))
        })
        .collect();
    let mut entries = BTreeMap::new();
    let mut new_cache = StatCache::default();
    let mut changed = false;
    for item in hashed {
        let (rel, entry, stat) = item?;
        if let Some((key, stat)) = stat {
            changed |= cache
                .files
                .get(&key)
                .is_none_or(|old| old.digest != stat.digest || !old_matches(old, &stat));
            new_cache.files.insert(key, stat);
        }
        entries.insert(rel, entry);
    }
    // Keep what other contexts recorded.
    let root_prefix = format!("{}/", root.to_string_lossy());
    for (k, v) in cache.files {
        if !k.starts_with(&root_prefix) {
            new_cache.files.entry(k).or_insert(v);
        }
    }
    if changed {
        // A lost update only costs a re-hash next time.
        let _ = write_atomic(
            &cache_path,
            &serde_json::to_vec(&new_cache).expect("serializes"),
        );
    }
    Ok(ContextIndex {
        root: root.to_path_buf(),
        entries,
    })
}

fn old_matches(old: &StatEntry, new: &StatEntry) -> bool {
    old.inode == new.inode
        && old.size == new.size
        && old.mtime == new.mtime
        && old.mtime_ns == new.mtime_ns
        && old.ctime == new.ctime
        && old.ctime_ns == new.ctime_ns
}

fn hash_file(path: &Path) -> Result<String, SolveError> {
    let mut file = std::fs::File::open(path).map_err(SolveError::io("open", path))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = file.read(&mut buf).map_err(SolveError::io("read", path))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let temp = path.with_extension(format!("tmp-{}-{:x}", std::process::id(), rand_suffix()));
    std::fs::write(&temp, bytes)?;
    std::fs::rename(&temp, path)
}

fn rand_suffix() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0),
    );
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ignores_and_selects() {
        let dir = tempfile::tempdir().unwrap();
        let ctx = dir.path().join("ctx");
        std::fs::create_dir_all(ctx.join("src")).unwrap();
        std::fs::write(ctx.join("src/main.rs"), "fn main() {}").unwrap();
        std::fs::write(ctx.join("a.txt"), "a").unwrap();
        std::fs::write(ctx.join("b.log"), "b").unwrap();
        let cache = dir.path().join("cache");
        let idx = index(&ctx, &[], &["*.log".to_string()], &cache).unwrap();
        assert!(idx.contains("a.txt") && idx.contains("src/main.rs"));
        assert!(!idx.contains("b.log"));
        assert_eq!(idx.selection("src").len(), 2);
        assert_eq!(idx.selection("*.txt").len(), 1);
        assert_eq!(idx.selection(".").len(), 3);
        // Second run uses the stat cache and gives the same digests.
        let again = index(&ctx, &[], &["*.log".to_string()], &cache).unwrap();
        assert_eq!(idx.entries, again.entries);
        let only = index(&ctx, &["src".to_string()], &[], &cache).unwrap();
        assert!(only.contains("src/main.rs") && !only.contains("a.txt"));
    }
}
