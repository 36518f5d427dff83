//! The build context: which files the build may read (after
//! `.dockerignore`) and their content digests. Files are hashed in parallel
//! (rayon); a stat cache in the store's `cache/` maps (path, inode, size,
//! mtime, ctime) to the digest, so an unchanged context is not read again.

use std::collections::BTreeMap;
use std::io::Read;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::fcntl::{open, openat, readlinkat, AtFlags, OFlag};
use nix::sys::stat::{fstatat, Mode, SFlag};

use rayon::prelude::*;
use rustc_hash::FxHashMap;
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
    /// Whether `now` (its digest not yet known) is the same file, unchanged.
    fn same_file(&self, now: &StatEntry) -> bool {
        self.inode == now.inode
            && self.size == now.size
            && self.mtime == now.mtime
            && self.mtime_ns == now.mtime_ns
            && self.ctime == now.ctime
            && self.ctime_ns == now.ctime_ns
    }
}

/// The stat cache file (`cache/context-stat.bin`): absolute path -> last
/// known digest, for every context built from. Read with one read and
/// looked up in place: a magic line, then per file a little-endian u32
/// path length, the path, six 64-bit stat fields and the raw sha256.
const STAT_MAGIC: &[u8] = b"kiln-context-stat 1\n";
const STAT_FIXED: usize = 6 * 8 + 32;

/// The stat cache as read: each path (borrowed from the file's bytes)
/// maps to where its fixed fields start, decoded only when looked up; the
/// table is sized once, so reading it touches little fresh memory.
struct StatCache<'a> {
    bytes: &'a [u8],
    at: FxHashMap<&'a [u8], usize>,
}

impl<'a> StatCache<'a> {
    #[cfg(test)]
    fn len(&self) -> usize {
        self.at.len()
    }

    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.at.is_empty()
    }

    fn get(&self, path: &[u8]) -> Option<StatEntry> {
        self.at.get(path).map(|&at| self.entry(at))
    }

    /// Every path with its entry, in no order.
    fn iter(&self) -> impl Iterator<Item = (&'a [u8], StatEntry)> + '_ {
        self.at.iter().map(|(path, &at)| (*path, self.entry(at)))
    }

    fn entry(&self, at: usize) -> StatEntry {
        let fixed = &self.bytes[at..at + STAT_FIXED];
        let int = |i: usize| u64::from_le_bytes(fixed[i * 8..i * 8 + 8].try_into().expect("8"));
        StatEntry {
            inode: int(0),
            size: int(1),
            mtime: int(2) as i64,
            mtime_ns: int(3) as i64,
            ctime: int(4) as i64,
            ctime_ns: int(5) as i64,
            digest: fixed[48..80].try_into().expect("32"),
        }
    }
}

/// The stat cache file's records: each path with where its fixed fields
/// start (a cut-short tail is dropped).
fn stat_records(bytes: &[u8]) -> impl Iterator<Item = (&[u8], usize)> + '_ {
    let mut at = if bytes.starts_with(STAT_MAGIC) {
        STAT_MAGIC.len()
    } else {
        bytes.len()
    };
    std::iter::from_fn(move || {
        let len = u32::from_le_bytes(bytes.get(at..at + 4)?.try_into().expect("4")) as usize;
        // Cut short: what came before is still good.
        bytes.get(at + 4..at + 4 + len + STAT_FIXED)?;
        let record = (&bytes[at + 4..at + 4 + len], at + 4 + len);
        at += 4 + len + STAT_FIXED;
        Some(record)
    })
}

/// Reads the stat cache file.
fn parse_stat_cache(bytes: &[u8]) -> StatCache<'_> {
    let mut at =
        FxHashMap::with_capacity_and_hasher(stat_records(bytes).count(), Default::default());
    at.extend(stat_records(bytes));
    StatCache { bytes, at }
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

/// What [`index`] keeps or skips of the context tree.
struct Filter<'a> {
    matcher: Option<Matcher>,
    /// No `!` exception: an ignored directory is skipped whole.
    can_prune: bool,
    include: &'a [String],
    everything: bool,
}

