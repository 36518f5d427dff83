//! The container's mount plan: a pure list of steps computed from the spec
//! ([`plan`]) and the code that performs it inside the new mount namespace
//! ([`apply`], run by the re-executed init).
//!
//! References: OCI runtime spec `config.md` (mounts, root) and
//! `config-linux.md` (devices, maskedPaths, readonlyPaths,
//! rootfsPropagation); mount(2), pivot_root(2).

mod apply;
mod options;

use std::path::{Path, PathBuf};

use oci_spec::runtime::{LinuxDeviceType, Spec};
use serde::{Deserialize, Serialize};

pub(crate) use apply::{apply_after_pivot, apply_before_pivot, bind_console};
pub use options::parse_options;

/// What a device node is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DeviceKind {
    /// Character device.
    Char,
    /// Block device.
    Block,
    /// Named pipe.
    Fifo,
}

/// One step of setting up the container's root filesystem. Container paths
/// (`target`) are absolute paths inside the container; before the pivot they
/// are resolved under the rootfs without leaving it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MountOp {
    /// Change the propagation of every mount (`flags` holds one of MS_SLAVE,
    /// MS_PRIVATE, MS_SHARED, MS_UNBINDABLE with MS_REC), so nothing we mount
    /// leaks back to the host.
    RootPropagation { flags: u64 },
    /// Bind the rootfs onto itself: pivot_root(2) needs a mount point.
    BindRootfs,
    /// mount(2) `source` on `target`; `is_file` creates the target as an empty
    /// file instead of a directory (binding a file). `source` is a host path
    /// for binds, else a name such as `proc`.
    Mount {
        source: PathBuf,
        target: PathBuf,
        fstype: String,
        flags: u64,
        data: String,
        is_file: bool,
    },
    /// Remount an existing bind mount at `target` with `flags` (MS_BIND and
    /// MS_REMOUNT are added), e.g. to make it read-only: a bind mount ignores
    /// MS_RDONLY on creation.
    RemountBind { target: PathBuf, flags: u64 },
    /// Set the propagation (`flags`) of the mount at `target`.
    Propagation { target: PathBuf, flags: u64 },
    /// Create a device node (mknod(2)) and chown it.
    Mknod {
        target: PathBuf,
        kind: DeviceKind,
        major: u64,
        minor: u64,
        mode: u32,
        uid: u32,
        gid: u32,
    },
    /// Create a symbolic link `target` -> `points_to`.
    Symlink { target: PathBuf, points_to: PathBuf },
    /// pivot_root(2) into the rootfs and detach the old root. Steps after it
    /// see container paths directly.
    PivotRoot,
    /// Hide `target`: bind /dev/null over a file, an empty read-only tmpfs over
    /// a directory. Missing paths are skipped.
    Mask { target: PathBuf },
    /// Make `target` read-only (bind onto itself, remount read-only). Missing
    /// paths are skipped.
    Readonly { target: PathBuf },
    /// Remount the root read-only (`root.readonly`).
    RootReadonly,
}

/// How the host's cgroups look, which decides what `/sys/fs/cgroup` gets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CgroupMounts {
    /// A unified (v2) host: one cgroup2 mount.
    Unified,
    /// A v1 (or hybrid) host: a tmpfs holding one cgroup mount per hierarchy
    /// the container was put in; each entry is the comma-separated controller
    /// list of a hierarchy (`"cpu,cpuacct"`, `"memory"`).
    Legacy(Vec<String>),
}

/// Host facts the plan depends on, gathered by the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanContext {
    /// What `/sys/fs/cgroup` should hold.
    pub cgroup: CgroupMounts,
}

/// Device nodes every container gets (OCI config-linux.md "Default
/// Devices"): path, major, minor.
const DEFAULT_DEVICES: &[(&str, u64, u64)] = &[
    ("/dev/null", 1, 3),
    ("/dev/zero", 1, 5),
    ("/dev/full", 1, 7),
    ("/dev/random", 1, 8),
    ("/dev/urandom", 1, 9),
    ("/dev/tty", 5, 0),
];

/// Symbolic links every container gets under /dev (OCI config-linux.md
/// "Default Devices" plus the /proc links runc and docker add).
const DEFAULT_LINKS: &[(&str, &str)] = &[
    ("/dev/fd", "/proc/self/fd"),
    ("/dev/stdin", "/proc/self/fd/0"),
    ("/dev/stdout", "/proc/self/fd/1"),
    ("/dev/stderr", "/proc/self/fd/2"),
    ("/dev/ptmx", "pts/ptmx"),
    ("/dev/core", "/proc/kcore"),
];

