//! `kiln run`: create a container from an image and start it, in the
//! foreground (this process waits for it) or detached (`-d`, a monitor
//! process waits for it).

use std::io::{BufRead, BufReader, Write};
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::process::Stdio as ProcessStdio;

use anyhow::{bail, Context, Result};
use chrono::Utc;
use clap::Args;
use kiln_runner::Stdio;
use kiln_store::Store;

use crate::containers::attach;
use crate::containers::logs::LogWriter;
use crate::containers::spec::{self, Accounts, MountRequest, Network, RunOptions};
use crate::containers::supervise::{self, exit_code_of};
use crate::containers::{names, new_id, Container, Containers, Record};
use crate::settings::RegistrySettings;
use crate::ExitStatus;

/// Flags shared by `kiln create` and `kiln run`.
#[derive(Debug, Args)]
#[command(disable_help_flag = true)]
pub struct CreateArgs {
    /// Print help (-h is --hostname, as in docker).
    #[arg(long, action = clap::ArgAction::Help)]
    pub help: Option<bool>,
    /// Keep stdin open.
    #[arg(short, long)]
    pub interactive: bool,
    /// Give the container a terminal.
    #[arg(short, long)]
    pub tty: bool,
    /// Remove the container when it exits.
    #[arg(long)]
    pub rm: bool,
    /// Container name (default: a random one).
    #[arg(long)]
    pub name: Option<String>,
    /// Set an environment variable (KEY=VALUE, or KEY to copy it from here).
    #[arg(short, long = "env")]
    pub env: Vec<String>,
    /// Read environment variables from a file (KEY=VALUE lines).
    #[arg(long)]
    pub env_file: Vec<PathBuf>,
    /// Working directory inside the container.
    #[arg(short, long)]
    pub workdir: Option<String>,
    /// User (name or uid), optionally :group.
    #[arg(short, long)]
    pub user: Option<String>,
    /// Replace the image's ENTRYPOINT.
    #[arg(long)]
    pub entrypoint: Option<String>,
    /// Container host name.
    #[arg(short = 'h', long)]
    pub hostname: Option<String>,
    /// Mount HOSTDIR:CTRDIR[:ro] or a named volume NAME:CTRDIR[:ro].
    #[arg(short, long = "volume")]
    pub volume: Vec<String>,
    /// Mount an empty tmpfs at this directory.
    #[arg(long)]
    pub tmpfs: Vec<String>,
    /// Mount the root filesystem read-only.
    #[arg(long)]
    pub read_only: bool,
    /// Memory limit (e.g. 64m, 1g).
    #[arg(short, long)]
    pub memory: Option<String>,
    /// CPU limit in CPUs (e.g. 0.5).
    #[arg(long)]
    pub cpus: Option<f64>,
    /// Maximum number of processes.
    #[arg(long)]
    pub pids_limit: Option<i64>,
    /// Add a capability (or ALL).
    #[arg(long)]
    pub cap_add: Vec<String>,
    /// Drop a capability (or ALL).
    #[arg(long)]
    pub cap_drop: Vec<String>,
    /// Every capability, no seccomp filter, no masked paths.
    #[arg(long)]
    pub privileged: bool,
    /// Add a host device: HOST[:CONTAINER[:PERMISSIONS]] (permissions some of rwm).
    #[arg(long)]
    pub device: Vec<String>,
    /// Run an init as PID 1 that forwards signals and reaps zombies.
    #[arg(long)]
    pub init: bool,
    /// Network: bridge (the default), a user network's name, none
    /// (loopback only), host, or container:NAME (share its namespace).
    #[arg(long, alias = "net", default_value = "bridge")]
    pub network: String,
    /// Another name of the container on its user network.
    #[arg(long = "network-alias")]
    pub network_alias: Vec<String>,
    /// Publish a port: [HOSTIP:][HOSTPORT:]CTRPORT[/tcp|udp].
    #[arg(short = 'p', long = "publish")]
    pub publish: Vec<String>,
    /// Publish every port the image EXPOSEs on a free host port.
    #[arg(short = 'P', long = "publish-all")]
    pub publish_all: bool,
    /// DNS server for the container's /etc/resolv.conf.
    #[arg(long)]
    pub dns: Vec<String>,
    /// Add a line to /etc/hosts: HOST:IP.
    #[arg(long = "add-host")]
    pub add_host: Vec<String>,
    /// The image (name or id), then the command and its arguments (default:
    /// the image's). Everything after the image belongs to the command.
    #[arg(
        required = true,
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "IMAGE [COMMAND]..."
    )]
    pub image_and_command: Vec<String>,
}

