//! The last steps before the program runs, shared by new containers and
//! `exec`: terminal, rlimits, cwd, credentials, capabilities,
//! no_new_privs, seccomp, execve. Order after runc's: capabilities are
//! bounded before the uid changes, kept across it, then set; seccomp is
//! loaded last so the filter need not allow our own set-up calls, except
//! when no_new_privs is off (loading then needs CAP_SYS_ADMIN, which the
//! capability step may drop).

use std::collections::HashSet;
use std::ffi::CString;
use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use caps::{CapSet, Capability};
use nix::errno::Errno;
use nix::sys::resource::{getrlimit, setrlimit, Resource};
use nix::unistd::{dup2_stderr, dup2_stdin, dup2_stdout, setresgid, setresuid, setsid, Gid, Uid};

use super::Never;
use crate::protocol::{self, CapabilitySets, Failure, Message, ProcessConfig};
use crate::sys;

/// Makes `slave` the stdio and controlling terminal of a new session.
pub(crate) fn attach_terminal(slave: OwnedFd) -> Result<(), Failure> {
    setsid().map_err(|e| Failure::sys("setsid", e))?;
    sys::set_controlling_terminal(slave.as_fd())
        .map_err(|e| Failure::sys("set controlling terminal", e))?;
    dup2_stdin(&slave).map_err(|e| Failure::sys("dup2 pty to stdin", e))?;
    dup2_stdout(&slave).map_err(|e| Failure::sys("dup2 pty to stdout", e))?;
    dup2_stderr(&slave).map_err(|e| Failure::sys("dup2 pty to stderr", e))?;
    Ok(())
}

/// Applies the process settings and execs the program. Returns only on
/// failure; an execve failure is reported to the caller here, as its errno
/// decides the exit code (127 / 126).
pub(crate) fn finish(sock: &File, process: &ProcessConfig, bpf: &[u8]) -> Result<Never, Failure> {
    prepare(process, bpf)?;
    exec(sock, process, bpf)
}

/// Everything up to, not including, seccomp and execve.
pub(crate) fn prepare(process: &ProcessConfig, bpf: &[u8]) -> Result<(), Failure> {
    if let Some(adj) = process.oom_score_adj {
        std::fs::write("/proc/self/oom_score_adj", adj.to_string())
            .map_err(|e| Failure::io("set oom_score_adj", &e))?;
    }
    for (name, soft, hard) in &process.rlimits {
        set_rlimit(name, *soft, *hard)?;
    }
    std::env::set_current_dir(&process.cwd)
        .map_err(|e| Failure::io(format!("chdir to {}", process.cwd.display()), &e))?;
    let caps = process.capabilities.as_ref();
    if let Some(caps) = caps {
        bound_capabilities(caps)?;
    }
    if !process.no_new_privileges && process.has_seccomp {
        // Loading a filter without no_new_privs needs CAP_SYS_ADMIN, which
        // the capability step below may drop.
        sys::load_seccomp(bpf).map_err(|e| Failure::sys("load seccomp filter", e))?;
    }
    let uid = Uid::from_raw(process.uid);
    let gid = Gid::from_raw(process.gid);
    if caps.is_some() && process.uid != 0 {
        caps::securebits::set_keepcaps(true)
            .map_err(|e| Failure::plain("keep capabilities", e.to_string()))?;
    }
    let groups: Vec<Gid> = process
        .additional_gids
        .iter()
        .map(|g| Gid::from_raw(*g))
        .collect();
    nix::unistd::setgroups(&groups).map_err(|e| Failure::sys("setgroups", e))?;
    setresgid(gid, gid, gid).map_err(|e| Failure::sys(format!("setgid {gid}"), e))?;
    setresuid(uid, uid, uid).map_err(|e| Failure::sys(format!("setuid {uid}"), e))?;
    if let Some(caps) = caps {
        set_capabilities(caps)?;
        if process.uid != 0 {
            let _ = caps::securebits::set_keepcaps(false);
        }
    }
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(
        process.umask.unwrap_or(0o022),
    ));
    if process.no_new_privileges {
        nix::sys::prctl::set_no_new_privs().map_err(|e| Failure::sys("set no_new_privs", e))?;
    }
    Ok(())
}

