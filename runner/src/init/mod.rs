//! The container's init: kiln's own binary, re-executed by the caller inside
//! the new namespaces (or in the host's, to join a running container). It is
//! single-threaded, so after set-up it may fork freely; it never returns.

mod pid1;
mod process;

use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::fcntl::{fcntl, open, FcntlArg, FdFlag, OFlag};
use nix::sched::{setns, unshare, CloneFlags};
use nix::sys::stat::{umask, Mode};

use crate::protocol::{self, Failure, InitConfig, Message, Mode as InitMode, RunConfig};
use crate::sys;

/// Entry from `init_if_requested`: runs the init protocol on inherited fd
/// `fd` and never returns.
pub(crate) fn main(fd: i32) -> ! {
    let (sock, network) = adopt(fd);
    let failure = match protocol::read_config(&sock) {
        Ok((config, bpf)) => {
            crate::timing::mark("init config read");
            run(&sock, &config, &bpf, network)
        }
        Err(e) => Failure::io("read the container config", &e),
    };
    fail(&sock, failure)
}

/// Entry for an init cloned from its caller without an exec (see
/// `sys::clone_continue`): `config` and `bpf` are in this copy of the
/// caller's memory instead of on the socket, and the init moves itself
/// into the cgroup whose cgroup.procs files are `procs` (for a re-executed
/// init the caller does that). Never returns.
pub(crate) fn main_forked(fd: i32, config: &InitConfig, bpf: &[u8], procs: &[PathBuf]) -> ! {
    let (sock, network) = adopt(fd);
    let failure = match join_cgroup(procs) {
        Ok(()) => run(&sock, config, bpf, network),
        Err(f) => f,
    };
    fail(&sock, failure)
}

/// Takes over the socket at inherited fd `fd` and the network namespace
/// that may follow it (protocol::NETWORK_FD); every other descriptor from
/// there on is closed.
fn adopt(fd: i32) -> (File, Option<OwnedFd>) {
    let Some(sock) = sys::adopt_inherited_fd(fd) else {
        eprintln!("kiln init: fd {fd} is not open");
        std::process::exit(125);
    };
    let _ = fcntl(&sock, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC));
    sys::close_fds_from(fd + 2);
    let network = sys::adopt_inherited_fd(fd + 1);
    if let Some(n) = &network {
        let _ = fcntl(n, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC));
    }
    crate::timing::mark("init main");
    (File::from(sock), network)
}

/// Reports `failure` to the caller and exits 125.
fn fail(sock: &File, failure: Failure) -> ! {
    let _ = protocol::send_message(sock, &Message::Failed(failure), None);
    std::process::exit(125);
}

/// Runs the set-up; returns only on failure.
fn run(sock: &File, config: &InitConfig, bpf: &[u8], network: Option<OwnedFd>) -> Failure {
    let result = match config.mode {
        InitMode::Run(ref run) => setup_container(sock, config, run, bpf, network),
        InitMode::Exec { pid } => join_container(sock, config, pid, bpf),
    };
    match result {
        Ok(never) => match never {},
        Err(f) => f,
    }
}

/// The empty type: functions returning `Result<Never, _>` only return errors.
pub(crate) enum Never {}

/// Moves this process into the cgroups whose cgroup.procs files are `procs`.
fn join_cgroup(procs: &[PathBuf]) -> Result<(), Failure> {
    for file in procs {
        std::fs::write(file, "0")
            .map_err(|e| Failure::io(format!("join cgroup {}", file.display()), &e))?;
    }
    Ok(())
}

/// PID 1 of a new container: cgroup, namespaces, hostname, mounts, pivot,
/// pty, then the program (directly or under the tiny init).
fn setup_container(
    sock: &File,
    config: &InitConfig,
    run: &RunConfig,
    bpf: &[u8],
    network: Option<OwnedFd>,
) -> Result<Never, Failure> {
    umask(Mode::empty());
    match network {
        Some(ns) if run.join_network_fd => setns(ns, CloneFlags::CLONE_NEWNET)
            .map_err(|e| Failure::sys("join the network namespace", e))?,
        None if run.join_network_fd => {
            return Err(Failure::plain(
                "join the network namespace",
                "its descriptor was not passed",
            ))
        }
        _ => {}
    }
    for (flag, path) in &run.join_namespaces {
        let fd = open(path, OFlag::O_RDONLY | OFlag::O_CLOEXEC, Mode::empty())
            .map_err(|e| Failure::sys(format!("open namespace {}", path.display()), e))?;
        setns(fd, CloneFlags::from_bits_truncate(*flag))
            .map_err(|e| Failure::sys(format!("join namespace {}", path.display()), e))?;
    }
    if run.new_cgroup_namespace {
        unshare(CloneFlags::CLONE_NEWCGROUP)
            .map_err(|e| Failure::sys("unshare cgroup namespace", e))?;
    }
    if let Some(hostname) = &run.hostname {
        nix::unistd::sethostname(hostname).map_err(|e| Failure::sys("set hostname", e))?;
    }
    if let Some(domainname) = &run.domainname {
        sys::set_domainname(domainname).map_err(|e| Failure::sys("set domain name", e))?;
    }
    crate::timing::mark("init namespaces");
    let after = crate::rootfs::apply_before_pivot(&run.rootfs, &run.mounts)?;
    crate::timing::mark("init pivoted");
    // Before the steps after the pivot make /proc/sys read-only.
    for (key, value) in &run.sysctl {
        let path = Path::new("/proc/sys").join(key.replace('.', "/"));
        std::fs::write(&path, value).map_err(|e| Failure::io(format!("set sysctl {key}"), &e))?;
    }
    crate::rootfs::apply_after_pivot(&run.mounts[after..])?;
    crate::timing::mark("init mounts done");
    if run.new_network_namespace {
        sys::loopback_up().map_err(|e| Failure::sys("bring up lo", e))?;
    }
    let terminal = if config.process.terminal {
        Some(open_terminal(sock, &config.process, true)?)
    } else {
        None
    };
    if config.init_process {
        pid1::run(sock, &config.process, terminal, bpf)
    } else {
        if let Some(slave) = terminal {
            process::attach_terminal(slave)?;
        }
        process::finish(sock, &config.process, bpf)
    }
}

