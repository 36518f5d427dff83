//! Root file systems of steps: a layer stack's snapshots as overlay lower
//! directories, a fresh upper directory that becomes the step's layer (and,
//! without copying, that layer's snapshot), and read-only views of stacks
//! for `COPY --from`.

use std::path::{Path, PathBuf};

use kiln_runner::overlay::{OverlayMount, Writable};
use kiln_store::{chain_ids, CachedLayer, DiffOptions, Digest, Lease, Store};

use crate::solve::error::SolveError;

/// Makes sure every layer of `layers` has its snapshot and returns their
/// `fs/` directories, topmost first (as overlayfs wants lower dirs).
pub(crate) fn lower_dirs(
    store: &Store,
    lease: &Lease,
    layers: &[CachedLayer],
) -> Result<Vec<PathBuf>, SolveError> {
    let diff_ids: Vec<Digest> = layers.iter().map(|l| l.diff_id.clone()).collect();
    let chains = chain_ids(&diff_ids);
    for (i, layer) in layers.iter().enumerate() {
        if store.has_snapshot(&chains[i]) {
            continue;
        }
        lease
            .protect(&chains[i])
            .map_err(SolveError::store("protecting a snapshot"))?;
        let digest = kiln_store::descriptor_digest(&layer.descriptor)
            .map_err(SolveError::store("reading a layer descriptor"))?;
        let blob = store
            .content()
            .open(&digest)
            .map_err(SolveError::store("opening a cached layer"))?;
        let parent = i.checked_sub(1).map(|p| chains[p].clone());
        store
            .create_snapshot(&chains[i], parent, &layer.diff_id, blob)
            .map_err(SolveError::store("unpacking a cached layer"))?;
    }
    Ok(chains.iter().rev().map(|c| store.snapshot_fs(c)).collect())
}

/// Unmounts and removes mount points under `cache/mnt/` whose process
/// (the pid in their name) is gone: a build killed by a signal leaves its
/// overlays mounted.
pub(crate) fn remove_stale_mounts(store: &Store) {
    let dir = store.cache_dir().join("mnt");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let pid = name
            .trim_start_matches("empty-")
            .split('-')
            .next()
            .and_then(|p| p.parse::<u32>().ok());
        let Some(pid) = pid else { continue };
        if Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        let path = entry.path();
        if name.ends_with(TRASH_SUFFIX) {
            // An overlay work directory set aside (never a mount point).
            let _ = std::fs::remove_dir_all(&path);
            continue;
        }
        let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
        let text = path.to_string_lossy();
        if mounts
            .lines()
            .any(|l| l.split(' ').nth(1) == Some(text.as_ref()))
        {
            let _ = kiln_runner::overlay::unmount(&path);
        }
        // Only an empty directory: never delete through a mount.
        let _ = std::fs::remove_dir(&path);
    }
}

/// The name ending of directories set aside in `cache/mnt/` for [`Trash`].
const TRASH_SUFFIX: &str = ".trash";

/// A fresh name in `cache/mnt/` to move a directory to before [`Trash`]
/// removes it (a killed build's are removed by [`remove_stale_mounts`]).
fn trash_name(store: &Store) -> PathBuf {
    store.cache_dir().join("mnt").join(format!(
        "{}-{:016x}{TRASH_SUFFIX}",
        std::process::id(),
        rand::random::<u64>()
    ))
}

/// How [`Trash`] removes a path.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Removal {
    /// A directory tree no longer used (never one holding a mount).
    Tree,
    /// A mount point, unmounted: removed only if empty.
    EmptyDir,
}

/// Directories the build no longer needs, removed on a thread of their
/// own: removing a directory can cost milliseconds (ext4 here: ~3 ms per
/// directory), and a step need not wait for that. [`Trash::empty`] (the
/// solver's end) waits for the queue.
#[derive(Default)]
pub(crate) struct Trash {
    queue: std::sync::Mutex<Option<std::sync::mpsc::Sender<(PathBuf, Removal)>>>,
    thread: std::sync::Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Trash {
    /// Queues `path` for removal (removed here if no thread can start).
    pub fn put(&self, path: PathBuf, how: Removal) {
        let mut queue = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        if queue.is_none() {
            let (tx, rx) = std::sync::mpsc::channel::<(PathBuf, Removal)>();
            let spawned = std::thread::Builder::new()
                .name("kiln-trash".into())
                .spawn(move || {
                    for (path, how) in rx {
                        remove(&path, how);
                    }
                });
            match spawned {
                Ok(handle) => {
                    *queue = Some(tx);
                    *self.thread.lock().unwrap_or_else(|e| e.into_inner()) = Some(handle);
                }
                Err(_) => return remove(&path, how),
            }
        }
        if let Some(Err(std::sync::mpsc::SendError((path, how)))) =
            queue.as_ref().map(|q| q.send((path, how)))
        {
            remove(&path, how);
        }
    }

    /// Waits until everything queued is removed.
    pub fn empty(&self) {
        drop(self.queue.lock().unwrap_or_else(|e| e.into_inner()).take());
        if let Some(handle) = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = handle.join();
        }
    }
}

