//! The caller's side: start a container from a spec, or a process inside a
//! running one, and hold on to it.

use std::ffi::CString;
use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::sched::CloneFlags;
use nix::sys::signal::{kill, Signal};
use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use oci_spec::runtime::{LinuxNamespaceType, LinuxSeccomp, Process, Spec};
use serde::{Deserialize, Serialize};

use crate::cgroup::Cgroup;
use crate::protocol::{self, CapabilitySets, InitConfig, Message, Mode, ProcessConfig, RunConfig};
use crate::rootfs::{CgroupMounts, PlanContext};
use crate::{sys, Error, ExitStatus, Result};

/// Where one standard stream of the container goes.
#[derive(Debug, Default)]
pub enum Stdio {
    /// The caller's own stream.
    #[default]
    Inherit,
    /// /dev/null.
    Null,
    /// A new pipe; the caller's end is in [`Child::stdin`] / `stdout` / `stderr`.
    Piped,
    /// This descriptor (ownership passes to the runner, which closes its copy
    /// once the container started).
    Fd(OwnedFd),
}

/// What `exec` needs to join a running container: its PID 1 as seen from
/// the host. Namespaces and cgroups are found through /proc/<pid>.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinInfo {
    /// Host pid of the container's first process.
    pub pid: i32,
}

/// The init binary unless the caller names another: this process's own.
const DEFAULT_INIT_BINARY: &str = "/proc/self/exe";

/// Whether this process runs no other thread, so a child cloned from it may
/// run the init without an exec. The cgroup warm-up thread (see
/// [`crate::cgroup::warm_up_attach`]) is waited for when it is done.
fn no_other_thread() -> bool {
    // Threads the caller joined a moment ago (set-up helpers, see
    // [`crate::cgroup::PreparedCgroup`]) may still be counted for a while.
    crate::cgroup::join_warm_up() && sys::settled_single_threaded()
}

/// Options shared by [`ContainerBuilder`] and [`ExecBuilder`].
#[derive(Debug)]
struct Common {
    stdin: Stdio,
    stdout: Stdio,
    stderr: Stdio,
    init_binary: PathBuf,
    /// SIGKILL the container's init (and so its whole pid namespace) when
    /// the thread that started it dies.
    kill_with_parent: bool,
}

impl Default for Common {
    fn default() -> Self {
        Common {
            stdin: Stdio::Inherit,
            stdout: Stdio::Inherit,
            stderr: Stdio::Inherit,
            init_binary: DEFAULT_INIT_BINARY.into(),
            kill_with_parent: false,
        }
    }
}

/// A container to start: see [`Container::builder`].
#[derive(Debug)]
pub struct ContainerBuilder {
    spec: Spec,
    rootfs: PathBuf,
    cgroup: Option<PathBuf>,
    prepared: Option<crate::cgroup::PreparedCgroup>,
    network_namespace: Option<File>,
    init_process: bool,
    common: Common,
}

/// The namespaces of a new container, from its spec.
#[derive(Debug)]
struct Namespaces {
    /// Made by clone(2).
    clone_flags: CloneFlags,
    /// Joined by the init: clone(2) flag and path.
    join: Vec<(i32, PathBuf)>,
    /// unshare(CLONE_NEWCGROUP) by the init.
    new_cgroup: bool,
    /// A network namespace among `clone_flags` (its `lo` to bring up).
    new_network: bool,
    /// A network namespace made beforehand, joined by the init.
    network_fd: Option<File>,
}

/// Entry point for starting containers.
pub struct Container;

impl Container {
    /// A container running `spec` on the prepared root filesystem `rootfs`
    /// (a directory or mount point the caller owns; `spec.root.path` is
    /// ignored, `spec.root.readonly` is honoured).
    pub fn builder(spec: Spec, rootfs: impl Into<PathBuf>) -> ContainerBuilder {
        ContainerBuilder {
            spec,
            rootfs: rootfs.into(),
            cgroup: None,
            prepared: None,
            network_namespace: None,
            init_process: false,
            common: Common::default(),
        }
    }
}

