//! Containers: records on disk under `$ROOT/containers/<id>/`, their state,
//! and the glue between the store (image snapshots) and the runner.
//!
//! Layout of one container directory:
//! `config.json` (the [`Record`], written once), `state.json` (the
//! [`State`], replaced atomically on every change; none until the first
//! start), `upper/` and `work/`
//! (the overlay's writable half), `rootfs/` (the merged mount point while it
//! runs) and `log.json` (docker's json-file log format).

pub mod attach;
pub mod copy;
pub mod logs;
pub mod names;
pub mod net;
pub mod spec;
pub mod supervise;

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use chrono::{DateTime, Utc};
use kiln_runner::Spec;
use serde::{Deserialize, Serialize};

/// What a container was created from; written once at create time.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    /// 64 hex digits.
    pub id: String,
    /// Unique among this root's containers.
    pub name: String,
    /// The image as the user named it.
    pub image: String,
    /// The image's manifest digest (keeps it from garbage collection).
    pub image_digest: String,
    /// The image's id (config digest).
    pub image_id: String,
    /// Image snapshot directories, lowest first.
    pub lowers: Vec<PathBuf>,
    /// The OCI runtime spec the container runs with.
    pub spec: Spec,
    /// When it was created.
    pub created: DateTime<Utc>,
    /// Run kiln's init as PID 1.
    pub init: bool,
    /// Remove the container when it exits (`--rm`).
    pub auto_remove: bool,
    /// Signal for `stop` (the image's STOPSIGNAL), default SIGTERM.
    pub stop_signal: Option<String>,
    /// Named volumes the container mounts.
    pub volumes: Vec<String>,
    /// Network settings (`--network`, `-p`, `--dns`, ...).
    #[serde(default)]
    pub net: net::NetSettings,
    /// Anonymous volumes made for it (`-v /path`, image VOLUMEs): removed
    /// with it by `rm -v` and `--rm`.
    #[serde(default)]
    pub anonymous_volumes: Vec<String>,
    /// Created with `-i`: the monitor keeps a stdin pipe for attach clients.
    #[serde(default)]
    pub open_stdin: bool,
    /// Close the container's stdin when the attached client's input ends
    /// (docker's StdinOnce: `-i` without `-d`).
    #[serde(default)]
    pub stdin_once: bool,
    /// The image's labels with `--label`/`--label-file` over them.
    #[serde(default)]
    pub labels: std::collections::BTreeMap<String, String>,
    /// Seconds `stop` waits after the stop signal (`--stop-timeout`);
    /// `None`: 10, docker's default.
    #[serde(default)]
    pub stop_timeout: Option<u64>,
    /// Volume mount targets that skip the copy of the image's directory
    /// (`--mount ...,volume-nocopy`).
    #[serde(default)]
    pub volume_nocopy: Vec<String>,
    /// `--restart` policy, followed by the monitor of a detached container.
    #[serde(default)]
    pub restart: RestartPolicy,
}

/// docker's restart policies.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestartPolicy {
    /// no, always, on-failure or unless-stopped ("" is no).
    pub name: String,
    /// on-failure's limit (0: none).
    pub max_retries: u32,
}

impl RestartPolicy {
    /// Parses `no|always|on-failure[:N]|unless-stopped`.
    pub fn parse(text: &str) -> Result<RestartPolicy> {
        let (name, count) = match text.split_once(':') {
            Some((n, c)) => (n, Some(c)),
            None => (text, None),
        };
        let max_retries = match (name, count) {
            ("on-failure", Some(c)) => match c.parse::<u32>() {
                Ok(n) => n,
                Err(_) => bail!("invalid --restart {text:?}: {c:?} is not a retry count"),
            },
            (_, Some(_)) => {
                bail!("invalid --restart {text:?}: only on-failure takes a retry count")
            }
            _ => 0,
        };
        if !["no", "always", "on-failure", "unless-stopped"].contains(&name) {
            bail!("invalid --restart {text:?}: use no, always, on-failure[:N] or unless-stopped");
        }
        Ok(RestartPolicy {
            name: name.to_string(),
            max_retries,
        })
    }

