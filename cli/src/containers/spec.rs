//! Image config + `run` flags -> OCI runtime spec. Pure: the caller reads
//! the image's /etc/passwd and /etc/group and resolves named volumes.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use kiln_runner::oci_spec::image::Config;
use kiln_runner::oci_spec::runtime::{
    LinuxCpuBuilder, LinuxDeviceBuilder, LinuxDeviceCgroupBuilder, LinuxDeviceType,
    LinuxMemoryBuilder, LinuxNamespaceType, LinuxPidsBuilder, LinuxSeccomp, Mount, MountBuilder,
    PosixRlimitBuilder, PosixRlimitType, RootBuilder, Spec, UserBuilder,
};

/// Every capability the kernel knows (capabilities(7)), for `--privileged`.
const ALL_CAPABILITIES: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

/// Network mode of a container.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Network {
    /// Its own network namespace with only loopback.
    #[default]
    None,
    /// The host's network namespace.
    Host,
    /// Its own network namespace on a bridge network (made at start).
    Bridge,
    /// Another container's network namespace (joined at start).
    Container,
}

/// A mount asked for with `-v` or `--tmpfs`; named volumes already resolved
/// to their host directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MountRequest {
    Bind {
        source: PathBuf,
        target: String,
        readonly: bool,
        /// `bind-propagation` of `--mount` (rprivate when not given).
        propagation: Option<String>,
    },
    Tmpfs {
        target: String,
        /// `tmpfs-size` of `--mount`, in bytes (unlimited when not given).
        size: Option<u64>,
        /// `tmpfs-mode` of `--mount` (1777 when not given).
        mode: Option<u32>,
        readonly: bool,
        /// Other mount options of `--tmpfs PATH:OPTS` (exec, suid, dev
        /// undo the defaults; uid=, gid=, nr_inodes= pass to the kernel).
        options: Vec<String>,
    },
}

impl MountRequest {
    /// Where it is mounted in the container.
    pub fn target(&self) -> &str {
        match self {
            MountRequest::Bind { target, .. } | MountRequest::Tmpfs { target, .. } => target,
        }
    }
}

/// The `run`/`create` flags that shape the spec.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    pub command: Vec<String>,
    pub entrypoint: Option<String>,
    pub env: Vec<String>,
    pub workdir: Option<String>,
    pub user: Option<String>,
    pub hostname: Option<String>,
    pub tty: bool,
    pub read_only: bool,
    pub memory: Option<i64>,
    pub cpus: Option<f64>,
    pub pids_limit: Option<i64>,
    pub cap_add: Vec<String>,
    pub cap_drop: Vec<String>,
    pub privileged: bool,
    pub network: Network,
    pub mounts: Vec<MountRequest>,
    /// The host's capability bounding set (bit N = capability N): ALL and
    /// `--privileged` mean every capability in it. `None`: all known.
    pub host_capabilities: Option<u64>,
    /// Host devices made in the container (`--device`, or every host device
    /// with `--privileged`), already looked up on the host.
    pub devices: Vec<DeviceRequest>,
    /// `--ulimit`s.
    pub ulimits: Vec<Ulimit>,
    /// `--shm-size` in bytes (docker's 64m when not given).
    pub shm_size: Option<u64>,
    /// `--security-opt no-new-privileges[=true|false]` (`None`: the default spec's).
    pub no_new_privileges: Option<bool>,
    /// `--security-opt seccomp=...`.
    pub seccomp: Seccomp,
    /// `--sysctl`s, checked against docker's namespaced list.
    pub sysctls: Vec<(String, String)>,
    /// `--group-add`: group names (looked up in the image) or numbers.
    pub group_add: Vec<String>,
    /// Targets of `--mount type=volume,...,volume-nocopy` volumes.
    pub volume_nocopy: Vec<String>,
}

/// The seccomp filter a container gets.
#[derive(Debug, Clone, Default)]
pub enum Seccomp {
    /// docker's default profile (for the container's capabilities).
    #[default]
    Default,
    /// No filter (`seccomp=unconfined`).
    Unconfined,
    /// A docker-format profile file's JSON (`seccomp=PROFILE.json`).
    Profile(serde_json::Value),
}