/// Resolves the program, resets signals, loads seccomp (when not done
/// before) and execs.
pub(crate) fn exec(sock: &File, process: &ProcessConfig, bpf: &[u8]) -> Result<Never, Failure> {
    if process.gated {
        // The caller finishes its part (the network) meanwhile.
        let mut go = [0u8];
        let mut reader = sock;
        match std::io::Read::read(&mut reader, &mut go) {
            Ok(1) if go[0] == protocol::GO => {}
            _ => {
                return Err(Failure::plain(
                    "wait for the caller",
                    "it stopped the start",
                ))
            }
        }
    }
    let command = process.args.first().cloned().unwrap_or_default();
    let path = match resolve_command(&command, &process.env) {
        Ok(p) => p,
        Err(errno) => report_exec_failure(sock, errno, &command),
    };
    let to_c = |s: &str| {
        CString::new(s).map_err(|_| Failure::plain("prepare exec", format!("NUL byte in {s:?}")))
    };
    let c_path = CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| Failure::plain("prepare exec", "NUL byte in the path"))?;
    let argv: Vec<CString> = process
        .args
        .iter()
        .map(|a| to_c(a))
        .collect::<Result<_, _>>()?;
    let envp: Vec<CString> = process
        .env
        .iter()
        .map(|e| to_c(e))
        .collect::<Result<_, _>>()?;
    sys::reset_signals();
    if process.kill_with_parent {
        // Set at clone time too; a uid or gid change clears it.
        nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
            .map_err(|e| Failure::sys("set the parent death signal", e))?;
    }
    if process.no_new_privileges && process.has_seccomp {
        sys::load_seccomp(bpf).map_err(|e| Failure::sys("load seccomp filter", e))?;
    }
    crate::timing::mark("init exec");
    let errno = match nix::unistd::execve(&c_path, &argv, &envp) {
        Err(e) => e,
        Ok(never) => match never {},
    };
    report_exec_failure(sock, errno, &command)
}

fn report_exec_failure(sock: &File, errno: Errno, command: &str) -> ! {
    let _ = protocol::send_message(
        sock,
        &Message::ExecFailed {
            errno: errno as i32,
            command: command.to_string(),
        },
        None,
    );
    std::process::exit(if errno == Errno::ENOENT { 127 } else { 126 });
}

/// Finds `command` like execvp(3) but with the container's PATH: a name
/// with a slash is used as it is; otherwise the first executable regular
/// file in PATH. ENOENT when nothing is found, EACCES when only
/// non-executable files are.
pub(crate) fn resolve_command(command: &str, env: &[String]) -> Result<PathBuf, Errno> {
    if command.is_empty() {
        return Err(Errno::ENOENT);
    }
    if command.contains('/') {
        return Ok(PathBuf::from(command));
    }
    let path_var = env
        .iter()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
    let mut found_unexecutable = false;
    for dir in path_var.split(':') {
        let dir = if dir.is_empty() { "." } else { dir };
        let candidate = Path::new(dir).join(command);
        if let Ok(meta) = std::fs::metadata(&candidate) {
            if meta.is_file() && meta.permissions().mode() & 0o111 != 0 {
                return Ok(candidate);
            }
            found_unexecutable = true;
        }
    }
    Err(if found_unexecutable {
        Errno::EACCES
    } else {
        Errno::ENOENT
    })
}