/// Runs a new process inside the running container `join`: see [`exec`].
#[derive(Debug)]
pub struct ExecBuilder {
    join: JoinInfo,
    process: Process,
    seccomp: Option<LinuxSeccomp>,
    common: Common,
}

/// Starts `process` inside the running container described by `join`: it
/// joins the container's namespaces and cgroup and gets its own
/// capabilities, user, cwd, env, rlimits and no_new_privs from `process`.
/// Pass the container's `linux.seccomp` with [`ExecBuilder::seccomp`].
pub fn exec(join: JoinInfo, process: Process) -> ExecBuilder {
    ExecBuilder {
        join,
        process,
        seccomp: None,
        common: Common::default(),
    }
}

macro_rules! common_setters {
    () => {
        /// Where the program's stdin comes from (ignored with a terminal).
        pub fn stdin(mut self, stdio: Stdio) -> Self {
            self.common.stdin = stdio;
            self
        }
        /// Where the program's stdout goes (ignored with a terminal).
        pub fn stdout(mut self, stdio: Stdio) -> Self {
            self.common.stdout = stdio;
            self
        }
        /// Where the program's stderr goes (ignored with a terminal).
        pub fn stderr(mut self, stdio: Stdio) -> Self {
            self.common.stderr = stdio;
            self
        }
        /// The kiln binary to re-execute as the container init (default
        /// /proc/self/exe). It must call [`crate::init_if_requested`] first
        /// thing in `main`.
        pub fn init_binary(mut self, path: impl Into<PathBuf>) -> Self {
            self.common.init_binary = path.into();
            self
        }
    };
}

impl ContainerBuilder {
    common_setters!();

    /// The container's cgroup, relative to the cgroup root (`kiln/<id>`).
    /// Created with the limits of `linux.resources` and removed after exit.
    /// Default: `linux.cgroupsPath`; with neither, no cgroup is made.
    pub fn cgroup(mut self, relative: impl Into<PathBuf>) -> Self {
        self.cgroup = Some(relative.into());
        self
    }

    /// The container's cgroup, made beforehand (see
    /// [`crate::cgroup::PreparedCgroup`]); it takes the place of
    /// [`ContainerBuilder::cgroup`] and is removed after exit or on error.
    pub fn prepared_cgroup(mut self, cgroup: crate::cgroup::PreparedCgroup) -> Self {
        self.prepared = Some(cgroup);
        self
    }

    /// The container joins `ns`, an open network namespace with its `lo` up
    /// (see [`crate::network::spawn_namespace`]), instead of a network
    /// namespace made while it is cloned; for a spec asking for a new one
    /// (a network namespace without a path), ignored otherwise. Making it
    /// beforehand, on another thread, takes the slowest namespace off the
    /// clone.
    pub fn network_namespace(mut self, ns: File) -> Self {
        self.network_namespace = Some(ns);
        self
    }

    /// Runs kiln's tiny init as PID 1 (docker `--init`): it forwards
    /// signals to the program, reaps zombies and exits with its status.
    pub fn init(mut self, enabled: bool) -> Self {
        self.init_process = enabled;
        self
    }

    /// Kills the container (SIGKILL to its init, PR_SET_PDEATHSIG) when the
    /// thread that spawns it exits, even by SIGKILL: for short-lived
    /// containers owned by one process (build steps). Spawn and wait on the
    /// same thread.
    pub fn kill_with_parent(mut self, enabled: bool) -> Self {
        self.common.kill_with_parent = enabled;
        self
    }

    /// Creates the namespaces and cgroup, sets the container up and starts
    /// the program. Returns once the program was exec'd, or with the error
    /// that stopped it: [`Error::CommandNotFound`] and
    /// [`Error::CommandNotExecutable`] when execve failed, other variants for
    /// set-up failures (see [`Error::exit_code`]). Nothing is left behind on
    /// error.
    pub fn spawn(self) -> Result<Child> {
        self.spawn_while(WhileStarting::default())
    }

