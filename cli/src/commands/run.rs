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

// Flags shared by `kiln create` and `kiln run`.
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
    /// Set a label: KEY=VALUE (or KEY, an empty value).
    #[arg(short, long = "label")]
    pub label: Vec<String>,
    /// Read labels from a file (KEY=VALUE lines, # comments).
    #[arg(long)]
    pub label_file: Vec<PathBuf>,
    /// Signal that `stop` sends first (default: the image's STOPSIGNAL, else SIGTERM).
    #[arg(long)]
    pub stop_signal: Option<String>,
    /// Seconds `stop` waits before SIGKILL (default 10).
    #[arg(long)]
    pub stop_timeout: Option<i64>,
    /// Resource limit of the container's processes: NAME=SOFT[:HARD]
    /// (nofile, nproc, core, stack, ...; -1 for unlimited).
    #[arg(long)]
    pub ulimit: Vec<String>,
    /// Size of /dev/shm (e.g. 128m; default 64m).
    #[arg(long)]
    pub shm_size: Option<String>,
    /// Security options: no-new-privileges[=true|false],
    /// seccomp=unconfined|PROFILE.json, apparmor=PROFILE, label=...
    #[arg(long)]
    pub security_opt: Vec<String>,
    /// Set a namespaced kernel parameter: KEY=VALUE (net.*, kernel.shm*,
    /// kernel.msg*, kernel.sem, fs.mqueue.*).
    #[arg(long)]
    pub sysctl: Vec<String>,
    /// Another group for the container's processes (name in the image or gid).
    #[arg(long)]
    pub group_add: Vec<String>,
    /// Pull the image: missing (when not in the store), always, never.
    #[arg(long, default_value = "missing")]
    pub pull: String,
    /// Platform of the image, os/arch[/variant]: only this host's.
    #[arg(long)]
    pub platform: Option<String>,
    /// Expose a port or range, PORT[-PORT][/tcp|udp] (published by -P).
    #[arg(long)]
    pub expose: Vec<String>,
    /// Restart policy: no, always, on-failure[:N], unless-stopped (kept by
    /// the container's monitor: `run -d`, `run -it`, `start`).
    #[arg(long, default_value = "no")]
    pub restart: String,
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
    /// Mount: type=bind|volume|tmpfs,source=..,target=..[,readonly]
    /// [,bind-propagation=..][,volume-nocopy][,tmpfs-size=..][,tmpfs-mode=..].
    #[arg(long)]
    pub mount: Vec<String>,
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

// Arguments of `kiln run`.
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
    // A restarting policy needs the monitor, which outlives this process:
    // as docker's client, an attached run returns at the first exit while
    // the monitor restarts the container.
    let restarts =
        crate::containers::RestartPolicy::parse(&args.create.restart).is_ok_and(|p| p.restarts());
    let through_monitor = args.detach || (args.create.tty && args.create.interactive) || restarts;
    if !through_monitor {
        // This process starts the container: get the kernel's cgroup lock
        // ready while the rest is set up.
        kiln_runner::cgroup::warm_up_attach();
    }
    // The container's network namespace (with --network none or a bridge
    // network) is made on another thread meanwhile; dropped if anything
    // fails first.
    let netns = if through_monitor {
        None
    } else {
        supervise::own_network_namespace(&args.create.network)
    };
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
    if through_monitor {
        // Through a monitor, as `run -d` plus `attach`: the detach keys
        // leave the container running under its monitor.
        return run_attached(
            root,
            &containers,
            &container,
            args.create.interactive,
            args.sig_proxy,
            detach_keys,
        );
    }
    let mut janitor = None;
    let result = run_foreground(
        &container,
        args.create.interactive,
        args.sig_proxy,
        netns,
        &mut janitor,
    );
    kiln_runner::timing::mark("foreground done");
    if args.create.rm {
        let _lock = containers.lock()?;
        // A foreground run that ended without error gave its network back.
        containers.remove_soon(&container, result.is_ok(), janitor)?;
        kiln_runner::timing::mark("removed");
    }
    result
}

