//! The only place with `unsafe`: small safe wrappers over raw system calls
//! that `nix` does not cover (or covers only as `unsafe fn`).
//!
//! Every function here is safe to call; each `unsafe` block says why.

use std::ffi::{CStr, CString};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use nix::errno::Errno;
use nix::sched::CloneFlags;
use nix::unistd::Pid;

/// Everything the child of [`clone_exec`] needs, prepared before the clone so
/// that the child only makes async-signal-safe calls (no allocation).
pub struct ExecImage {
    path: CString,
    argv: Vec<CString>,
    envp: Vec<CString>,
    argv_ptrs: Vec<*const libc::c_char>,
    envp_ptrs: Vec<*const libc::c_char>,
}

impl ExecImage {
    /// Prepares `path` with `argv` and `envp`. Fails on interior NUL bytes.
    pub fn new(path: &CStr, argv: &[&str], envp: &[String]) -> Result<Self, std::ffi::NulError> {
        let argv: Vec<CString> = argv
            .iter()
            .map(|a| CString::new(*a))
            .collect::<Result<_, _>>()?;
        let envp: Vec<CString> = envp
            .iter()
            .map(|e| CString::new(e.as_str()))
            .collect::<Result<_, _>>()?;
        let mut image = ExecImage {
            path: path.to_owned(),
            argv,
            envp,
            argv_ptrs: Vec::new(),
            envp_ptrs: Vec::new(),
        };
        // The pointers point into the CStrings' heap buffers, which do not move
        // when `image` moves.
        image.argv_ptrs = image
            .argv
            .iter()
            .map(|a| a.as_ptr())
            .chain([std::ptr::null()])
            .collect();
        image.envp_ptrs = image
            .envp
            .iter()
            .map(|e| e.as_ptr())
            .chain([std::ptr::null()])
            .collect();
        Ok(image)
    }
}

/// Size of the record the child of [`clone_exec`] writes to `report_fd` when
/// its exec fails: one tag byte (`BOOTSTRAP_TAG`), then the errno as i32 LE.
pub const BOOTSTRAP_RECORD_LEN: usize = 5;
/// Tag byte of a bootstrap failure record; never the first byte of a frame.
pub const BOOTSTRAP_TAG: u8 = 0xEE;

/// Clones the calling process like fork(2) with extra `flags` (new
/// namespaces), then in the child: installs `fds` (pairs of source and target
/// numbers, applied in order with dup2(2), which clears close-on-exec on the
/// target), resets the signal mask and execs `image`. If that fails, the child
/// writes a bootstrap record with the errno to `report_fd` (a target number)
/// and exits with 127.
///
/// Every source fd must be >= 10 and every target < 10, so no dup2 clobbers a
/// later source. With `kill_with_parent` the child gets SIGKILL when the
/// calling thread dies (PR_SET_PDEATHSIG). Returns the child's pid in the
/// caller's pid namespace.
pub fn clone_exec(
    flags: CloneFlags,
    fds: &[(RawFd, RawFd)],
    report_fd: RawFd,
    image: &ExecImage,
    kill_with_parent: bool,
) -> nix::Result<Pid> {
    debug_assert!(fds.iter().all(|&(src, dst)| src >= 10 && dst < 10));
    let mut empty_set = std::mem::MaybeUninit::<libc::sigset_t>::uninit();
    // SAFETY: sigemptyset initialises the set it is given.
    unsafe { libc::sigemptyset(empty_set.as_mut_ptr()) };
    // SAFETY: initialised just above.
    let empty_set = unsafe { empty_set.assume_init() };
    // SAFETY: the child then only calls async-signal-safe functions (dup2,
    // prctl, sigprocmask, execve, write, _exit) on memory prepared before the
    // clone, so the state of other threads' locks in the copy does not matter.
    let ret = unsafe { fork_like_clone(flags)? };
    if ret > 0 {
        return Ok(Pid::from_raw(ret as i32));
    }
    // Child.
    // SAFETY: only async-signal-safe calls on pre-built data follow; the child
    // never returns from this block.
    unsafe {
        install_fds_and_death_signal(fds, report_fd, kill_with_parent);
        libc::sigprocmask(libc::SIG_SETMASK, &empty_set, std::ptr::null_mut());
        libc::execve(
            image.path.as_ptr(),
            image.argv_ptrs.as_ptr(),
            image.envp_ptrs.as_ptr(),
        );
        child_fail(report_fd);
    }
}

