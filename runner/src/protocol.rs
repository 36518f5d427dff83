//! What the caller and the re-executed init say to each other over their
//! socketpair (fd 3 in the init).
//!
//! Caller -> init, once: `[u32 LE json length][u32 LE bpf length][json][bpf]`.
//! Init -> caller, any number: `[b'K'][u32 LE length][json Message]`, a pty
//! master travelling as SCM_RIGHTS with its message. The socket is
//! close-on-exec in the init, so end-of-file without a failure message means
//! the user's program was exec'd. A child that could not even exec the init
//! writes a bootstrap record instead (see `sys::BOOTSTRAP_TAG`).

use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::PathBuf;

use nix::sys::socket::{recvmsg, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags};
use serde::{Deserialize, Serialize};

use crate::rootfs::MountOp;

/// Environment variable that marks a process as kiln's container init; its
/// value is the fd number of the socket to the caller.
pub(crate) const INIT_ENV: &str = "_KILN_INIT";
/// The socket's fd number in the init.
pub(crate) const INIT_FD: i32 = 3;

/// Where the init finds the network namespace it joins when
/// [`RunConfig::join_network_fd`] says so; closed otherwise.
pub(crate) const NETWORK_FD: i32 = INIT_FD + 1;

/// Everything the init needs, computed by the caller.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct InitConfig {
    pub mode: Mode,
    pub process: ProcessConfig,
    /// cgroup.procs files to write "0" into, first thing, when joining a
    /// running container (a new container's init is put into its cgroup
    /// by `launch`).
    pub cgroup_procs: Vec<PathBuf>,
    /// Run kiln's tiny init as PID 1 and the program as its child.
    pub init_process: bool,
}

/// Start a new container, or join a running one.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Mode {
    Run(RunConfig),
    Exec { pid: i32 },
}

/// Set-up of a new container, done by its PID 1 before the program runs.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct RunConfig {
    pub rootfs: PathBuf,
    pub mounts: Vec<MountOp>,
    pub hostname: Option<String>,
    pub domainname: Option<String>,
    /// Namespaces to join: clone(2) flag and path.
    pub join_namespaces: Vec<(i32, PathBuf)>,
    /// unshare(CLONE_NEWCGROUP) after joining the cgroup.
    pub new_cgroup_namespace: bool,
    /// A new network namespace was created: bring `lo` up.
    pub new_network_namespace: bool,
    /// Join the network namespace open at [`NETWORK_FD`] (made beforehand,
    /// its `lo` up) instead of making one.
    #[serde(default)]
    pub join_network_fd: bool,
    pub sysctl: Vec<(String, String)>,
}

/// The program and its credentials (OCI `process`), resolved.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct ProcessConfig {
    /// PR_SET_PDEATHSIG(SIGKILL) again right before exec (a uid change
    /// clears it).
    #[serde(default)]
    pub kill_with_parent: bool,
    /// Wait for [`GO`] from the caller before the exec.
    #[serde(default)]
    pub gated: bool,
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub cwd: PathBuf,
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
    pub umask: Option<u32>,
    /// (resource name as in the spec, soft, hard)
    pub rlimits: Vec<(String, u64, u64)>,
    pub capabilities: Option<CapabilitySets>,
    pub no_new_privileges: bool,
    pub terminal: bool,
    /// (rows, columns)
    pub console_size: Option<(u16, u16)>,
    pub oom_score_adj: Option<i32>,
    /// Whether `bpf` (sent after the JSON) is a seccomp filter to load.
    pub has_seccomp: bool,
}

/// Capability names per set; `None` in a set leaves it empty.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct CapabilitySets {
    pub bounding: Vec<String>,
    pub effective: Vec<String>,
    pub permitted: Vec<String>,
    pub inheritable: Vec<String>,
    pub ambient: Vec<String>,
}

/// What went wrong in the init, step and detail.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Failure {
    pub step: String,
    pub detail: String,
}

/// Init -> caller.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Message {
    /// Host pid of the process that will exec the program (exec mode).
    Pid(i32),
    /// The pty master comes with this message.
    Pty,
    /// Set-up failed.
    Failed(Failure),
    /// execve of the program failed with this errno.
    ExecFailed { errno: i32, command: String },
}

const FRAME_TAG: u8 = b'K';

/// Caller -> init, after the config, to a gated init: start the program.
pub(crate) const GO: u8 = b'G';

/// Writes the config and the BPF program.
pub(crate) fn send_config(
    mut sock: &std::fs::File,
    config: &InitConfig,
    bpf: &[u8],
) -> io::Result<()> {
    let json = serde_json::to_vec(config).map_err(io::Error::other)?;
    let mut buf = Vec::with_capacity(8 + json.len() + bpf.len());
    buf.extend_from_slice(&(json.len() as u32).to_le_bytes());
    buf.extend_from_slice(&(bpf.len() as u32).to_le_bytes());
    buf.extend_from_slice(&json);
    buf.extend_from_slice(bpf);
    sock.write_all(&buf)
}