/// Computes the mount plan for `spec`, in order. Pure: touches nothing.
pub fn plan(spec: &Spec, context: &PlanContext) -> crate::Result<Vec<MountOp>> {
    use nix::mount::MsFlags;

    let linux = spec.linux().as_ref();
    let mut ops = Vec::new();

    let propagation = match linux.and_then(|l| l.rootfs_propagation().as_deref()) {
        None | Some("") | Some("rslave") | Some("slave") => MsFlags::MS_SLAVE,
        Some("rprivate") | Some("private") => MsFlags::MS_PRIVATE,
        Some("rshared") | Some("shared") => MsFlags::MS_SHARED,
        Some("runbindable") | Some("unbindable") => MsFlags::MS_UNBINDABLE,
        Some(other) => {
            return Err(crate::Error::InvalidSpec {
                what: format!("rootfsPropagation {other:?}"),
            })
        }
    };
    ops.push(MountOp::RootPropagation {
        flags: (propagation | MsFlags::MS_REC).bits(),
    });
    ops.push(MountOp::BindRootfs);

    let mut has_dev = false;
    for mount in spec.mounts().iter().flatten() {
        let target = mount.destination().clone();
        if !target.is_absolute() {
            return Err(crate::Error::InvalidSpec {
                what: format!("mount destination {} is not absolute", target.display()),
            });
        }
        let fstype = mount.typ().clone().unwrap_or_default();
        let options = parse_options(mount.options().as_deref().unwrap_or(&[]));
        if target == Path::new("/dev") {
            has_dev = true;
        }
        if fstype == "cgroup" || fstype == "cgroup2" {
            push_cgroup_mounts(&mut ops, &target, options.flags, &context.cgroup);
            continue;
        }
        let is_bind = fstype == "bind" || options.flags.contains(MsFlags::MS_BIND);
        let source = mount
            .source()
            .clone()
            .unwrap_or_else(|| PathBuf::from(&fstype));
        if is_bind {
            let bind_flags = MsFlags::MS_BIND | (options.flags & MsFlags::MS_REC);
            ops.push(MountOp::Mount {
                is_file: false,
                source,
                target: target.clone(),
                fstype: String::new(),
                flags: bind_flags.bits(),
                data: String::new(),
            });
            let rest = options.flags & !(MsFlags::MS_BIND | MsFlags::MS_REC);
            if !rest.is_empty() {
                ops.push(MountOp::RemountBind {
                    target: target.clone(),
                    flags: rest.bits(),
                });
            }
        } else {
            ops.push(MountOp::Mount {
                is_file: false,
                source,
                target: target.clone(),
                fstype,
                flags: options.flags.bits(),
                data: options.data.join(","),
            });
        }
        if !options.propagation.is_empty() {
            ops.push(MountOp::Propagation {
                target,
                flags: options.propagation.bits(),
            });
        }
    }

    if has_dev {
        for &(path, major, minor) in DEFAULT_DEVICES {
            ops.push(MountOp::Mknod {
                target: path.into(),
                kind: DeviceKind::Char,
                major,
                minor,
                mode: 0o666,
                uid: 0,
                gid: 0,
            });
        }
        for &(link, points_to) in DEFAULT_LINKS {
            ops.push(MountOp::Symlink {
                target: link.into(),
                points_to: points_to.into(),
            });
        }
    }
    for device in linux
        .and_then(|l| l.devices().as_ref())
        .into_iter()
        .flatten()
    {
        let kind = match device.typ() {
            LinuxDeviceType::C | LinuxDeviceType::U => DeviceKind::Char,
            LinuxDeviceType::B => DeviceKind::Block,
            LinuxDeviceType::P => DeviceKind::Fifo,
            LinuxDeviceType::A => {
                return Err(crate::Error::InvalidSpec {
                    what: format!("device {} of type a", device.path().display()),
                })
            }
        };
        ops.push(MountOp::Mknod {
            target: device.path().clone(),
            kind,
            major: device.major().max(0) as u64,
            minor: device.minor().max(0) as u64,
            mode: device.file_mode().unwrap_or(0o666),
            uid: device.uid().unwrap_or(0),
            gid: device.gid().unwrap_or(0),
        });
    }

    ops.push(MountOp::PivotRoot);

    for path in linux
        .and_then(|l| l.masked_paths().as_ref())
        .into_iter()
        .flatten()
    {
        ops.push(MountOp::Mask {
            target: path.into(),
        });
    }
    for path in linux
        .and_then(|l| l.readonly_paths().as_ref())
        .into_iter()
        .flatten()
    {
        ops.push(MountOp::Readonly {
            target: path.into(),
        });
    }
    if spec
        .root()
        .as_ref()
        .and_then(|r| r.readonly())
        .unwrap_or(false)
    {
        ops.push(MountOp::RootReadonly);
    }
    Ok(ops)
}