/// `run -it` (and an attached run with a restart policy): starts the
/// container under a monitor and attaches this process's stdio to it until
/// it exits or the user types the detach keys.
fn run_attached(
    root: &std::path::Path,
    containers: &Containers,
    container: &Container,
    interactive: bool,
    sig_proxy: bool,
    detach_keys: Vec<u8>,
) -> Result<ExitStatus> {
    let tty = container.record.tty();
    let stream = match start_attached(root, container, interactive) {
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
        stdin: interactive,
        tty,
        detach_keys,
        signal_pid: if sig_proxy && !tty {
            container.state().ok().map(|s| s.pid).filter(|p| *p > 0)
        } else {
            None
        },
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
/// its exit code. A container removed on exit gets its `janitor` started
/// (see [`supervise::start`]).
fn run_foreground(
    container: &Container,
    interactive: bool,
    sig_proxy: bool,
    netns: Option<supervise::PendingNetns>,
    janitor: &mut Option<kiln_runner::cleanup::Janitor>,
) -> Result<ExitStatus> {
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
    let stdio = [stdin, stdout, stderr];
    let removed_after = container.record.auto_remove;
    let mut started = match supervise::start(container, stdio, netns, removed_after) {
        Ok(s) => s,
        Err(err) => {
            let _ = writeln!(std::io::stderr(), "kiln: {err:#}");
            return Ok(ExitStatus(exit_code_of(&err)));
        }
    };
    *janitor = started.janitor.take();
    if sig_proxy || tty {
        started.forwarder =
            Some(kiln_runner::forward_signals(started.child.pid()).context("forwarding signals")?);
    }
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
    let code = if container.record.auto_remove {
        supervise::finish_for_removal(container, started)?
    } else {
        supervise::finish(container, started)?
    };
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
    read_kv_file(path, "env")
}

/// The KEY=VALUE lines of an env or label file (blank lines and # comments skipped).
fn read_kv_file(path: &PathBuf, what: &str) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading {what} file {}", path.display()))?;
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
            propagation: None,
        });
    }
    let mut nocopy = Vec::new();
    for m in &args.mount {
        mounts.push(parse_mount(
            m,
            containers,
            &mut volumes,
            &mut anonymous,
            &mut nocopy,
        )?);
    }
    for t in &args.tmpfs {
        mounts.push(parse_tmpfs(t)?);
    }
    for (i, m) in mounts.iter().enumerate() {
        let target = m.target().trim_end_matches('/');
        if mounts[..i]
            .iter()
            .any(|o| o.target().trim_end_matches('/') == target)
        {
            bail!("duplicate mount point: {}", m.target());
        }
    }
    if let Some(cpus) = args.cpus {
        let available = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
        if cpus.is_nan() || cpus <= 0.0 || cpus > available {
            bail!("--cpus {cpus}: the range of CPUs is from 0.01 to {available}");
        }
    }
    if let Some(signal) = &args.stop_signal {
        crate::commands::stop::parse_signal(signal)
            .map_err(|_| anyhow::anyhow!("invalid --stop-signal {signal:?}: not a signal"))?;
    }
    for e in &args.expose {
        crate::containers::net::expose_ports(e)?;
    }
    let restart = crate::containers::RestartPolicy::parse(&args.restart)?;
    if restart.restarts() && args.rm {
        bail!("conflicting options: --restart {} and --rm", args.restart);
    }
    if !["missing", "always", "never"].contains(&args.pull.as_str()) {
        bail!(
            "invalid --pull {:?}: use missing, always or never",
            args.pull
        );
    }
    if let Some(p) = &args.platform {
        check_platform(p)?;
    }
    if let Some(t) = args.stop_timeout {
        if t < -1 {
            bail!("invalid --stop-timeout {t}: use seconds, or -1 to wait forever");
        }
    }
    if let Some(limit) = args.pids_limit {
        if limit == 0 || limit < -1 {
            bail!("--pids-limit {limit}: use a positive number or -1 for unlimited");
        }
    }
    let mut run_options = RunOptions {
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
        ulimits: args
            .ulimit
            .iter()
            .map(|u| parse_ulimit(u))
            .collect::<Result<_>>()?,
        shm_size: match &args.shm_size {
            None => None,
            Some(text) => match parse_bytes(text) {
                Ok(0) | Err(_) => {
                    bail!("invalid --shm-size {text:?}: use a positive size such as 64m")
                }
                Ok(n) => Some(n),
            },
        },
        volume_nocopy: nocopy,
        ..RunOptions::default()
    };
    security_options(args, &mut run_options)?;
    Ok((run_options, volumes, anonymous))
}