/// Reads the config and the BPF program (init side).
pub(crate) fn read_config(mut sock: &std::fs::File) -> io::Result<(InitConfig, Vec<u8>)> {
    let mut header = [0u8; 8];
    sock.read_exact(&mut header)?;
    let json_len = u32::from_le_bytes(header[..4].try_into().expect("4 bytes")) as usize;
    let bpf_len = u32::from_le_bytes(header[4..].try_into().expect("4 bytes")) as usize;
    let mut body = vec![0u8; json_len + bpf_len];
    sock.read_exact(&mut body)?;
    let bpf = body.split_off(json_len);
    let config = serde_json::from_slice(&body).map_err(io::Error::other)?;
    Ok((config, bpf))
}

/// Sends one message, with `fd` attached when given (init side).
pub(crate) fn send_message(
    sock: &std::fs::File,
    message: &Message,
    fd: Option<&OwnedFd>,
) -> io::Result<()> {
    let json = serde_json::to_vec(message).map_err(io::Error::other)?;
    let mut buf = Vec::with_capacity(5 + json.len());
    buf.push(FRAME_TAG);
    buf.extend_from_slice(&(json.len() as u32).to_le_bytes());
    buf.extend_from_slice(&json);
    let fds = fd.map(|f| [f.as_raw_fd()]);
    let cmsgs: Vec<ControlMessage<'_>> = fds
        .as_ref()
        .map(|f| ControlMessage::ScmRights(f))
        .into_iter()
        .collect();
    let iov = [io::IoSlice::new(&buf)];
    let sent = sendmsg::<()>(sock.as_raw_fd(), &iov, &cmsgs, MsgFlags::empty(), None)
        .map_err(io::Error::from)?;
    if sent < buf.len() {
        // The descriptor went with the first bytes; the rest is plain data.
        let mut rest: &std::fs::File = sock;
        rest.write_all(&buf[sent..])?;
    }
    Ok(())
}

/// A message with the descriptors that arrived with it.
pub(crate) struct Received {
    pub messages: Vec<Message>,
    pub fds: Vec<OwnedFd>,
    /// errno from a bootstrap record: the init binary could not be exec'd.
    pub bootstrap_errno: Option<i32>,
}

/// Reads messages until end-of-file (caller side).
pub(crate) fn receive_all(sock: &std::fs::File) -> io::Result<Received> {
    let mut data = Vec::new();
    let mut fds = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let mut cmsg = nix::cmsg_space!([std::os::fd::RawFd; 4]);
        let mut iov = [io::IoSliceMut::new(&mut buf)];
        let msg = match recvmsg::<()>(
            sock.as_fd().as_raw_fd(),
            &mut iov,
            Some(&mut cmsg),
            MsgFlags::MSG_CMSG_CLOEXEC,
        ) {
            Ok(m) => m,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        };
        for c in msg.cmsgs().map_err(io::Error::from)? {
            if let ControlMessageOwned::ScmRights(raw) = c {
                for fd in raw {
                    if let Some(fd) = crate::sys::adopt_inherited_fd(fd) {
                        fds.push(fd);
                    }
                }
            }
        }
        let n = msg.bytes;
        if n == 0 {
            break;
        }
        data.extend_from_slice(&buf[..n]);
    }
    let mut messages = Vec::new();
    let mut bootstrap_errno = None;
    let mut rest = data.as_slice();
    while !rest.is_empty() {
        if rest[0] == crate::sys::BOOTSTRAP_TAG && rest.len() >= crate::sys::BOOTSTRAP_RECORD_LEN {
            bootstrap_errno = Some(i32::from_le_bytes(rest[1..5].try_into().expect("4 bytes")));
            rest = &rest[crate::sys::BOOTSTRAP_RECORD_LEN..];
            continue;
        }
        if rest[0] != FRAME_TAG || rest.len() < 5 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "malformed message from the container init",
            ));
        }
        let len = u32::from_le_bytes(rest[1..5].try_into().expect("4 bytes")) as usize;
        let body = rest
            .get(5..5 + len)
            .ok_or_else(|| io::Error::from(io::ErrorKind::UnexpectedEof))?;
        messages.push(serde_json::from_slice(body).map_err(io::Error::other)?);
        rest = &rest[5 + len..];
    }
    Ok(Received {
        messages,
        fds,
        bootstrap_errno,
    })
}

impl Failure {
    /// A failed system call.
    pub(crate) fn sys(step: impl Into<String>, errno: nix::Error) -> Failure {
        Failure {
            step: step.into(),
            detail: format!("{} ({})", errno.desc(), errno as i32),
        }
    }

    /// A failed I/O operation.
    pub(crate) fn io(step: impl Into<String>, error: &io::Error) -> Failure {
        Failure {
            step: step.into(),
            detail: error.to_string(),
        }
    }

    /// Anything else.
    pub(crate) fn plain(step: impl Into<String>, detail: impl Into<String>) -> Failure {
        Failure {
            step: step.into(),
            detail: detail.into(),
        }
    }
}