    /// Whether the policy restarts at all.
    pub fn restarts(&self) -> bool {
        !self.name.is_empty() && self.name != "no"
    }

    /// Whether a program that exited with `code` after `restarts` restarts
    /// should be started again.
    pub fn wants_restart(&self, code: u8, restarts: u32) -> bool {
        match self.name.as_str() {
            "always" | "unless-stopped" => true,
            "on-failure" => code != 0 && (self.max_retries == 0 || restarts < self.max_retries),
            _ => false,
        }
    }
}

impl Record {
    /// The command line the container runs.
    pub fn command(&self) -> Vec<String> {
        self.spec
            .process()
            .as_ref()
            .and_then(|p| p.args().clone())
            .unwrap_or_default()
    }

    /// Whether the container has a terminal.
    pub fn tty(&self) -> bool {
        self.spec
            .process()
            .as_ref()
            .and_then(|p| p.terminal())
            .unwrap_or(false)
    }

    /// The first 12 hex digits, as `ps` shows them.
    pub fn short_id(&self) -> &str {
        &self.id[..12]
    }
}

/// Life cycle of a container.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Made, never started.
    #[default]
    Created,
    /// Its program runs.
    Running,
    /// Its program ended.
    Exited,
}

impl Status {
    /// Docker's word for it.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Created => "created",
            Status::Running => "running",
            Status::Exited => "exited",
        }
    }
}

/// What the container is doing; replaced atomically on every change.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct State {
    pub status: Status,
    /// Host pid of the container's first process while it runs.
    pub pid: i32,
    /// That pid's start time (/proc/PID/stat field 22), so a reused pid is
    /// not taken for the container.
    pub pid_start: u64,
    /// Pid of the process that waits for it (monitor or foreground `run`).
    pub monitor_pid: i32,
    /// Start time of the monitor pid.
    pub monitor_start: u64,
    /// Exit code; `None` when nobody saw the exit (the monitor was killed).
    pub exit_code: Option<i32>,
    pub oom_killed: bool,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    /// The container's cgroup directories, removed with it.
    pub cgroup_dirs: Vec<PathBuf>,
    /// Why it failed to start.
    pub error: Option<String>,
    /// Addresses on its networks while it runs (network name, address).
    #[serde(default)]
    pub addresses: Vec<(String, String)>,
    /// Published ports while it runs.
    #[serde(default)]
    pub ports: Vec<kiln_runner::network::PortMapping>,
    /// How often its monitor restarted it (`--restart`).
    #[serde(default)]
    pub restart_count: u32,
    /// Its processes are frozen (`kiln pause`).
    #[serde(default)]
    pub paused: bool,
    /// It exited and its monitor restarts it after the backoff (`--restart`).
    #[serde(default)]
    pub restarting: bool,
}

impl State {
    /// Whether the recorded process still runs (checks pid and start time).
    pub fn is_alive(&self) -> bool {
        self.status == Status::Running && process_start_time(self.pid) == Some(self.pid_start)
    }

    /// Whether the monitor that owns the container still runs.
    pub fn monitor_alive(&self) -> bool {
        self.monitor_pid > 0 && process_start_time(self.monitor_pid) == Some(self.monitor_start)
    }

    /// Docker's word for the state: `paused` and `restarting` besides the
    /// status itself (a restart whose monitor is gone will not happen).
    pub fn docker_status(&self) -> &'static str {
        if self.paused && self.is_alive() {
            "paused"
        } else if self.is_restarting() {
            "restarting"
        } else {
            self.status.as_str()
        }
    }

    /// Whether it exited and its monitor will start it again.
    pub fn is_restarting(&self) -> bool {
        self.restarting && self.status == Status::Exited && self.monitor_alive()
    }

    /// The state as seen now: a "running" container whose process and
    /// monitor are both gone has exited without a recorded code.
    pub fn effective(mut self) -> State {
        if self.status == Status::Running && !self.is_alive() && !self.monitor_alive() {
            self.status = Status::Exited;
        }
        self
    }
}

