//! The solver: runs the ops of a compiled [`Graph`] that the target stage
//! needs, independent ones at once (tokio tasks; blocking work on
//! `spawn_blocking`, at most `jobs` busy at a time: see [`jobs`]), each
//! looked up in the build cache first (DESIGN.md, "How data flows: build",
//! step 3).

mod cache;
pub mod cachemount;
mod context;
mod copy;
mod error;
mod exec;
mod fetch;
mod jobs;
mod mounts;
mod paths;
mod progress;
pub(crate) mod rootfs;
mod users;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use futures_util::future::{BoxFuture, FutureExt, Shared};
use kiln_store::{CacheRecord, CachedLayer, DiffOptions, Lease, Store};

pub use error::SolveError;
pub use mounts::Secrets;
pub use progress::{NoProgress, Progress, StepEvent};

use crate::dockerfile::instructions::Network;
use crate::dockerfile::platform::Platform;
use crate::graph::ops::{FileAction, Graph, NodeId, Op};
use context::ContextIndex;

/// Finds base images. The CLI implements it with the store (and, later,
/// pulling); tests can serve fixed images.
pub trait ImageResolver: Send + Sync {
    /// The image `reference` (as written after FROM) for `platform`, present
    /// in `store` with its blobs.
    fn resolve(
        &self,
        store: &Store,
        reference: &str,
        platform: &Platform,
    ) -> Result<kiln_store::Image, Box<dyn std::error::Error + Send + Sync>>;
}

/// How to solve.
#[derive(Debug, Clone)]
pub struct SolveOptions {
    /// The build context directory.
    pub context_dir: PathBuf,
    /// The Dockerfile's path (part of each step's identity for miss reasons).
    pub dockerfile: PathBuf,
    /// Ignore cache records (still write new ones).
    pub no_cache: bool,
    /// Nodes that ignore cache records (`--no-cache-filter`: the steps of
    /// the named stages).
    pub no_cache_nodes: std::collections::BTreeSet<NodeId>,
    /// Steps busy at once (at least 1): a RUN step whose container is idle
    /// (sleeping, waiting) does not count (see [`jobs`]).
    pub jobs: usize,
    /// `SOURCE_DATE_EPOCH`: clamps layer mtimes.
    pub source_date_epoch: Option<i64>,
    /// Names given with `--build-arg`, for miss reasons.
    pub build_arg_names: Vec<String>,
    /// What RUN steps get beyond their op: secrets, the network.
    pub run: RunOptions,
}

/// Build-wide settings of RUN steps (`--secret`, `--network`).
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Secrets for `RUN --mount=type=secret`.
    pub secrets: Secrets,
    /// The network of a RUN without `--network` (`kiln build --network`).
    pub network: Network,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            secrets: Secrets::default(),
            network: Network::Default,
        }
    }
}

/// When the build cache record `key` was last used (written or hit).
pub fn cache_record_last_used(store: &Store, key: &str) -> Option<std::time::SystemTime> {
    std::fs::metadata(cache::used_path(&store.cache_dir(), key))
        .and_then(|m| m.modified())
        .ok()
}

/// Forgets the last use of `key` (after its record was removed).
pub fn forget_cache_record_use(store: &Store, key: &str) {
    let _ = std::fs::remove_file(cache::used_path(&store.cache_dir(), key));
}

/// Cleans what a killed build left: overlay mounts, RUN scratch
/// directories, unpack/download scratch, the cgroups of its RUN
/// containers and their network attachments.
pub fn remove_leftovers(store: &Store) {
    rootfs::remove_stale_mounts(store);
    remove_stale_scratch(store);
    mounts::remove_stale(store);
    // RUN steps' places on the default network (owner and container gone).
    if std::path::Path::new(kiln_runner::network::RUN_DIR).exists() {
        let _ = kiln_runner::network::reap();
    }
    kiln_runner::cgroup::remove_stale_children(std::path::Path::new("kiln-build"), &|name| {
        name.split('-')
            .next()
            .and_then(|p| p.parse::<u32>().ok())
            .is_some_and(|pid| {
                pid != std::process::id() && !std::path::Path::new(&format!("/proc/{pid}")).exists()
            })
    });
}

