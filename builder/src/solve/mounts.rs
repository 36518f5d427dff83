//! `RUN --mount`: what each mount of a RUN step becomes on the host before
//! the container starts (BuildKit's semantics).
//!
//! - `cache`: a directory that persists across builds under the store's
//!   `buildcache/mounts/` (see [`crate::solve::cachemount`]), outside every
//!   layer; the step's key covers the mount's definition, not its content.
//! - `bind`: a directory or file of the context, a stage or an image;
//!   read-only, or writable through a throw-away overlay (`rw`).
//! - `tmpfs`: an empty in-memory file system.
//! - `secret`: a file on a private tmpfs (and/or an environment variable),
//!   never written to the store or a layer, never part of a key.
//! - `ssh`: kiln forwards no agent: skipped, or an error when required.
//! - inline files (`RUN <<EOF` with `#!`): the heredoc as an executable.
//!
//! Host-side helpers (overlays, the secrets tmpfs, copies) live in a scratch
//! directory `cache/run/<pid>-<random>/`, removed after the step; a build
//! killed by a signal leaves it behind and the next build removes it
//! ([`remove_stale`]).

use std::collections::BTreeMap;
use std::fs::File;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

use kiln_runner::oci_spec::runtime::{Mount as OciMount, MountBuilder};
use kiln_runner::overlay::{OverlayMount, Writable};
use kiln_store::{Lease, Store};
use nix::fcntl::Flock;

use crate::dockerfile::mounts::MountType;
use crate::graph::ops::ExecMount;
use crate::solve::cachemount;
use crate::solve::context::{clean_relative, ContextIndex, Kind};
use crate::solve::error::SolveError;
use crate::solve::paths::resolve_in_root;
use crate::solve::rootfs::View;

/// Secret values given with `kiln build --secret`, by id. Debug output
/// shows the ids only.
#[derive(Clone, Default)]
pub struct Secrets(BTreeMap<String, Vec<u8>>);

impl Secrets {
    /// Adds (or replaces) the secret `id`.
    pub fn insert(&mut self, id: impl Into<String>, value: Vec<u8>) {
        self.0.insert(id.into(), value);
    }

    fn get(&self, id: &str) -> Option<&[u8]> {
        self.0.get(id).map(Vec::as_slice)
    }
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.0.keys()).finish()
    }
}

/// What a mount's `input` slot holds.
pub(crate) enum Source<'a> {
    /// The build context, and whether `.dockerignore` hides any of it.
    Context(&'a ContextIndex, bool),
    /// A stage's or image's layer stack.
    Layers(&'a [kiln_store::CachedLayer]),
}

/// What preparing a step's mounts needs.
pub(crate) struct MountEnv<'a> {
    pub store: &'a Store,
    pub lease: &'a Lease,
    /// By input slot of the node.
    pub inputs: Vec<Option<Source<'a>>>,
    pub secrets: &'a Secrets,
}

/// The prepared mounts of one step; dropping it releases everything
/// (overlays unmounted, the secrets tmpfs gone, cache locks released).
pub(crate) struct Prepared {
    /// Mounts to append to the spec, parents before children.
    pub mounts: Vec<OciMount>,
    /// `VAR=value` for secrets exposed as environment variables.
    pub env: Vec<String>,
    // Fields drop in order: the scratch overlays sit on the views.
    scratch: Option<Scratch>,
    views: Vec<View>,
    locks: Vec<Flock<File>>,
}

/// A directory for host-side helpers of one step.
struct Scratch {
    dir: PathBuf,
    overlays: Vec<OverlayMount>,
    tmpfs: Vec<PathBuf>,
    next: usize,
}

impl Scratch {
    fn new(store: &Store) -> Result<Scratch, SolveError> {
        let dir = store.cache_dir().join("run").join(format!(
            "{}-{:016x}",
            std::process::id(),
            rand::random::<u64>()
        ));
        std::fs::create_dir_all(&dir).map_err(SolveError::io("create directory", &dir))?;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
            .map_err(SolveError::io("set the mode of", &dir))?;
        Ok(Scratch {
            dir,
            overlays: Vec::new(),
            tmpfs: Vec::new(),
            next: 0,
        })
    }

    /// A new, not yet existing path in the scratch directory.
    fn path(&mut self, what: &str) -> PathBuf {
        self.next += 1;
        self.dir.join(format!("{what}-{}", self.next))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        self.overlays.clear();
        for dir in self.tmpfs.drain(..) {
            let _ = nix::mount::umount2(&dir, nix::mount::MntFlags::MNT_DETACH);
        }
        remove_unmounted(&self.dir);
    }
}