    /// [`ContainerBuilder::spawn`] with `hooks` run on this thread while
    /// the init sets the container up (see [`WhileStarting`]).
    pub fn spawn_while(self, hooks: WhileStarting<'_>) -> Result<Child> {
        let mut this = self;
        // Dropped (so removed) on every error before the cgroup is ours.
        let prepared = this.prepared.take();
        check_rootfs(&this.rootfs)?;
        // The init changes directories while mounting: give it an absolute path.
        this.rootfs = std::fs::canonicalize(&this.rootfs).map_err(|e| Error::InvalidSpec {
            what: format!("rootfs {}: {e}", this.rootfs.display()),
        })?;
        let spec = &this.spec;
        let process = spec.process().as_ref().ok_or_else(|| Error::InvalidSpec {
            what: "no process".into(),
        })?;
        let linux = spec.linux().as_ref();

        let mut made = Namespaces {
            clone_flags: CloneFlags::empty(),
            join: Vec::new(),
            new_cgroup: false,
            new_network: false,
            network_fd: None,
        };
        for ns in linux
            .and_then(|l| l.namespaces().as_ref())
            .into_iter()
            .flatten()
        {
            let flag = namespace_flag(ns.typ());
            match (ns.typ(), ns.path()) {
                (LinuxNamespaceType::User, _) | (LinuxNamespaceType::Time, _) => {
                    return Err(Error::Unsupported {
                        what: format!("{} namespace", ns.typ()),
                    })
                }
                (LinuxNamespaceType::Pid, Some(_)) => {
                    return Err(Error::Unsupported {
                        what: "joining a pid namespace at create".into(),
                    })
                }
                (_, Some(path)) => made.join.push((flag.bits(), path.clone())),
                (LinuxNamespaceType::Cgroup, None) => made.new_cgroup = true,
                (LinuxNamespaceType::Network, None) if this.network_namespace.is_some() => {
                    made.network_fd = this.network_namespace.take();
                }
                (typ, None) => {
                    made.new_network |= typ == LinuxNamespaceType::Network;
                    made.clone_flags |= flag;
                }
            }
        }
        if !made.clone_flags.contains(CloneFlags::CLONE_NEWNS) {
            return Err(Error::Unsupported {
                what: "a container without its own mount namespace".into(),
            });
        }

        let cgroup_path = this
            .cgroup
            .clone()
            .or_else(|| linux.and_then(|l| l.cgroups_path().clone()));
        let cgroup = match (prepared, &cgroup_path) {
            (Some(prepared), _) => Some(prepared.take()),
            (None, Some(path)) => Some(Cgroup::create(
                path,
                linux.and_then(|l| l.resources().as_ref()),
            )?),
            (None, None) => None,
        };
        crate::timing::mark("cgroup created");
        // From here on, the cgroup must go on every error path.
        let result = this.start(process, made, cgroup.as_ref(), hooks);
        match result {
            Ok(mut child) => {
                child.cgroup = cgroup;
                Ok(child)
            }
            Err(e) => {
                if let Some(cgroup) = cgroup {
                    let _ = cgroup.remove();
                }
                Err(e)
            }
        }
    }

