//! Device rules on cgroup v2: the kernel has no devices.allow file there;
//! instead an eBPF program of type BPF_PROG_TYPE_CGROUP_DEVICE, attached to
//! the cgroup, decides each open and mknod of a device node (kernel
//! Documentation/admin-guide/cgroup-v2.rst "Device controller",
//! include/uapi/linux/bpf.h `struct bpf_cgroup_dev_ctx`).
//!
//! The program is built here from the spec's rules with a minimal encoder
//! of `struct bpf_insn` (a documented kernel ABI, see
//! Documentation/bpf/standardization/instruction-set.rst). Rules are
//! checked last to first and the first that matches decides, which is what
//! applying them in order means (a later rule overrides an earlier one);
//! a rule matching everything ends the program; when none matches the
//! access is allowed, as in a fresh v1 devices cgroup.

use std::os::fd::AsFd;
use std::path::Path;

use oci_spec::runtime::{LinuxDeviceCgroup, LinuxDeviceType};

use crate::{Error, Result};

// Opcodes (instruction-set.rst): class | operation | source.
const LDX_MEM_W: u8 = 0x61; // BPF_LDX | BPF_MEM | BPF_W
const ALU32_AND_K: u8 = 0x54; // BPF_ALU | BPF_AND | BPF_K
const ALU32_RSH_K: u8 = 0x74; // BPF_ALU | BPF_RSH | BPF_K
const ALU32_MOV_X: u8 = 0xbc; // BPF_ALU | BPF_MOV | BPF_X
const ALU64_MOV_K: u8 = 0xb7; // BPF_ALU64 | BPF_MOV | BPF_K
const JMP_JNE_K: u8 = 0x55; // BPF_JMP | BPF_JNE | BPF_K
const JMP_JNE_X: u8 = 0x5d; // BPF_JMP | BPF_JNE | BPF_X
const JMP_EXIT: u8 = 0x95; // BPF_JMP | BPF_EXIT

// bpf_cgroup_dev_ctx.access_type: device type in the low 16 bits, access
// in the high 16 bits.
const DEV_BLOCK: i32 = 1;
const DEV_CHAR: i32 = 2;
const ACCESS_MKNOD: i32 = 1;
const ACCESS_READ: i32 = 2;
const ACCESS_WRITE: i32 = 4;

/// One `struct bpf_insn`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Insn {
    pub code: u8,
    pub dst: u8,
    pub src: u8,
    pub off: i16,
    pub imm: i32,
}

impl Insn {
    fn new(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
        Insn {
            code,
            dst,
            src,
            off,
            imm,
        }
    }

    /// The 8 bytes the kernel reads (little-endian hosts put dst in the low nibble).
    pub fn encode(&self) -> [u8; 8] {
        let mut out = [0u8; 8];
        out[0] = self.code;
        out[1] = if cfg!(target_endian = "little") {
            (self.src << 4) | (self.dst & 0x0f)
        } else {
            (self.dst << 4) | (self.src & 0x0f)
        };
        out[2..4].copy_from_slice(&self.off.to_ne_bytes());
        out[4..8].copy_from_slice(&self.imm.to_ne_bytes());
        out
    }
}

fn access_bits(access: &str) -> i32 {
    access.chars().fold(0, |bits, c| {
        bits | match c {
            'r' => ACCESS_READ,
            'w' => ACCESS_WRITE,
            'm' => ACCESS_MKNOD,
            _ => 0,
        }
    })
}