/// Mount points at or below `dir`, deepest first.
fn mounts_below(dir: &Path) -> Vec<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut found: Vec<PathBuf> = text
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| PathBuf::from(p.replace("\\040", " ")))
        .filter(|p| p.starts_with(dir))
        .collect();
    found.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    found
}

/// Removes `dir` unless something is still mounted below it (never delete
/// through a mount).
fn remove_unmounted(dir: &Path) {
    for target in mounts_below(dir) {
        let _ = nix::mount::umount2(&target, nix::mount::MntFlags::MNT_DETACH);
    }
    if mounts_below(dir).is_empty() {
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// Removes the scratch directories (and their mounts) of builds whose
/// process is gone.
pub(crate) fn remove_stale(store: &Store) {
    let Ok(entries) = std::fs::read_dir(store.cache_dir().join("run")) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if pid == std::process::id() || Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        remove_unmounted(&entry.path());
    }
}

fn mount_error(message: String) -> SolveError {
    SolveError::Mount { message }
}

fn bind(target: &str, source: &Path, readonly: bool) -> OciMount {
    let mut options = vec!["rbind".to_string()];
    if readonly {
        options.push("ro".to_string());
    }
    MountBuilder::default()
        .destination(target)
        .typ("bind")
        .source(source)
        .options(options)
        .build()
        .expect("a bind mount builds")
}

/// Prepares every mount of a step. `root` is the step's root file system.
pub(crate) fn prepare(env: &MountEnv, mounts: &[ExecMount]) -> Result<Prepared, SolveError> {
    let mut prepared = Prepared {
        mounts: Vec::new(),
        env: Vec::new(),
        scratch: None,
        views: Vec::new(),
        locks: Vec::new(),
    };
    let mut ordered: Vec<&ExecMount> = mounts.iter().collect();
    // Parents first, as BuildKit sorts them.
    ordered.sort_by_key(|m| Path::new(&m.target).components().count());
    for mount in ordered {
        prepare_one(env, mount, &mut prepared)?;
    }
    Ok(prepared)
}

fn scratch<'p>(env: &MountEnv, prepared: &'p mut Prepared) -> Result<&'p mut Scratch, SolveError> {
    if prepared.scratch.is_none() {
        prepared.scratch = Some(Scratch::new(env.store)?);
    }
    Ok(prepared.scratch.as_mut().expect("just made"))
}

fn prepare_one(
    env: &MountEnv,
    mount: &ExecMount,
    prepared: &mut Prepared,
) -> Result<(), SolveError> {
    if let Some(inline) = &mount.inline {
        let scratch = scratch(env, prepared)?;
        let dir = scratch.path("inline");
        std::fs::create_dir(&dir).map_err(SolveError::io("create directory", &dir))?;
        let file = dir.join(&inline.name);
        std::fs::write(&file, &inline.data).map_err(SolveError::io("write", &file))?;
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(inline.mode))
            .map_err(SolveError::io("set the mode of", &file))?;
        prepared.mounts.push(bind(&mount.target, &dir, true));
        return Ok(());
    }
    match mount.kind {
        MountType::Tmpfs => {
            let mut options = vec![
                "nosuid".to_string(),
                "nodev".to_string(),
                "mode=1777".to_string(),
            ];
            if let Some(size) = mount.size {
                options.push(format!("size={size}"));
            }
            prepared.mounts.push(
                MountBuilder::default()
                    .destination(&mount.target)
                    .typ("tmpfs")
                    .source("tmpfs")
                    .options(options)
                    .build()
                    .expect("a tmpfs mount builds"),
            );
        }
        MountType::Bind => {
            let source = source_path(env, mount, prepared)?;
            let is_dir = source.is_dir();
            if mount.readonly {
                prepared.mounts.push(bind(&mount.target, &source, true));
            } else {
                // Writes go to a throw-away layer (BuildKit discards them).
                let scratch = scratch(env, prepared)?;
                let base = scratch.path("rw");
                let merged = if is_dir {
                    let (upper, work, merged) =
                        (base.join("upper"), base.join("work"), base.join("merged"));
                    for dir in [&upper, &work, &merged] {
                        std::fs::create_dir_all(dir)
                            .map_err(SolveError::io("create directory", dir))?;
                    }
                    let overlay = OverlayMount::mount(
                        std::slice::from_ref(&source),
                        Some(Writable {
                            upper: &upper,
                            work: &work,
                            volatile: true,
                        }),
                        &merged,
                    )
                    .map_err(|source| SolveError::Runner { source })?;
                    scratch.overlays.push(overlay);
                    merged
                } else {
                    std::fs::copy(&source, &base).map_err(SolveError::io("copy", &source))?;
                    base
                };
                prepared.mounts.push(bind(&mount.target, &merged, false));
            }
        }
        MountType::Cache => {
            let id = mount.id.clone().unwrap_or_else(|| mount.target.clone());
            let seed = match mount.input {
                Some(_) => Some(source_path(env, mount, prepared)?),
                None => None,
            };
            let (data, lock) = cachemount::acquire(
                env.store,
                &id,
                mount.sharing,
                cachemount::Owner {
                    mode: mount.mode.unwrap_or(0o755),
                    uid: mount.uid.unwrap_or(0),
                    gid: mount.gid.unwrap_or(0),
                },
                seed.as_deref(),
            )?;
            prepared.locks.push(lock);
            prepared
                .mounts
                .push(bind(&mount.target, &data, mount.readonly));
        }
        MountType::Secret => {
            let id = mount
                .id
                .clone()
                .or_else(|| mount.env.clone())
                .unwrap_or_default();
            let Some(value) = env.secrets.get(&id) else {
                if mount.required || mount.env.is_some() {
                    return Err(mount_error(format!("secret {id} not found")));
                }
                return Ok(());
            };
            if let Some(var) = &mount.env {
                let text = std::str::from_utf8(value).map_err(|_| {
                    mount_error(format!(
                        "secret {id} is not valid UTF-8 and cannot be the environment variable {var}"
                    ))
                })?;
                prepared.env.push(format!("{var}={text}"));
            }
            if !mount.target.is_empty() {
                let file = secret_file(env, prepared, value, mount)?;
                prepared.mounts.push(bind(&mount.target, &file, true));
            }
        }
        MountType::Ssh => {
            if mount.required {
                return Err(mount_error(format!(
                    "no SSH agent forwarded for ssh mount {}: kiln build has no --ssh",
                    mount.id.as_deref().unwrap_or("default")
                )));
            }
        }
    }
    Ok(())
}