fn set_rlimit(name: &str, soft: u64, hard: u64) -> Result<(), Failure> {
    let resource = match name {
        "RLIMIT_CPU" => Resource::RLIMIT_CPU,
        "RLIMIT_FSIZE" => Resource::RLIMIT_FSIZE,
        "RLIMIT_DATA" => Resource::RLIMIT_DATA,
        "RLIMIT_STACK" => Resource::RLIMIT_STACK,
        "RLIMIT_CORE" => Resource::RLIMIT_CORE,
        "RLIMIT_RSS" => Resource::RLIMIT_RSS,
        "RLIMIT_NPROC" => Resource::RLIMIT_NPROC,
        "RLIMIT_NOFILE" => Resource::RLIMIT_NOFILE,
        "RLIMIT_MEMLOCK" => Resource::RLIMIT_MEMLOCK,
        "RLIMIT_AS" => Resource::RLIMIT_AS,
        "RLIMIT_LOCKS" => Resource::RLIMIT_LOCKS,
        "RLIMIT_SIGPENDING" => Resource::RLIMIT_SIGPENDING,
        "RLIMIT_MSGQUEUE" => Resource::RLIMIT_MSGQUEUE,
        "RLIMIT_NICE" => Resource::RLIMIT_NICE,
        "RLIMIT_RTPRIO" => Resource::RLIMIT_RTPRIO,
        "RLIMIT_RTTIME" => Resource::RLIMIT_RTTIME,
        other => {
            return Err(Failure::plain(
                "set rlimit",
                format!("unknown rlimit {other}"),
            ))
        }
    };
    // Without CAP_SYS_RESOURCE (missing on some hosts) a hard limit cannot be
    // raised: clamp both values to the current hard limit.
    let (_, current_hard) =
        getrlimit(resource).map_err(|e| Failure::sys(format!("get {name}"), e))?;
    let hard = hard.min(current_hard);
    let soft = soft.min(hard);
    setrlimit(resource, soft, hard).map_err(|e| Failure::sys(format!("set {name}"), e))
}

fn parse_caps(names: &[String]) -> Result<HashSet<Capability>, Failure> {
    names
        .iter()
        .map(|n| {
            Capability::from_str(n).map_err(|_| {
                Failure::plain("parse capabilities", format!("unknown capability {n}"))
            })
        })
        .collect()
}

fn bound_capabilities(sets: &CapabilitySets) -> Result<(), Failure> {
    let bounding = parse_caps(&sets.bounding)?;
    for cap in caps::all() {
        if bounding.contains(&cap) {
            continue;
        }
        // Capabilities newer than the kernel report EINVAL: nothing to drop.
        if caps::has_cap(None, CapSet::Bounding, cap).unwrap_or(false) {
            caps::drop(None, CapSet::Bounding, cap).map_err(|e| {
                Failure::plain(format!("drop {cap} from the bounding set"), e.to_string())
            })?;
        }
    }
    Ok(())
}

fn set_capabilities(sets: &CapabilitySets) -> Result<(), Failure> {
    let effective = parse_caps(&sets.effective)?;
    let permitted = parse_caps(&sets.permitted)?;
    let inheritable = parse_caps(&sets.inheritable)?;
    let set = |set: CapSet, value: &HashSet<Capability>, what: &str| {
        caps::set(None, set, value)
            .map_err(|e| Failure::plain(format!("set {what} capabilities"), e.to_string()))
    };
    set(CapSet::Effective, &effective, "effective")?;
    set(CapSet::Inheritable, &inheritable, "inheritable")?;
    set(CapSet::Permitted, &permitted, "permitted")?;
    // The kernel raises an ambient capability only when it is permitted and
    // inheritable (capabilities(7)); `runc spec` lists ambient ones without
    // inheritable, and runc does not fail on them either: skip those.
    for cap in parse_caps(&sets.ambient)? {
        if !(permitted.contains(&cap) && inheritable.contains(&cap)) {
            continue;
        }
        caps::raise(None, CapSet::Ambient, cap)
            .map_err(|e| Failure::plain(format!("raise ambient {cap}"), e.to_string()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_lookup_uses_container_path() {
        let dir = tempfile::tempdir().unwrap();
        let exe = dir.path().join("tool");
        std::fs::write(&exe, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
        let plain = dir.path().join("data");
        std::fs::write(&plain, "").unwrap();
        let env = vec![format!("PATH=/nonexistent:{}", dir.path().display())];
        assert_eq!(resolve_command("tool", &env), Ok(exe));
        assert_eq!(resolve_command("data", &env), Err(Errno::EACCES));
        assert_eq!(resolve_command("missing", &env), Err(Errno::ENOENT));
        assert_eq!(resolve_command("/abs/x", &env), Ok(PathBuf::from("/abs/x")));
    }
}