/// clone(2) without CLONE_VM and without a new stack: fork(2) with
/// namespace `flags`. Returns the child's pid in the parent and 0 in the
/// child, which continues from here in a copy of the address space.
///
/// # Safety
/// In the child, the caller may only do what a forked child of its process
/// may do (async-signal-safe calls unless the process had one thread).
unsafe fn fork_like_clone(flags: CloneFlags) -> nix::Result<libc::c_long> {
    let raw_flags = flags.bits() as libc::c_long | libc::SIGCHLD as libc::c_long;
    // SAFETY: see the function's contract.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_clone,
            raw_flags,
            0 as libc::c_long,
            0 as libc::c_long,
            0 as libc::c_long,
            0 as libc::c_long,
        )
    };
    if ret < 0 {
        return Err(Errno::last());
    }
    Ok(ret)
}

/// In a freshly cloned child: moves `fds` into place and, when asked, dies
/// with the parent; reports on `report_fd` and exits on failure.
///
/// # Safety
/// Only async-signal-safe calls; call in the child of [`fork_like_clone`].
unsafe fn install_fds_and_death_signal(
    fds: &[(RawFd, RawFd)],
    report_fd: RawFd,
    kill_with_parent: bool,
) {
    // SAFETY: dup2 and prctl on plain integers.
    unsafe {
        for &(src, dst) in fds {
            if libc::dup2(src, dst) < 0 {
                child_fail(report_fd);
            }
        }
        if kill_with_parent
            && libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGKILL as libc::c_ulong,
                0 as libc::c_ulong,
                0 as libc::c_ulong,
                0 as libc::c_ulong,
            ) < 0
        {
            child_fail(report_fd);
        }
    }
}

/// Like [`clone_exec`] without the exec, for a caller that is the only
/// thread of its process: the child installs `fds`, sets the parent death
/// signal when asked, puts back the default action of every caught signal
/// (as an exec would), unblocks all signals and returns `None`; it then runs
/// the init from the copied memory, saving the exec of a large binary. The
/// caller gets the child's pid.
///
/// Same rules for `fds` and `report_fd` as [`clone_exec`].
pub fn clone_continue(
    flags: CloneFlags,
    fds: &[(RawFd, RawFd)],
    report_fd: RawFd,
    kill_with_parent: bool,
) -> nix::Result<Option<Pid>> {
    debug_assert!(fds.iter().all(|&(src, dst)| src >= 10 && dst < 10));
    // SAFETY: the caller checked that no other thread exists, so no lock in
    // the copied memory is held by a thread that is not there, and the child
    // may run any code.
    let ret = unsafe { fork_like_clone(flags)? };
    if ret > 0 {
        return Ok(Some(Pid::from_raw(ret as i32)));
    }
    // SAFETY: plain system calls in the child, on valid arguments.
    unsafe {
        install_fds_and_death_signal(fds, report_fd, kill_with_parent);
        for sig in 1..libc::SIGRTMIN() {
            let mut old = std::mem::MaybeUninit::<libc::sigaction>::zeroed();
            if libc::sigaction(sig, std::ptr::null(), old.as_mut_ptr()) != 0 {
                continue;
            }
            let handler = old.assume_init().sa_sigaction;
            if handler != libc::SIG_DFL && handler != libc::SIG_IGN {
                libc::signal(sig, libc::SIG_DFL);
            }
        }
        let mut empty = std::mem::MaybeUninit::<libc::sigset_t>::uninit();
        libc::sigemptyset(empty.as_mut_ptr());
        libc::sigprocmask(libc::SIG_SETMASK, empty.as_ptr(), std::ptr::null_mut());
    }
    Ok(None)
}

/// Whether the calling process runs only one thread (/proc/self/stat field
/// 20); false when that cannot be read.
pub fn single_threaded() -> bool {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return false;
    };
    // The command name may hold spaces and parentheses: fields start after
    // the last ')'; the rest starts at field 3.
    stat.rfind(')')
        .and_then(|i| stat.get(i + 2..))
        .and_then(|rest| rest.split_whitespace().nth(17))
        .is_some_and(|n| n == "1")
}

/// Like [`single_threaded`], but gives a thread the caller joined a moment
/// ago time to be gone: the kernel wakes the joiner before it drops the
/// thread from the count.
pub fn settled_single_threaded() -> bool {
    for _ in 0..20 {
        if single_threaded() {
            return true;
        }
        std::thread::yield_now();
    }
    false
}

/// Ends the process at once: no exit handlers, no flushing of buffers a
/// forked child shares with its parent.
pub fn exit_now(code: i32) -> ! {
    // SAFETY: _exit(2) is always safe to call.
    unsafe { libc::_exit(code) }
}