impl Filter<'_> {
    fn wanted(&self, rel: &str) -> bool {
        self.everything
            || self.include.iter().any(|p| {
                rel == p
                    || rel
                        .strip_prefix(p.as_str())
                        .is_some_and(|r| r.starts_with('/'))
                    || p.strip_prefix(rel).is_some_and(|r| r.starts_with('/'))
            })
    }
}

/// One included path as the walk found it: its absolute path (the stat
/// cache's key) and its lstat.
struct Found {
    path: Vec<u8>,
    kind: Kind,
    mode: u32,
    /// The link target of a symlink.
    target: String,
    stat: Option<StatEntry>,
}

/// Reads the directory `fd` (absolute path `dir`) and what it includes
/// below it, in parallel: names from getdents, one `fstatat` per name
/// relative to the directory, no path lookups from the root.
fn walk_dir(
    fd: &OwnedFd,
    dir: &[u8],
    root_len: usize,
    filter: &Filter,
) -> Result<Vec<Visit>, SolveError> {
    let walk_error = |path: &[u8], e: nix::Error| SolveError::Io {
        op: "read the build context at",
        path: PathBuf::from(std::ffi::OsStr::from_bytes(path)),
        source: e.into(),
    };
    let mut names: Vec<Vec<u8>> = Vec::new();
    {
        let dup = fd.try_clone().map_err(|e| SolveError::Io {
            op: "read the build context at",
            path: PathBuf::from(std::ffi::OsStr::from_bytes(dir)),
            source: e,
        })?;
        let mut stream = nix::dir::Dir::from_fd(dup).map_err(|e| walk_error(dir, e))?;
        for entry in stream.iter() {
            let entry = entry.map_err(|e| walk_error(dir, e))?;
            let name = entry.file_name().to_bytes();
            if name != b"." && name != b".." {
                names.push(name.to_vec());
            }
        }
    }
    names.sort_unstable();
    // The tree is kept as found and flattened once at the end: folding per
    // split and appending splits and subtrees copied each entry (and
    // faulted in fresh pages) several times over.
    let visits = names
        .par_iter()
        .with_min_len(16)
        .map(|name| -> Result<Visit, SolveError> {
            let mut path = Vec::with_capacity(dir.len() + 1 + name.len());
            path.extend_from_slice(dir);
            path.push(b'/');
            path.extend_from_slice(name);
            let rel = String::from_utf8_lossy(&path[root_len + 1..]);
            let ignored = filter.matcher.as_ref().is_some_and(|m| m.matches(&rel));
            if (ignored && filter.can_prune) || !filter.wanted(&rel) {
                // Neither it nor anything below it is included.
                return Ok(Visit::Skip);
            }
            let meta = fstatat(fd, name.as_slice(), AtFlags::AT_SYMLINK_NOFOLLOW).map_err(|e| {
                SolveError::io("stat", Path::new(std::ffi::OsStr::from_bytes(&path)))(e.into())
            })?;
            let mode = meta.st_mode & 0o7777;
            let format = meta.st_mode & SFlag::S_IFMT.bits();
            if format == SFlag::S_IFDIR.bits() {
                let sub = openat(
                    fd,
                    name.as_slice(),
                    OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                    Mode::empty(),
                )
                .map_err(|e| walk_error(&path, e))?;
                let below = walk_dir(&sub, &path, root_len, filter)?;
                let dir = (!ignored).then(|| Found {
                    path,
                    kind: Kind::Dir,
                    mode,
                    target: String::new(),
                    stat: None,
                });
                return Ok(Visit::Dir(dir, below));
            }
            if ignored {
                return Ok(Visit::Skip);
            }
            if format == SFlag::S_IFLNK.bits() {
                let target = readlinkat(fd, name.as_slice()).map_err(|e| {
                    SolveError::io("read link", Path::new(std::ffi::OsStr::from_bytes(&path)))(
                        e.into(),
                    )
                })?;
                return Ok(Visit::One(Found {
                    path,
                    kind: Kind::Symlink,
                    mode,
                    target: target.to_string_lossy().into_owned(),
                    stat: None,
                }));
            }
            Ok(Visit::One(Found {
                path,
                kind: Kind::File,
                mode,
                target: String::new(),
                stat: Some(StatEntry {
                    inode: meta.st_ino,
                    size: meta.st_size as u64,
                    mtime: meta.st_mtime,
                    mtime_ns: meta.st_mtime_nsec,
                    ctime: meta.st_ctime,
                    ctime_ns: meta.st_ctime_nsec,
                    digest: [0; 32],
                }),
            }))
        })
        .collect::<Result<Vec<Visit>, SolveError>>()?;
    Ok(visits)
}