/// A size in bytes as docker reads one: a number with an optional b, k, m,
/// g or t suffix (powers of 1024, `kb`/`mb`/... alike).
pub fn parse_bytes(text: &str) -> Result<u64> {
    let lower = text.trim().to_ascii_lowercase();
    let (number, unit) = match lower.find(|c: char| !c.is_ascii_digit() && c != '.') {
        Some(i) => lower.split_at(i),
        None => (lower.as_str(), ""),
    };
    let factor: f64 = match unit.strip_suffix('b').unwrap_or(unit) {
        "" => 1.0,
        "k" => 1024.0,
        "m" => 1024.0 * 1024.0,
        "g" => 1024.0 * 1024.0 * 1024.0,
        "t" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        _ => bail!("invalid size {text:?}: use a number with b, k, m, g or t"),
    };
    let value: f64 = match number.parse() {
        Ok(v) if number.chars().next().is_some_and(|c| c.is_ascii_digit()) => v,
        _ => bail!("invalid size {text:?}: use a number with b, k, m, g or t"),
    };
    Ok((value * factor) as u64)
}

/// `--tmpfs PATH[:OPTIONS]`: OPTIONS a comma list of ro, rw, exec, noexec,
/// suid, nosuid, dev, nodev, size=SIZE, mode=OCTAL, uid=N, gid=N, nr_inodes=N.
fn parse_tmpfs(given: &str) -> Result<MountRequest> {
    let (target, opts) = given.split_once(':').unwrap_or((given, ""));
    if !target.starts_with('/') {
        bail!("invalid tmpfs {given:?}: the container path must be absolute");
    }
    let (mut size, mut mode, mut readonly, mut options) = (None, None, false, Vec::new());
    for o in opts.split(',').filter(|o| !o.is_empty()) {
        match o.split_once('=') {
            None if o == "ro" => readonly = true,
            None if o == "rw" => readonly = false,
            None if ["exec", "noexec", "suid", "nosuid", "dev", "nodev"].contains(&o) => {
                options.push(o.to_string())
            }
            Some(("size", v)) => {
                size = Some(parse_bytes(v).with_context(|| format!("invalid tmpfs {given:?}"))?)
            }
            Some(("mode", v)) => {
                mode = Some(
                    u32::from_str_radix(v, 8)
                        .ok()
                        .filter(|m| *m <= 0o7777)
                        .ok_or_else(|| {
                            anyhow::anyhow!(
                                "invalid tmpfs {given:?}: mode {v:?} is not an octal mode"
                            )
                        })?,
                )
            }
            Some((k @ ("uid" | "gid" | "nr_inodes"), v)) => {
                if v.parse::<u64>().is_err() {
                    bail!("invalid tmpfs {given:?}: {k} {v:?} is not a number");
                }
                options.push(o.to_string());
            }
            _ => bail!("invalid tmpfs {given:?}: unknown option {o:?}"),
        }
    }
    Ok(MountRequest::Tmpfs {
        target: target.to_string(),
        size,
        mode,
        readonly,
        options,
    })
}