    fn start(
        &self,
        process: &Process,
        ns: Namespaces,
        cgroup: Option<&Cgroup>,
        hooks: WhileStarting<'_>,
    ) -> Result<Child> {
        let spec = &self.spec;
        let linux = spec.linux().as_ref();
        let cgroup_mounts = match (cgroup, crate::cgroup::detect()) {
            (Some(c), _) => c.mounts(),
            (None, crate::cgroup::CgroupVersion::V2) => CgroupMounts::Unified,
            (None, crate::cgroup::CgroupVersion::V1) => CgroupMounts::Legacy(Vec::new()),
        };
        let mounts = crate::rootfs::plan(
            spec,
            &PlanContext {
                cgroup: cgroup_mounts,
            },
        )?;
        let seccomp = linux.and_then(|l| l.seccomp().as_ref());
        let bpf = match seccomp {
            Some(profile) => crate::seccomp::compile_cached(profile)?.to_vec(),
            None => Vec::new(),
        };
        crate::timing::mark("planned");
        let mut process_config = process_config(process)?;
        process_config.has_seccomp = seccomp.is_some();
        process_config.kill_with_parent = self.common.kill_with_parent;
        process_config.gated = hooks.gate.is_some();
        let sysctl = linux
            .and_then(|l| l.sysctl().as_ref())
            .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default();
        let config = InitConfig {
            mode: Mode::Run(RunConfig {
                rootfs: self.rootfs.clone(),
                mounts,
                hostname: spec.hostname().clone().filter(|h| !h.is_empty()),
                domainname: spec.domainname().clone().filter(|d| !d.is_empty()),
                join_namespaces: ns.join,
                new_cgroup_namespace: ns.new_cgroup,
                new_network_namespace: ns.new_network,
                join_network_fd: ns.network_fd.is_some(),
                sysctl,
            }),
            process: process_config,
            // `launch` puts the init into the container's cgroup (`procs`).
            cgroup_procs: Vec::new(),
            init_process: self.init_process,
        };
        let procs = cgroup.map(|c| c.procs_files()).unwrap_or_default();
        launch(
            &self.common,
            ns.clone_flags,
            &config,
            &bpf,
            &procs,
            ns.network_fd.map(OwnedFd::from),
            hooks,
        )
    }
}

impl ExecBuilder {
    common_setters!();

    /// The seccomp profile to apply (normally the container's).
    pub fn seccomp(mut self, profile: Option<LinuxSeccomp>) -> Self {
        self.seccomp = profile;
        self
    }

    /// Starts the process. Returns once it was exec'd, or with the error
    /// that stopped it, as [`ContainerBuilder::spawn`] does.
    pub fn spawn(self) -> Result<Child> {
        let bpf = match &self.seccomp {
            Some(profile) => crate::seccomp::compile_cached(profile)?.to_vec(),
            None => Vec::new(),
        };
        let mut process_config = process_config(&self.process)?;
        process_config.has_seccomp = self.seccomp.is_some();
        let config = InitConfig {
            mode: Mode::Exec { pid: self.join.pid },
            process: process_config,
            cgroup_procs: crate::cgroup::procs_files_of(self.join.pid)?,
            init_process: false,
        };
        launch(
            &self.common,
            CloneFlags::empty(),
            &config,
            &bpf,
            &[],
            None,
            WhileStarting::default(),
        )
    }
}

fn namespace_flag(typ: LinuxNamespaceType) -> CloneFlags {
    match typ {
        LinuxNamespaceType::Mount => CloneFlags::CLONE_NEWNS,
        LinuxNamespaceType::Cgroup => CloneFlags::CLONE_NEWCGROUP,
        LinuxNamespaceType::Uts => CloneFlags::CLONE_NEWUTS,
        LinuxNamespaceType::Ipc => CloneFlags::CLONE_NEWIPC,
        LinuxNamespaceType::User => CloneFlags::CLONE_NEWUSER,
        LinuxNamespaceType::Pid => CloneFlags::CLONE_NEWPID,
        LinuxNamespaceType::Network => CloneFlags::CLONE_NEWNET,
        LinuxNamespaceType::Time => CloneFlags::empty(),
    }
}