/// Start time of `pid` in clock ticks since boot, if it exists.
pub fn process_start_time(pid: i32) -> Option<u64> {
    if pid <= 0 {
        return None;
    }
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: fields start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    // rest starts at field 3 (state); starttime is field 22.
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// One container on disk.
#[derive(Debug, Clone)]
pub struct Container {
    pub dir: PathBuf,
    pub record: Record,
}

impl Container {
    pub fn state_path(&self) -> PathBuf {
        self.dir.join("state.json")
    }
    pub fn log_path(&self) -> PathBuf {
        self.dir.join("log.json")
    }
    pub fn rootfs(&self) -> PathBuf {
        self.dir.join("rootfs")
    }

    /// Tells the container's current monitor not to restart it (`stop`,
    /// `rm -f`): a file naming that monitor's pid.
    pub fn request_stop(&self) -> Result<()> {
        let state = self.state()?;
        if state.monitor_pid > 0 && self.record.restart.restarts() {
            write_file(
                &self.dir.join("stop-requested"),
                format!("{} {}", state.monitor_pid, state.monitor_start).as_bytes(),
                false,
            )?;
        }
        Ok(())
    }

    /// Whether `stop` asked the monitor `pid` (started at `start`) to end.
    pub fn stop_requested(&self, pid: i32, start: u64) -> bool {
        std::fs::read_to_string(self.dir.join("stop-requested"))
            .is_ok_and(|t| t == format!("{pid} {start}"))
    }

    /// Its cgroup, below the cgroup root (`kiln/<id>`).
    pub fn cgroup_path(&self) -> PathBuf {
        self.record
            .spec
            .linux()
            .as_ref()
            .and_then(|l| l.cgroups_path().clone())
            .unwrap_or_else(|| PathBuf::from(format!("kiln/{}", self.record.id)))
    }

    /// The state as written last (see [`State::effective`] for "now").
    pub fn state(&self) -> Result<State> {
        let path = self.state_path();
        let text = match std::fs::read(&path) {
            Ok(text) => text,
            // Never started: the state is first written at start.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && self.dir.is_dir() => {
                return Ok(State::default())
            }
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        if text.is_empty() {
            // Unflushed and cut short by a power loss: the container stopped.
            return Ok(State::default());
        }
        serde_json::from_slice(&text).with_context(|| format!("parsing {}", path.display()))
    }

    /// Replaces the state atomically (temp file, rename). Not fsynced: a
    /// killed process leaves the old or the new file (rename is atomic to
    /// other processes), and after a power loss every container has stopped
    /// anyway; the sync would cost a disk flush on every start and exit.
    pub fn set_state(&self, state: &State) -> Result<()> {
        write_file(&self.state_path(), &serde_json::to_vec(state)?, false)
    }

    /// Polls until the container is not running; `None` when `timeout`
    /// passed first.
    pub fn wait_stopped(&self, timeout: Option<Duration>) -> Result<Option<State>> {
        let start = std::time::Instant::now();
        loop {
            let state = self.state()?;
            let running = state.status == Status::Running;
            // A dead program whose monitor is still writing its exit: wait for it.
            if !running || (!state.is_alive() && !state.monitor_alive()) {
                return Ok(Some(state.effective()));
            }
            if timeout.is_some_and(|t| start.elapsed() >= t) {
                return Ok(None);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Writes `bytes` to `path` atomically and durably (temp file, fsync, rename).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_file(path, bytes, true)
}

fn write_file(path: &Path, bytes: &[u8], durable: bool) -> Result<()> {
    let tmp = {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        path.with_extension(format!("tmp{}-{n}", std::process::id()))
    };
    let mut file = File::create(&tmp).with_context(|| format!("writing {}", tmp.display()))?;
    file.write_all(bytes)?;
    if durable {
        file.sync_all()?;
    }
    std::fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))
}

/// The containers of one store root.
#[derive(Debug, Clone)]
pub struct Containers {
    dir: PathBuf,
}

impl Containers {
    /// The containers under `dir` (`$ROOT/containers`).
    pub fn new(dir: PathBuf) -> Containers {
        Containers { dir }
    }

    /// Named volumes live beside the containers, in `$ROOT/volumes/<name>/_data`.
    pub fn volumes_dir(&self) -> PathBuf {
        self.dir
            .parent()
            .map(|p| p.join("volumes"))
            .unwrap_or_else(|| self.dir.join("volumes"))
    }

    /// Takes the root's container lock (held until the file is dropped):
    /// creating and removing containers happen one at a time, so names stay unique.
    pub fn lock(&self) -> Result<File> {
        std::fs::create_dir_all(&self.dir)
            .with_context(|| format!("creating {}", self.dir.display()))?;
        let path = self.dir.join(".lock");
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        file.lock()
            .with_context(|| format!("locking {}", path.display()))?;
        Ok(file)
    }

    /// Every container, oldest first.
    pub fn list(&self) -> Result<Vec<Container>> {
        let mut out = Vec::new();
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(e).context(format!("reading {}", self.dir.display())),
        };
        for entry in entries {
            let entry = entry?;
            if !is_container_dir_name(&entry.file_name()) {
                continue;
            }
            let path = entry.path().join("config.json");
            let Ok(text) = std::fs::read(&path) else {
                continue;
            };
            if text.is_empty() {
                // Only a power loss leaves an empty record: that of a --rm
                // container (written without a flush), gone with its process.
                tracing::debug!("skipping {}: empty after a power loss", path.display());
                continue;
            }
            let record: Record = serde_json::from_slice(&text)
                .with_context(|| format!("parsing {}", path.display()))?;
            out.push(Container {
                dir: entry.path(),
                record,
            });
        }
        out.sort_by_key(|c| c.record.created);
        Ok(out)
    }

    /// Finds a container by name, full id or unique id prefix.
    pub fn find(&self, given: &str) -> Result<Container> {
        self.try_find(given)?
            .ok_or_else(|| anyhow::anyhow!("no such container: {given}"))
    }

    /// Like [`Containers::find`], `None` when nothing matches.
    pub fn try_find(&self, given: &str) -> Result<Option<Container>> {
        let given = given.strip_prefix('/').unwrap_or(given);
        let all = self.list()?;
        if let Some(c) = all
            .iter()
            .find(|c| c.record.name == given || c.record.id == given)
        {
            return Ok(Some(c.clone()));
        }
        let mut matches = all.into_iter().filter(|c| c.record.id.starts_with(given));
        match (matches.next(), matches.next()) {
            (Some(c), None) if !given.is_empty() => Ok(Some(c)),
            (Some(_), Some(_)) => bail!("container id prefix {given} is ambiguous"),
            _ => Ok(None),
        }
    }

    /// The names of every container (reads only that field of each
    /// record); deletes what killed kiln processes left (see `sweep`). Call
    /// with the lock held.
    pub fn names(&self) -> Result<Vec<String>> {
        #[derive(Deserialize)]
        struct Named {
            name: String,
        }
        let mut out = Vec::new();
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(e).context(format!("reading {}", self.dir.display())),
        };
        let mut leftovers = false;
        for entry in entries {
            let entry = entry?;
            let name = entry.file_name();
            if !is_container_dir_name(&name) {
                leftovers |= name.as_encoded_bytes().starts_with(b".trash-")
                    || name.as_encoded_bytes().starts_with(b".creating-");
                continue;
            }
            let path = entry.path().join("config.json");
            let Ok(text) = std::fs::read(&path) else {
                continue;
            };
            if text.is_empty() {
                continue;
            }
            let named: Named = serde_json::from_slice(&text)
                .with_context(|| format!("parsing {}", path.display()))?;
            out.push(named.name);
        }
        if leftovers {
            self.sweep();
        }
        Ok(out)
    }

    /// Writes a new container directory (config, state, empty upper, work and
    /// rootfs dirs) atomically: it appears complete or not at all. Call with
    /// the lock held.
    pub fn create(&self, record: &Record) -> Result<Container> {
        if self.names()?.contains(&record.name) {
            bail!("the container name \"{}\" is already in use", record.name);
        }
        let dir = self.dir.join(&record.id);
        let tmp = self.dir.join(format!(".creating-{}", record.id));
        let made = (|| -> Result<()> {
            std::fs::create_dir(&tmp)?;
            for sub in ["upper", "work", "rootfs"] {
                std::fs::create_dir(tmp.join(sub))?;
            }
            // The files are written in place: the directory is renamed into
            // view only once they are complete, and a killed kiln leaves a
            // `.creating-` directory nobody lists. A --rm container lives
            // only as long as its process, which a power loss ends: its
            // record need not survive one, so it skips the disk flush. The
            // state is first written at start (none reads as created).
            let mut json = serde_json::to_value(record)?;
            if let Some(spec) = json.get_mut("spec") {
                *spec = sorted_capabilities(spec.take());
            }
            let mut config = File::create_new(tmp.join("config.json"))?;
            config.write_all(&serde_json::to_vec(&json)?)?;
            if !record.auto_remove {
                config.sync_all()?;
            }
            drop(config);
            std::fs::rename(&tmp, &dir)?;
            Ok(())
        })();
        if let Err(e) = made {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(e.context(format!("creating container directory {}", dir.display())));
        }
        Ok(Container {
            dir,
            record: record.clone(),
        })
    }

    /// Removes a stopped container: its mount (if a killed monitor left
    /// one), its cgroups, its directory. Call with the lock held.
    pub fn remove(&self, container: &Container) -> Result<()> {
        let state = container.state().unwrap_or_default();
        supervise::unmount_stale(&container.rootfs())?;
        kiln_runner::timing::mark("rm: unmount checked");
        if !state.clone().effective().is_alive() {
            kiln_runner::network::release(&container.record.id)
                .context("releasing the container's network")?;
        }
        kiln_runner::timing::mark("rm: network released");
        for dir in &state.cgroup_dirs {
            remove_cgroup(dir)?;
        }
        kiln_runner::timing::mark("rm: cgroups checked");
        std::fs::remove_dir_all(&container.dir)
            .with_context(|| format!("removing {}", container.dir.display()))
    }

    /// Removes a stopped container as [`Containers::remove_with_volumes`]
    /// does, except that its directory is only renamed out of sight
    /// (`.trash-<id>`, which nothing lists) and deleted by a child process
    /// that outlives this one: `run --rm` returns without waiting for the
    /// file system. A tree whose deleter was killed goes with the next
    /// container created ([`Containers::create`]). `network_released`: the
    /// caller gave its network back already (no second look needed). A
    /// `janitor` started beforehand deletes the tree instead of a child
    /// forked now. Call with the lock held.
    pub fn remove_soon(
        &self,
        container: &Container,
        network_released: bool,
        janitor: Option<kiln_runner::cleanup::Janitor>,
    ) -> Result<()> {
        let trash = self.dir.join(format!(".trash-{}", container.record.id));
        let state = container.state().unwrap_or_default();
        supervise::unmount_stale(&container.rootfs())?;
        if !network_released
            && container.record.net.is_bridge()
            && !state.clone().effective().is_alive()
        {
            kiln_runner::network::release(&container.record.id)
                .context("releasing the container's network")?;
        }
        for dir in &state.cgroup_dirs {
            remove_cgroup(dir)?;
        }
        kiln_runner::timing::mark("rm: cgroups checked");
        std::fs::rename(&container.dir, &trash)
            .with_context(|| format!("removing {}", container.dir.display()))?;
        self.remove_anonymous_volumes(container)?;
        if janitor.is_some_and(|j| j.remove(&trash)) {
            return Ok(());
        }
        // The deleter holds this lock on the tree until it is gone.
        let held = File::open(&trash).and_then(|f| f.try_lock().map(|()| f).map_err(Into::into));
        if !held.is_ok_and(|f| kiln_runner::cleanup::remove_tree_detached(&trash, &f)) {
            std::fs::remove_dir_all(&trash)
                .with_context(|| format!("removing {}", trash.display()))?;
        }
        Ok(())
    }

    /// Deletes what killed kiln processes left in the containers directory:
    /// half-made container directories (`.creating-<id>`) and trees whose
    /// deleter died (`.trash-<id>`, not locked). Call with the lock held.
    fn sweep(&self) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let name = name.as_encoded_bytes();
            let path = entry.path();
            if name.starts_with(b".creating-") {
                let _ = std::fs::remove_dir_all(&path);
            } else if name.starts_with(b".trash-") {
                // A live deleter holds the lock: leave the tree to it.
                let free = File::open(&path).is_ok_and(|f| f.try_lock().is_ok());
                if free {
                    let _ = std::fs::remove_dir_all(&path);
                }
            }
        }
    }

    /// Removes a stopped container as [`Containers::remove`] does, then its
    /// anonymous volumes (`rm -v`, `--rm`). Call with the lock held.
    pub fn remove_with_volumes(&self, container: &Container) -> Result<()> {
        self.remove(container)?;
        self.remove_anonymous_volumes(container)
    }

    fn remove_anonymous_volumes(&self, container: &Container) -> Result<()> {
        for name in &container.record.anonymous_volumes {
            let dir = self.volumes_dir().join(name);
            match std::fs::remove_dir_all(&dir) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(e).with_context(|| format!("removing volume {name}"));
                }
            }
        }
        Ok(())
    }

    /// Manifest digests of every container's image, for garbage collection.
    pub fn image_digests(&self) -> Result<Vec<String>> {
        Ok(self
            .list()?
            .into_iter()
            .map(|c| c.record.image_digest)
            .collect())
    }
}