/// A boolean mount option as docker reads it (`ro`, `ro=true`, `ro=0`, ...).
fn mount_bool(given: &str, key: &str, value: Option<&str>) -> Result<bool> {
    match value.map(str::to_ascii_lowercase).as_deref() {
        None | Some("true") | Some("1") => Ok(true),
        Some("false") | Some("0") => Ok(false),
        Some(v) => bail!("invalid mount {given:?}: invalid value for {key}: {v}"),
    }
}

/// Parses one `--mount` (docker's CSV of key=value fields) into a mount
/// request; named volumes go to `volumes`, new anonymous ones to `anonymous`.
fn parse_mount(
    given: &str,
    containers: &Containers,
    volumes: &mut Vec<String>,
    anonymous: &mut Vec<String>,
    nocopy_targets: &mut Vec<String>,
) -> Result<MountRequest> {
    let mut typ = "volume".to_string();
    let mut source: Option<String> = None;
    let mut target: Option<String> = None;
    let mut readonly = false;
    let mut propagation: Option<String> = None;
    let mut tmpfs_size: Option<u64> = None;
    let mut tmpfs_mode: Option<u32> = None;
    let mut nocopy = false;
    let mut typed_keys: Vec<&str> = Vec::new();
    // CSV as docker reads it: `"source=/a,b",target=/t` keeps the comma.
    let fields = kiln_builder::dockerfile::mounts::split_csv(given)
        .map_err(|_| anyhow::anyhow!("invalid mount {given:?}: unterminated quote"))?;
    for field in &fields {
        let (key, value) = match field.split_once('=') {
            Some((k, v)) => (k.trim().to_ascii_lowercase(), Some(v.trim())),
            None => (field.trim().to_ascii_lowercase(), None),
        };
        let need = |what: &str| -> Result<&str> {
            value
                .filter(|v| !v.is_empty())
                .ok_or_else(|| anyhow::anyhow!("invalid mount {given:?}: {what} needs a value"))
        };
        match key.as_str() {
            "type" => typ = need("type")?.to_string(),
            "source" | "src" => source = Some(need("source")?.to_string()),
            "target" | "destination" | "dst" => target = Some(need("target")?.to_string()),
            "readonly" | "ro" => readonly = mount_bool(given, &key, value)?,
            "consistency" => {}
            "bind-propagation" => {
                let p = need("bind-propagation")?;
                if ![
                    "private", "rprivate", "shared", "rshared", "slave", "rslave",
                ]
                .contains(&p)
                {
                    bail!("invalid mount {given:?}: invalid bind-propagation {p:?}: use [r]private, [r]shared or [r]slave");
                }
                propagation = Some(p.to_string());
                typed_keys.push("bind-propagation");
            }
            "volume-nocopy" => {
                nocopy = mount_bool(given, &key, value)?;
                typed_keys.push("volume-nocopy");
            }
            "tmpfs-size" => {
                tmpfs_size = Some(
                    parse_bytes(need("tmpfs-size")?)
                        .with_context(|| format!("invalid mount {given:?}"))?,
                );
                typed_keys.push("tmpfs-size");
            }
            "tmpfs-mode" => {
                let m = need("tmpfs-mode")?;
                tmpfs_mode = Some(
                    u32::from_str_radix(m, 8)
                        .ok()
                        .filter(|m| *m <= 0o7777)
                        .ok_or_else(|| {
                            anyhow::anyhow!(
                                "invalid mount {given:?}: tmpfs-mode {m:?} is not an octal mode"
                            )
                        })?,
                );
                typed_keys.push("tmpfs-mode");
            }
            "" => bail!("invalid mount {given:?}: empty field"),
            other => bail!("invalid mount {given:?}: unexpected key '{other}'"),
        }
    }
    let Some(target) = target else {
        bail!("invalid mount {given:?}: target is required");
    };
    if !target.starts_with('/') {
        bail!("invalid mount {given:?}: the target {target:?} is not an absolute path");
    }
    let allowed: &[&str] = match typ.as_str() {
        "bind" => &["bind-propagation"],
        "volume" => &["volume-nocopy"],
        "tmpfs" => &["tmpfs-size", "tmpfs-mode"],
        other => {
            bail!("invalid mount {given:?}: unknown type {other:?}: use bind, volume or tmpfs")
        }
    };
    if let Some(key) = typed_keys.iter().find(|k| !allowed.contains(k)) {
        bail!("invalid mount {given:?}: {key} cannot be used with type {typ}");
    }
    if nocopy {
        nocopy_targets.push(target.clone());
    }
    Ok(match typ.as_str() {
        "bind" => {
            let Some(source) = source else {
                bail!("invalid mount {given:?}: source is required for a bind mount");
            };
            if !source.starts_with('/') {
                bail!(
                    "invalid mount {given:?}: the bind source {source:?} is not an absolute path"
                );
            }
            let source = std::fs::canonicalize(&source).map_err(|_| {
                anyhow::anyhow!(
                    "invalid mount {given:?}: bind source path does not exist: {source}"
                )
            })?;
            MountRequest::Bind {
                source,
                target,
                readonly,
                propagation,
            }
        }
        "volume" => match source {
            None => {
                let mut mount = anonymous_volume(containers, &target, anonymous);
                if let MountRequest::Bind { readonly: ro, .. } = &mut mount {
                    *ro = readonly;
                }
                mount
            }
            Some(name) => {
                if !names::is_valid(&name) {
                    bail!("invalid mount {given:?}: invalid volume name {name:?}");
                }
                if !volumes.contains(&name) {
                    volumes.push(name.clone());
                }
                MountRequest::Bind {
                    source: containers.volumes_dir().join(&name).join("_data"),
                    target,
                    readonly,
                    propagation: None,
                }
            }
        },
        _ => {
            if source.is_some() {
                bail!("invalid mount {given:?}: source is not supported for tmpfs");
            }
            MountRequest::Tmpfs {
                target,
                size: tmpfs_size,
                mode: tmpfs_mode,
                readonly,
                options: Vec::new(),
            }
        }
    })
}