impl Drop for Trash {
    fn drop(&mut self) {
        self.empty();
    }
}

fn remove(path: &Path, how: Removal) {
    let _ = match how {
        Removal::Tree => std::fs::remove_dir_all(path),
        Removal::EmptyDir => std::fs::remove_dir(path),
    };
}

fn mount_point(store: &Store) -> Result<PathBuf, SolveError> {
    let dir = store.cache_dir().join("mnt").join(format!(
        "{}-{:016x}",
        std::process::id(),
        rand::random::<u64>()
    ));
    std::fs::create_dir_all(&dir).map_err(SolveError::io("create mount point", &dir))?;
    Ok(dir)
}

/// A writable root for one step: lower = the parent stack, upper = a fresh
/// snapshot directory. Dropping it unmounts and removes everything.
pub(crate) struct Workspace {
    temp: Option<PathBuf>,
    mount: Option<OverlayMount>,
    mount_dir: Option<PathBuf>,
    merged: PathBuf,
}

impl Workspace {
    /// Prepares the root for a step on top of `layers`.
    pub fn open(
        store: &Store,
        lease: &Lease,
        layers: &[CachedLayer],
    ) -> Result<Workspace, SolveError> {
        let lower = lower_dirs(store, lease, layers)?;
        let temp = store
            .new_snapshot_dir()
            .map_err(SolveError::store("creating a snapshot directory"))?;
        let mut ws = Workspace {
            temp: Some(temp.clone()),
            mount: None,
            mount_dir: None,
            merged: temp.join("fs"),
        };
        let upper = temp.join("fs");
        let work = temp.join("work");
        for dir in [&upper, &work] {
            std::fs::create_dir(dir).map_err(SolveError::io("create directory", dir))?;
        }
        if !lower.is_empty() {
            let target = mount_point(store)?;
            ws.mount_dir = Some(target.clone());
            let mount = OverlayMount::mount(
                &lower,
                Some(Writable {
                    upper: &upper,
                    work: &work,
                    volatile: true,
                }),
                &target,
            )
            .map_err(|source| SolveError::Runner { source })?;
            ws.mount = Some(mount);
            ws.merged = target;
        }
        Ok(ws)
    }

    /// The merged tree the step works on.
    pub fn merged(&self) -> &Path {
        &self.merged
    }

    /// The upper directory (the step's changes).
    pub fn upper(&self) -> PathBuf {
        self.temp.as_ref().expect("open until finished").join("fs")
    }

    /// Unmounts, turns the changes into a layer and adopts the upper
    /// directory as its snapshot. `None` when the step changed nothing.
    /// The metadata writes after the diff share one open of the database
    /// (the returned hold; the caller writes its cache record under it too,
    /// then drops it): three fsyncs fewer per write after the first.
    pub fn finish(
        mut self,
        store: &Store,
        lease: &Lease,
        parent: &[CachedLayer],
        options: &DiffOptions,
        trash: &Trash,
    ) -> Result<(Option<CachedLayer>, kiln_store::MetaHold), SolveError> {
        if let Some(mount) = self.mount.take() {
            mount
                .unmount()
                .map_err(|source| SolveError::Runner { source })?;
            if let Some(dir) = self.mount_dir.take() {
                trash.put(dir, Removal::EmptyDir);
            }
        }
        let temp = self.temp.clone().expect("open until finished");
        let work = temp.join("work");
        // Out of the snapshot-to-be at once (a rename), removed later.
        let away = trash_name(store);
        if std::fs::rename(&work, &away).is_ok() {
            trash.put(away, Removal::Tree);
        } else {
            std::fs::remove_dir_all(&work).map_err(SolveError::io("remove", &work))?;
        }
        let upper = temp.join("fs");
        let empty = std::fs::read_dir(&upper)
            .map_err(SolveError::io("read", &upper))?
            .next()
            .is_none();
        if empty {
            if let Some(temp) = self.temp.take() {
                trash.put(temp, Removal::Tree);
            }
            return Ok((None, store.hold_metadata()));
        }
        // The diff goes to a blob writer here (not `Store::layer_from_dir`)
        // so that the blob and the snapshot are protected in one metadata
        // write, after the diff: a long diff must not keep the root locked.
        let mut writer = store
            .content()
            .writer()
            .map_err(SolveError::store("writing a layer"))?;
        let out = kiln_store::diff(&upper, &mut writer, options)
            .map_err(SolveError::store("writing a layer"))?;
        // Synced before the root lock is taken: other steps' metadata
        // writes need not wait for it.
        writer
            .sync()
            .map_err(SolveError::store("writing a layer"))?;
        crate::timing::mark("layer diffed");
        let mut diff_ids: Vec<Digest> = parent.iter().map(|l| l.diff_id.clone()).collect();
        diff_ids.push(out.diff_id.clone());
        let chains = chain_ids(&diff_ids);
        let chain = chains.last().expect("one layer at least").clone();
        let parent_chain = chains.len().checked_sub(2).map(|i| chains[i].clone());
        let hold = store.hold_metadata();
        crate::timing::mark("metadata held");
        lease
            .protect_all(&[out.digest.clone(), chain.clone()])
            .map_err(SolveError::store("protecting a layer"))?;
        // Already protected: commits without another metadata write.
        let digest = writer
            .commit_leased(lease, Some(&out.digest), Some(out.size))
            .map_err(SolveError::store("writing a layer"))?;
        if store.has_snapshot(&chain) {
            // Same result as a step before: keep the existing snapshot.
        } else {
            store
                .adopt_snapshot(&temp, &chain, parent_chain, &out.diff_id, Some(out.usage))
                .map_err(SolveError::store("adopting a snapshot"))?;
            self.temp = None;
        }
        Ok((
            Some(CachedLayer {
                descriptor: kiln_store::descriptor(
                    kiln_store::layer_media_type(options.compression),
                    &digest,
                    out.size,
                ),
                diff_id: out.diff_id,
            }),
            hold,
        ))
    }
}