fn process_config(process: &Process) -> Result<ProcessConfig> {
    let args = process.args().clone().unwrap_or_default();
    if args.is_empty() {
        return Err(Error::InvalidSpec {
            what: "process.args is empty".into(),
        });
    }
    let user = process.user();
    let names = |set: &Option<oci_spec::runtime::Capabilities>| -> Vec<String> {
        set.iter().flatten().map(|c| format!("CAP_{c}")).collect()
    };
    let capabilities = process.capabilities().as_ref().map(|c| CapabilitySets {
        bounding: names(c.bounding()),
        effective: names(c.effective()),
        permitted: names(c.permitted()),
        inheritable: names(c.inheritable()),
        ambient: names(c.ambient()),
    });
    Ok(ProcessConfig {
        kill_with_parent: false,
        gated: false,
        args,
        env: process.env().clone().unwrap_or_default(),
        cwd: process.cwd().clone(),
        uid: user.uid(),
        gid: user.gid(),
        additional_gids: user.additional_gids().clone().unwrap_or_default(),
        umask: user.umask(),
        rlimits: process
            .rlimits()
            .iter()
            .flatten()
            .map(|r| (rlimit_name(r.typ()), r.soft(), r.hard()))
            .collect(),
        capabilities,
        no_new_privileges: process.no_new_privileges().unwrap_or(false),
        terminal: process.terminal().unwrap_or(false),
        console_size: process
            .console_size()
            .map(|b| (b.height() as u16, b.width() as u16)),
        oom_score_adj: process.oom_score_adj(),
        has_seccomp: false,
    })
}

fn rlimit_name(typ: oci_spec::runtime::PosixRlimitType) -> String {
    serde_json::to_value(typ)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

/// One descriptor for the child, with what the caller keeps of it.
struct StreamFds {
    child: OwnedFd,
    parent: Option<File>,
}

fn stream(stdio: &Stdio, which: RawFd, is_input: bool) -> Result<StreamFds> {
    let moved = |fd: OwnedFd| sys::move_fd_above(fd, 10).map_err(Error::sys("move descriptor"));
    match stdio {
        Stdio::Inherit => {
            let fd = nix::fcntl::fcntl(std::io::stdin(), nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(10));
            let fd = match which {
                0 => fd,
                1 => {
                    nix::fcntl::fcntl(std::io::stdout(), nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(10))
                }
                _ => {
                    nix::fcntl::fcntl(std::io::stderr(), nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(10))
                }
            };
            match fd {
                Ok(raw) => Ok(StreamFds {
                    child: sys::adopt_inherited_fd(raw).expect("fcntl returned an open fd"),
                    parent: None,
                }),
                // The caller's own stream is closed: give the container /dev/null.
                Err(_) => stream(&Stdio::Null, which, is_input),
            }
        }
        Stdio::Null => {
            let f = std::fs::OpenOptions::new()
                .read(is_input)
                .write(!is_input)
                .open("/dev/null")
                .map_err(Error::protocol("open /dev/null for"))?;
            Ok(StreamFds {
                child: moved(f.into())?,
                parent: None,
            })
        }
        Stdio::Piped => {
            let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
                .map_err(Error::sys("create pipe"))?;
            let (child, parent) = if is_input {
                (read, write)
            } else {
                (write, read)
            };
            Ok(StreamFds {
                child: moved(child)?,
                parent: Some(File::from(parent)),
            })
        }
        Stdio::Fd(fd) => {
            let dup = fd
                .try_clone()
                .map_err(Error::protocol("duplicate a stdio descriptor for"))?;
            Ok(StreamFds {
                child: moved(dup)?,
                parent: None,
            })
        }
    }
}

/// What the caller does on its own thread while the init sets a container
/// up: that thread would only wait otherwise.
#[derive(Default)]
pub struct WhileStarting<'a> {
    /// Holds the program back until it returns true, so the caller's own
    /// part of the start (configuring the network in the namespace given
    /// with [`ContainerBuilder::network_namespace`]) overlaps with the
    /// init's. False stops the container: [`Error::Cancelled`], nothing
    /// left behind.
    pub gate: Option<Box<dyn FnOnce() -> bool + 'a>>,
    /// Runs once the gate passed (at once without one), while the init
    /// finishes: work of the caller's that needs no wait for the program.
    pub meanwhile: Option<Box<dyn FnOnce() + 'a>>,
}