/// Checks a `--sysctl` as docker does: only the namespaced ones (IPC:
/// kernel.msg*, kernel.sem, kernel.shm*, fs.mqueue.*; network: net.*,
/// not with the host's or another container's network).
pub fn check_sysctl(key: &str, network: Network) -> Result<()> {
    const IPC: &[&str] = &[
        "kernel.msgmax",
        "kernel.msgmnb",
        "kernel.msgmni",
        "kernel.sem",
        "kernel.shmall",
        "kernel.shmmax",
        "kernel.shmmni",
        "kernel.shm_rmid_forced",
    ];
    if IPC.contains(&key) || key.starts_with("fs.mqueue.") {
        return Ok(());
    }
    if key.starts_with("net.") {
        return match network {
            Network::Host => {
                bail!("sysctl {key:?} is not allowed with the host's network namespace")
            }
            Network::Container => {
                bail!("sysctl {key:?} is not allowed in another container's network namespace")
            }
            _ => Ok(()),
        };
    }
    bail!("sysctl {key:?} is not allowed: only namespaced ones (net.*, kernel.shm*, kernel.msg*, kernel.sem, fs.mqueue.*)")
}

/// docker's name for this machine's architecture (Go's GOARCH).
fn go_arch() -> &'static str {
    if cfg!(target_arch = "x86_64") {
        "amd64"
    } else if cfg!(target_arch = "aarch64") {
        "arm64"
    } else if cfg!(target_arch = "x86") {
        "386"
    } else if cfg!(target_arch = "arm") {
        "arm"
    } else {
        std::env::consts::ARCH
    }
}

/// libseccomp's name for this machine's architecture.
fn scmp_arch() -> &'static str {
    if cfg!(target_arch = "x86_64") {
        "SCMP_ARCH_X86_64"
    } else if cfg!(target_arch = "aarch64") {
        "SCMP_ARCH_AARCH64"
    } else if cfg!(target_arch = "x86") {
        "SCMP_ARCH_X86"
    } else {
        "SCMP_ARCH_ARM"
    }
}

/// The running kernel's (major, minor).
fn kernel_version() -> (u32, u32) {
    let release = nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut parts = release
        .split(|c: char| !c.is_ascii_digit())
        .map(|p| p.parse::<u32>().unwrap_or(0));
    (parts.next().unwrap_or(0), parts.next().unwrap_or(0))
}

/// Turns a docker-format seccomp profile (archMap, names, includes and
/// excludes by capability, architecture and kernel) into the OCI form for a
/// container holding `caps`, as docker does.
pub fn docker_profile(profile: &serde_json::Value, caps: &[String]) -> Result<LinuxSeccomp> {
    use serde_json::{json, Value};
    let obj = profile
        .as_object()
        .context("the seccomp profile is not a JSON object")?;
    let mut out = serde_json::Map::new();
    out.insert(
        "defaultAction".into(),
        obj.get("defaultAction")
            .cloned()
            .context("the seccomp profile has no defaultAction")?,
    );
    for key in ["defaultErrnoRet", "flags"] {
        if let Some(v) = obj.get(key) {
            out.insert(key.into(), v.clone());
        }
    }
    let mut arches: Vec<Value> = Vec::new();
    if let Some(map) = obj.get("archMap").and_then(Value::as_array) {
        for entry in map {
            if entry["architecture"] == scmp_arch() {
                arches.push(entry["architecture"].clone());
                arches.extend(
                    entry["subArchitectures"]
                        .as_array()
                        .cloned()
                        .unwrap_or_default(),
                );
            }
        }
    } else if let Some(list) = obj.get("architectures").and_then(Value::as_array) {
        arches = list.clone();
    }
    out.insert("architectures".into(), Value::Array(arches));
    let kernel = kernel_version();
    let strings = |v: &Value| -> Vec<String> {
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut rules = Vec::new();
    for rule in obj
        .get("syscalls")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
    {
        let includes = &rule["includes"];
        let excludes = &rule["excludes"];
        let inc_caps = strings(&includes["caps"]);
        let inc_arches = strings(&includes["arches"]);
        let exc_caps = strings(&excludes["caps"]);
        let exc_arches = strings(&excludes["arches"]);
        if !inc_caps.iter().all(|c| caps.contains(c))
            || exc_caps.iter().any(|c| caps.contains(c))
            || (!inc_arches.is_empty() && !inc_arches.iter().any(|a| a == go_arch()))
            || exc_arches.iter().any(|a| a == go_arch())
        {
            continue;
        }
        if let Some(min) = includes["minKernel"].as_str() {
            let mut parts = min.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
            let want = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
            if kernel < want {
                continue;
            }
        }
        let mut names = strings(&rule["names"]);
        if let Some(name) = rule["name"].as_str() {
            names.push(name.to_string());
        }
        let mut one = json!({ "names": names, "action": rule["action"].clone() });
        for key in ["args", "errnoRet"] {
            if !rule[key].is_null() {
                one[key] = rule[key].clone();
            }
        }
        rules.push(one);
    }
    out.insert("syscalls".into(), Value::Array(rules));
    serde_json::from_value(Value::Object(out)).context("the seccomp profile is not valid")
}

/// One process resource limit (`--ulimit`): name without RLIMIT_, lowercase.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ulimit {
    pub name: String,
    pub soft: u64,
    pub hard: u64,
}