impl CreateArgs {
    fn image(&self) -> &str {
        &self.image_and_command[0]
    }
    fn command(&self) -> &[String] {
        &self.image_and_command[1..]
    }
}

/// Arguments of `kiln run`.
#[derive(Debug, Args)]
#[command(disable_help_flag = true)]
pub struct RunArgs {
    /// Run in the background and print the container id.
    #[arg(short, long)]
    pub detach: bool,
    /// Keys that detach from a `-it` container and leave it running.
    #[arg(long, default_value = "ctrl-p,ctrl-q")]
    pub detach_keys: String,
    /// Forward the signals kiln receives to the container (without a terminal).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub sig_proxy: bool,
    #[command(flatten)]
    pub create: CreateArgs,
}

/// The containers of the store at `root`.
pub fn containers_of(root: &std::path::Path) -> Containers {
    Containers::new(root.join("containers"))
}

pub fn run(
    root: &std::path::Path,
    registries: &RegistrySettings,
    args: &RunArgs,
) -> Result<ExitStatus> {
    let through_monitor = args.detach || (args.create.tty && args.create.interactive);
    if !through_monitor {
        // This process starts the container: get the kernel's cgroup lock
        // ready while the rest is set up.
        kiln_runner::cgroup::warm_up_attach();
    }
    let store =
        Store::open(root).with_context(|| format!("opening the store at {}", root.display()))?;
    kiln_runner::timing::mark("store open");
    let containers = containers_of(root);
    let detach_keys = attach::parse_detach_keys(&args.detach_keys)?;
    let container = create(&store, registries, &containers, &args.create, args.detach)?;
    drop(store);
    if args.detach {
        if let Err(err) = start_detached(root, &container) {
            let _ = writeln!(std::io::stderr(), "kiln: {err:#}");
            if args.create.rm {
                let _lock = containers.lock()?;
                containers.remove_with_volumes(&container)?;
            }
            return Ok(ExitStatus(start_exit_code(&err)));
        }
        println!("{}", container.record.id);
        return Ok(ExitStatus::SUCCESS);
    }
    if args.create.tty && args.create.interactive {
        // Through a monitor, as `run -d` plus `attach`: the detach keys
        // leave the container running under its monitor.
        return run_attached(root, &containers, &container, detach_keys);
    }
    let result = run_foreground(&container, args.create.interactive, args.sig_proxy);
    kiln_runner::timing::mark("foreground done");
    if args.create.rm {
        let _lock = containers.lock()?;
        containers.remove_with_volumes(&container)?;
        kiln_runner::timing::mark("removed");
    }
    result
}

/// `run -it`: starts the container under a monitor and attaches this
/// terminal to it until it exits or the user types the detach keys.
fn run_attached(
    root: &std::path::Path,
    containers: &Containers,
    container: &Container,
    detach_keys: Vec<u8>,
) -> Result<ExitStatus> {
    let stream = match start_attached(root, container, true) {
        Ok(s) => s,
        Err(err) => {
            let _ = writeln!(std::io::stderr(), "kiln: {err:#}");
            if container.record.auto_remove {
                let _lock = containers.lock()?;
                containers.remove_with_volumes(container)?;
            }
            return Ok(ExitStatus(start_exit_code(&err)));
        }
    };
    let options = attach::ClientOptions {
        stdin: true,
        tty: true,
        detach_keys,
        signal_pid: None,
    };
    attach_outcome(container, attach::session(stream, &options)?)
}