/// The steps for a `cgroup` mount at `target`, which depend on the host: a
/// cgroup2 mount, or a tmpfs with one cgroup v1 mount per joined hierarchy,
/// made read-only afterwards when asked.
fn push_cgroup_mounts(
    ops: &mut Vec<MountOp>,
    target: &Path,
    flags: nix::mount::MsFlags,
    cgroup: &CgroupMounts,
) {
    use nix::mount::MsFlags;
    let safe = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    match cgroup {
        CgroupMounts::Unified => ops.push(MountOp::Mount {
            source: "cgroup".into(),
            target: target.into(),
            fstype: "cgroup2".into(),
            flags: (flags | safe).bits(),
            data: String::new(),
            is_file: false,
        }),
        CgroupMounts::Legacy(hierarchies) => {
            ops.push(MountOp::Mount {
                source: "tmpfs".into(),
                target: target.into(),
                fstype: "tmpfs".into(),
                flags: safe.bits(),
                data: "mode=755".into(),
                is_file: false,
            });
            for controllers in hierarchies {
                ops.push(MountOp::Mount {
                    source: "cgroup".into(),
                    target: target.join(controllers),
                    fstype: "cgroup".into(),
                    flags: (flags | safe).bits(),
                    data: controllers.clone(),
                    is_file: false,
                });
                if controllers.contains(',') {
                    for name in controllers.split(',') {
                        ops.push(MountOp::Symlink {
                            target: target.join(name),
                            points_to: controllers.into(),
                        });
                    }
                }
            }
            if flags.contains(MsFlags::MS_RDONLY) {
                ops.push(MountOp::Mount {
                    source: "tmpfs".into(),
                    target: target.into(),
                    fstype: String::new(),
                    flags: (MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | safe).bits(),
                    data: "mode=755".into(),
                    is_file: false,
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use nix::mount::MsFlags;

    use super::*;
    use crate::default_spec;

    fn legacy() -> PlanContext {
        PlanContext {
            cgroup: CgroupMounts::Legacy(vec!["memory".into(), "cpu,cpuacct".into()]),
        }
    }

    #[test]
    fn default_plan_order() {
        let ops = plan(&default_spec(), &legacy()).unwrap();
        assert!(matches!(ops[0], MountOp::RootPropagation { .. }));
        assert_eq!(ops[1], MountOp::BindRootfs);
        let pivot = ops.iter().position(|o| *o == MountOp::PivotRoot).unwrap();
        let proc_pos = ops
            .iter()
            .position(|o| matches!(o, MountOp::Mount { fstype, .. } if fstype == "proc"))
            .unwrap();
        let dev_pos = ops
            .iter()
            .position(|o| matches!(o, MountOp::Mount { target, .. } if target == Path::new("/dev")))
            .unwrap();
        let pts_pos = ops
            .iter()
            .position(|o| matches!(o, MountOp::Mount { fstype, .. } if fstype == "devpts"))
            .unwrap();
        let null_pos = ops
            .iter()
            .position(
                |o| matches!(o, MountOp::Mknod { target, .. } if target == Path::new("/dev/null")),
            )
            .unwrap();
        assert!(proc_pos < pivot && dev_pos < pts_pos && dev_pos < null_pos && null_pos < pivot);
        let masked: Vec<_> = ops[pivot..]
            .iter()
            .filter_map(|o| match o {
                MountOp::Mask { target } => Some(target.clone()),
                _ => None,
            })
            .collect();
        assert!(masked.contains(&PathBuf::from("/proc/kcore")));
        assert!(ops[pivot..].contains(&MountOp::Readonly {
            target: "/proc/sysrq-trigger".into()
        }));
        assert!(!ops.contains(&MountOp::RootReadonly));
    }

    #[test]
    fn sysfs_is_read_only_and_safe() {
        let ops = plan(&default_spec(), &legacy()).unwrap();
        let flags = ops
            .iter()
            .find_map(|o| match o {
                MountOp::Mount { fstype, flags, .. } if fstype == "sysfs" => Some(*flags),
                _ => None,
            })
            .unwrap();
        let flags = MsFlags::from_bits_truncate(flags);
        assert!(flags.contains(
            MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC
        ));
    }

    #[test]
    fn legacy_cgroup_mounts_one_per_hierarchy_with_links() {
        let ops = plan(&default_spec(), &legacy()).unwrap();
        let cgroup_targets: Vec<_> = ops
            .iter()
            .filter_map(|o| match o {
                MountOp::Mount {
                    fstype,
                    target,
                    data,
                    ..
                } if fstype == "cgroup" => Some((target.clone(), data.clone())),
                _ => None,
            })
            .collect();
        assert_eq!(
            cgroup_targets,
            vec![
                (PathBuf::from("/sys/fs/cgroup/memory"), "memory".to_string()),
                (
                    PathBuf::from("/sys/fs/cgroup/cpu,cpuacct"),
                    "cpu,cpuacct".to_string()
                )
            ]
        );
        assert!(ops.contains(&MountOp::Symlink {
            target: "/sys/fs/cgroup/cpu".into(),
            points_to: "cpu,cpuacct".into()
        }));
        // The tmpfs is made read-only after the controllers are mounted.
        assert!(ops.iter().any(|o| matches!(o, MountOp::Mount { target, flags, .. }
            if target == Path::new("/sys/fs/cgroup") && MsFlags::from_bits_truncate(*flags).contains(MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY))));
    }

    #[test]
    fn unified_cgroup_is_one_mount() {
        let ops = plan(
            &default_spec(),
            &PlanContext {
                cgroup: CgroupMounts::Unified,
            },
        )
        .unwrap();
        let n = ops
            .iter()
            .filter(|o| matches!(o, MountOp::Mount { fstype, .. } if fstype == "cgroup2"))
            .count();
        assert_eq!(n, 1);
    }

    #[test]
    fn read_only_bind_is_remounted() {
        let mut spec = default_spec();
        let mut mounts = spec.mounts().clone().unwrap();
        mounts.push(
            serde_json::from_value(serde_json::json!({
                "destination": "/data", "type": "bind", "source": "/srv/data", "options": ["rbind", "ro", "rprivate"]
            }))
            .unwrap(),
        );
        spec.set_mounts(Some(mounts));
        let ops = plan(&spec, &legacy()).unwrap();
        let i = ops
            .iter()
            .position(
                |o| matches!(o, MountOp::Mount { target, .. } if target == Path::new("/data")),
            )
            .unwrap();
        match &ops[i] {
            MountOp::Mount { source, flags, .. } => {
                assert_eq!(source, Path::new("/srv/data"));
                assert_eq!(
                    MsFlags::from_bits_truncate(*flags),
                    MsFlags::MS_BIND | MsFlags::MS_REC
                );
            }
            _ => unreachable!(),
        }
        assert_eq!(
            ops[i + 1],
            MountOp::RemountBind {
                target: "/data".into(),
                flags: MsFlags::MS_RDONLY.bits()
            }
        );
        assert_eq!(
            ops[i + 2],
            MountOp::Propagation {
                target: "/data".into(),
                flags: (MsFlags::MS_PRIVATE | MsFlags::MS_REC).bits()
            }
        );
    }

    #[test]
    fn readonly_root_and_relative_destination() {
        let mut spec = default_spec();
        spec.set_root(Some(
            serde_json::from_value(serde_json::json!({"path": "rootfs", "readonly": true}))
                .unwrap(),
        ));
        let ops = plan(&spec, &legacy()).unwrap();
        assert_eq!(ops.last(), Some(&MountOp::RootReadonly));

        let mut mounts = spec.mounts().clone().unwrap();
        mounts.push(
            serde_json::from_value(serde_json::json!({"destination": "rel", "type": "tmpfs"}))
                .unwrap(),
        );
        spec.set_mounts(Some(mounts));
        assert!(plan(&spec, &legacy()).is_err());
    }
}