/// Whether a directory entry of `$ROOT/containers` is a container: 64 hex
/// digits (`.creating-*` and other entries are not).
fn is_container_dir_name(name: &std::ffi::OsStr) -> bool {
    name.len() == 64 && name.as_encoded_bytes().iter().all(u8::is_ascii_hexdigit)
}

/// Kills what is left in a cgroup directory and removes it.
fn remove_cgroup(dir: &Path) -> Result<()> {
    if !dir.exists() {
        return Ok(());
    }
    for _ in 0..100 {
        if let Ok(procs) = std::fs::read_to_string(dir.join("cgroup.procs")) {
            for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
        match std::fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(_) => std::thread::sleep(Duration::from_millis(10)),
        }
    }
    std::fs::remove_dir(dir).with_context(|| format!("removing cgroup {}", dir.display()))
}

/// A new random container id: 64 hex digits.
pub fn new_id() -> String {
    let bytes: [u8; 32] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Moves this (single-threaded) process into a mount namespace of its own
/// with every mount private: what it mounts next shows nowhere else and goes
/// away with the process, whatever happens to it.
pub fn private_mount_namespace() -> Result<()> {
    use nix::mount::MsFlags;
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS)
        .context("making a private mount namespace")?;
    nix::mount::mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .context("making mounts private")
}