/// How many entries [`flatten`] gives for `visits`.
fn count(visits: &[Visit]) -> usize {
    visits
        .iter()
        .map(|v| match v {
            Visit::Skip => 0,
            Visit::One(_) => 1,
            Visit::Dir(dir, below) => usize::from(dir.is_some()) + count(below),
        })
        .sum()
}

/// The walk's tree in order (a directory before what is below it), moved
/// once into `out`.
fn flatten(visits: Vec<Visit>, out: &mut Vec<Found>) {
    for visit in visits {
        match visit {
            Visit::Skip => {}
            Visit::One(found) => out.push(found),
            Visit::Dir(dir, below) => {
                out.extend(dir);
                flatten(below, out);
            }
        }
    }
}

/// What the walk made of one directory entry.
enum Visit {
    /// Not included, nor anything below it.
    Skip,
    One(Found),
    /// A directory (unless only what is below it is included) and what it
    /// includes below it.
    Dir(Option<Found>, Vec<Visit>),
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
    let include: Vec<String> = include.iter().map(|p| clean_relative(p)).collect();
    let filter = Filter {
        matcher,
        can_prune: !exclude.iter().any(|p| p.starts_with('!')),
        everything: include.is_empty() || include.iter().any(|p| p.is_empty() || has_wildcard(p)),
        include: &include,
    };
    let cache_path = cache_dir.join("context-stat.bin");
    // The stat cache is parsed while the tree is walked.
    let cache_bytes = std::fs::read(&cache_path).unwrap_or_default();
    let (cache, walked) = rayon::join(
        || parse_stat_cache(&cache_bytes),
        || -> Result<Vec<Found>, SolveError> {
            let fd = open(
                root,
                OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
                Mode::empty(),
            )
            .map_err(|e| SolveError::Io {
                op: "read the build context at",
                path: root.to_path_buf(),
                source: e.into(),
            })?;
            let root_bytes = root.as_os_str().as_bytes();
            let root_bytes = match root_bytes {
                b"/" => b"",
                other => other,
            };
            let visits = walk_dir(&fd, root_bytes, root_bytes.len(), &filter)?;
            let mut found = Vec::with_capacity(count(&visits));
            flatten(visits, &mut found);
            Ok(found)
        },
    );
    let mut found = walked?;
    crate::timing::mark("context walked");
    // Files the stat cache does not vouch for are read and hashed.
    let changed = std::sync::atomic::AtomicBool::new(false);
    found
        .par_iter_mut()
        .with_min_len(64)
        .try_for_each(|f| -> Result<(), SolveError> {
            let Some(stat) = f.stat.as_mut() else {
                return Ok(());
            };
            match cache.get(f.path.as_slice()) {
                Some(known) if known.same_file(stat) => stat.digest = known.digest,
                _ => {
                    changed.store(true, std::sync::atomic::Ordering::Relaxed);
                    stat.digest = hash_file(Path::new(std::ffi::OsStr::from_bytes(&f.path)))?;
                }
            }
            Ok(())
        })?;
    crate::timing::mark("context stat");
    let root_len = match root.as_os_str().as_bytes() {
        b"/" => 0,
        other => other.len(),
    };
    let entries: BTreeMap<String, Entry> = found
        .iter_mut()
        .map(|f| {
            let digest = match &f.stat {
                Some(stat) => hex_digest(&stat.digest),
                None => std::mem::take(&mut f.target),
            };
            (
                String::from_utf8_lossy(&f.path[root_len + 1..]).into_owned(),
                Entry {
                    kind: f.kind,
                    mode: f.mode,
                    digest,
                },
            )
        })
        .collect();
    if changed.into_inner() {
        let mut out = Vec::with_capacity(cache_bytes.len().max(found.len() * 160));
        out.extend_from_slice(STAT_MAGIC);
        for f in &found {
            if let Some(stat) = &f.stat {
                push_stat(&mut out, &f.path, stat);
            }
        }
        // Keep what other contexts recorded.
        let root_prefix = [&root.as_os_str().as_bytes()[..root_len], b"/"].concat();
        for (key, stat) in cache.iter() {
            if !key.starts_with(&root_prefix) {
                push_stat(&mut out, key, &stat);
            }
        }
        // A lost update only costs a re-hash next time.
        let _ = write_atomic(&cache_path, &out);
    }
    crate::timing::mark("context indexed");
    Ok(ContextIndex {
        root: root.to_path_buf(),
        entries,
    })
}