/// A host device node to recreate in the container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceRequest {
    /// Where it appears in the container.
    pub path: String,
    /// Block (true) or character device.
    pub block: bool,
    pub major: i64,
    pub minor: i64,
    /// Permission bits of the host node.
    pub mode: u32,
    /// Device cgroup access: some of `r`, `w`, `m`.
    pub access: String,
}

/// The image's account files, as text (empty when the image has none).
#[derive(Debug, Clone, Default)]
pub struct Accounts {
    pub passwd: String,
    pub group: String,
}

/// A resolved user: ids plus home directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedUser {
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
    pub home: String,
}

/// Resolves `USER[:GROUP]` (names or numbers) against the image's files, as
/// docker does: a name must exist; a number need not; without a group the
/// user's primary group, plus every group that lists the user.
pub fn resolve_user(given: &str, accounts: &Accounts) -> Result<ResolvedUser> {
    let (user, group) = match given.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (given, None),
    };
    let user = if user.is_empty() { "0" } else { user };
    let passwd: Vec<Vec<&str>> = accounts
        .passwd
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .filter(|f| f.len() >= 7)
        .collect();
    let entry = passwd
        .iter()
        .find(|f| f[0] == user || (user.parse::<u32>().is_ok() && f[2] == user));
    let (uid, mut gid, home, name) = match (entry, user.parse::<u32>()) {
        (Some(f), _) => (
            f[2].parse::<u32>()
                .with_context(|| format!("bad uid in /etc/passwd for {}", f[0]))?,
            f[3].parse::<u32>()
                .with_context(|| format!("bad gid in /etc/passwd for {}", f[0]))?,
            f[5].to_string(),
            Some(f[0]),
        ),
        (None, Ok(uid)) => (uid, 0, "/".to_string(), None),
        (None, Err(_)) => {
            bail!("unable to find user {user}: no matching entries in passwd file")
        }
    };
    let groups: Vec<Vec<&str>> = accounts
        .group
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .filter(|f| f.len() >= 4)
        .collect();
    if let Some(group) = group {
        gid = match groups.iter().find(|f| f[0] == group) {
            Some(f) => f[2]
                .parse()
                .with_context(|| format!("bad gid in /etc/group for {group}"))?,
            None => group.parse().map_err(|_| {
                anyhow::anyhow!("unable to find group {group}: no matching entries in group file")
            })?,
        };
    }
    let mut additional_gids = Vec::new();
    if group.is_none() {
        if let Some(name) = name {
            for f in &groups {
                if f[3].split(',').any(|m| m == name) {
                    if let Ok(g) = f[2].parse::<u32>() {
                        if g != gid && !additional_gids.contains(&g) {
                            additional_gids.push(g);
                        }
                    }
                }
            }
        }
    }
    Ok(ResolvedUser {
        uid,
        gid,
        additional_gids,
        home,
    })
}

/// Parses a memory size as docker does: a number with an optional b, k, m
/// or g suffix (powers of 1024).
pub fn parse_memory(text: &str) -> Result<i64> {
    let lower = text.trim().to_ascii_lowercase();
    let (number, unit) = match lower.find(|c: char| !c.is_ascii_digit() && c != '.') {
        Some(i) => lower.split_at(i),
        None => (lower.as_str(), ""),
    };
    let factor: f64 = match unit.trim_end_matches('b') {
        "" => 1.0,
        "k" => 1024.0,
        "m" => 1024.0 * 1024.0,
        "g" => 1024.0 * 1024.0 * 1024.0,
        _ => bail!("invalid memory size {text:?}: use a number with b, k, m or g"),
    };
    let value: f64 = number
        .parse()
        .map_err(|_| anyhow::anyhow!("invalid memory size {text:?}"))?;
    let bytes = (value * factor) as i64;
    // docker's minimum: the kernel needs some room for the container's init.
    if bytes < 6 * 1024 * 1024 {
        bail!("minimum memory limit allowed is 6MB (got {text})");
    }
    Ok(bytes)
}

/// Every known capability the host can grant (index in the list = number).
fn all_capabilities(options: &RunOptions) -> Vec<String> {
    ALL_CAPABILITIES
        .iter()
        .enumerate()
        .filter(|(n, _)| {
            options
                .host_capabilities
                .is_none_or(|mask| mask & (1 << n) != 0)
        })
        .map(|(_, c)| c.to_string())
        .collect()
}