/// The exit status of an attached `run`, `start -a` or `attach`.
pub fn attach_outcome(container: &Container, outcome: attach::Outcome) -> Result<ExitStatus> {
    Ok(match outcome {
        attach::Outcome::Exited(code) => {
            if container.record.auto_remove {
                // As `docker run --rm`: return once the monitor removed it.
                let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
                while container.dir.exists() && std::time::Instant::now() < deadline {
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
            }
            ExitStatus(code as u8)
        }
        attach::Outcome::Detached => ExitStatus::SUCCESS,
        attach::Outcome::Lost => {
            let state = container.wait_stopped(None)?.unwrap_or_default();
            ExitStatus(state.exit_code.unwrap_or(255) as u8)
        }
    })
}

/// Runs a created container attached to this process's stdio and returns
/// its exit code.
fn run_foreground(container: &Container, interactive: bool, sig_proxy: bool) -> Result<ExitStatus> {
    let log = LogWriter::open(&container.log_path())?;
    kiln_runner::timing::mark("log open");
    let tty = container.record.tty();
    let (stdin, stdout, stderr) = if tty {
        (Stdio::Null, Stdio::Null, Stdio::Null)
    } else if interactive {
        (Stdio::Inherit, Stdio::Piped, Stdio::Piped)
    } else {
        (Stdio::Null, Stdio::Piped, Stdio::Piped)
    };
    let mut started = match supervise::start(container, stdin, stdout, stderr) {
        Ok(s) => s,
        Err(err) => {
            let _ = writeln!(std::io::stderr(), "kiln: {err:#}");
            return Ok(ExitStatus(exit_code_of(&err)));
        }
    };
    let forwarder = if sig_proxy || tty {
        Some(kiln_runner::forward_signals(started.child.pid()).context("forwarding signals")?)
    } else {
        None
    };
    if tty {
        let master = started
            .child
            .pty
            .take()
            .context("the container has no terminal")?;
        let host_stdin = std::io::stdin();
        let null = std::fs::File::open("/dev/null")?;
        let input = if interactive {
            host_stdin.as_fd()
        } else {
            null.as_fd()
        };
        let raw = if interactive {
            kiln_runner::pty::RawMode::enable(host_stdin.as_fd()).ok()
        } else {
            None
        };
        let host_stdout = std::io::stdout();
        let host_terminal = if nix::unistd::isatty(host_stdout.as_fd()).unwrap_or(false) {
            Some(host_stdout.as_fd())
        } else {
            None
        };
        let proxied = kiln_runner::pty::proxy(&master, input, host_stdout.as_fd(), host_terminal);
        drop(raw);
        if let Err(e) = proxied {
            tracing::warn!("copying the container terminal: {e}");
        }
    } else {
        let out = started.child.stdout.take().context("stdout pipe")?;
        let err = started.child.stderr.take().context("stderr pipe")?;
        let (log_out, log_err) = (log.clone(), log.clone());
        let a = std::thread::spawn(move || {
            log_out.pump("stdout", out, Some(Box::new(std::io::stdout())))
        });
        let b = std::thread::spawn(move || {
            log_err.pump("stderr", err, Some(Box::new(std::io::stderr())))
        });
        let _ = a.join();
        let _ = b.join();
        kiln_runner::timing::mark("output drained");
    }
    let code = supervise::finish(container, started)?;
    drop(forwarder);
    Ok(ExitStatus(code))
}

/// Starts the monitor of `container` (a detached re-exec of kiln) and waits
/// until it reports the program started or failed.
pub fn start_detached(root: &std::path::Path, container: &Container) -> Result<()> {
    start_monitor(root, container, None).map(|_| ())
}

/// Starts the monitor, attaches to it before the program starts (so no
/// output is missed) and returns the connected stream once it runs.
pub fn start_attached(
    root: &std::path::Path,
    container: &Container,
    stdin: bool,
) -> Result<std::os::unix::net::UnixStream> {
    start_monitor(root, container, Some(stdin))?.context("the monitor did not take the attach")
}

fn start_monitor(
    root: &std::path::Path,
    container: &Container,
    attach_stdin: Option<bool>,
) -> Result<Option<std::os::unix::net::UnixStream>> {
    let mut command = std::process::Command::new("/proc/self/exe");
    command
        .arg("--root")
        .arg(root)
        .arg("container-monitor")
        .arg(&container.record.id);
    if attach_stdin.is_some() {
        command.arg("--attach-first");
    }
    let mut monitor = command
        .stdin(ProcessStdio::null())
        .stdout(ProcessStdio::piped())
        .stderr(ProcessStdio::null())
        .spawn()
        .context("starting the container monitor")?;
    let mut reader = BufReader::new(monitor.stdout.take().context("monitor pipe")?);
    let mut line = String::new();
    let mut stream = None;
    if let Some(stdin) = attach_stdin {
        reader
            .read_line(&mut line)
            .context("reading from the container monitor")?;
        if line.trim_end() == "listening" {
            stream = Some(attach::connect(&container.record.id, stdin)?);
            line.clear();
        }
    }
    if line.is_empty() {
        reader
            .read_line(&mut line)
            .context("reading from the container monitor")?;
    }
    match line.trim_end().split_once(' ') {
        _ if line.trim_end() == "ok" => Ok(stream),
        Some((code, message)) if code.parse::<u8>().is_ok() => {
            let code: u8 = code.parse().expect("checked above");
            Err(anyhow::Error::new(MonitorError {
                code,
                message: message.to_string(),
            }))
        }
        _ => {
            let status = monitor.wait().ok();
            bail!("the container monitor failed before starting the container ({status:?})")
        }
    }
}

/// Why the monitor could not start the program, with the exit code `run` returns.
#[derive(Debug)]
pub struct MonitorError {
    pub code: u8,
    pub message: String,
}

impl std::fmt::Display for MonitorError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for MonitorError {}

/// Exit code for a failed detached start.
pub fn start_exit_code(err: &anyhow::Error) -> u8 {
    err.chain()
        .find_map(|c| c.downcast_ref::<MonitorError>())
        .map(|e| e.code)
        .unwrap_or(125)
}

/// Reads the image's /etc/passwd and /etc/group from its topmost snapshot
/// that has them.
fn image_accounts(lowers: &[PathBuf]) -> Accounts {
    let read = |name: &str| {
        lowers
            .iter()
            .rev()
            .find_map(|dir| std::fs::read_to_string(dir.join("etc").join(name)).ok())
            .unwrap_or_default()
    };
    Accounts {
        passwd: read("passwd"),
        group: read("group"),
    }
}

fn read_env_file(path: &PathBuf) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading env file {}", path.display()))?;
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(String::from)
        .collect())
}