/// An OCI spec (as JSON) with its capability sets sorted: they are sets,
/// which serialize in no particular order, and the same container should
/// give the same bytes in its record and in `inspect`.
pub fn sorted_capabilities(mut spec: serde_json::Value) -> serde_json::Value {
    if let Some(caps) = spec
        .pointer_mut("/process/capabilities")
        .and_then(|c| c.as_object_mut())
    {
        for set in caps.values_mut() {
            if let Some(list) = set.as_array_mut() {
                list.sort_by(|a, b| a.as_str().cmp(&b.as_str()));
            }
        }
    }
    spec
}

#[cfg(test)]
mod tests {
    use super::RestartPolicy;

    #[test]
    fn restart_policies_parse_and_decide() {
        let p = RestartPolicy::parse("on-failure:2").unwrap();
        assert_eq!((p.name.as_str(), p.max_retries), ("on-failure", 2));
        assert!(p.wants_restart(1, 1));
        assert!(!p.wants_restart(1, 2));
        assert!(!p.wants_restart(0, 0));
        let always = RestartPolicy::parse("always").unwrap();
        assert!(always.restarts() && always.wants_restart(0, 1000));
        assert!(!RestartPolicy::parse("no").unwrap().restarts());
        assert!(!RestartPolicy::default().restarts());
        for bad in ["sometimes", "always:2", "on-failure:x", "on-failure:-1"] {
            assert!(RestartPolicy::parse(bad).is_err(), "{bad}");
        }
    }
}