/// Normalises a capability name: `net_admin` -> `CAP_NET_ADMIN`.
fn capability_name(name: &str) -> Result<String> {
    let upper = name.to_ascii_uppercase();
    if upper == "ALL" {
        return Ok(upper);
    }
    let full = if upper.starts_with("CAP_") {
        upper
    } else {
        format!("CAP_{upper}")
    };
    if !ALL_CAPABILITIES.contains(&full.as_str()) {
        bail!("unknown capability: {name:?}");
    }
    Ok(full)
}

/// The capability set after `--privileged`, `--cap-add` and `--cap-drop`
/// (drops apply after adds; ALL works in both, as in docker).
pub fn capabilities(options: &RunOptions) -> Result<Vec<String>> {
    if options.privileged {
        return Ok(all_capabilities(options));
    }
    let add = options
        .cap_add
        .iter()
        .map(|c| capability_name(c))
        .collect::<Result<Vec<_>>>()?;
    let drop = options
        .cap_drop
        .iter()
        .map(|c| capability_name(c))
        .collect::<Result<Vec<_>>>()?;
    let mut caps: Vec<String> = if add.iter().any(|c| c == "ALL") {
        all_capabilities(options)
    } else {
        let mut caps: Vec<String> = kiln_runner::DEFAULT_CAPABILITIES
            .iter()
            .map(|s| s.to_string())
            .collect();
        for c in add {
            if !caps.contains(&c) {
                caps.push(c);
            }
        }
        caps
    };
    if drop.iter().any(|c| c == "ALL") {
        caps.clear();
    }
    caps.retain(|c| !drop.contains(c));
    Ok(caps)
}

fn set_env(env: &mut Vec<String>, entry: &str) {
    let key = entry.split_once('=').map_or(entry, |(k, _)| k);
    env.retain(|e| e.split_once('=').map_or(e.as_str(), |(k, _)| k) != key);
    env.push(entry.to_string());
}

/// The command a container runs: `--entrypoint` or the image's, then the
/// given command or (unless the entrypoint was replaced) the image's CMD.
pub fn command_line(config: Option<&Config>, options: &RunOptions) -> Result<Vec<String>> {
    let mut args: Vec<String> = match &options.entrypoint {
        Some(e) if e.is_empty() => Vec::new(),
        Some(e) => vec![e.clone()],
        None => config
            .and_then(|c| c.entrypoint().clone())
            .unwrap_or_default(),
    };
    if !options.command.is_empty() {
        args.extend(options.command.iter().cloned());
    } else if options.entrypoint.is_none() {
        args.extend(config.and_then(|c| c.cmd().clone()).unwrap_or_default());
    }
    if args.is_empty() {
        bail!("no command specified: the image has no CMD or ENTRYPOINT and none was given");
    }
    Ok(args)
}

