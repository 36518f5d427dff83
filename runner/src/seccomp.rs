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
}