impl Drop for Workspace {
    fn drop(&mut self) {
        self.mount.take();
        if let Some(dir) = self.mount_dir.take() {
            let _ = std::fs::remove_dir(dir);
        }
        if let Some(temp) = self.temp.take() {
            let _ = std::fs::remove_dir_all(temp);
        }
    }
}

/// A read-only view of a stack (for `COPY --from`): the single snapshot,
/// an overlay of several, or an empty directory for none.
pub(crate) struct View {
    root: PathBuf,
    _mount: Option<OverlayMount>,
    owned_dir: Option<PathBuf>,
}

impl View {
    pub fn open(store: &Store, lease: &Lease, layers: &[CachedLayer]) -> Result<View, SolveError> {
        let lower = lower_dirs(store, lease, layers)?;
        match lower.len() {
            1 => Ok(View {
                root: lower[0].clone(),
                _mount: None,
                owned_dir: None,
            }),
            _ => {
                let dir = mount_point(store)?;
                let mut view = View {
                    root: dir.clone(),
                    _mount: None,
                    owned_dir: Some(dir.clone()),
                };
                if !lower.is_empty() {
                    view._mount = Some(
                        OverlayMount::mount(&lower, None, &dir)
                            .map_err(|source| SolveError::Runner { source })?,
                    );
                }
                Ok(view)
            }
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }
}

impl Drop for View {
    fn drop(&mut self) {
        self._mount.take();
        if let Some(dir) = self.owned_dir.take() {
            let _ = std::fs::remove_dir(dir);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trash_is_removed_by_the_end_and_a_killed_builds_by_the_next() {
        let root = tempfile::tempdir().unwrap();
        let store = Store::open(root.path()).unwrap();
        let trash = Trash::default();
        let tree = trash_name(&store);
        std::fs::create_dir_all(tree.join("work/incompat")).unwrap();
        std::fs::write(tree.join("work/f"), b"x").unwrap();
        let mount_dir = store.cache_dir().join("mnt").join("point");
        std::fs::create_dir_all(mount_dir.join("kept")).unwrap();
        trash.put(tree.clone(), Removal::Tree);
        // Not empty (as a mount point still mounted would look): kept.
        trash.put(mount_dir.clone(), Removal::EmptyDir);
        trash.empty();
        assert!(!tree.exists(), "the queued tree is still there");
        assert!(
            mount_dir.join("kept").exists(),
            "a non-empty mount point went"
        );
        // Usable again after emptying.
        let again = trash_name(&store);
        std::fs::create_dir_all(&again).unwrap();
        trash.put(again.clone(), Removal::Tree);
        drop(trash);
        assert!(!again.exists());

        // A killed build's (its pid gone) goes with the next build's sweep;
        // a live process's stays.
        let mnt = store.cache_dir().join("mnt");
        let dead = mnt.join(format!("4999999-00ff{TRASH_SUFFIX}"));
        let live = mnt.join(format!("{}-00ff{TRASH_SUFFIX}", std::process::id()));
        for dir in [&dead, &live] {
            std::fs::create_dir_all(dir.join("work/incompat/volatile")).unwrap();
        }
        remove_stale_mounts(&store);
        assert!(!dead.exists(), "a dead build's trash stayed");
        assert!(live.exists(), "a live build's trash went");
    }
}
