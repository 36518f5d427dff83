//! Cache mounts (`RUN --mount=type=cache`): directories that persist across
//! builds, outside every image and layer, in the store's
//! `buildcache/mounts/<sha256(id) prefix>[.N]/`:
//!
//! - `data/`: what the RUN sees at the mount's target;
//! - `id`: the mount's id, for `kiln builder du`;
//! - `lock`: flock'ed by every user (shared, or exclusive for
//!   `sharing=locked` and `private`); its mtime is the last use. Pruning
//!   takes it exclusively without waiting, so a cache in use is never
//!   removed.
//!
//! `sharing=private` uses the first instance (`.N`) nobody else holds,
//! making a new one when all are busy.

use std::fs::File;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use kiln_store::Store;
use nix::fcntl::{Flock, FlockArg};
use sha2::{Digest as _, Sha256};

use crate::dockerfile::mounts::CacheSharing;
use crate::solve::error::SolveError;

/// Mode and owner of a new cache directory.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Owner {
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

/// The directory holding every cache mount of `store`.
pub fn mounts_dir(store: &Store) -> PathBuf {
    store.root().join("buildcache").join("mounts")
}

fn base_name(id: &str) -> String {
    hex::encode(&Sha256::digest(id.as_bytes())[..16])
}

/// Opens and locks `dir/lock`, making `dir` when missing. `None` when
/// `nonblocking` and someone else holds it.
fn lock(dir: &Path, arg: FlockArg) -> Result<Option<Flock<File>>, SolveError> {
    loop {
        std::fs::create_dir_all(dir).map_err(SolveError::io("create directory", dir))?;
        let path = dir.join("lock");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(SolveError::io("open", &path))?;
        let locked = match Flock::lock(file, arg) {
            Ok(l) => l,
            Err((_, nix::errno::Errno::EWOULDBLOCK)) => return Ok(None),
            Err((_, e)) => return Err(SolveError::io("lock", &path)(e.into())),
        };
        // A prune may have removed the directory while we waited: the lock
        // must still be the file at the path.
        let same = match (locked.metadata(), std::fs::metadata(&path)) {
            (Ok(a), Ok(b)) => a.ino() == b.ino() && a.dev() == b.dev(),
            _ => false,
        };
        if same {
            return Ok(Some(locked));
        }
    }
}

/// Locks the cache `id` for one RUN and returns its data directory (made
/// with `owner`, seeded with a copy of `seed` when new).
pub(crate) fn acquire(
    store: &Store,
    id: &str,
    sharing: CacheSharing,
    owner: Owner,
    seed: Option<&Path>,
) -> Result<(PathBuf, Flock<File>), SolveError> {
    let root = mounts_dir(store);
    let base = base_name(id);
    let (dir, locked) = match sharing {
        CacheSharing::Shared | CacheSharing::Locked => {
            let arg = if sharing == CacheSharing::Shared {
                FlockArg::LockShared
            } else {
                FlockArg::LockExclusive
            };
            let dir = root.join(&base);
            let locked = lock(&dir, arg)?.expect("a blocking lock");
            (dir, locked)
        }
        CacheSharing::Private => {
            let mut n = 0usize;
            loop {
                let dir = if n == 0 {
                    root.join(&base)
                } else {
                    root.join(format!("{base}.{n}"))
                };
                if let Some(l) = lock(&dir, FlockArg::LockExclusiveNonblock)? {
                    break (dir, l);
                }
                n += 1;
            }
        }
    };
    let _ = locked.set_modified(SystemTime::now());
    let data = dir.join("data");
    let mut making = None;
    if !data.is_dir() {
        // Shared users may arrive together: one makes the directory.
        let init_path = dir.join("init.lock");
        let init = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&init_path)
            .map_err(SolveError::io("open", &init_path))?;
        making = Some(
            Flock::lock(init, FlockArg::LockExclusive)
                .map_err(|(_, e)| SolveError::io("lock", &init_path)(e.into()))?,
        );
        // Left by a build killed while making it.
        if let Ok(entries) = std::fs::read_dir(&dir) {
            for entry in entries.flatten() {
                if entry.file_name().to_string_lossy().starts_with("data.tmp-") {
                    let _ = std::fs::remove_dir_all(entry.path());
                }
            }
        }
    }
    if !data.is_dir() {
        // Made aside and renamed, so a killed build leaves no half-seeded cache.
        let temp = dir.join(format!("data.tmp-{:016x}", rand::random::<u64>()));
        std::fs::create_dir(&temp).map_err(SolveError::io("create directory", &temp))?;
        let made = (|| {
            if let Some(seed) = seed {
                copy_tree(seed, &temp)?;
            }
            std::os::unix::fs::chown(&temp, Some(owner.uid), Some(owner.gid))
                .map_err(SolveError::io("change the owner of", &temp))?;
            std::fs::set_permissions(&temp, std::fs::Permissions::from_mode(owner.mode))
                .map_err(SolveError::io("set the mode of", &temp))?;
            let id_file = dir.join("id");
            std::fs::write(&id_file, id).map_err(SolveError::io("write", &id_file))?;
            std::fs::rename(&temp, &data).map_err(SolveError::io("rename", &temp))
        })();
        if made.is_err() {
            let _ = std::fs::remove_dir_all(&temp);
        }
        made?;
    }
    drop(making);
    Ok((data, locked))
}

