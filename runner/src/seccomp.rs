//! Compiling the spec's `linux.seccomp` to a BPF program with libseccomp, in
//! the caller's process, so the container's init only loads finished bytes.
//!
//! Semantics follow OCI config-linux.md "Seccomp" as runc implements them:
//! args with distinct indexes AND together; several args on the same index
//! become one rule each (OR); for SCMP_CMP_MASKED_EQ `value` is the mask and
//! `valueTwo` the expected result. Syscall names unknown to this architecture
//! are skipped.

use std::io::{Read, Seek};

use libseccomp::{
    ScmpAction, ScmpArch, ScmpArgCompare, ScmpCompareOp, ScmpFilterContext, ScmpSyscall,
};
use oci_spec::runtime::{
    Arch, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArg, LinuxSeccompOperator,
};

use crate::{Error, Result};

fn seccomp_err(source: libseccomp::error::SeccompError) -> Error {
    Error::Seccomp { source }
}

fn action(action: LinuxSeccompAction, errno: Option<u32>) -> Result<ScmpAction> {
    Ok(match action {
        LinuxSeccompAction::ScmpActKill | LinuxSeccompAction::ScmpActKillThread => {
            ScmpAction::KillThread
        }
        LinuxSeccompAction::ScmpActKillProcess => ScmpAction::KillProcess,
        LinuxSeccompAction::ScmpActTrap => ScmpAction::Trap,
        LinuxSeccompAction::ScmpActErrno => {
            ScmpAction::Errno(errno.unwrap_or(libc::EPERM as u32) as i32)
        }
        LinuxSeccompAction::ScmpActTrace => {
            ScmpAction::Trace(errno.unwrap_or(libc::EPERM as u32) as u16)
        }
        LinuxSeccompAction::ScmpActLog => ScmpAction::Log,
        LinuxSeccompAction::ScmpActAllow => ScmpAction::Allow,
        LinuxSeccompAction::ScmpActNotify => {
            return Err(Error::Unsupported {
                what: "seccomp action SCMP_ACT_NOTIFY".into(),
            })
        }
    })
}

fn arch(arch: Arch) -> Option<ScmpArch> {
    Some(match arch {
        Arch::ScmpArchNative => ScmpArch::Native,
        Arch::ScmpArchX86 => ScmpArch::X86,
        Arch::ScmpArchX86_64 => ScmpArch::X8664,
        Arch::ScmpArchX32 => ScmpArch::X32,
        Arch::ScmpArchArm => ScmpArch::Arm,
        Arch::ScmpArchAarch64 => ScmpArch::Aarch64,
        Arch::ScmpArchRiscv64 => ScmpArch::Riscv64,
        Arch::ScmpArchS390x => ScmpArch::S390X,
        Arch::ScmpArchPpc64le => ScmpArch::Ppc64Le,
        _ => return None,
    })
}

fn compare(arg: &LinuxSeccompArg) -> ScmpArgCompare {
    let op = match arg.op() {
        LinuxSeccompOperator::ScmpCmpNe => ScmpCompareOp::NotEqual,
        LinuxSeccompOperator::ScmpCmpLt => ScmpCompareOp::Less,
        LinuxSeccompOperator::ScmpCmpLe => ScmpCompareOp::LessOrEqual,
        LinuxSeccompOperator::ScmpCmpEq => ScmpCompareOp::Equal,
        LinuxSeccompOperator::ScmpCmpGe => ScmpCompareOp::GreaterEqual,
        LinuxSeccompOperator::ScmpCmpGt => ScmpCompareOp::Greater,
        LinuxSeccompOperator::ScmpCmpMaskedEq => {
            return ScmpArgCompare::new(
                arg.index() as u32,
                ScmpCompareOp::MaskedEqual(arg.value()),
                arg.value_two().unwrap_or(0),
            )
        }
    };
    ScmpArgCompare::new(arg.index() as u32, op, arg.value())
}

/// Compiles `profile` to a BPF program: `struct sock_filter` records in
/// native byte order, ready for seccomp(2).
pub fn compile(profile: &LinuxSeccomp) -> Result<Vec<u8>> {
    let default = action(profile.default_action(), profile.default_errno_ret())?;
    let mut ctx = ScmpFilterContext::new(default).map_err(seccomp_err)?;
    // We set no_new_privs ourselves, when the spec asks for it.
    ctx.set_ctl_nnp(false).map_err(seccomp_err)?;
    // A binary tree of syscall numbers instead of one long list: docker's
    // profile checks a syscall in a few dozen instructions instead of
    // hundreds, and loading it costs the kernel far less (at load it runs
    // the filter for every syscall number to build its allow cache: 0.7 ms
    // of each container start with the list).
    ctx.set_ctl_optimize(2).map_err(seccomp_err)?;
    for a in profile
        .architectures()
        .iter()
        .flatten()
        .filter_map(|a| arch(*a))
    {
        if a != ScmpArch::native() {
            ctx.add_arch(a).map_err(seccomp_err)?;
        }
    }
    for rule in profile.syscalls().iter().flatten() {
        let act = action(rule.action(), rule.errno_ret())?;
        if act == default {
            continue;
        }
        let args = rule.args().as_deref().unwrap_or(&[]);
        let mut indexes: Vec<usize> = args.iter().map(|a| a.index()).collect();
        indexes.sort_unstable();
        indexes.dedup();
        let distinct = indexes.len() == args.len();
        for name in rule.names() {
            let Ok(syscall) = ScmpSyscall::from_name(name) else {
                continue;
            };
            if args.is_empty() {
                ctx.add_rule(act, syscall).map_err(seccomp_err)?;
            } else if distinct {
                let cmps: Vec<_> = args.iter().map(compare).collect();
                ctx.add_rule_conditional(act, syscall, &cmps)
                    .map_err(seccomp_err)?;
            } else {
                for arg in args {
                    ctx.add_rule_conditional(act, syscall, &[compare(arg)])
                        .map_err(seccomp_err)?;
                }
            }
        }
    }
    export(&ctx)
}