/// Turns the flags into run options; named volumes become their host
/// directories (not created yet: see [`make_volume_dirs`]).
fn options(
    args: &CreateArgs,
    containers: &Containers,
) -> Result<(RunOptions, Vec<String>, Vec<String>)> {
    let mut env = Vec::new();
    for file in &args.env_file {
        env.extend(read_env_file(file)?);
    }
    env.extend(args.env.iter().cloned());
    let network = match args.network.as_str() {
        "none" => Network::None,
        "host" => Network::Host,
        other if other.starts_with("container:") => Network::Container,
        _ => Network::Bridge,
    };
    let mut mounts = Vec::new();
    let mut volumes = Vec::new();
    let mut anonymous = Vec::new();
    for v in &args.volume {
        let parts: Vec<&str> = v.split(':').collect();
        if let [target] = parts.as_slice() {
            // `-v /path`: an anonymous volume, as in docker.
            if !target.starts_with('/') {
                bail!("invalid volume {v:?}: the container path must be absolute");
            }
            mounts.push(anonymous_volume(containers, target, &mut anonymous));
            continue;
        }
        let (source, target, readonly) = match parts.as_slice() {
            [s, t] => (*s, *t, false),
            [s, t, "ro"] => (*s, *t, true),
            [s, t, "rw"] => (*s, *t, false),
            _ => bail!("invalid volume {v:?}: use SOURCE:TARGET[:ro]"),
        };
        if !target.starts_with('/') {
            bail!("invalid volume {v:?}: the container path must be absolute");
        }
        let source = if source.starts_with('/') || source.starts_with('.') {
            std::fs::canonicalize(source)
                .with_context(|| format!("volume source {source} does not exist"))?
        } else {
            if !names::is_valid(source) {
                bail!("invalid volume name {source:?}");
            }
            volumes.push(source.to_string());
            containers.volumes_dir().join(source).join("_data")
        };
        mounts.push(MountRequest::Bind {
            source,
            target: target.to_string(),
            readonly,
        });
    }
    for t in &args.tmpfs {
        let target = t.split(':').next().unwrap_or(t);
        if !target.starts_with('/') {
            bail!("invalid tmpfs {t:?}: the container path must be absolute");
        }
        mounts.push(MountRequest::Tmpfs {
            target: target.to_string(),
        });
    }
    if let Some(cpus) = args.cpus {
        let available = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
        if cpus.is_nan() || cpus <= 0.0 || cpus > available {
            bail!("--cpus {cpus}: the range of CPUs is from 0.01 to {available}");
        }
    }
    if let Some(limit) = args.pids_limit {
        if limit == 0 || limit < -1 {
            bail!("--pids-limit {limit}: use a positive number or -1 for unlimited");
        }
    }
    Ok((
        RunOptions {
            command: args.command().to_vec(),
            entrypoint: args.entrypoint.clone(),
            env,
            workdir: args.workdir.clone(),
            user: args.user.clone(),
            hostname: args.hostname.clone(),
            tty: args.tty,
            read_only: args.read_only,
            memory: args.memory.as_deref().map(spec::parse_memory).transpose()?,
            cpus: args.cpus,
            pids_limit: args.pids_limit,
            cap_add: args.cap_add.clone(),
            cap_drop: args.cap_drop.clone(),
            privileged: args.privileged,
            network,
            mounts,
            host_capabilities: host_capabilities(),
            devices: devices(args)?,
        },
        volumes,
        anonymous,
    ))
}