/// Joins the namespaces and cgroup of running container `pid`, then forks
/// the process that runs the program (a setns into a pid namespace only
/// applies to children). The child is made a child of our caller, so the
/// caller can wait for it; this process reports its pid and exits.
fn join_container(
    sock: &File,
    config: &InitConfig,
    pid: i32,
    bpf: &[u8],
) -> Result<Never, Failure> {
    join_cgroup(&config.cgroup_procs)?;
    // The user namespace first (it owns the others), the mount namespace
    // last (its paths change where /proc is).
    let order = [
        ("user", CloneFlags::CLONE_NEWUSER),
        ("cgroup", CloneFlags::CLONE_NEWCGROUP),
        ("ipc", CloneFlags::CLONE_NEWIPC),
        ("uts", CloneFlags::CLONE_NEWUTS),
        ("net", CloneFlags::CLONE_NEWNET),
        ("pid", CloneFlags::CLONE_NEWPID),
        ("mnt", CloneFlags::CLONE_NEWNS),
    ];
    let mut fds: Vec<(OwnedFd, CloneFlags, &str)> = Vec::new();
    for (name, flag) in order {
        let theirs = format!("/proc/{pid}/ns/{name}");
        let ours = format!("/proc/self/ns/{name}");
        let same = match (std::fs::metadata(&theirs), std::fs::metadata(&ours)) {
            (Ok(a), Ok(b)) => {
                use std::os::unix::fs::MetadataExt;
                a.ino() == b.ino() && a.dev() == b.dev()
            }
            (Err(e), _) => return Err(Failure::io(format!("inspect {theirs}"), &e)),
            _ => true,
        };
        if !same {
            let fd = open(
                theirs.as_str(),
                OFlag::O_RDONLY | OFlag::O_CLOEXEC,
                Mode::empty(),
            )
            .map_err(|e| Failure::sys(format!("open {theirs}"), e))?;
            fds.push((fd, flag, name));
        }
    }
    for (fd, flag, name) in fds {
        setns(fd, flag).map_err(|e| Failure::sys(format!("join {name} namespace"), e))?;
    }
    match sys::fork_single_threaded(true).map_err(|e| Failure::sys("fork", e))? {
        Some(child) => {
            let _ = protocol::send_message(sock, &Message::Pid(child.as_raw()), None);
            std::process::exit(0);
        }
        None => {
            if config.process.terminal {
                let slave = open_terminal(sock, &config.process, false)?;
                process::attach_terminal(slave)?;
            }
            process::finish(sock, &config.process, bpf)
        }
    }
}

/// Opens a pty in the container's own devpts (so the program sees
/// /dev/pts/N of its instance), sizes it, sends the master to the caller and
/// returns the slave. `console` also binds the slave onto /dev/console.
fn open_terminal(
    sock: &File,
    process: &protocol::ProcessConfig,
    console: bool,
) -> Result<OwnedFd, Failure> {
    use nix::pty::{grantpt, posix_openpt, ptsname_r, unlockpt};
    let master = posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC)
        .map_err(|e| Failure::sys("open /dev/ptmx", e))?;
    grantpt(&master).map_err(|e| Failure::sys("grantpt", e))?;
    unlockpt(&master).map_err(|e| Failure::sys("unlockpt", e))?;
    let slave_path = ptsname_r(&master).map_err(|e| Failure::sys("ptsname", e))?;
    let slave = open(
        slave_path.as_str(),
        OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| Failure::sys(format!("open {slave_path}"), e))?;
    nix::unistd::fchown(&slave, Some(nix::unistd::Uid::from_raw(process.uid)), None)
        .map_err(|e| Failure::sys(format!("chown {slave_path}"), e))?;
    if let Some((rows, cols)) = process.console_size {
        let _ = sys::set_window_size(slave.as_fd(), sys::WindowSize { rows, cols });
    }
    if console {
        crate::rootfs::bind_console(Path::new(&slave_path))?;
    }
    let master: OwnedFd = master.into();
    protocol::send_message(sock, &Message::Pty, Some(&master))
        .map_err(|e| Failure::io("send the pty master", &e))?;
    Ok(slave)
}