/// The labels of `--label-file` then `--label` (later ones win).
fn flag_labels(args: &CreateArgs) -> Result<Vec<(String, String)>> {
    let mut given = Vec::new();
    for file in &args.label_file {
        given.extend(read_kv_file(file, "label")?);
    }
    given.extend(args.label.iter().cloned());
    given
        .into_iter()
        .map(|l| {
            let (k, v) = l.split_once('=').unwrap_or((l.as_str(), ""));
            if k.trim().is_empty() {
                bail!("invalid label {l:?}: the key is empty");
            }
            Ok((k.to_string(), v.to_string()))
        })
        .collect()
}

/// `--ulimit NAME=SOFT[:HARD]` as docker reads it: rlimit names without
/// RLIMIT_, -1 for unlimited, the hard limit the soft one when not given.
fn parse_ulimit(given: &str) -> Result<spec::Ulimit> {
    const NAMES: &[&str] = &[
        "as",
        "core",
        "cpu",
        "data",
        "fsize",
        "locks",
        "memlock",
        "msgqueue",
        "nice",
        "nofile",
        "nproc",
        "rss",
        "rtprio",
        "rttime",
        "sigpending",
        "stack",
    ];
    let Some((name, limits)) = given.split_once('=') else {
        bail!("invalid ulimit {given:?}: use NAME=SOFT[:HARD]");
    };
    if !NAMES.contains(&name) {
        bail!(
            "invalid ulimit {given:?}: unknown name {name:?}: use one of {}",
            NAMES.join(", ")
        );
    }
    let number = |t: &str| -> Result<u64> {
        match t.parse::<i64>() {
            Ok(-1) => Ok(u64::MAX),
            Ok(n) if n >= 0 => Ok(n as u64),
            _ => bail!("invalid ulimit {given:?}: {t:?} is not a limit (a number or -1)"),
        }
    };
    let (soft, hard) = match limits.split_once(':') {
        Some((s, h)) => (number(s)?, number(h)?),
        None => (number(limits)?, number(limits)?),
    };
    if soft > hard {
        bail!("invalid ulimit {given:?}: the soft limit is above the hard limit");
    }
    Ok(spec::Ulimit {
        name: name.to_string(),
        soft,
        hard,
    })
}