/// Writes a secret to the step's private tmpfs (made on first use).
fn secret_file(
    env: &MountEnv,
    prepared: &mut Prepared,
    value: &[u8],
    mount: &ExecMount,
) -> Result<PathBuf, SolveError> {
    let scratch = scratch(env, prepared)?;
    let dir = scratch.dir.join("secrets");
    if !scratch.tmpfs.contains(&dir) {
        std::fs::create_dir(&dir).map_err(SolveError::io("create directory", &dir))?;
        nix::mount::mount(
            Some("tmpfs"),
            &dir,
            Some("tmpfs"),
            nix::mount::MsFlags::MS_NOSUID
                | nix::mount::MsFlags::MS_NODEV
                | nix::mount::MsFlags::MS_NOEXEC,
            Some("mode=0700,size=16m"),
        )
        .map_err(|e| SolveError::io("mount a tmpfs for secrets on", &dir)(e.into()))?;
        scratch.tmpfs.push(dir.clone());
    }
    scratch.next += 1;
    let file = dir.join(scratch.next.to_string());
    {
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&file)
            .map_err(SolveError::io("create", &file))?;
        f.write_all(value).map_err(SolveError::io("write", &file))?;
    }
    std::os::unix::fs::chown(
        &file,
        Some(mount.uid.unwrap_or(0)),
        Some(mount.gid.unwrap_or(0)),
    )
    .map_err(SolveError::io("change the owner of", &file))?;
    std::fs::set_permissions(
        &file,
        std::fs::Permissions::from_mode(mount.mode.unwrap_or(0o400)),
    )
    .map_err(SolveError::io("set the mode of", &file))?;
    Ok(file)
}

/// The host path of a bind (or cache `from`) source.
fn source_path(
    env: &MountEnv,
    mount: &ExecMount,
    prepared: &mut Prepared,
) -> Result<PathBuf, SolveError> {
    let relative = clean_relative(&mount.source);
    let missing = || {
        mount_error(format!(
            "mount source {:?} for {}: no such file or directory",
            mount.source, mount.target
        ))
    };
    let input = mount.input.and_then(|slot| env.inputs.get(slot)?.as_ref());
    match input {
        Some(Source::Context(index, filtered)) => {
            if !index.contains(&relative) && index.selection(&relative).is_empty() {
                return Err(missing());
            }
            if !filtered {
                let path = resolve_in_root(&index.root, &relative)
                    .map_err(SolveError::io("resolve", index.root.join(&relative)))?;
                return if path.exists() {
                    Ok(path)
                } else {
                    Err(missing())
                };
            }
            // .dockerignore hides part of the context: mount a copy of
            // what the build may see.
            let scratch = scratch(env, prepared)?;
            let dest = scratch.path("context");
            copy_selection(index, &relative, &dest)?;
            Ok(dest)
        }
        Some(Source::Layers(layers)) => {
            let view = View::open(env.store, env.lease, layers)?;
            let path = resolve_in_root(view.root(), &relative)
                .map_err(SolveError::io("resolve", view.root().join(&relative)))?;
            prepared.views.push(view);
            if path.exists() {
                Ok(path)
            } else {
                Err(missing())
            }
        }
        None => {
            // A stage without a file system (FROM scratch): an empty directory.
            if !relative.is_empty() {
                return Err(missing());
            }
            let scratch = scratch(env, prepared)?;
            let dir = scratch.path("empty");
            std::fs::create_dir(&dir).map_err(SolveError::io("create directory", &dir))?;
            Ok(dir)
        }
    }
}