/// Builds the runtime spec of container `id` from docker's defaults, the
/// image config and the flags.
pub fn build(
    id: &str,
    config: Option<&Config>,
    options: &RunOptions,
    accounts: &Accounts,
) -> Result<Spec> {
    let mut spec = kiln_runner::default_spec();
    let args = command_line(config, options)?;

    let user_text = options
        .user
        .clone()
        .or_else(|| config.and_then(|c| c.user().clone()))
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| "0".to_string());
    let mut user = resolve_user(&user_text, accounts)?;
    for group in &options.group_add {
        let gid = match group.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => accounts
                .group
                .lines()
                .map(|l| l.split(':').collect::<Vec<_>>())
                .find(|f| f.len() >= 3 && f[0] == group)
                .and_then(|f| f[2].parse().ok())
                .ok_or_else(|| {
                    anyhow::anyhow!("--group-add {group}: no such group in the image's /etc/group")
                })?,
        };
        if !user.additional_gids.contains(&gid) {
            user.additional_gids.push(gid);
        }
    }

    let mut env: Vec<String> = Vec::new();
    set_env(
        &mut env,
        "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    );
    let hostname = options
        .hostname
        .clone()
        .unwrap_or_else(|| id[..12].to_string());
    set_env(&mut env, &format!("HOSTNAME={hostname}"));
    if options.tty {
        set_env(&mut env, "TERM=xterm");
    }
    for e in config.and_then(|c| c.env().clone()).unwrap_or_default() {
        set_env(&mut env, &e);
    }
    for e in &options.env {
        if e.contains('=') {
            set_env(&mut env, e);
        } else if let Ok(value) = std::env::var(e) {
            // docker: `-e NAME` copies the variable from the caller.
            set_env(&mut env, &format!("{e}={value}"));
        }
    }
    if !env.iter().any(|e| e.starts_with("HOME=")) {
        env.push(format!("HOME={}", user.home));
    }

    let cwd = options
        .workdir
        .clone()
        .or_else(|| config.and_then(|c| c.working_dir().clone()))
        .filter(|w| !w.is_empty())
        .unwrap_or_else(|| "/".to_string());
    if !cwd.starts_with('/') {
        bail!("the working directory {cwd:?} is not an absolute path");
    }

    let caps = capabilities(options)?;
    let process = spec
        .process_mut()
        .as_mut()
        .context("default spec has a process")?;
    process.set_args(Some(args));
    process.set_env(Some(env));
    process.set_cwd(cwd.into());
    process.set_terminal(Some(options.tty));
    process.set_user(
        UserBuilder::default()
            .uid(user.uid)
            .gid(user.gid)
            .additional_gids(user.additional_gids.clone())
            .build()?,
    );
    let changes_caps =
        options.privileged || !options.cap_add.is_empty() || !options.cap_drop.is_empty();
    if let Some(c) = process.capabilities().clone().filter(|_| changes_caps) {
        // The spec's names are CAP_*, as serde reads them.
        let set: std::collections::HashSet<kiln_runner::oci_spec::runtime::Capability> =
            serde_json::from_value(serde_json::json!(caps)).context("capability names")?;
        let mut c = c;
        c.set_bounding(Some(set.clone()));
        c.set_effective(Some(set.clone()));
        c.set_permitted(Some(set));
        process.set_capabilities(Some(c));
    }
    if let Some(nnp) = options.no_new_privileges {
        process.set_no_new_privileges(Some(nnp));
    }
    if !options.ulimits.is_empty() {
        let mut rlimits = process.rlimits().clone().unwrap_or_default();
        for u in &options.ulimits {
            let typ: PosixRlimitType = serde_json::from_value(serde_json::json!(format!(
                "RLIMIT_{}",
                u.name.to_ascii_uppercase()
            )))
            .with_context(|| format!("unknown ulimit {}", u.name))?;
            rlimits.retain(|r| r.typ() != typ);
            rlimits.push(
                PosixRlimitBuilder::default()
                    .typ(typ)
                    .soft(u.soft)
                    .hard(u.hard)
                    .build()?,
            );
        }
        process.set_rlimits(Some(rlimits));
    }
    spec.set_hostname(Some(hostname));
    spec.set_root(Some(
        RootBuilder::default()
            .path("rootfs")
            .readonly(options.read_only)
            .build()?,
    ));

    let mut mounts: Vec<Mount> = spec.mounts().clone().unwrap_or_default();
    if options.privileged {
        // docker: /sys and the cgroup tree are writable for --privileged.
        for m in mounts.iter_mut() {
            if matches!(m.typ().as_deref(), Some("sysfs") | Some("cgroup")) {
                let kept: Vec<String> = m
                    .options()
                    .clone()
                    .unwrap_or_default()
                    .into_iter()
                    .filter(|o| o != "ro")
                    .collect();
                m.set_options(Some(kept));
            }
        }
    }
    if let Some(size) = options.shm_size {
        for m in mounts.iter_mut() {
            if m.destination() == std::path::Path::new("/dev/shm") {
                let mut kept: Vec<String> = m
                    .options()
                    .clone()
                    .unwrap_or_default()
                    .into_iter()
                    .filter(|o| !o.starts_with("size="))
                    .collect();
                kept.push(format!("size={size}"));
                m.set_options(Some(kept));
            }
        }
    }
    for request in &options.mounts {
        let mount = match request {
            MountRequest::Bind {
                source,
                target,
                readonly,
                propagation,
            } => {
                let mut opts = vec![
                    "rbind".to_string(),
                    if *readonly { "ro" } else { "rw" }.to_string(),
                ];
                if let Some(p) = propagation {
                    opts.push(p.clone());
                }
                MountBuilder::default()
                    .destination(target)
                    .typ("bind")
                    .source(source)
                    .options(opts)
                    .build()?
            }
            MountRequest::Tmpfs {
                target,
                size,
                mode,
                readonly,
                options,
            } => {
                let mut opts: Vec<String> =
                    ["nosuid", "nodev", "noexec"].map(String::from).to_vec();
                for o in options {
                    let undone = format!("no{o}");
                    opts.retain(|d| *d != undone && format!("no{d}") != *o);
                    opts.push(o.clone());
                }
                if *readonly {
                    opts.push("ro".into());
                }
                opts.push(format!("mode={:o}", mode.unwrap_or(0o1777)));
                if let Some(size) = size {
                    opts.push(format!("size={size}"));
                }
                MountBuilder::default()
                    .destination(target)
                    .typ("tmpfs")
                    .source("tmpfs")
                    .options(opts)
                    .build()?
            }
        };
        let target = mount.destination().clone();
        if !target.is_absolute() {
            bail!("mount target {} is not an absolute path", target.display());
        }
        mounts.retain(|m| m.destination() != &target);
        mounts.push(mount);
    }
    spec.set_mounts(Some(mounts));

    let linux = spec
        .linux_mut()
        .as_mut()
        .context("default spec has linux")?;
    linux.set_cgroups_path(Some(PathBuf::from(format!("kiln/{id}"))));
    if options.network == Network::Host {
        if let Some(ns) = linux.namespaces().clone() {
            linux.set_namespaces(Some(
                ns.into_iter()
                    .filter(|n| n.typ() != LinuxNamespaceType::Network)
                    .collect(),
            ));
        }
    }
    if options.privileged {
        linux.set_seccomp(None);
        linux.set_masked_paths(Some(Vec::new()));
        linux.set_readonly_paths(Some(Vec::new()));
    } else if let Seccomp::Profile(profile) = &options.seccomp {
        linux.set_seccomp(Some(docker_profile(profile, &caps)?));
    } else if matches!(options.seccomp, Seccomp::Unconfined) {
        linux.set_seccomp(None);
    } else if !options.cap_add.is_empty() || !options.cap_drop.is_empty() {
        linux.set_seccomp(Some(kiln_runner::docker_seccomp(&caps)));
    }
    if !options.sysctls.is_empty() {
        let mut sysctl = linux.sysctl().clone().unwrap_or_default();
        for (k, v) in &options.sysctls {
            check_sysctl(k, options.network)?;
            sysctl.insert(k.clone(), v.clone());
        }
        linux.set_sysctl(Some(sysctl));
    }
    let mut resources = linux.resources().clone().unwrap_or_default();
    let mut nodes = Vec::new();
    let mut rules = resources.devices().clone().unwrap_or_default();
    for d in &options.devices {
        let typ = if d.block {
            LinuxDeviceType::B
        } else {
            LinuxDeviceType::C
        };
        nodes.push(
            LinuxDeviceBuilder::default()
                .path(&d.path)
                .typ(typ)
                .major(d.major)
                .minor(d.minor)
                .file_mode(d.mode)
                .uid(0u32)
                .gid(0u32)
                .build()?,
        );
        rules.push(
            LinuxDeviceCgroupBuilder::default()
                .allow(true)
                .typ(typ)
                .major(d.major)
                .minor(d.minor)
                .access(&d.access)
                .build()?,
        );
    }
    if options.privileged {
        // Every device, as docker's --privileged.
        rules = vec![LinuxDeviceCgroupBuilder::default()
            .allow(true)
            .typ(LinuxDeviceType::A)
            .access("rwm")
            .build()?];
    }
    if !nodes.is_empty() {
        linux.set_devices(Some(nodes));
    }
    resources.set_devices(Some(rules));
    if let Some(memory) = options.memory {
        // docker sets the swap limit to twice the memory unless told otherwise.
        resources.set_memory(Some(
            LinuxMemoryBuilder::default()
                .limit(memory)
                .swap(memory * 2)
                .build()?,
        ));
    }
    if let Some(cpus) = options.cpus {
        if cpus.is_nan() || cpus <= 0.0 || !cpus.is_finite() {
            bail!("--cpus must be a positive number (got {cpus})");
        }
        let period = 100_000u64;
        resources.set_cpu(Some(
            LinuxCpuBuilder::default()
                .period(period)
                .quota((cpus * period as f64) as i64)
                .build()?,
        ));
    }
    if let Some(limit) = options.pids_limit {
        resources.set_pids(Some(LinuxPidsBuilder::default().limit(limit).build()?));
    }
    linux.set_resources(Some(resources));
    Ok(spec)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn accounts() -> Accounts {
        Accounts {
            passwd: "root:x:0:0:root:/root:/bin/sh\nwww-data:x:33:33:www:/var/www:/bin/false\n"
                .into(),
            group: "root:x:0:\ntty:x:5:www-data\nwww-data:x:33:\nusers:x:100:\n".into(),
        }
    }

    fn image(cmd: &[&str], entrypoint: &[&str]) -> Config {
        let mut config = Config::default();
        if !cmd.is_empty() {
            config.set_cmd(Some(cmd.iter().map(|s| s.to_string()).collect()));
        }
        if !entrypoint.is_empty() {
            config.set_entrypoint(Some(entrypoint.iter().map(|s| s.to_string()).collect()));
        }
        config.set_env(Some(vec!["A=image".into(), "B=image".into()]));
        config
    }

    #[test]
    fn command_follows_docker() {
        let opts = |cmd: &[&str], ep: Option<&str>| RunOptions {
            command: cmd.iter().map(|s| s.to_string()).collect(),
            entrypoint: ep.map(String::from),
            ..RunOptions::default()
        };
        let c = image(&["sh"], &["/init"]);
        assert_eq!(
            command_line(Some(&c), &opts(&[], None)).unwrap(),
            ["/init", "sh"]
        );
        assert_eq!(
            command_line(Some(&c), &opts(&["ls"], None)).unwrap(),
            ["/init", "ls"]
        );
        assert_eq!(
            command_line(Some(&c), &opts(&[], Some("id"))).unwrap(),
            ["id"]
        );
        assert_eq!(
            command_line(Some(&c), &opts(&["-u"], Some("id"))).unwrap(),
            ["id", "-u"]
        );
        assert!(command_line(None, &opts(&[], None)).is_err());
    }

    #[test]
    fn users_resolve_through_image_files() {
        let a = accounts();
        let www = resolve_user("www-data", &a).unwrap();
        assert_eq!(
            (www.uid, www.gid, www.additional_gids.clone()),
            (33, 33, vec![5])
        );
        assert_eq!(www.home, "/var/www");
        let u = resolve_user("1000:users", &a).unwrap();
        assert_eq!((u.uid, u.gid), (1000, 100));
        assert_eq!(resolve_user("33:7", &a).unwrap().gid, 7);
        assert!(resolve_user("nobody", &a).is_err());
        assert!(resolve_user("root:nogroup", &a).is_err());
    }

    #[test]
    fn flags_shape_the_spec() {
        let options = RunOptions {
            command: vec!["true".into()],
            env: vec!["B=flag".into(), "C=3".into()],
            workdir: Some("/srv".into()),
            user: Some("www-data".into()),
            hostname: Some("box".into()),
            tty: true,
            read_only: true,
            memory: Some(64 << 20),
            cpus: Some(0.5),
            pids_limit: Some(20),
            network: Network::Host,
            mounts: vec![MountRequest::Tmpfs {
                target: "/scratch".into(),
                size: None,
                mode: None,
                readonly: false,
                options: Vec::new(),
            }],
            ..RunOptions::default()
        };
        let spec = build(ID, Some(&image(&["sh"], &[])), &options, &accounts()).unwrap();
        let p = spec.process().as_ref().unwrap();
        let env = p.env().clone().unwrap();
        assert!(env.contains(&"A=image".to_string()));
        assert!(env.contains(&"B=flag".to_string()));
        assert!(env.contains(&"HOME=/var/www".to_string()));
        assert!(env.contains(&"TERM=xterm".to_string()));
        assert_eq!(p.cwd().to_str(), Some("/srv"));
        assert_eq!(p.user().uid(), 33);
        assert_eq!(spec.hostname().as_deref(), Some("box"));
        assert!(spec.root().as_ref().unwrap().readonly().unwrap());
        let linux = spec.linux().as_ref().unwrap();
        let r = linux.resources().as_ref().unwrap();
        assert_eq!(r.memory().as_ref().unwrap().limit(), Some(64 << 20));
        assert_eq!(r.cpu().as_ref().unwrap().quota(), Some(50_000));
        assert_eq!(r.pids().as_ref().unwrap().limit(), 20);
        assert!(!linux
            .namespaces()
            .as_ref()
            .unwrap()
            .iter()
            .any(|n| n.typ() == LinuxNamespaceType::Network));
        assert!(spec
            .mounts()
            .as_ref()
            .unwrap()
            .iter()
            .any(|m| m.destination().to_str() == Some("/scratch")));
        assert_eq!(
            linux.cgroups_path().as_ref().unwrap().to_str().unwrap(),
            format!("kiln/{ID}")
        );
    }

    #[test]
    fn capabilities_add_and_drop() {
        let o = RunOptions {
            cap_add: vec!["net_admin".into()],
            cap_drop: vec!["CAP_CHOWN".into()],
            ..RunOptions::default()
        };
        let caps = capabilities(&o).unwrap();
        assert!(caps.contains(&"CAP_NET_ADMIN".to_string()));
        assert!(!caps.contains(&"CAP_CHOWN".to_string()));
        let o = RunOptions {
            privileged: true,
            host_capabilities: Some(!(1 << 24)),
            ..RunOptions::default()
        };
        let caps = capabilities(&o).unwrap();
        assert!(caps.contains(&"CAP_SYS_ADMIN".to_string()));
        assert!(!caps.contains(&"CAP_SYS_RESOURCE".to_string()));
        let o = RunOptions {
            cap_add: vec!["bogus".into()],
            ..RunOptions::default()
        };
        assert!(capabilities(&o).is_err());
    }

    #[test]
    fn memory_sizes() {
        assert_eq!(parse_memory("64m").unwrap(), 64 << 20);
        assert_eq!(parse_memory("1g").unwrap(), 1 << 30);
        assert_eq!(parse_memory("10mb").unwrap(), 10 << 20);
        assert!(parse_memory("64x").is_err());
        assert!(parse_memory("1k").is_err());
    }

    #[test]
    fn sysctls_follow_docker() {
        assert!(check_sysctl("net.ipv4.ip_forward", Network::Bridge).is_ok());
        assert!(check_sysctl("kernel.shmmax", Network::Host).is_ok());
        assert!(check_sysctl("fs.mqueue.msg_max", Network::None).is_ok());
        assert!(check_sysctl("net.ipv4.ip_forward", Network::Host).is_err());
        assert!(check_sysctl("net.core.somaxconn", Network::Container).is_err());
        assert!(check_sysctl("vm.swappiness", Network::Bridge).is_err());
        assert!(check_sysctl("kernel.hostname", Network::Bridge).is_err());
    }

    #[test]
    fn docker_profiles_follow_capabilities_and_arches() {
        let profile = serde_json::json!({
            "defaultAction": "SCMP_ACT_ERRNO",
            "defaultErrnoRet": 1,
            "archMap": [
                {"architecture": scmp_arch(), "subArchitectures": ["SCMP_ARCH_X86"]},
                {"architecture": "SCMP_ARCH_S390X", "subArchitectures": []}
            ],
            "syscalls": [
                {"names": ["read"], "action": "SCMP_ACT_ALLOW"},
                {"names": ["mount"], "action": "SCMP_ACT_ALLOW", "includes": {"caps": ["CAP_SYS_ADMIN"]}},
                {"names": ["chmod"], "action": "SCMP_ACT_ALLOW", "excludes": {"caps": ["CAP_SYS_ADMIN"]}},
                {"names": ["ioperm"], "action": "SCMP_ACT_ALLOW", "includes": {"arches": ["nosucharch"]}},
                {"names": ["openat2"], "action": "SCMP_ACT_ALLOW", "includes": {"minKernel": "999.0"}}
            ]
        });
        let names = |caps: &[&str]| -> Vec<String> {
            let caps: Vec<String> = caps.iter().map(|c| c.to_string()).collect();
            let p = docker_profile(&profile, &caps).unwrap();
            assert_eq!(p.architectures().as_ref().unwrap().len(), 2);
            p.syscalls()
                .iter()
                .flatten()
                .flat_map(|s| s.names().clone())
                .collect()
        };
        assert_eq!(names(&[]), ["read", "chmod"]);
        assert_eq!(names(&["CAP_SYS_ADMIN"]), ["read", "mount"]);
        assert!(docker_profile(&serde_json::json!({"syscalls": []}), &[]).is_err());
        assert!(
            docker_profile(&serde_json::json!({"defaultAction": "SCMP_ACT_NOPE"}), &[]).is_err()
        );
    }

    #[test]
    fn ulimits_shm_and_group_add_shape_the_spec() {
        let options = RunOptions {
            command: vec!["true".into()],
            ulimits: vec![Ulimit {
                name: "nofile".into(),
                soft: 10,
                hard: 20,
            }],
            shm_size: Some(1 << 20),
            group_add: vec!["users".into(), "4242".into()],
            no_new_privileges: Some(false),
            ..RunOptions::default()
        };
        let spec = build(ID, None, &options, &accounts()).unwrap();
        let p = spec.process().as_ref().unwrap();
        let nofile = p
            .rlimits()
            .iter()
            .flatten()
            .filter(|r| r.typ() == PosixRlimitType::RlimitNofile)
            .collect::<Vec<_>>();
        assert_eq!(nofile.len(), 1);
        assert_eq!((nofile[0].soft(), nofile[0].hard()), (10, 20));
        assert_eq!(p.user().additional_gids().as_ref().unwrap(), &[100, 4242]);
        assert_eq!(p.no_new_privileges(), Some(false));
        let shm = spec
            .mounts()
            .iter()
            .flatten()
            .find(|m| m.destination().to_str() == Some("/dev/shm"))
            .unwrap();
        let opts = shm.options().clone().unwrap();
        assert!(opts.contains(&"size=1048576".to_string()));
        assert_eq!(opts.iter().filter(|o| o.starts_with("size=")).count(), 1);
        let bad = RunOptions {
            group_add: vec!["nosuch".into()],
            ..options
        };
        assert!(build(ID, None, &bad, &accounts()).is_err());
    }
}