/// Clones the init into `flags` namespaces, has it join the cgroup whose
/// cgroup.procs files are `procs`, gives it `config`, and waits until the
/// program was exec'd or the set-up failed. `network` goes to the init as
/// [`protocol::NETWORK_FD`]; `hooks` run on this thread meanwhile (see
/// [`WhileStarting`]): the gate, then `meanwhile`, then the wait for the
/// program.
///
/// An init cloned without an exec finds `config` in its copy of this
/// process's memory and joins the cgroup itself: it starts its set-up at
/// once, with nothing serialized or sent. A re-executed init is moved into
/// the cgroup by this process and then sent the config: moving a process
/// between v1 cgroups can wait for an RCU grace period (the first write
/// takes cgroup_threadgroup_rwsem for writing), which then overlaps the
/// init's own exec and start-up.
fn launch(
    common: &Common,
    flags: CloneFlags,
    config: &InitConfig,
    bpf: &[u8],
    procs: &[PathBuf],
    network: Option<OwnedFd>,
    hooks: WhileStarting<'_>,
) -> Result<Child> {
    let terminal = config.process.terminal;
    let (stdin, stdout, stderr) = if terminal {
        (
            stream(&Stdio::Null, 0, true)?,
            stream(&Stdio::Null, 1, false)?,
            stream(&Stdio::Inherit, 2, false)?,
        )
    } else {
        (
            stream(&common.stdin, 0, true)?,
            stream(&common.stdout, 1, false)?,
            stream(&common.stderr, 2, false)?,
        )
    };
    let (ours, theirs) = socketpair(
        AddressFamily::Unix,
        SockType::Stream,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .map_err(Error::sys("create socketpair"))?;
    let theirs = sys::move_fd_above(theirs, 10).map_err(Error::sys("move descriptor"))?;
    let ours = File::from(ours);

    let network = network
        .map(|fd| sys::move_fd_above(fd, 10))
        .transpose()
        .map_err(Error::sys("move descriptor"))?;
    let mut fds = vec![
        (stdin.child.as_raw_fd(), 0),
        (stdout.child.as_raw_fd(), 1),
        (stderr.child.as_raw_fd(), 2),
        (theirs.as_raw_fd(), protocol::INIT_FD),
    ];
    fds.extend(
        network
            .as_ref()
            .map(|n| (n.as_raw_fd(), protocol::NETWORK_FD)),
    );
    // The init runs from a copy of this process instead of a re-exec of the
    // binary (1.5 ms less per start), except as the tiny init that stays
    // PID 1: that one shows the container `kiln-init` as its command line,
    // not this process's.
    let fork = common.init_binary == Path::new(DEFAULT_INIT_BINARY)
        && !config.init_process
        && no_other_thread();
    let pid = if fork {
        // Nothing buffered may be written twice.
        let _ = std::io::Write::flush(&mut std::io::stdout());
        match sys::clone_continue(flags, &fds, protocol::INIT_FD, common.kill_with_parent) {
            Ok(Some(pid)) => pid,
            Ok(None) => {
                // The child: the same init as after a re-exec, on the same
                // descriptors, but with the config already in memory; it
                // joins its cgroup itself and never returns here.
                let _ = std::panic::catch_unwind(|| {
                    crate::init::main_forked(protocol::INIT_FD, config, bpf, procs)
                });
                sys::exit_now(125)
            }
            Err(e) => return Err(Error::sys("clone the container init")(e)),
        }
    } else {
        let path =
            CString::new(common.init_binary.as_os_str().as_encoded_bytes()).map_err(|_| {
                Error::InvalidSpec {
                    what: "init binary path holds a NUL byte".into(),
                }
            })?;
        let mut env = vec![format!("{}={}", protocol::INIT_ENV, protocol::INIT_FD)];
        env.extend(crate::timing::env_entry());
        let image =
            sys::ExecImage::new(&path, &["kiln-init"], &env).map_err(|_| Error::InvalidSpec {
                what: "init binary path holds a NUL byte".into(),
            })?;
        sys::clone_exec(
            flags,
            &fds,
            protocol::INIT_FD,
            &image,
            common.kill_with_parent,
        )
        .map_err(Error::sys("clone the container init"))?
    };
    crate::timing::mark("cloned");
    drop((stdin.child, stdout.child, stderr.child, theirs, network));
    if !fork {
        // A re-executed init reads its config from the socket once it is
        // in its cgroup.
        let pid_text = pid.as_raw().to_string();
        for file in procs {
            if let Err(source) = std::fs::write(file, &pid_text) {
                reap_failed(pid);
                return Err(Error::Cgroup {
                    op: "join",
                    path: file.clone(),
                    source,
                });
            }
        }
        crate::timing::mark("cgroup joined");
        if let Err(e) = protocol::send_config(&ours, config, bpf) {
            reap_failed(pid);
            return Err(Error::protocol("send the config to")(e));
        }
        crate::timing::mark("config sent");
    }
    if let Some(gate) = hooks.gate {
        let open = gate();
        crate::timing::mark("gate passed");
        if !open {
            reap_failed(pid);
            return Err(Error::Cancelled);
        }
        // An init that failed before its gate closed the socket: its
        // report follows below.
        let _ = nix::sys::socket::send(
            ours.as_raw_fd(),
            &[protocol::GO],
            nix::sys::socket::MsgFlags::MSG_NOSIGNAL,
        );
    }
    if let Some(meanwhile) = hooks.meanwhile {
        meanwhile();
    }

    let received = receive(&ours, pid);
    crate::timing::mark("start reported");
    let mut received = match received {
        Ok(r) => r,
        Err(e) => {
            reap_failed(pid);
            return Err(e);
        }
    };
    let mut failure = None;
    let mut program_pid = pid;
    let mut helper = None;
    let mut pty = None;
    for message in received.messages.drain(..) {
        match message {
            Message::Pid(p) => {
                helper = Some(pid);
                program_pid = Pid::from_raw(p);
            }
            Message::Pty => pty = received.fds.pop().map(File::from),
            Message::Failed(f) => {
                failure.get_or_insert(Error::Setup {
                    step: f.step,
                    detail: f.detail,
                });
            }
            Message::ExecFailed { errno, command } => {
                failure.get_or_insert(exec_error(errno, command));
            }
        }
    }
    if let Some(errno) = received.bootstrap_errno {
        failure.get_or_insert(Error::Setup {
            step: format!("exec the init binary {}", common.init_binary.display()),
            detail: Errno::from_raw(errno).desc().to_string(),
        });
    }
    if let Some(helper) = helper {
        // exec mode: the helper that joined the namespaces exits at once.
        let _ = waitpid(helper, None);
    }
    if let Some(e) = failure {
        reap_failed(program_pid);
        return Err(e);
    }
    Ok(Child {
        pid: program_pid,
        cgroup: None,
        stdin: stdin.parent,
        stdout: stdout.parent,
        stderr: stderr.parent,
        pty,
        status: None,
        oom_killed: false,
    })
}

fn receive(sock: &File, pid: Pid) -> Result<protocol::Received> {
    protocol::receive_all(sock).map_err(|e| {
        let _ = kill(pid, Signal::SIGKILL);
        Error::Protocol {
            op: "read the start report of",
            source: e,
        }
    })
}

fn reap_failed(pid: Pid) {
    let _ = kill(pid, Signal::SIGKILL);
    let _ = waitpid(pid, None);
}

fn exec_error(errno: i32, command: String) -> Error {
    match Errno::from_raw(errno) {
        Errno::ENOENT => Error::CommandNotFound { command },
        other => Error::CommandNotExecutable {
            command,
            reason: other.desc().to_lowercase(),
        },
    }
}

/// A started container program (or exec'd process): wait for it, signal
/// it, talk to it. Dropping a `Child` that was not waited for kills it
/// (SIGKILL), reaps it and removes its cgroup.
#[derive(Debug)]
pub struct Child {
    pid: Pid,
    cgroup: Option<Cgroup>,
    /// The caller's end of the program's stdin, with [`Stdio::Piped`].
    pub stdin: Option<File>,
    /// The caller's end of the program's stdout, with [`Stdio::Piped`].
    pub stdout: Option<File>,
    /// The caller's end of the program's stderr, with [`Stdio::Piped`].
    pub stderr: Option<File>,
    /// The pty master when `process.terminal` is set; see [`crate::pty`].
    pub pty: Option<File>,
    status: Option<ExitStatus>,
    oom_killed: bool,
}

impl Child {
    /// Host pid of the program (the container's PID 1 for a new container).
    pub fn pid(&self) -> i32 {
        self.pid.as_raw()
    }

    /// What [`exec`] needs to join this container later.
    pub fn join_info(&self) -> JoinInfo {
        JoinInfo {
            pid: self.pid.as_raw(),
        }
    }

    /// The container's cgroup directories (one per v1 hierarchy, one on v2).
    pub fn cgroup_dirs(&self) -> Vec<PathBuf> {
        self.cgroup.as_ref().map(|c| c.dirs()).unwrap_or_default()
    }

    /// Sends `signal` to the program.
    pub fn kill(&self, signal: Signal) -> Result<()> {
        if self.status.is_some() {
            return Ok(());
        }
        kill(self.pid, signal).map_err(Error::sys("signal the container"))
    }

    /// Waits for the program to end, then kills what is left in its cgroup
    /// and removes the cgroup. Returns the same status when called again.
    pub fn wait(&mut self) -> Result<ExitStatus> {
        if let Some(status) = self.status {
            return Ok(status);
        }
        loop {
            match waitpid(self.pid, Some(WaitPidFlag::__WALL)) {
                Ok(status) => {
                    crate::timing::mark("reaped");
                    if let Some(status) = self.finished(status)? {
                        return Ok(status);
                    }
                }
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(Error::sys("wait for the container")(e)),
            }
        }
    }

    /// Like [`Child::wait`] without blocking: `None` while it runs.
    pub fn try_wait(&mut self) -> Result<Option<ExitStatus>> {
        if let Some(status) = self.status {
            return Ok(Some(status));
        }
        match waitpid(self.pid, Some(WaitPidFlag::WNOHANG | WaitPidFlag::__WALL)) {
            Ok(status) => self.finished(status),
            Err(e) => Err(Error::sys("wait for the container")(e)),
        }
    }

    /// True when the kernel's OOM killer killed a process of the container
    /// (known after [`Child::wait`]).
    pub fn oom_killed(&self) -> bool {
        self.oom_killed
    }

    fn finished(&mut self, status: WaitStatus) -> Result<Option<ExitStatus>> {
        let status = match status {
            WaitStatus::Exited(_, code) => ExitStatus::Exited(code),
            WaitStatus::Signaled(_, sig, _) => ExitStatus::Signaled(sig as i32),
            _ => return Ok(None),
        };
        self.status = Some(status);
        if let Some(cgroup) = self.cgroup.take() {
            self.oom_killed = cgroup.oom_killed();
            cgroup.remove()?;
            crate::timing::mark("cgroup removed");
        }
        Ok(Some(status))
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        if self.status.is_none() {
            let _ = kill(self.pid, Signal::SIGKILL);
            let _ = self.wait();
        }
    }
}

/// Whether `path` looks like a usable root filesystem (a directory).
pub(crate) fn check_rootfs(path: &Path) -> Result<()> {
    if path.is_dir() {
        Ok(())
    } else {
        Err(Error::InvalidSpec {
            what: format!("rootfs {} is not a directory", path.display()),
        })
    }
}