/// The program for `rules`. Registers: r1 the context, then r2 the device
/// type, r3 the access, r4 the major, r5 the minor; r1 is scratch after
/// the loads.
pub fn program(rules: &[LinuxDeviceCgroup]) -> Vec<Insn> {
    let mut out = vec![
        Insn::new(LDX_MEM_W, 2, 1, 0, 0),
        Insn::new(ALU32_AND_K, 2, 0, 0, 0xffff),
        Insn::new(LDX_MEM_W, 3, 1, 0, 0),
        Insn::new(ALU32_RSH_K, 3, 0, 0, 16),
        Insn::new(LDX_MEM_W, 4, 1, 4, 0),
        Insn::new(LDX_MEM_W, 5, 1, 8, 0),
    ];
    for rule in rules.iter().rev() {
        // Each check is a run of instructions ending in a jump past the block.
        let mut checks: Vec<Vec<Insn>> = Vec::new();
        match rule.typ().unwrap_or(LinuxDeviceType::A) {
            LinuxDeviceType::A => {}
            LinuxDeviceType::B => checks.push(vec![Insn::new(JMP_JNE_K, 2, 0, 0, DEV_BLOCK)]),
            // c, u (unbuffered char) and p (fifo, never a device check) as char.
            _ => checks.push(vec![Insn::new(JMP_JNE_K, 2, 0, 0, DEV_CHAR)]),
        }
        let access = access_bits(rule.access().as_deref().unwrap_or("rwm"));
        if access != ACCESS_READ | ACCESS_WRITE | ACCESS_MKNOD {
            // Applies only when every requested access is in the rule's.
            checks.push(vec![
                Insn::new(ALU32_MOV_X, 1, 3, 0, 0),
                Insn::new(ALU32_AND_K, 1, 0, 0, access),
                Insn::new(JMP_JNE_X, 1, 3, 0, 0),
            ]);
        }
        if let Some(major) = rule.major().filter(|m| *m >= 0) {
            checks.push(vec![Insn::new(JMP_JNE_K, 4, 0, 0, major as i32)]);
        }
        if let Some(minor) = rule.minor().filter(|m| *m >= 0) {
            checks.push(vec![Insn::new(JMP_JNE_K, 5, 0, 0, minor as i32)]);
        }
        if checks.is_empty() {
            // Matches everything: it decides, and the verifier refuses the
            // unreachable code that would follow.
            out.push(Insn::new(ALU64_MOV_K, 0, 0, 0, i32::from(rule.allow())));
            out.push(Insn::new(JMP_EXIT, 0, 0, 0, 0));
            return out;
        }
        let total: usize = checks.iter().map(Vec::len).sum::<usize>() + 2;
        let mut done = 0;
        for mut check in checks {
            done += check.len();
            let last = check.last_mut().expect("every check has a jump");
            last.off = (total - done) as i16;
            out.extend(check);
        }
        out.push(Insn::new(ALU64_MOV_K, 0, 0, 0, i32::from(rule.allow())));
        out.push(Insn::new(JMP_EXIT, 0, 0, 0, 0));
    }
    out.push(Insn::new(ALU64_MOV_K, 0, 0, 0, 1));
    out.push(Insn::new(JMP_EXIT, 0, 0, 0, 0));
    out
}

/// Loads the program for `rules` and attaches it to the cgroup v2
/// directory `dir` (any cgroup2 mount, also the unified one of a hybrid
/// host: device programs are not a controller).
pub fn attach(dir: &Path, rules: &[LinuxDeviceCgroup]) -> Result<()> {
    let bytes: Vec<u8> = program(rules).iter().flat_map(Insn::encode).collect();
    let err = |op: &'static str| {
        move |e: nix::errno::Errno| Error::Cgroup {
            op,
            path: dir.to_path_buf(),
            source: e.into(),
        }
    };
    let prog =
        crate::sys::bpf_load_device_program(&bytes).map_err(err("load the device program for"))?;
    let cgroup = nix::fcntl::open(
        dir,
        nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_DIRECTORY | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(err("open"))?;
    crate::sys::bpf_attach_device_program(cgroup.as_fd(), prog.as_fd())
        .map_err(err("attach the device program to"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::LinuxDeviceCgroupBuilder;

    fn rule(
        allow: bool,
        typ: LinuxDeviceType,
        major: Option<i64>,
        access: &str,
    ) -> LinuxDeviceCgroup {
        let mut b = LinuxDeviceCgroupBuilder::default()
            .allow(allow)
            .typ(typ)
            .access(access);
        if let Some(m) = major {
            b = b.major(m).minor(3);
        }
        b.build().unwrap()
    }

    #[test]
    fn rules_become_checks_last_first() {
        let rules = [
            rule(false, LinuxDeviceType::A, None, "rwm"),
            rule(true, LinuxDeviceType::C, Some(1), "rw"),
        ];
        let p = program(&rules);
        // 6 loads; the allow rule: type, access (3), major, minor, ret; the
        // deny-all rule: ret, and nothing after it (unreachable).
        assert_eq!(p.len(), 6 + (1 + 3 + 1 + 1 + 2) + 2);
        // The last rule comes first: its type check skips its whole block.
        assert_eq!(p[6], Insn::new(JMP_JNE_K, 2, 0, 7, DEV_CHAR));
        assert_eq!(p[9], Insn::new(JMP_JNE_X, 1, 3, 4, 0));
        assert_eq!(p[10], Insn::new(JMP_JNE_K, 4, 0, 3, 1));
        assert_eq!(p[11], Insn::new(JMP_JNE_K, 5, 0, 2, 3));
        assert_eq!(p[12], Insn::new(ALU64_MOV_K, 0, 0, 0, 1));
        assert_eq!(p[14], Insn::new(ALU64_MOV_K, 0, 0, 0, 0));
        // Without a catch-all rule the default allows.
        let p = program(&rules[1..]);
        assert_eq!(p[p.len() - 2], Insn::new(ALU64_MOV_K, 0, 0, 0, 1));
    }

    #[test]
    fn encoding_matches_the_abi() {
        // r2 = *(u32 *)(r1 + 4)
        assert_eq!(
            Insn::new(LDX_MEM_W, 2, 1, 4, 0).encode(),
            [0x61, 0x12, 4, 0, 0, 0, 0, 0]
        );
    }
}