/// Copies the tree `from` into the existing directory `to` (modes, owners,
/// symlinks kept).
fn copy_tree(from: &Path, to: &Path) -> Result<(), SolveError> {
    let meta = std::fs::symlink_metadata(from).map_err(SolveError::io("read", from))?;
    if !meta.is_dir() {
        let dest = to.join(from.file_name().unwrap_or_default());
        return copy_entry(from, &dest, &meta);
    }
    for entry in std::fs::read_dir(from).map_err(SolveError::io("read", from))? {
        let entry = entry.map_err(SolveError::io("read", from))?;
        let path = entry.path();
        let dest = to.join(entry.file_name());
        let meta = std::fs::symlink_metadata(&path).map_err(SolveError::io("read", &path))?;
        copy_entry(&path, &dest, &meta)?;
    }
    Ok(())
}

fn copy_entry(from: &Path, to: &Path, meta: &std::fs::Metadata) -> Result<(), SolveError> {
    let kind = meta.file_type();
    if kind.is_dir() {
        std::fs::create_dir(to).map_err(SolveError::io("create directory", to))?;
        copy_tree(from, to)?;
    } else if kind.is_symlink() {
        let target = std::fs::read_link(from).map_err(SolveError::io("read link", from))?;
        std::os::unix::fs::symlink(target, to).map_err(SolveError::io("create symlink", to))?;
    } else if kind.is_file() {
        std::fs::copy(from, to).map_err(SolveError::io("copy", from))?;
    } else {
        return Ok(());
    }
    let _ = std::os::unix::fs::lchown(to, Some(meta.uid()), Some(meta.gid()));
    if !kind.is_symlink() {
        let _ = std::fs::set_permissions(to, std::fs::Permissions::from_mode(meta.mode() & 0o7777));
    }
    Ok(())
}

/// One cache mount instance, for `kiln builder du` and `prune`.
#[derive(Debug, Clone)]
pub struct CacheMountInfo {
    /// The directory holding it.
    pub path: PathBuf,
    /// The mount's id.
    pub id: String,
    /// Bytes of its files.
    pub size: u64,
    /// When a RUN last used it.
    pub last_used: SystemTime,
    /// Whether a running build holds it now.
    pub in_use: bool,
}

/// Every cache mount of `store`.
pub fn list(store: &Store) -> Vec<CacheMountInfo> {
    let Ok(entries) = std::fs::read_dir(mounts_dir(store)) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        if !path.is_dir() {
            continue;
        }
        let lock_path = path.join("lock");
        let last_used = std::fs::metadata(&lock_path)
            .and_then(|m| m.modified())
            .unwrap_or(SystemTime::UNIX_EPOCH);
        let in_use = match std::fs::File::open(&lock_path) {
            Ok(f) => Flock::lock(f, FlockArg::LockExclusiveNonblock).is_err(),
            Err(_) => false,
        };
        out.push(CacheMountInfo {
            id: std::fs::read_to_string(path.join("id")).unwrap_or_default(),
            size: tree_size(&path.join("data")),
            last_used,
            in_use,
            path,
        });
    }
    out
}

fn tree_size(path: &Path) -> u64 {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return 0;
    };
    if !meta.is_dir() {
        return meta.len();
    }
    std::fs::read_dir(path)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| tree_size(&e.path()))
        .sum()
}

/// Removes the cache mount at `path` (from [`list`]) unless a build holds
/// it; returns whether it was removed.
pub fn remove(path: &Path) -> bool {
    let lock_path = path.join("lock");
    let Ok(file) = std::fs::File::open(&lock_path) else {
        // Never used to completion: nothing to wait for.
        return std::fs::remove_dir_all(path).is_ok();
    };
    let Ok(_held) = Flock::lock(file, FlockArg::LockExclusiveNonblock) else {
        return false;
    };
    // Data first, the lock last, so a waiting user sees the lock vanish
    // and starts over on a new directory.
    let _ = std::fs::remove_dir_all(path.join("data"));
    if let Ok(entries) = std::fs::read_dir(path) {
        for entry in entries.flatten() {
            if entry.file_name() != "lock" {
                let _ = std::fs::remove_dir_all(entry.path())
                    .or_else(|_| std::fs::remove_file(entry.path()));
            }
        }
    }
    let _ = std::fs::remove_file(&lock_path);
    std::fs::remove_dir(path).is_ok()
}
