//! Docker's defaults expressed as an OCI runtime spec, for callers to adjust.
//!
//! Sources: moby `oci/defaults.go` (capabilities, mounts, masked and
//! read-only paths, device cgroup rules) and moby
//! `profiles/seccomp/default.json` (the seccomp profile).

mod seccomp_profile;

use oci_spec::runtime::Spec;
use serde_json::json;

pub use seccomp_profile::docker_seccomp;

/// The capabilities docker grants by default.
pub const DEFAULT_CAPABILITIES: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// Paths docker hides from containers.
pub const DEFAULT_MASKED_PATHS: &[&str] = &[
    "/proc/asound",
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// Paths docker makes read-only in containers.
pub const DEFAULT_READONLY_PATHS: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// A spec with docker's defaults: `sh` as root in `/`, the default
/// capability set, namespaces (pid, net, ipc, uts, mount, cgroup), the
/// standard mounts, masked and read-only paths, the device cgroup allow list,
/// docker's seccomp profile resolved for the default capabilities,
/// `RLIMIT_NOFILE` 1048576 (clamped to the hard limit at start) and
/// no_new_privs. `root.path` is `rootfs`; callers pass the real rootfs path
/// when they start the container.
///
/// After changing capabilities, recompute the filter with
/// [`docker_seccomp`] so the syscalls they unlock are allowed.
pub fn default_spec() -> Spec {
    let caps = DEFAULT_CAPABILITIES;
    let value = json!({
        "ociVersion": "1.0.2",
        "root": {"path": "rootfs", "readonly": false},
        "hostname": "kiln",
        "process": {
            "terminal": false,
            "user": {"uid": 0, "gid": 0},
            "args": ["sh"],
            "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "cwd": "/",
            "capabilities": {
                "bounding": caps,
                "effective": caps,
                "permitted": caps,
            },
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1048576u64, "soft": 1048576u64}],
            "noNewPrivileges": true,
        },
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
            {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
             "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
            {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]},
            {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
             "options": ["ro", "nosuid", "noexec", "nodev"]},
            {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]},
            {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
             "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
        ],
        "linux": {
            "namespaces": [
                {"type": "pid"}, {"type": "network"}, {"type": "ipc"}, {"type": "uts"},
                {"type": "mount"}, {"type": "cgroup"},
            ],
            "maskedPaths": DEFAULT_MASKED_PATHS,
            "readonlyPaths": DEFAULT_READONLY_PATHS,
            "resources": {"devices": default_device_rules()},
            "seccomp": docker_seccomp(caps),
        },
    });
    serde_json::from_value(value).expect("the default spec literal matches the OCI schema")
}

/// docker's device cgroup rules: deny everything, then allow creating
/// character devices and using the standard ones. Unlike docker, creating
/// block devices (`b *:* m`) is not allowed.
fn default_device_rules() -> serde_json::Value {
    let dev = |typ: &str, major: Option<i64>, minor: Option<i64>, access: &str| {
        let mut rule = json!({"allow": true, "type": typ, "access": access});
        if let Some(major) = major {
            rule["major"] = json!(major);
        }
        if let Some(minor) = minor {
            rule["minor"] = json!(minor);
        }
        rule
    };
    json!([
        {"allow": false, "access": "rwm"},
        dev("c", None, None, "m"),
        dev("c", Some(1), Some(3), "rwm"),   // null
        dev("c", Some(1), Some(5), "rwm"),   // zero
        dev("c", Some(1), Some(7), "rwm"),   // full
        dev("c", Some(1), Some(8), "rwm"),   // random
        dev("c", Some(1), Some(9), "rwm"),   // urandom
        dev("c", Some(5), Some(0), "rwm"),   // tty
        dev("c", Some(5), Some(1), "rwm"),   // console
        dev("c", Some(5), Some(2), "rwm"),   // ptmx
        dev("c", Some(136), None, "rwm"),    // pts/*
        dev("c", Some(10), Some(200), "rwm"), // net/tun
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_docker() {
        let spec = default_spec();
        let process = spec.process().as_ref().unwrap();
        assert_eq!(process.no_new_privileges(), Some(true));
        let caps = process.capabilities().as_ref().unwrap();
        let bounding = caps.bounding().as_ref().unwrap();
        assert_eq!(bounding.len(), 14);
        assert!(caps.inheritable().is_none());
        let linux = spec.linux().as_ref().unwrap();
        assert_eq!(linux.namespaces().as_ref().unwrap().len(), 6);
        assert!(linux
            .masked_paths()
            .as_ref()
            .unwrap()
            .contains(&"/proc/kcore".to_string()));
        assert!(linux
            .readonly_paths()
            .as_ref()
            .unwrap()
            .contains(&"/proc/sysrq-trigger".to_string()));
        let devices = linux
            .resources()
            .as_ref()
            .unwrap()
            .devices()
            .as_ref()
            .unwrap();
        assert!(!devices[0].allow());
        let mounts = spec.mounts().as_ref().unwrap();
        let dests: Vec<_> = mounts
            .iter()
            .map(|m| m.destination().to_str().unwrap())
            .collect();
        assert_eq!(
            dests,
            [
                "/proc",
                "/dev",
                "/dev/pts",
                "/sys",
                "/sys/fs/cgroup",
                "/dev/mqueue",
                "/dev/shm"
            ]
        );
    }

    #[test]
    fn default_spec_round_trips_through_json() {
        let spec = default_spec();
        let text = serde_json::to_string(&spec).unwrap();
        let back: Spec = serde_json::from_str(&text).unwrap();
        assert_eq!(spec, back);
    }
}