/// The solved target: its layer stack and, for each layer-making step
/// since its base image, whether it made a layer.
#[derive(Debug, Clone, Default)]
pub struct Solved {
    /// Layers, lowest first.
    pub layers: Vec<CachedLayer>,
    /// One flag per Exec/File step along the target's chain since its base
    /// image, oldest first: false when the step changed nothing.
    pub steps: Vec<bool>,
    /// Unix seconds when the target's last step was first built (from its
    /// cache record), so a fully cached rebuild exports the same config and
    /// image id, as BuildKit does. `None` when the target ran no step.
    pub created: Option<i64>,
}

#[derive(Debug)]
struct RootfsOut {
    layers: Vec<CachedLayer>,
    steps: Vec<bool>,
    key: String,
    created: Option<i64>,
}

#[derive(Debug, Clone)]
enum Output {
    Rootfs(Arc<RootfsOut>),
    Context(Arc<ContextIndex>),
}

type NodeFuture = Shared<BoxFuture<'static, Result<Output, ()>>>;

struct Ctx {
    store: Store,
    lease: Arc<Lease>,
    graph: Graph,
    options: SolveOptions,
    resolver: Arc<dyn ImageResolver>,
    progress: Arc<dyn Progress>,
    steps: Vec<usize>,
    failed: AtomicBool,
    first_error: Mutex<Option<SolveError>>,
    /// Host pids of running RUN containers.
    running: Mutex<Vec<i32>>,
    /// RUN steps' places on the default network, for the next RUN step.
    net_pool: exec::NetPool,
    /// Directories steps no longer need, removed meanwhile.
    trash: rootfs::Trash,
    /// This build's scratch directory (archives unpacked, downloads).
    scratch: PathBuf,
}

/// The nodes the target stage needs, in graph order.
fn needed(graph: &Graph) -> Vec<NodeId> {
    let mut need = vec![false; graph.nodes.len()];
    let mut stack: Vec<NodeId> = graph.target_stage().root.into_iter().collect();
    while let Some(id) = stack.pop() {
        if !need[id] {
            need[id] = true;
            stack.extend(graph.nodes[id].inputs.iter().map(|i| i.node));
        }
    }
    (0..graph.nodes.len()).filter(|&i| need[i]).collect()
}

/// Solves the target stage of `graph`. New blobs and snapshots are
/// protected by `lease` until the caller names the image.
pub fn solve(
    store: &Store,
    lease: Arc<Lease>,
    graph: &Graph,
    options: &SolveOptions,
    resolver: Arc<dyn ImageResolver>,
    progress: Arc<dyn Progress>,
) -> Result<Solved, SolveError> {
    remove_leftovers(store);
    crate::timing::mark("leftovers removed");
    let order = needed(graph);
    let mut steps = vec![0; graph.nodes.len()];
    for (n, &id) in order.iter().enumerate() {
        steps[id] = n + 1;
    }
    let ctx = Arc::new(Ctx {
        store: store.clone(),
        lease,
        graph: graph.clone(),
        options: options.clone(),
        resolver,
        progress,
        steps,
        failed: AtomicBool::new(false),
        first_error: Mutex::new(None),
        running: Mutex::new(Vec::new()),
        net_pool: exec::NetPool::default(),
        trash: rootfs::Trash::default(),
        scratch: store
            .cache_dir()
            .join("scratch")
            .join(std::process::id().to_string()),
    });
    let jobs = options.jobs.max(1);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        // Idle RUN steps give their slot back: every step may be running.
        .max_blocking_threads(order.len() + 2)
        .enable_all()
        .build()
        .map_err(SolveError::io(
            "start the solver runtime in",
            &options.context_dir,
        ))?;
    crate::timing::mark("runtime started");
    let target = graph.target_stage().root;
    let result = runtime.block_on(async {
        let interrupt = tokio::spawn(interrupted(ctx.clone()));
        let semaphore = Arc::new(tokio::sync::Semaphore::new(jobs));
        let mut futures: Vec<Option<NodeFuture>> = vec![None; graph.nodes.len()];
        let mut handles = Vec::new();
        for &id in &order {
            let inputs: Vec<NodeFuture> = graph.nodes[id]
                .inputs
                .iter()
                .map(|i| futures[i.node].clone().expect("inputs come first"))
                .collect();
            let ctx = ctx.clone();
            let semaphore = semaphore.clone();
            let future = async move {
                let mut outputs = Vec::with_capacity(inputs.len());
                for input in inputs {
                    outputs.push(input.await?);
                }
                let permit = semaphore.clone().acquire_owned().await.map_err(|_| ())?;
                if ctx.failed.load(Ordering::SeqCst) {
                    return Err(());
                }
                let slot = jobs::Slot::new(semaphore, tokio::runtime::Handle::current(), permit);
                let worker = ctx.clone();
                tokio::task::spawn_blocking(move || worker.run_step(id, outputs, &slot))
                    .await
                    .unwrap_or(Err(()))
            }
            .boxed()
            .shared();
            handles.push(tokio::spawn(future.clone()));
            futures[id] = Some(future);
        }
        // Wait for everything started, so no step is left running.
        for handle in handles {
            let _ = handle.await;
        }
        interrupt.abort();
        match target {
            Some(t) => futures[t].clone().expect("the target is needed").await,
            None => Ok(Output::Rootfs(Arc::new(RootfsOut {
                layers: Vec::new(),
                steps: Vec::new(),
                key: String::new(),
                created: None,
            }))),
        }
    });
    crate::timing::mark("steps done");
    ctx.net_pool.release_all();
    ctx.trash.empty();
    let _ = std::fs::remove_dir_all(&ctx.scratch);
    if let Some(error) = ctx.first_error.lock().expect("not poisoned").take() {
        return Err(error);
    }
    match result {
        Ok(Output::Rootfs(out)) => Ok(Solved {
            layers: out.layers.clone(),
            steps: out.steps.clone(),
            created: out.created,
        }),
        Ok(Output::Context(_)) => Err(SolveError::unsupported("a build context as the target")),
        Err(()) => Err(SolveError::Cancelled),
    }
}