/// Lower-case hex of a sha256 (`hex::encode` goes char by char).
fn hex_digest(digest: &[u8; 32]) -> String {
    let mut out = [0u8; 64];
    hex::encode_to_slice(digest, &mut out).expect("64 = 2 * 32");
    String::from_utf8(out.to_vec()).expect("hex is ASCII")
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

    #[test]
    fn every_change_shows() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let ctx = dir.path().join("ctx");
        let cache = dir.path().join("cache");
        std::fs::create_dir_all(ctx.join("a/b")).unwrap();
        std::fs::write(ctx.join("a/b/f"), "one").unwrap();
        std::fs::write(ctx.join("g"), "g").unwrap();
        std::os::unix::fs::symlink("a/b/f", ctx.join("link")).unwrap();
        std::fs::create_dir_all(ctx.join("skip/keep")).unwrap();
        std::fs::write(ctx.join("skip/x"), "x").unwrap();
        std::fs::write(ctx.join("skip/keep/y"), "y").unwrap();
        let ignore = ["skip".to_string(), "!skip/keep".to_string()];
        let first = index(&ctx, &[], &ignore, &cache).unwrap();
        let paths: Vec<&str> = first.entries.keys().map(String::as_str).collect();
        assert_eq!(
            paths,
            ["a", "a/b", "a/b/f", "g", "link", "skip/keep", "skip/keep/y"]
        );
        assert_eq!(first.entries["link"].kind, Kind::Symlink);
        assert_eq!(first.entries["link"].digest, "a/b/f");
        assert_eq!(first.entries["a/b"].kind, Kind::Dir);
        let stat_file = cache.join("context-stat.bin");
        let written = std::fs::read(&stat_file).unwrap();
        // Nothing changed: the same index, and the stat cache is not rewritten.
        let ino = std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&stat_file).unwrap());
        let again = index(&ctx, &[], &ignore, &cache).unwrap();
        assert_eq!(again.entries, first.entries);
        let meta = std::fs::metadata(&stat_file).unwrap();
        assert_eq!(std::os::unix::fs::MetadataExt::ino(&meta), ino);
        assert_eq!(std::fs::read(&stat_file).unwrap(), written);
        // Same size, same mtime, new content: the ctime still shows it.
        let mtime = std::fs::metadata(ctx.join("a/b/f"))
            .unwrap()
            .modified()
            .unwrap();
        std::fs::write(ctx.join("a/b/f"), "two").unwrap();
        std::fs::File::options()
            .write(true)
            .open(ctx.join("a/b/f"))
            .unwrap()
            .set_modified(mtime)
            .unwrap();
        let edited = index(&ctx, &[], &ignore, &cache).unwrap();
        assert_ne!(
            edited.entries["a/b/f"].digest,
            first.entries["a/b/f"].digest
        );
        // Mode, link target, added and removed files.
        std::fs::set_permissions(ctx.join("g"), std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::remove_file(ctx.join("link")).unwrap();
        std::os::unix::fs::symlink("g", ctx.join("link")).unwrap();
        std::fs::write(ctx.join("a/new"), "n").unwrap();
        std::fs::remove_file(ctx.join("skip/keep/y")).unwrap();
        let last = index(&ctx, &[], &ignore, &cache).unwrap();
        assert_eq!(last.entries["g"].mode, 0o600);
        assert_eq!(last.entries["link"].digest, "g");
        assert!(last.contains("a/new") && !last.contains("skip/keep/y"));
        assert_eq!(last.entries["g"].digest, first.entries["g"].digest);
        // An unreadable context names the place.
        let err = index(&dir.path().join("missing"), &[], &[], &cache).unwrap_err();
        let chain = crate::solve::error_chain(&err);
        assert!(chain.contains("missing"), "{chain}");
    }
}