/// A new anonymous volume (named by a random id) mounted at `target`.
fn anonymous_volume(
    containers: &Containers,
    target: &str,
    anonymous: &mut Vec<String>,
) -> MountRequest {
    let name = new_id();
    let source = containers.volumes_dir().join(&name).join("_data");
    anonymous.push(name);
    MountRequest::Bind {
        source,
        target: target.to_string(),
        readonly: false,
    }
}

/// Looks up a host device node: (block, major, minor, mode).
fn host_device(path: &std::path::Path) -> Result<Option<(bool, i64, i64, u32)>> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let meta = std::fs::symlink_metadata(path)
        .with_context(|| format!("device {} does not exist", path.display()))?;
    let kind = meta.file_type();
    if !kind.is_char_device() && !kind.is_block_device() {
        return Ok(None);
    }
    let rdev = meta.rdev();
    Ok(Some((
        kind.is_block_device(),
        nix::sys::stat::major(rdev) as i64,
        nix::sys::stat::minor(rdev) as i64,
        meta.mode() & 0o7777,
    )))
}

/// Every device node under the host's /dev (docker's --privileged), except
/// the pseudo-terminals, shared memory, message queues and the nodes every
/// container gets anyway.
fn all_host_devices(dir: &std::path::Path, out: &mut Vec<spec::DeviceRequest>) -> Result<()> {
    const SKIP: &[&str] = &[
        "pts",
        "shm",
        "mqueue",
        "fd",
        ".lxc",
        ".lxd-mounts",
        ".udev",
        "console",
        "ptmx",
        "tty",
        "null",
        "zero",
        "full",
        "random",
        "urandom",
    ];
    let entries = std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))?;
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name();
        if dir == std::path::Path::new("/dev") && SKIP.iter().any(|s| name == *s) {
            continue;
        }
        let path = entry.path();
        let kind = entry.file_type()?;
        if kind.is_dir() {
            all_host_devices(&path, out)?;
        } else if let Some((block, major, minor, mode)) = host_device(&path)? {
            out.push(spec::DeviceRequest {
                path: path.to_string_lossy().into_owned(),
                block,
                major,
                minor,
                mode,
                access: "rwm".into(),
            });
        }
    }
    Ok(())
}

/// The devices of `--device` (and every host device with `--privileged`).
fn devices(args: &CreateArgs) -> Result<Vec<spec::DeviceRequest>> {
    let mut out = Vec::new();
    if args.privileged {
        all_host_devices(std::path::Path::new("/dev"), &mut out)?;
    }
    for given in &args.device {
        let parts: Vec<&str> = given.split(':').collect();
        let (host, container, access) = match parts.as_slice() {
            [h] => (*h, *h, "rwm"),
            [h, c] if c.chars().all(|c| "rwm".contains(c)) && !c.starts_with('/') => (*h, *h, *c),
            [h, c] => (*h, *c, "rwm"),
            [h, c, a] => (*h, *c, *a),
            _ => bail!("invalid device {given:?}: use HOST[:CONTAINER[:PERMISSIONS]]"),
        };
        if access.is_empty() || !access.chars().all(|c| "rwm".contains(c)) {
            bail!("invalid device {given:?}: permissions must be some of r, w, m");
        }
        if !host.starts_with('/') || !container.starts_with('/') {
            bail!("invalid device {given:?}: paths must be absolute");
        }
        let Some((block, major, minor, mode)) = host_device(std::path::Path::new(host))? else {
            bail!("invalid device {given:?}: {host} is not a device node");
        };
        out.retain(|d: &spec::DeviceRequest| d.path != container);
        out.push(spec::DeviceRequest {
            path: container.to_string(),
            block,
            major,
            minor,
            mode,
            access: access.to_string(),
        });
    }
    Ok(out)
}