/// Writes the bootstrap record for the current errno and exits.
///
/// # Safety
/// Only for the child of [`clone_exec`]; async-signal-safe.
unsafe fn child_fail(report_fd: RawFd) -> ! {
    let errno = *libc::__errno_location();
    let e = errno.to_le_bytes();
    let record = [BOOTSTRAP_TAG, e[0], e[1], e[2], e[3]];
    libc::write(report_fd, record.as_ptr().cast(), record.len());
    libc::_exit(127);
}

/// fork(2) in a process known to be single-threaded (the re-executed init).
/// Returns `None` in the child, the child's pid in the parent.
pub fn fork_single_threaded(parent_is_reaper: bool) -> nix::Result<Option<Pid>> {
    let mut flags = libc::SIGCHLD as libc::c_long;
    if parent_is_reaper {
        flags |= libc::CLONE_PARENT as libc::c_long;
    }
    // SAFETY: callers are the re-executed kiln init, which runs no other
    // thread, so the child may go on running arbitrary Rust code. Without
    // CLONE_VM and a new stack this is fork(2); with CLONE_PARENT the child
    // becomes a child of our parent instead of ours.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_clone,
            flags,
            0 as libc::c_long,
            0 as libc::c_long,
            0 as libc::c_long,
            0 as libc::c_long,
        )
    };
    match ret {
        r if r < 0 => Err(Errno::last()),
        0 => Ok(None),
        pid => Ok(Some(Pid::from_raw(pid as i32))),
    }
}

/// Loads a classic BPF seccomp program (`bpf` holds `struct sock_filter`
/// records, 8 bytes each) into the calling thread, see seccomp(2).
pub fn load_seccomp(bpf: &[u8]) -> nix::Result<()> {
    const FILTER_LEN: usize = std::mem::size_of::<libc::sock_filter>();
    if !bpf.len().is_multiple_of(FILTER_LEN) || bpf.is_empty() {
        return Err(Errno::EINVAL);
    }
    let filters: Vec<libc::sock_filter> = bpf
        .chunks_exact(FILTER_LEN)
        .map(|c| libc::sock_filter {
            code: u16::from_ne_bytes([c[0], c[1]]),
            jt: c[2],
            jf: c[3],
            k: u32::from_ne_bytes([c[4], c[5], c[6], c[7]]),
        })
        .collect();
    let prog = libc::sock_fprog {
        len: filters.len() as u16,
        filter: filters.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: prog points to `filters`, alive for the call; the kernel copies it.
    let ret = unsafe {
        libc::prctl(
            libc::PR_SET_SECCOMP,
            libc::SECCOMP_MODE_FILTER as libc::c_ulong,
            &prog as *const libc::sock_fprog,
        )
    };
    Errno::result(ret).map(drop)
}

/// Makes the terminal `fd` the controlling terminal of the calling session
/// leader (ioctl TIOCSCTTY, see ioctl_tty(2)).
pub fn set_controlling_terminal(fd: BorrowedFd<'_>) -> nix::Result<()> {
    // SAFETY: TIOCSCTTY takes an int argument, no memory is passed.
    let ret = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCSCTTY, 0 as libc::c_int) };
    Errno::result(ret).map(drop)
}

/// Terminal window size in character cells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowSize {
    /// Rows.
    pub rows: u16,
    /// Columns.
    pub cols: u16,
}

/// Reads the window size of terminal `fd` (TIOCGWINSZ).
pub fn window_size(fd: BorrowedFd<'_>) -> nix::Result<WindowSize> {
    let mut ws = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes one struct winsize to the pointer, which is valid.
    let ret = unsafe {
        libc::ioctl(
            fd.as_raw_fd(),
            libc::TIOCGWINSZ,
            &mut ws as *mut libc::winsize,
        )
    };
    Errno::result(ret)?;
    Ok(WindowSize {
        rows: ws.ws_row,
        cols: ws.ws_col,
    })
}