/// On SIGINT or SIGTERM: no new steps start, running RUN containers are
/// killed, and every step unwinds (unmounting its overlay) before the
/// solver returns [`SolveError::Interrupted`].
async fn interrupted(ctx: Arc<Ctx>) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        return;
    };
    tokio::select! {
        _ = int.recv() => {}
        _ = term.recv() => {}
    }
    {
        let mut first = ctx.first_error.lock().expect("not poisoned");
        if first.is_none() {
            *first = Some(SolveError::Interrupted);
        }
    }
    ctx.failed.store(true, Ordering::SeqCst);
    for &pid in ctx.running.lock().expect("not poisoned").iter() {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

impl Ctx {
    fn emit(&self, id: NodeId, event: StepEvent) {
        self.progress.event(self.steps[id], event);
    }

    fn run_step(&self, id: NodeId, inputs: Vec<Output>, slot: &jobs::Slot) -> Result<Output, ()> {
        let started = Instant::now();
        crate::timing::mark("step started");
        let node = &self.graph.nodes[id];
        self.emit(
            id,
            StepEvent::Started {
                name: node.description.clone(),
            },
        );
        let result = self.run_node(id, &inputs, slot);
        crate::timing::mark("step returned");
        match result {
            Ok(output) => {
                self.emit(
                    id,
                    StepEvent::Done {
                        elapsed: started.elapsed(),
                    },
                );
                Ok(output)
            }
            Err(error) => {
                self.emit(
                    id,
                    StepEvent::Failed {
                        message: error_chain(&error),
                        elapsed: started.elapsed(),
                    },
                );
                self.failed.store(true, Ordering::SeqCst);
                let mut first = self.first_error.lock().expect("not poisoned");
                if first.is_none() {
                    *first = Some(SolveError::Step {
                        step: node.description.clone(),
                        source: Box::new(error),
                    });
                }
                Err(())
            }
        }
    }

    fn run_node(
        &self,
        id: NodeId,
        inputs: &[Output],
        slot: &jobs::Slot,
    ) -> Result<Output, SolveError> {
        let node = &self.graph.nodes[id];
        match &node.op {
            Op::Image {
                reference,
                platform,
            } => {
                let image = self
                    .resolver
                    .resolve(&self.store, reference, platform)
                    .map_err(|source| SolveError::Image {
                        reference: reference.clone(),
                        source,
                    })?;
                self.store
                    .ensure_snapshots(&image)
                    .map_err(SolveError::store("unpacking the base image"))?;
                let diff_ids = image
                    .diff_ids()
                    .map_err(SolveError::store("reading the base image"))?;
                crate::timing::mark("base image resolved");
                let layers = image
                    .manifest
                    .layers()
                    .iter()
                    .zip(diff_ids)
                    .map(|(d, diff_id)| CachedLayer {
                        descriptor: d.clone(),
                        diff_id,
                    })
                    .collect();
                Ok(Output::Rootfs(Arc::new(RootfsOut {
                    layers,
                    steps: Vec::new(),
                    key: format!("image {} {platform}", image.manifest_digest),
                    created: None,
                })))
            }
            Op::Context {
                include, exclude, ..
            } => {
                let index = context::index(
                    &self.options.context_dir,
                    include,
                    exclude,
                    &self.store.cache_dir(),
                )?;
                Ok(Output::Context(Arc::new(index)))
            }
            Op::Exec(_) | Op::File(_) => self.run_layer_step(id, inputs, slot),
        }
    }

    /// What the step's key covers (see [`cache::StepDef`]).
    fn step_def<'a>(
        &self,
        id: NodeId,
        inputs: &'a [Output],
        downloads: &Downloads,
        linked: bool,
    ) -> cache::StepDef<'a> {
        let node = &self.graph.nodes[id];
        let mut def = cache::StepDef::new(serde_json::to_value(&node.op).expect("ops serialize"));
        for (url, download) in downloads {
            def.add_file(
                format!("url {url}"),
                cache::FileValue::Text(download.identity()),
            );
        }
        for (slot, (input, output)) in node.inputs.iter().zip(inputs).enumerate() {
            match output {
                // --link: the step does not depend on what it lands on.
                Output::Rootfs(_) if linked && input.role == "rootfs" => {}
                Output::Rootfs(r) => def.inputs.push((input.role.clone(), r.key.clone())),
                Output::Context(index) => {
                    def.inputs.push((input.role.clone(), "context".to_string()));
                    let mut sources: Vec<&str> = Vec::new();
                    match &node.op {
                        Op::File(f) => {
                            for action in &f.actions {
                                if let FileAction::Copy {
                                    input: Some(s),
                                    sources: list,
                                    ..
                                } = action
                                {
                                    if *s == slot {
                                        sources.extend(list.iter().map(String::as_str));
                                    }
                                }
                            }
                        }
                        Op::Exec(e) => sources.extend(
                            e.mounts
                                .iter()
                                .filter(|m| m.input == Some(slot))
                                .map(|m| m.source.as_str()),
                        ),
                        _ => sources.push("."),
                    }
                    for source in sources {
                        for (path, entry) in index.selection(source) {
                            def.add_file(path, cache::FileValue::Entry(entry));
                        }
                    }
                }
            }
        }
        def
    }

    fn run_layer_step(
        &self,
        id: NodeId,
        inputs: &[Output],
        slot: &jobs::Slot,
    ) -> Result<Output, SolveError> {
        let node = &self.graph.nodes[id];
        if let Op::Exec(op) = &node.op {
            exec::check_supported(op)?;
        }
        let linked = is_linked(&node.op);
        let mut downloads = self.fetch_unpinned(&node.op)?;
        let mut def = self.step_def(id, inputs, &downloads, linked);
        crate::timing::mark("step record");
        let key = def.key();
        crate::timing::mark("step key");
        let identity = format!(
            "{}\n{}\n{}",
            self.options.context_dir.display(),
            self.options.dockerfile.display(),
            node.description
        );
        let record_path = cache::record_path(&self.store.cache_dir(), &identity);
        let no_cache_filter = self.options.no_cache_nodes.contains(&id);
        if !self.options.no_cache && !no_cache_filter {
            if let Some(hit) = self.cached(&key)? {
                crate::timing::mark("cache record read");
                self.emit(id, StepEvent::Cached);
                cache::save(&record_path, &key, &mut def);
                crate::timing::mark("step record saved");
                cache::touch_used(&self.store.cache_dir(), &key);
                if linked {
                    let parent = parent_of(node, inputs);
                    let mut layers = parent.map(|p| p.layers.clone()).unwrap_or_default();
                    let mut steps = parent.map(|p| p.steps.clone()).unwrap_or_default();
                    layers.extend(hit.layers);
                    steps.extend(decode_steps(&hit.annotations));
                    return Ok(Output::Rootfs(Arc::new(RootfsOut {
                        layers,
                        steps,
                        key: linked_key(parent, &key),
                        created: Some(hit.created),
                    })));
                }
                return Ok(Output::Rootfs(Arc::new(RootfsOut {
                    layers: hit.layers,
                    steps: decode_steps(&hit.annotations),
                    key,
                    created: Some(hit.created),
                })));
            }
        }
        let reason = if self.options.no_cache {
            "--no-cache".to_string()
        } else if no_cache_filter {
            "--no-cache-filter".to_string()
        } else {
            cache::miss_reason(
                cache::load(&record_path).as_ref(),
                &def.record(),
                &self.options.build_arg_names,
            )
        };
        self.emit(id, StepEvent::Miss { reason });
        let empty = RootfsOut {
            layers: Vec::new(),
            steps: Vec::new(),
            key: String::new(),
            created: None,
        };
        let parent = parent_of(node, inputs).unwrap_or(&empty);
        // --link: the layer is made on an empty root and stacked on top.
        let base: &[CachedLayer] = if linked { &[] } else { &parent.layers };
        let workspace = rootfs::Workspace::open(&self.store, &self.lease, base)?;
        crate::timing::mark("workspace opened");
        match &node.op {
            Op::Exec(op) => {
                let cgroup = format!("kiln-build/{}-{}", std::process::id(), self.steps[id]);
                let emit = |event: StepEvent| self.emit(id, event);
                let mount_env = mounts::MountEnv {
                    store: &self.store,
                    lease: &self.lease,
                    inputs: node
                        .inputs
                        .iter()
                        .zip(inputs)
                        .map(|(input, output)| match output {
                            Output::Context(index) => {
                                let filtered = matches!(
                                    &self.graph.nodes[input.node].op,
                                    Op::Context { exclude, .. } if !exclude.is_empty()
                                );
                                Some(mounts::Source::Context(index, filtered))
                            }
                            Output::Rootfs(r) => Some(mounts::Source::Layers(&r.layers)),
                        })
                        .collect(),
                    secrets: &self.options.run.secrets,
                };
                let usage = kiln_runner::cgroup::CpuUsage::new(std::path::Path::new(&cgroup));
                let stop = jobs::Stop::default();
                std::thread::scope(|scope| {
                    // Idle, the container lets other steps start.
                    if let Some(usage) = &usage {
                        scope.spawn(|| jobs::watch(slot, usage, &stop));
                    }
                    let result = exec::run(
                        op,
                        workspace.merged(),
                        &workspace.upper(),
                        &cgroup,
                        &emit,
                        &self.running,
                        exec::network_setup(op.network, self.options.run.network),
                        &mount_env,
                        &self.net_pool,
                    );
                    stop.stop();
                    result
                })?;
                // The layer is made in process: that is busy work.
                slot.take();
            }
            Op::File(op) => {
                self.file_actions(workspace.merged(), &op.actions, inputs, &mut downloads)?
            }
            _ => unreachable!("only exec and file ops make layers"),
        }
        let options = DiffOptions {
            compression: kiln_store::Compression::None,
            source_date_epoch: self.options.source_date_epoch,
        };
        // `_hold` keeps the metadata open for the cache record below.
        crate::timing::mark("step ran");
        let (layer, _hold) =
            workspace.finish(&self.store, &self.lease, base, &options, &self.trash)?;
        crate::timing::mark("layer made");
        if linked {
            let cache_record = CacheRecord {
                layers: layer.iter().cloned().collect(),
                annotations: encode_steps(&[layer.is_some()]),
                created: now_secs(),
            };
            self.store
                .put_cache_record(&key, &cache_record)
                .map_err(SolveError::store("writing a cache record"))?;
            cache::save(&record_path, &key, &mut def);
            cache::touch_used(&self.store.cache_dir(), &key);
            let mut layers = parent.layers.clone();
            let mut steps = parent.steps.clone();
            steps.push(layer.is_some());
            layers.extend(layer);
            return Ok(Output::Rootfs(Arc::new(RootfsOut {
                layers,
                steps,
                key: linked_key(Some(parent), &key),
                created: Some(cache_record.created),
            })));
        }
        let mut layers = parent.layers.clone();
        let mut steps = parent.steps.clone();
        steps.push(layer.is_some());
        layers.extend(layer);
        let cache_record = CacheRecord {
            layers: layers.clone(),
            annotations: encode_steps(&steps),
            created: now_secs(),
        };
        self.store
            .put_cache_record(&key, &cache_record)
            .map_err(SolveError::store("writing a cache record"))?;
        cache::save(&record_path, &key, &mut def);
        cache::touch_used(&self.store.cache_dir(), &key);
        crate::timing::mark("cache record written");
        Ok(Output::Rootfs(Arc::new(RootfsOut {
            layers,
            steps,
            key,
            created: Some(cache_record.created),
        })))
    }

    /// A usable cache record: every blob still there.
    fn cached(&self, key: &str) -> Result<Option<CacheRecord>, SolveError> {
        let Some(record) = self
            .store
            .cache_record(key)
            .map_err(SolveError::store("reading a cache record"))?
        else {
            return Ok(None);
        };
        for layer in &record.layers {
            let present = kiln_store::descriptor_digest(&layer.descriptor)
                .ok()
                .is_some_and(|d| self.store.content().size(&d).is_ok());
            if !present {
                return Ok(None);
            }
        }
        Ok(Some(record))
    }

    /// Downloads the URLs of ADD steps without `--checksum` (their content
    /// is part of the cache key).
    fn fetch_unpinned(&self, op: &Op) -> Result<Downloads, SolveError> {
        let mut downloads = Downloads::new();
        let Op::File(f) = op else {
            return Ok(downloads);
        };
        for action in &f.actions {
            if let FileAction::Copy {
                sources,
                checksum: None,
                is_add: true,
                ..
            } = action
            {
                for url in sources.iter().filter(|s| fetch::is_url(s)) {
                    if !downloads.contains_key(url) {
                        let notes = self.store.cache_dir().join("http");
                        let d = fetch::fetch_unpinned(url, &self.scratch, &notes)?;
                        downloads.insert(url.clone(), d);
                    }
                }
            }
        }
        Ok(downloads)
    }

    fn file_actions(
        &self,
        root: &std::path::Path,
        actions: &[FileAction],
        inputs: &[Output],
        downloads: &mut Downloads,
    ) -> Result<(), SolveError> {
        use users::{resolve_in, Purpose};
        for action in actions {
            match action {
                FileAction::Copy {
                    input,
                    sources,
                    dest,
                    chown,
                    chmod,
                    parents,
                    exclude,
                    is_add,
                    unpack,
                    checksum,
                    keep_git_dir,
                    link: _,
                } => {
                    let keyword = if *is_add { "ADD" } else { "COPY" };
                    if sources
                        .iter()
                        .any(|s| s.starts_with("git@") || s.starts_with("git://"))
                        || *keep_git_dir
                    {
                        return Err(SolveError::unsupported("ADD from a git repository"));
                    }
                    let chown_ids = match chown {
                        Some(c) => Some(resolve_in(root, c, Purpose::Chown)?),
                        None => None,
                    };
                    let chmod = chmod.as_deref().map(copy::Chmod::parse).transpose()?;
                    std::fs::create_dir_all(&self.scratch)
                        .map_err(SolveError::io("create directory", &self.scratch))?;
                    let (urls, local): (Vec<String>, Vec<String>) = sources
                        .iter()
                        .cloned()
                        .partition(|s| *is_add && fetch::is_url(s));
                    for url in &urls {
                        let download = match downloads.remove(url) {
                            Some(fetch::Fetched::Whole(d)) => d,
                            // Not modified, but the step missed: get it whole.
                            _ => fetch::fetch(url, checksum.as_deref(), &self.scratch)?,
                        };
                        let name = [download.name.clone()];
                        let several = sources.len() > 1;
                        let to = if several && !dest.ends_with('/') {
                            format!("{dest}/")
                        } else {
                            dest.clone()
                        };
                        copy::copy(
                            &copy::SourceTree {
                                root: download.dir.path(),
                                index: None,
                            },
                            root,
                            &copy::CopySpec {
                                keyword,
                                sources: &name,
                                dest: &to,
                                owner: Some(chown_ids.unwrap_or_default()),
                                chmod: chmod.as_ref(),
                                exclude: &[],
                                // URLs unpack only when asked (`--unpack`).
                                unpack: *unpack == Some(true),
                                unpack_owner: chown_ids,
                                parents: false,
                                scratch: &self.scratch,
                            },
                        )?;
                    }
                    if local.is_empty() {
                        continue;
                    }
                    let from_context =
                        matches!(input.map(|slot| &inputs[slot]), Some(Output::Context(_)));
                    let spec = copy::CopySpec {
                        keyword,
                        sources: &local,
                        dest,
                        // The context's files are root's; other sources keep owners.
                        owner: chown_ids.or(from_context.then(users::Ids::default)),
                        chmod: chmod.as_ref(),
                        exclude,
                        unpack: *is_add && *unpack != Some(false),
                        unpack_owner: chown_ids,
                        parents: *parents,
                        scratch: &self.scratch,
                    };
                    match input.map(|slot| &inputs[slot]) {
                        Some(Output::Context(index)) => copy::copy(
                            &copy::SourceTree {
                                root: &index.root,
                                index: Some(index),
                            },
                            root,
                            &spec,
                        )?,
                        Some(Output::Rootfs(stack)) => {
                            let view = rootfs::View::open(&self.store, &self.lease, &stack.layers)?;
                            copy::copy(
                                &copy::SourceTree {
                                    root: view.root(),
                                    index: None,
                                },
                                root,
                                &spec,
                            )?
                        }
                        None => {
                            // A stage with no file system (FROM scratch, no changes).
                            let empty = tempfile_dir(&self.store)?;
                            let result = copy::copy(
                                &copy::SourceTree {
                                    root: &empty,
                                    index: None,
                                },
                                root,
                                &spec,
                            );
                            let _ = std::fs::remove_dir_all(&empty);
                            result?
                        }
                    }
                }
                FileAction::Mkfile {
                    path,
                    data,
                    mode,
                    chown,
                } => {
                    let owner = match chown {
                        Some(c) => resolve_in(root, c, Purpose::Chown)?,
                        None => users::Ids::default(),
                    };
                    copy::make_file(root, path, data, *mode, owner)?;
                }
                FileAction::Mkdir {
                    path, mode, chown, ..
                } => {
                    let owner = match chown {
                        Some(c) => resolve_in(root, c, Purpose::Process)?,
                        None => users::Ids::default(),
                    };
                    copy::make_dir(root, path, *mode, owner)?;
                }
            }
        }
        Ok(())
    }
}