/// The capability bounding set of this process (/proc/self/status CapBnd).
fn host_capabilities() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("CapBnd:"))?;
    u64::from_str_radix(line.split_whitespace().nth(1)?, 16).ok()
}

/// The kiln root of a container collection.
fn root_of(containers: &Containers) -> std::path::PathBuf {
    containers
        .volumes_dir()
        .parent()
        .map(std::path::Path::to_path_buf)
        .unwrap_or_default()
}

/// Creates a container (validates everything first, so a bad flag leaves
/// nothing behind).
pub fn create(
    store: &Store,
    registries: &RegistrySettings,
    containers: &Containers,
    args: &CreateArgs,
    detach: bool,
) -> Result<Container> {
    if let Some(name) = &args.name {
        if !names::is_valid(name) {
            bail!("invalid container name {name:?}: use [a-zA-Z0-9][a-zA-Z0-9_.-]+");
        }
    }
    // Flags are checked before anything is pulled or made.
    let (mut options, volumes, mut anonymous) = options(args, containers)?;
    let image = crate::commands::pull::ensure_image(store, registries, args.image(), false)?;
    kiln_runner::timing::mark("image resolved");
    let lowers = store
        .ensure_snapshots(&image)
        .with_context(|| format!("unpacking image {}", args.image()))?;
    kiln_runner::timing::mark("snapshots");
    let id = new_id();
    let config = image.config.config().as_ref();
    // The image's VOLUMEs that no flag mounts get anonymous volumes.
    for path in config.and_then(|c| c.volumes().clone()).unwrap_or_default() {
        let covered = options.mounts.iter().any(|m| match m {
            MountRequest::Bind { target, .. } | MountRequest::Tmpfs { target } => {
                target.trim_end_matches('/') == path.trim_end_matches('/')
            }
        });
        if !covered && path.starts_with('/') {
            let mount = anonymous_volume(containers, &path, &mut anonymous);
            options.mounts.push(mount);
        }
    }
    let spec = spec::build(&id, config, &options, &image_accounts(&lowers))?;
    kiln_runner::timing::mark("spec built");
    let net = crate::containers::net::settings(&root_of(containers), args, config)?;
    kiln_runner::timing::mark("net settings");
    let _lock = containers.lock()?;
    let name = match &args.name {
        Some(name) => name.clone(),
        None => {
            let taken: Vec<String> = containers
                .list()?
                .into_iter()
                .map(|c| c.record.name)
                .collect();
            (0..)
                .map(names::random_name)
                .find(|n| !taken.contains(n))
                .expect("an endless iterator finds a free name")
        }
    };
    for volume in volumes.iter().chain(&anonymous) {
        let dir = containers.volumes_dir().join(volume).join("_data");
        std::fs::create_dir_all(&dir).with_context(|| format!("creating volume {volume}"))?;
    }
    let record = Record {
        id,
        name,
        image: args.image().to_string(),
        image_digest: image.manifest_digest.to_string(),
        image_id: image.id().to_string(),
        lowers,
        spec,
        created: Utc::now(),
        init: args.init,
        auto_remove: args.rm,
        stop_signal: config.and_then(|c| c.stop_signal().clone()),
        volumes,
        net,
        anonymous_volumes: anonymous,
        open_stdin: args.interactive,
        stdin_once: args.interactive && !detach,
    };
    let created = containers.create(&record);
    kiln_runner::timing::mark("container created");
    created
}

/// `kiln create`: prints the new container's id.
pub fn run_create(
    root: &std::path::Path,
    registries: &RegistrySettings,
    args: &CreateArgs,
) -> Result<ExitStatus> {
    let store =
        Store::open(root).with_context(|| format!("opening the store at {}", root.display()))?;
    let container = create(&store, registries, &containers_of(root), args, false)?;
    println!("{}", container.record.id);
    Ok(ExitStatus::SUCCESS)
}