/// `--platform`: this host's only (running another would need emulation).
fn check_platform(text: &str) -> Result<()> {
    let host = kiln_registry::Platform::host();
    let platform = kiln_registry::Platform::parse(text)
        .map_err(|e| anyhow::anyhow!("invalid --platform {text:?}: {e}"))?;
    if platform.os != host.os || platform.architecture != host.architecture {
        bail!("--platform {text}: kiln runs only this host's platform ({host}); {platform} would need emulation");
    }
    Ok(())
}

/// Whether the host runs the Linux security module `name` (apparmor, selinux).
fn host_has_lsm(name: &str) -> bool {
    let listed = std::fs::read_to_string("/sys/kernel/security/lsm")
        .is_ok_and(|l| l.split(',').any(|m| m.trim() == name));
    listed
        || match name {
            "apparmor" => std::fs::read_to_string("/sys/module/apparmor/parameters/enabled")
                .is_ok_and(|v| v.trim() == "Y"),
            _ => std::path::Path::new("/sys/fs/selinux/enforce").exists(),
        }
}

/// Applies the `--security-opt`s to `options`.
fn security_options(args: &CreateArgs, options: &mut RunOptions) -> Result<()> {
    for given in &args.security_opt {
        // docker also takes the old `key:value` spelling.
        let (key, value) = match given.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => match given.split_once(':') {
                Some((k, v)) => (k, Some(v)),
                None => (given.as_str(), None),
            },
        };
        match (key, value) {
            ("no-new-privileges", None) => options.no_new_privileges = Some(true),
            ("no-new-privileges", Some(v)) => {
                options.no_new_privileges = match v {
                    "true" | "1" => Some(true),
                    "false" | "0" => Some(false),
                    _ => bail!("invalid --security-opt {given:?}: no-new-privileges takes true or false"),
                }
            }
            ("seccomp", Some("unconfined")) => options.seccomp = spec::Seccomp::Unconfined,
            ("seccomp", Some(path)) if !path.is_empty() => {
                let text = std::fs::read(path).map_err(|e| {
                    anyhow::anyhow!("invalid --security-opt {given:?}: reading {path}: {e}")
                })?;
                let profile: serde_json::Value = serde_json::from_slice(&text).map_err(|e| {
                    anyhow::anyhow!("invalid --security-opt {given:?}: {path} is not JSON: {e}")
                })?;
                options.seccomp = spec::Seccomp::Profile(profile);
            }
            ("apparmor", Some(v)) if !v.is_empty() => {
                if host_has_lsm("apparmor") {
                    bail!("--security-opt {given:?}: kiln cannot apply AppArmor profiles");
                }
                eprintln!("kiln: warning: --security-opt {given} ignored: this host has no AppArmor");
            }
            ("label", Some(v))
                if ["user:", "role:", "type:", "level:", "filetype:"]
                    .iter()
                    .any(|p| v.starts_with(p) && v.len() > p.len())
                    || v == "disable"
                    || v == "nested" =>
            {
                if host_has_lsm("selinux") {
                    bail!("--security-opt {given:?}: kiln cannot apply SELinux labels");
                }
                eprintln!("kiln: warning: --security-opt {given} ignored: this host has no SELinux");
            }
            _ => bail!(
                "invalid --security-opt {given:?}: use no-new-privileges[=true|false], seccomp=unconfined|PROFILE.json, apparmor=PROFILE or label=..."
            ),
        }
    }
    for given in &args.sysctl {
        let Some((k, v)) = given.split_once('=') else {
            bail!("invalid --sysctl {given:?}: use KEY=VALUE");
        };
        spec::check_sysctl(k, options.network)?;
        options.sysctls.push((k.to_string(), v.to_string()));
    }
    options.group_add = args.group_add.clone();
    Ok(())
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
        propagation: None,
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
    let flag_labels = flag_labels(args)?;
    if let Some(p) = &args.platform {
        check_platform(p)?;
    }
    let image = match args.pull.as_str() {
        "missing" => crate::commands::pull::ensure_image(store, registries, args.image(), false)?,
        "always" => crate::commands::pull::pull_image(store, registries, args.image(), false)?,
        "never" => crate::commands::find_image(store, args.image())
            .with_context(|| format!("--pull never: image {} is not in the store", args.image()))?,
        other => bail!("invalid --pull {other:?}: use missing, always or never"),
    };
    kiln_runner::timing::mark("image resolved");
    let lowers = store
        .ensure_snapshots(&image)
        .with_context(|| format!("unpacking image {}", args.image()))?;
    kiln_runner::timing::mark("snapshots");
    let id = new_id();
    let config = image.config.config().as_ref();
    // The image's VOLUMEs that no flag mounts get anonymous volumes.
    for path in config.and_then(|c| c.volumes().clone()).unwrap_or_default() {
        let covered = options
            .mounts
            .iter()
            .any(|m| m.target().trim_end_matches('/') == path.trim_end_matches('/'));
        if !covered && path.starts_with('/') {
            let mount = anonymous_volume(containers, &path, &mut anonymous);
            options.mounts.push(mount);
        }
    }
    let spec = spec::build(&id, config, &options, &image_accounts(&lowers))?;
    kiln_runner::timing::mark("spec built");
    if let spec::Seccomp::Profile(_) = &options.seccomp {
        let profile = spec.linux().as_ref().and_then(|l| l.seccomp().as_ref());
        if let Some(profile) = profile {
            kiln_runner::check_seccomp(profile)
                .map_err(|e| anyhow::anyhow!("the seccomp profile does not compile: {e}"))?;
        }
    }
    let net = crate::containers::net::settings(&root_of(containers), args, config)?;
    kiln_runner::timing::mark("net settings");
    let _lock = containers.lock()?;
    let name = match &args.name {
        Some(name) => name.clone(),
        None => {
            let taken = containers.names()?;
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
        stop_signal: args
            .stop_signal
            .clone()
            .or_else(|| config.and_then(|c| c.stop_signal().clone())),
        volumes,
        net,
        anonymous_volumes: anonymous,
        open_stdin: args.interactive,
        stdin_once: args.interactive && !detach,
        labels: config
            .and_then(|c| c.labels().clone())
            .unwrap_or_default()
            .into_iter()
            .chain(flag_labels)
            .collect(),
        stop_timeout: args
            .stop_timeout
            .map(|t| if t < 0 { u64::MAX } else { t as u64 }),
        volume_nocopy: options.volume_nocopy.clone(),
        restart: crate::containers::RestartPolicy::parse(&args.restart)?,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ulimits_parse_as_docker() {
        let u = parse_ulimit("nofile=100:200").unwrap();
        assert_eq!((u.name.as_str(), u.soft, u.hard), ("nofile", 100, 200));
        let u = parse_ulimit("core=-1").unwrap();
        assert_eq!((u.soft, u.hard), (u64::MAX, u64::MAX));
        for bad in ["nofile", "bogus=1", "nofile=2:1", "nofile=x", "nofile=-2"] {
            assert!(parse_ulimit(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn sizes_parse_as_docker() {
        assert_eq!(parse_bytes("64m").unwrap(), 64 << 20);
        assert_eq!(parse_bytes("1kb").unwrap(), 1024);
        assert_eq!(parse_bytes("512").unwrap(), 512);
        assert_eq!(parse_bytes("1G").unwrap(), 1 << 30);
        for bad in ["", "m", "lots", "1x", "-1m"] {
            assert!(parse_bytes(bad).is_err(), "{bad}");
        }
    }
}