/// Copies the context entries at and below `relative` to `dest`.
fn copy_selection(index: &ContextIndex, relative: &str, dest: &Path) -> Result<(), SolveError> {
    let selection = index.selection(relative);
    let single_file = selection.len() == 1 && selection[0].0 == relative;
    for (path, entry) in selection {
        let rest = path
            .strip_prefix(relative)
            .unwrap_or(path)
            .trim_start_matches('/');
        let to = if single_file || rest.is_empty() {
            dest.to_path_buf()
        } else {
            dest.join(rest)
        };
        let from = index.root.join(path);
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent).map_err(SolveError::io("create directory", parent))?;
        }
        match entry.kind {
            Kind::Dir => {
                std::fs::create_dir_all(&to).map_err(SolveError::io("create directory", &to))?;
                std::fs::set_permissions(&to, std::fs::Permissions::from_mode(entry.mode))
                    .map_err(SolveError::io("set the mode of", &to))?;
            }
            Kind::File => {
                std::fs::copy(&from, &to).map_err(SolveError::io("copy", &from))?;
            }
            Kind::Symlink => {
                std::os::unix::fs::symlink(&entry.digest, &to)
                    .map_err(SolveError::io("create symlink", &to))?;
            }
        }
    }
    if !dest.exists() {
        std::fs::create_dir_all(dest).map_err(SolveError::io("create directory", dest))?;
    }
    Ok(())
}

/// A path the runtime creates in the root for a mount target.
pub(crate) struct Stub {
    /// The first missing ancestor of the target (or the target).
    first: PathBuf,
    /// The target.
    target: PathBuf,
    /// Access and modification times of `first`'s parent before the run.
    parent_times: Option<(std::time::SystemTime, std::time::SystemTime)>,
}

/// Paths the runtime will create in `root` for the mount targets, to
/// remove again after the run when still empty, restoring their parent's
/// times (BuildKit's mount stub cleaning).
pub(crate) fn stubs(root: &Path, mounts: &[OciMount]) -> Vec<Stub> {
    let mut out = Vec::new();
    for mount in mounts {
        let target = mount.destination();
        let mut path = root.to_path_buf();
        for component in target.components() {
            if let Component::Normal(name) = component {
                path.push(name);
                if std::fs::symlink_metadata(&path).is_err() {
                    let parent_times = path
                        .parent()
                        .and_then(|p| std::fs::metadata(p).ok())
                        .and_then(|m| Some((m.accessed().ok()?, m.modified().ok()?)));
                    out.push(Stub {
                        first: path.clone(),
                        target: root.join(target.strip_prefix("/").unwrap_or(target)),
                        parent_times,
                    });
                    break;
                }
            }
        }
    }
    out
}

/// Removes the stubs made for mounts: the target and its made parents,
/// each only when empty.
pub(crate) fn remove_stubs(stubs: &[Stub]) {
    for stub in stubs.iter().rev() {
        let mut path = stub.target.clone();
        loop {
            let removed = match std::fs::symlink_metadata(&path) {
                Ok(m) if m.is_dir() => std::fs::remove_dir(&path).is_ok(),
                Ok(m) if m.is_file() && m.len() == 0 => std::fs::remove_file(&path).is_ok(),
                Err(_) => true,
                _ => false,
            };
            if !removed || path == stub.first {
                break;
            }
            match path.parent() {
                Some(p) => path = p.to_path_buf(),
                None => break,
            }
        }
        if let (Some((accessed, modified)), Some(parent)) = (stub.parent_times, stub.first.parent())
        {
            // Only when changed: setting times copies the directory up.
            let changed = std::fs::metadata(parent)
                .and_then(|m| m.modified())
                .is_ok_and(|now| now != modified);
            if changed && std::fs::symlink_metadata(&stub.first).is_err() {
                if let Ok(dir) = File::open(parent) {
                    let _ = dir.set_times(
                        std::fs::FileTimes::new()
                            .set_accessed(accessed)
                            .set_modified(modified),
                    );
                }
            }
        }
    }
}
