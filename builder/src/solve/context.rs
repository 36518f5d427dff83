//! The build context: which files the build may read (after
//! `.dockerignore`) and their content digests. Files are hashed in parallel
//! (rayon); a stat cache in the store's `cache/` maps (path, inode, size,
//! mtime, ctime) to the digest, so an unchanged context is not read again.

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use rayon::prelude::*;
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

/// What the stat cache knows of one file: the stat fields that change when
/// its content can have, and the content digest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct StatEntry {
    inode: u64,
    size: u64,
    mtime: i64,
    mtime_ns: i64,
    ctime: i64,
    ctime_ns: i64,
    digest: [u8; 32],
}

impl StatEntry {
    fn of(m: &std::fs::Metadata, digest: [u8; 32]) -> StatEntry {
        StatEntry {
            inode: m.ino(),
            size: m.size(),
            mtime: m.mtime(),
            mtime_ns: m.mtime_nsec(),
            ctime: m.ctime(),
            ctime_ns: m.ctime_nsec(),
            digest,
        }
    }

    fn matches(&self, m: &std::fs::Metadata) -> bool {
        self.inode == m.ino()
            && self.size == m.size()
            && self.mtime == m.mtime()
            && self.mtime_ns == m.mtime_nsec()
            && self.ctime == m.ctime()
            && self.ctime_ns == m.ctime_nsec()
    }
}

/// The stat cache file (`cache/context-stat.bin`): absolute path -> last
/// known digest, for every context built from. Read with one read and
/// looked up in place: a magic line, then per file a little-endian u32
/// path length, the path, six 64-bit stat fields and the raw sha256.
const STAT_MAGIC: &[u8] = b"kiln-context-stat 1\n";
const STAT_FIXED: usize = 6 * 8 + 32;

/// The stat cache as read: keys borrow the file's bytes.
fn parse_stat_cache(bytes: &[u8]) -> HashMap<&[u8], StatEntry> {
    let mut map = HashMap::new();
    let Some(mut rest) = bytes.strip_prefix(STAT_MAGIC) else {
        return map;
    };
    let int = |b: &[u8], i: usize| u64::from_le_bytes(b[i * 8..i * 8 + 8].try_into().expect("8"));
    while rest.len() >= 4 {
        let len = u32::from_le_bytes(rest[..4].try_into().expect("4")) as usize;
        let Some(record) = rest.get(4..4 + len + STAT_FIXED) else {
            // Cut short: what came before is still good.
            break;
        };
        let (path, fixed) = record.split_at(len);
        map.insert(
            path,
            StatEntry {
                inode: int(fixed, 0),
                size: int(fixed, 1),
                mtime: int(fixed, 2) as i64,
                mtime_ns: int(fixed, 3) as i64,
                ctime: int(fixed, 4) as i64,
                ctime_ns: int(fixed, 5) as i64,
                digest: fixed[48..80].try_into().expect("32"),
            },
        );
        rest = &rest[4 + len + STAT_FIXED..];
    }
    map
}

fn push_stat(out: &mut Vec<u8>, path: &[u8], e: &StatEntry) {
    out.extend_from_slice(&(path.len() as u32).to_le_bytes());
    out.extend_from_slice(path);
    for v in [
        e.inode,
        e.size,
        e.mtime as u64,
        e.mtime_ns as u64,
        e.ctime as u64,
        e.ctime_ns as u64,
    ] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out.extend_from_slice(&e.digest);
}

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
    // The walk reads directories only (their entries carry the type); the
    // stats are taken in parallel below.
    let mut listed: Vec<(String, PathBuf)> = Vec::new();
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
        listed.push((rel, item.into_path()));
    }
    let cache_path = cache_dir.join("context-stat.bin");
    let cache_bytes = std::fs::read(&cache_path).unwrap_or_default();
    let cache = parse_stat_cache(&cache_bytes);
    let hashed: Vec<Result<(Entry, Option<StatEntry>), SolveError>> = listed
        .par_iter()
        .map(|(_, path)| {
            let meta =
                std::fs::symlink_metadata(path).map_err(SolveError::io("stat", path.as_path()))?;
            let mode = meta.mode() & 0o7777;
            let ft = meta.file_type();
            if ft.is_dir() {
                return Ok((
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
                    Entry {
                        kind: Kind::Symlink,
                        mode,
                        digest: target.to_string_lossy().into_owned(),
                    },
                    None,
                ));
            }
            let key = path.as_os_str().as_bytes();
            let digest = match cache.get(key) {
                Some(known) if known.matches(&meta) => known.digest,
                _ => hash_file(path)?,
            };
            Ok((
                Entry {
                    kind: Kind::File,
                    mode,
                    digest: hex::encode(digest),
                },
                Some(StatEntry::of(&meta, digest)),
            ))
        })
        .collect();
    let mut entries = BTreeMap::new();
    let mut stats: Vec<(&[u8], StatEntry)> = Vec::new();
    let mut changed = false;
    for ((rel, path), item) in listed.iter().zip(hashed) {
        let (entry, stat) = item?;
        if let Some(stat) = stat {
            let key = path.as_os_str().as_bytes();
            changed |= cache.get(key) != Some(&stat);
            stats.push((key, stat));
        }
        entries.insert(rel.clone(), entry);
    }
    if changed {
        let mut out = Vec::with_capacity(cache_bytes.len().max(stats.len() * 160));
        out.extend_from_slice(STAT_MAGIC);
        for (key, stat) in &stats {
            push_stat(&mut out, key, stat);
        }
        // Keep what other contexts recorded.
        let root_prefix = [root.as_os_str().as_bytes(), b"/"].concat();
        for (key, stat) in &cache {
            if !key.starts_with(&root_prefix) {
                push_stat(&mut out, key, stat);
            }
        }
        // A lost update only costs a re-hash next time.
        let _ = write_atomic(&cache_path, &out);
    }
    Ok(ContextIndex {
        root: root.to_path_buf(),
        entries,
    })
}

fn hash_file(path: &Path) -> Result<[u8; 32], SolveError> {
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
    Ok(hasher.finalize().into())
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
        assert!(cache.join("context-stat.bin").is_file());
        // A changed file is hashed again, not taken from the stat cache.
        std::fs::write(ctx.join("a.txt"), "b").unwrap();
        let changed = index(&ctx, &[], &["*.log".to_string()], &cache).unwrap();
        assert_ne!(changed.entries["a.txt"], idx.entries["a.txt"]);
        assert_eq!(changed.entries["src/main.rs"], idx.entries["src/main.rs"]);
        // A cut-short cache file is read up to its last whole record.
        let bytes = std::fs::read(cache.join("context-stat.bin")).unwrap();
        let whole = parse_stat_cache(&bytes).len();
        assert_eq!(whole, 2);
        assert_eq!(parse_stat_cache(&bytes[..bytes.len() - 1]).len(), whole - 1);
        assert!(parse_stat_cache(b"garbage").is_empty());
        let only = index(&ctx, &["src".to_string()], &[], &cache).unwrap();
        assert!(only.contains("src/main.rs") && !only.contains("a.txt"));
    }
}