/// Sets the window size of terminal `fd` (TIOCSWINSZ).
pub fn set_window_size(fd: BorrowedFd<'_>, size: WindowSize) -> nix::Result<()> {
    let ws = libc::winsize {
        ws_row: size.rows,
        ws_col: size.cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads one struct winsize from the pointer, which is valid.
    let ret = unsafe {
        libc::ioctl(
            fd.as_raw_fd(),
            libc::TIOCSWINSZ,
            &ws as *const libc::winsize,
        )
    };
    Errno::result(ret).map(drop)
}

/// Brings the loopback interface of the current network namespace up
/// (SIOCGIFFLAGS / SIOCSIFFLAGS on a datagram socket, see netdevice(7)).
pub fn loopback_up() -> nix::Result<()> {
    use nix::sys::socket::{socket, AddressFamily, SockFlag, SockType};
    let sock = socket(
        AddressFamily::Inet,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS fills ifr_flags of the valid ifreq we pass.
    let ret = unsafe {
        libc::ioctl(
            sock.as_raw_fd(),
            libc::SIOCGIFFLAGS,
            &mut req as *mut libc::ifreq,
        )
    };
    Errno::result(ret)?;
    // SAFETY: the union member ifru_flags was set by the kernel just above.
    unsafe { req.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short };
    // SAFETY: SIOCSIFFLAGS reads the valid ifreq we pass.
    let ret = unsafe {
        libc::ioctl(
            sock.as_raw_fd(),
            libc::SIOCSIFFLAGS,
            &req as *const libc::ifreq,
        )
    };
    Errno::result(ret).map(drop)
}

/// Resets every signal disposition to the default and unblocks all signals,
/// so that the program exec'd next starts clean (Rust's runtime ignores
/// SIGPIPE, and an ignored disposition survives execve(2)).
pub fn reset_signals() {
    use nix::sys::signal::{sigprocmask, SigHandler, SigSet, SigmaskHow, Signal};
    for sig in Signal::iterator() {
        if matches!(sig, Signal::SIGKILL | Signal::SIGSTOP) {
            continue;
        }
        // SAFETY: installing SIG_DFL runs no code of ours in signal context.
        let _ = unsafe { nix::sys::signal::signal(sig, SigHandler::SigDfl) };
    }
    let _ = sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None);
}

/// Moves `fd` to a number >= `min` with close-on-exec set (F_DUPFD_CLOEXEC)
/// and closes the original.
pub fn move_fd_above(fd: std::os::fd::OwnedFd, min: RawFd) -> nix::Result<std::os::fd::OwnedFd> {
    use nix::fcntl::{fcntl, FcntlArg};
    let new = fcntl(&fd, FcntlArg::F_DUPFD_CLOEXEC(min))?;
    // SAFETY: fcntl just returned this new descriptor, owned by nobody else.
    Ok(unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(new) })
}

/// Adopts a descriptor number inherited through exec (our own hidden
/// protocol passes it).
///
/// Returns `None` when `fd` is not open.
pub fn adopt_inherited_fd(fd: RawFd) -> Option<std::os::fd::OwnedFd> {
    // SAFETY: F_GETFD only checks that the descriptor is open.
    let ret = unsafe { libc::fcntl(fd, libc::F_GETFD) };
    if ret < 0 {
        return None;
    }
    // SAFETY: the descriptor is open and was handed to this process by its
    // parent for exclusive use through the init protocol; nothing else owns it.
    Some(unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) })
}

/// Closes every descriptor from `first` up (close_range(2)), so nothing the
/// caller leaked without close-on-exec reaches the container.
pub fn close_fds_from(first: RawFd) {
    // SAFETY: called first thing in the re-executed init, before any Rust
    // object owning a descriptor >= `first` exists.
    unsafe {
        libc::syscall(
            libc::SYS_close_range,
            first as libc::c_uint,
            libc::c_uint::MAX,
            0 as libc::c_uint,
        )
    };
}

/// Closes the init protocol socket in the tiny init after it forked the
/// program: PID 1 must not hold it, or the caller never sees end-of-file.
pub fn close_protocol_socket(fd: RawFd) {
    // SAFETY: the only owner is a `File` in the init's entry frame that is
    // never used nor dropped again: PID 1 supervises and leaves through
    // process::exit, which runs no destructors.
    unsafe { libc::close(fd) };
}

/// setdomainname(2).
pub fn set_domainname(name: &str) -> nix::Result<()> {
    // SAFETY: the pointer and length describe `name`, alive for the call.
    let ret = unsafe { libc::setdomainname(name.as_ptr().cast(), name.len()) };
    Errno::result(ret).map(drop)
}