type Downloads = std::collections::HashMap<String, fetch::Fetched>;

/// A File op whose every action is a `--link` COPY/ADD.
fn is_linked(op: &Op) -> bool {
    match op {
        Op::File(f) => {
            !f.actions.is_empty()
                && f.actions
                    .iter()
                    .all(|a| matches!(a, FileAction::Copy { link: true, .. }))
        }
        _ => false,
    }
}

/// The stack a step runs on.
fn parent_of<'a>(node: &crate::graph::ops::Node, inputs: &'a [Output]) -> Option<&'a RootfsOut> {
    node.inputs
        .iter()
        .zip(inputs)
        .find(|(i, _)| i.role == "rootfs")
        .and_then(|(_, o)| match o {
            Output::Rootfs(r) => Some(r.as_ref()),
            Output::Context(_) => None,
        })
}

/// The key later steps see for a `--link` step: its own key on top of its
/// parent's (its cache record does not depend on the parent).
fn linked_key(parent: Option<&RootfsOut>, key: &str) -> String {
    use sha2::Digest as _;
    let parent = parent.map(|p| p.key.as_str()).unwrap_or_default();
    let digest = sha2::Sha256::digest(format!("link\n{parent}\n{key}").as_bytes());
    format!("sha256:{}", hex::encode(digest))
}

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Removes scratch directories of builds that are gone (killed mid-way).
fn remove_stale_scratch(store: &Store) {
    let dir = store.cache_dir().join("scratch");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Ok(pid) = name.parse::<u32>() else {
            continue;
        };
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

fn tempfile_dir(store: &Store) -> Result<PathBuf, SolveError> {
    let dir = store.cache_dir().join("mnt").join(format!(
        "empty-{}-{:016x}",
        std::process::id(),
        rand::random::<u64>()
    ));
    std::fs::create_dir_all(&dir).map_err(SolveError::io("create directory", &dir))?;
    Ok(dir)
}

const STEPS_ANNOTATION: &str = "kiln.build.steps";

fn encode_steps(steps: &[bool]) -> BTreeMap<String, String> {
    let text: String = steps.iter().map(|&s| if s { '1' } else { '0' }).collect();
    BTreeMap::from([(STEPS_ANNOTATION.to_string(), text)])
}

fn decode_steps(annotations: &BTreeMap<String, String>) -> Vec<bool> {
    annotations
        .get(STEPS_ANNOTATION)
        .map(|t| t.chars().map(|c| c == '1').collect())
        .unwrap_or_default()
}

/// An error and its sources on one line (`a: b: c`).
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