/// Directory of compiled filters shared between kiln processes (tmpfs:
/// gone at reboot, when libseccomp may have changed).
const CACHE_DIR: &str = "/run/kiln/seccomp";

/// [`compile`] with a cache: in this process, and on disk under
/// /run/kiln/seccomp. libseccomp takes tens of milliseconds for docker's
/// profile on three architectures, more than the rest of a container start.
/// An entry holds the profile's JSON next to the program and is used only
/// when that JSON is identical, so a hash collision cannot hand out the
/// wrong filter. Cache failures fall back to compiling.
pub fn compile_cached(profile: &LinuxSeccomp) -> Result<std::sync::Arc<Vec<u8>>> {
    use std::collections::HashMap;
    use std::hash::{Hash, Hasher};
    use std::sync::{Arc, Mutex, OnceLock};

    /// Profile JSON -> program.
    type Cache = Mutex<HashMap<Vec<u8>, Arc<Vec<u8>>>>;
    static MEMORY: OnceLock<Cache> = OnceLock::new();
    // The format tag keeps programs compiled another way (before the
    // binary tree) from being used.
    let mut key = b"kiln-bpf-tree\n".to_vec();
    key.extend(serde_json::to_vec(profile).expect("a LinuxSeccomp always serializes"));
    let memory = MEMORY.get_or_init(Default::default);
    if let Some(bpf) = memory.lock().ok().and_then(|m| m.get(&key).cloned()) {
        return Ok(bpf);
    }
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    key.hash(&mut hasher);
    std::env::consts::ARCH.hash(&mut hasher);
    let path = std::path::Path::new(CACHE_DIR).join(format!("{:016x}.bpf", hasher.finish()));
    let bpf = match read_entry(&path, &key) {
        Some(bpf) => bpf,
        None => {
            let bpf = compile(profile)?;
            write_entry(&path, &key, &bpf);
            bpf
        }
    };
    let bpf = Arc::new(bpf);
    if let Ok(mut m) = memory.lock() {
        m.insert(key, bpf.clone());
    }
    Ok(bpf)
}

/// An entry is `[u32 LE json length][json][bpf]`.
fn read_entry(path: &std::path::Path, key: &[u8]) -> Option<Vec<u8>> {
    let data = std::fs::read(path).ok()?;
    let len = u32::from_le_bytes(data.get(..4)?.try_into().ok()?) as usize;
    let stored = data.get(4..4 + len)?;
    let bpf = data.get(4 + len..)?;
    (stored == key && !bpf.is_empty() && bpf.len() % 8 == 0).then(|| bpf.to_vec())
}

/// Writes an entry atomically (temp file, rename); errors only cost speed.
fn write_entry(path: &std::path::Path, key: &[u8], bpf: &[u8]) {
    let Some(dir) = path.parent() else { return };
    if std::fs::create_dir_all(dir).is_err() {
        return;
    }
    let mut data = Vec::with_capacity(4 + key.len() + bpf.len());
    data.extend_from_slice(&(key.len() as u32).to_le_bytes());
    data.extend_from_slice(key);
    data.extend_from_slice(bpf);
    let tmp = {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        path.with_extension(format!("tmp{}-{n}", std::process::id()))
    };
    if std::fs::write(&tmp, &data).is_ok() && std::fs::rename(&tmp, path).is_ok() {
        return;
    }
    let _ = std::fs::remove_file(&tmp);
}

/// libseccomp 2.5 exports only to a file descriptor: use an anonymous file.
fn export(ctx: &ScmpFilterContext) -> Result<Vec<u8>> {
    let fd = nix::sys::memfd::memfd_create(c"kiln-seccomp", nix::sys::memfd::MFdFlags::MFD_CLOEXEC)
        .map_err(Error::sys("create memfd for seccomp export"))?;
    let mut file = std::fs::File::from(fd);
    ctx.export_bpf(&file).map_err(seccomp_err)?;
    let mut bpf = Vec::new();
    file.rewind()
        .and_then(|_| file.read_to_end(&mut bpf))
        .map_err(Error::protocol("read the exported seccomp filter for"))?;
    Ok(bpf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_profile_compiles() {
        let profile = crate::spec::docker_seccomp(crate::spec::DEFAULT_CAPABILITIES);
        let bpf = compile(&profile).unwrap();
        assert!(!bpf.is_empty());
        assert_eq!(bpf.len() % 8, 0);
    }

    #[test]
    fn cache_entries_are_checked_against_the_profile() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.bpf");
        write_entry(&path, b"profile-a", &[1u8; 16]);
        assert_eq!(read_entry(&path, b"profile-a"), Some(vec![1u8; 16]));
        assert_eq!(read_entry(&path, b"profile-b"), None);
    }
}