/// Loads an eBPF program of type BPF_PROG_TYPE_CGROUP_DEVICE (`insns` are
/// `struct bpf_insn` records, 8 bytes each, license "Apache-2.0") with the
/// bpf(2) BPF_PROG_LOAD command; returns the program's fd.
pub fn bpf_load_device_program(insns: &[u8]) -> nix::Result<OwnedFd> {
    const BPF_PROG_LOAD: libc::c_long = 5;
    const BPF_PROG_TYPE_CGROUP_DEVICE: u32 = 15;
    if insns.is_empty() || !insns.len().is_multiple_of(8) {
        return Err(Errno::EINVAL);
    }
    let license = c"Apache-2.0";
    // union bpf_attr, BPF_PROG_LOAD member (include/uapi/linux/bpf.h):
    // prog_type u32 @0, insn_cnt u32 @4, insns u64 @8, license u64 @16;
    // the rest (logging, name, flags) stays zero.
    let mut attr = [0u8; 128];
    attr[0..4].copy_from_slice(&BPF_PROG_TYPE_CGROUP_DEVICE.to_ne_bytes());
    attr[4..8].copy_from_slice(&((insns.len() / 8) as u32).to_ne_bytes());
    attr[8..16].copy_from_slice(&(insns.as_ptr() as u64).to_ne_bytes());
    attr[16..24].copy_from_slice(&(license.as_ptr() as u64).to_ne_bytes());
    // SAFETY: attr is a zeroed bpf_attr prefix whose pointers (insns,
    // license) stay alive for the call; the kernel copies what it reads.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_LOAD,
            attr.as_ptr(),
            attr.len() as libc::c_uint,
        )
    };
    let fd = Errno::result(ret)?;
    // SAFETY: bpf(2) returned a new fd that nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Attaches device program `program` to the cgroup directory `cgroup`
/// (bpf(2) BPF_PROG_ATTACH, attach type BPF_CGROUP_DEVICE, with
/// BPF_F_ALLOW_MULTI so programs of ancestors keep applying).
pub fn bpf_attach_device_program(
    cgroup: BorrowedFd<'_>,
    program: BorrowedFd<'_>,
) -> nix::Result<()> {
    const BPF_PROG_ATTACH: libc::c_long = 8;
    const BPF_CGROUP_DEVICE: u32 = 6;
    const BPF_F_ALLOW_MULTI: u32 = 2;
    // BPF_PROG_ATTACH member: target_fd u32 @0, attach_bpf_fd u32 @4,
    // attach_type u32 @8, attach_flags u32 @12.
    let mut attr = [0u8; 32];
    attr[0..4].copy_from_slice(&(cgroup.as_raw_fd() as u32).to_ne_bytes());
    attr[4..8].copy_from_slice(&(program.as_raw_fd() as u32).to_ne_bytes());
    attr[8..12].copy_from_slice(&BPF_CGROUP_DEVICE.to_ne_bytes());
    attr[12..16].copy_from_slice(&BPF_F_ALLOW_MULTI.to_ne_bytes());
    // SAFETY: attr is a zeroed bpf_attr prefix holding two fds borrowed
    // for the duration of the call.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_ATTACH,
            attr.as_ptr(),
            attr.len() as libc::c_uint,
        )
    };
    Errno::result(ret).map(drop)
}

/// CLOCK_MONOTONIC in milliseconds (comparable across processes, unlike
/// `Instant`).
pub fn monotonic_ms() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    if rc != 0 {
        return 0.0;
    }
    ts.tv_sec as f64 * 1000.0 + ts.tv_nsec as f64 / 1e6
}

/// Forks a child that outlives this process, in a session of its own, with
/// /dev/null as stdin, stdout and stderr and every other descriptor but
/// `keep` closed (so nobody waiting for this process's output waits for
/// it). Returns `None` in the child, its pid in the parent; fails with
/// EBUSY when this process runs other threads (a forked copy of a
/// multi-threaded process may only call async-signal-safe functions).
pub fn fork_detached(keep: RawFd) -> nix::Result<Option<Pid>> {
    if !settled_single_threaded() {
        return Err(Errno::EBUSY);
    }
    let null = nix::fcntl::open(
        "/dev/null",
        nix::fcntl::OFlag::O_RDWR | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )?;
    match fork_single_threaded(false)? {
        Some(pid) => Ok(Some(pid)),
        None => {
            // SAFETY: this is the forked child of a single-threaded
            // process; the descriptors are plain numbers, and nothing in
            // this process owns 0-2 as a Rust object it will use again
            // (std's handles write through the numbers, now /dev/null).
            unsafe {
                libc::setsid();
                for target in 0..3 {
                    libc::dup2(null.as_raw_fd(), target);
                }
                for fd in 3..=keep.max(2) {
                    if fd != keep {
                        libc::close(fd);
                    }
                }
            }
            close_fds_from(keep.max(2) + 1);
            std::mem::forget(null);
            Ok(None)
        }
    }
}
