//! The container's cgroup: created before the container starts, limits from
//! `linux.resources`, removed (after killing what is left) when it exits.
//!
//! The host layout is detected at run time: a unified (v2) host gets one
//! directory; a v1 or hybrid host (v1 controllers plus a cgroup2 mount that
//! holds no controller we use) gets one directory per v1 hierarchy we use.
//! References: kernel Documentation/admin-guide/cgroup-v2.rst and
//! cgroup-v1/{memory,pids,devices}.rst, cfs bandwidth in
//! scheduler/sched-bwc.rst; OCI config-linux.md "Control groups".

pub mod devices;
mod freezer;
mod stats;
mod usage;
mod values;

use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use oci_spec::runtime::LinuxResources;

pub use freezer::set_frozen;
pub use stats::{read_stats, Stats};
pub use usage::CpuUsage;
pub use values::{v1_writes, v2_writes, Write};

use crate::{Error, Result};

/// The root of the cgroup filesystems.
const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// v1 controllers kiln puts a container in.
const V1_CONTROLLERS: &[&str] = &["memory", "cpu", "cpuacct", "pids", "devices", "freezer"];

/// Which cgroup API the host offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum CgroupVersion {
    /// Per-controller hierarchies (also hybrid hosts).
    V1,
    /// The unified hierarchy.
    V2,
}

/// Detects the host's cgroup layout: v2 when /sys/fs/cgroup itself is a
/// cgroup2 filesystem, else v1.
pub fn detect() -> CgroupVersion {
    match nix::sys::statfs::statfs(CGROUP_ROOT) {
        Ok(fs) if fs.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC => {
            CgroupVersion::V2
        }
        _ => CgroupVersion::V1,
    }
}

/// One v1 hierarchy: its controllers (comma-separated, as mounted) and where
/// it is mounted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Hierarchy {
    pub controllers: String,
    pub mountpoint: PathBuf,
}

/// Parses /proc/self/mountinfo text into the v1 hierarchies that hold a
/// controller kiln uses (see proc(5) for the format).
pub(crate) fn parse_v1_hierarchies(mountinfo: &str) -> Vec<Hierarchy> {
    let mut out: Vec<Hierarchy> = Vec::new();
    for line in mountinfo.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let mut right = right.split(' ');
        if right.next() != Some("cgroup") {
            continue;
        }
        let super_options = right.nth(1).unwrap_or("");
        let Some(mountpoint) = left.split(' ').nth(4) else {
            continue;
        };
        let controllers: Vec<&str> = super_options
            .split(',')
            .filter(|o| KNOWN_CONTROLLERS.contains(o))
            .collect();
        if !controllers.iter().any(|c| V1_CONTROLLERS.contains(c)) {
            continue;
        }
        let controllers = controllers.join(",");
        if out.iter().any(|h| h.controllers == controllers) {
            continue;
        }
        out.push(Hierarchy {
            controllers,
            mountpoint: PathBuf::from(unescape_mount_path(mountpoint)),
        });
    }
    out
}

const KNOWN_CONTROLLERS: &[&str] = &[
    "cpu",
    "cpuacct",
    "cpuset",
    "memory",
    "devices",
    "freezer",
    "net_cls",
    "net_prio",
    "blkio",
    "perf_event",
    "hugetlb",
    "pids",
    "rdma",
    "misc",
];

/// mountinfo escapes space, tab, newline and backslash as octal.
fn unescape_mount_path(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && bytes[i + 1..i + 4]
                .iter()
                .all(|b| (b'0'..=b'7').contains(b))
        {
            let v = (bytes[i + 1] - b'0') * 64 + (bytes[i + 2] - b'0') * 8 + (bytes[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A cgroup kiln created for one container.
#[derive(Debug)]
pub(crate) struct Cgroup {
    version: CgroupVersion,
    /// v1: one directory per hierarchy, with its controllers; v2: one.
    dirs: Vec<(String, PathBuf)>,
}

/// A container's cgroup made ahead of [`crate::ContainerBuilder::spawn`],
/// e.g. on another thread while the caller mounts the root filesystem:
/// hand it over with [`crate::ContainerBuilder::prepared_cgroup`]. Removed
/// when dropped unused.
#[derive(Debug)]
pub struct PreparedCgroup {
    cgroup: Option<Cgroup>,
}

impl PreparedCgroup {
    /// Creates the cgroup `relative` (e.g. `kiln/<id>`) with the limits of
    /// `resources`, as the builder's `cgroup` would at spawn. On error
    /// nothing is left.
    pub fn create(relative: &Path, resources: Option<&LinuxResources>) -> Result<PreparedCgroup> {
        Ok(PreparedCgroup {
            cgroup: Some(Cgroup::create(relative, resources)?),
        })
    }

    /// The cgroup, now owned by the caller (who removes it).
    pub(crate) fn take(mut self) -> Cgroup {
        self.cgroup
            .take()
            .expect("a prepared cgroup is taken only once, by value")
    }
}

impl Drop for PreparedCgroup {
    fn drop(&mut self) {
        if let Some(cgroup) = self.cgroup.take() {
            let _ = cgroup.remove();
        }
    }
}

/// mkdir -p, retried when a concurrent [`Cgroup::remove`] took away an empty
/// shared parent between two steps.
fn create_dir(dir: &Path) -> Result<()> {
    let mut attempts = 0;
    loop {
        match std::fs::create_dir_all(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound && attempts < 5 => attempts += 1,
            Err(e) => return Err(cgroup_err("create", dir)(e)),
        }
    }
}

fn cgroup_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> Error + 'a {
    move |source| Error::Cgroup {
        op,
        path: path.to_path_buf(),
        source,
    }
}

impl Cgroup {
    /// Creates the cgroup `relative` (e.g. `kiln/<id>`, no leading slash
    /// needed) and writes the limits of `resources`. On error nothing is left.
    pub(crate) fn create(relative: &Path, resources: Option<&LinuxResources>) -> Result<Cgroup> {
        let relative = relative.strip_prefix("/").unwrap_or(relative);
        if relative.as_os_str().is_empty()
            || relative
                .components()
                .any(|c| !matches!(c, std::path::Component::Normal(_)))
        {
            return Err(Error::InvalidSpec {
                what: format!("cgroup path {:?}", relative),
            });
        }
        let version = detect();
        let cgroup = match version {
            CgroupVersion::V2 => {
                let dir = Path::new(CGROUP_ROOT).join(relative);
                enable_v2_controllers(relative)?;
                create_dir(&dir)?;
                Cgroup {
                    version,
                    dirs: vec![(String::new(), dir)],
                }
            }
            CgroupVersion::V1 => {
                let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")
                    .map_err(cgroup_err("read mountinfo for", Path::new(CGROUP_ROOT)))?;
                let mut cgroup = Cgroup {
                    version,
                    dirs: Vec::new(),
                };
                for h in parse_v1_hierarchies(&mountinfo) {
                    let dir = h.mountpoint.join(relative);
                    if let Err(err) = create_dir(&dir) {
                        let _ = cgroup.remove();
                        return Err(err);
                    }
                    cgroup.dirs.push((h.controllers, dir));
                }
                cgroup
            }
        };
        if let Some(resources) = resources {
            if let Err(e) = cgroup.set(resources) {
                let _ = cgroup.remove();
                return Err(e);
            }
        }
        Ok(cgroup)
    }

    fn set(&self, resources: &LinuxResources) -> Result<()> {
        match self.version {
            CgroupVersion::V2 => {
                let dir = &self.dirs[0].1;
                for w in v2_writes(resources) {
                    write_file(&dir.join(w.file), &w.value, w.optional)?;
                }
                if let Some(rules) = resources.devices().as_ref().filter(|r| !r.is_empty()) {
                    // The devices every container gets stay usable, as on v1.
                    let mut rules = rules.clone();
                    rules.extend(values::default_device_rules());
                    devices::attach(dir, &rules)?;
                }
            }
            CgroupVersion::V1 => {
                for w in v1_writes(resources) {
                    let Some(dir) = self.dir_of(w.controller) else {
                        if w.optional {
                            continue;
                        }
                        return Err(Error::Cgroup {
                            op: "find controller",
                            path: PathBuf::from(w.controller),
                            source: io::Error::from(io::ErrorKind::NotFound),
                        });
                    };
                    write_file(&dir.join(w.file), &w.value, w.optional)?;
                }
            }
        }
        Ok(())
    }

    fn dir_of(&self, controller: &str) -> Option<&Path> {
        self.dirs
            .iter()
            .find(|(c, _)| c.split(',').any(|c| c == controller))
            .map(|(_, d)| d.as_path())
    }

    /// The cgroup.procs files a process writes "0" to, to join.
    pub(crate) fn procs_files(&self) -> Vec<PathBuf> {
        self.dirs
            .iter()
            .map(|(_, d)| d.join("cgroup.procs"))
            .collect()
    }

    /// Hierarchies for the container's /sys/fs/cgroup mount.
    pub(crate) fn mounts(&self) -> crate::rootfs::CgroupMounts {
        match self.version {
            CgroupVersion::V2 => crate::rootfs::CgroupMounts::Unified,
            CgroupVersion::V1 => crate::rootfs::CgroupMounts::Legacy(
                self.dirs.iter().map(|(c, _)| c.clone()).collect(),
            ),
        }
    }

    /// The cgroup's directories (v1: one per hierarchy).
    pub(crate) fn dirs(&self) -> Vec<PathBuf> {
        self.dirs.iter().map(|(_, d)| d.clone()).collect()
    }

    /// True when the kernel's OOM killer killed a process of this cgroup.
    pub(crate) fn oom_killed(&self) -> bool {
        let file = match self.version {
            CgroupVersion::V2 => self.dirs[0].1.join("memory.events"),
            CgroupVersion::V1 => match self.dir_of("memory") {
                Some(d) => d.join("memory.oom_control"),
                None => return false,
            },
        };
        std::fs::read_to_string(file)
            .map(|s| {
                s.lines().any(|l| {
                    l.strip_prefix("oom_kill ")
                        .and_then(|n| n.trim().parse::<u64>().ok())
                        .is_some_and(|n| n > 0)
                })
            })
            .unwrap_or(false)
    }

    /// Kills every process left in the cgroup and removes its directories.
    /// Directories already gone are fine. Parents (`kiln` of `kiln/<id>`)
    /// stay, as docker's `docker` cgroup does: the next container would make
    /// them again, one more mkdir and rmdir per hierarchy and start.
    pub(crate) fn remove(&self) -> Result<()> {
        let mut first_error = None;
        if self.version == CgroupVersion::V2 {
            let _ = std::fs::write(self.dirs[0].1.join("cgroup.kill"), "1");
        }
        for (_, dir) in self.dirs.iter().rev() {
            if let Err(e) = remove_dir(dir) {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

/// Removes the cgroups directly below `parent` (relative to the cgroup
/// root, e.g. `kiln-build`) whose name `stale` accepts, killing anything
/// still in them: what a killed process left behind. Errors are ignored
/// (a cgroup that cannot go now is tried again next time).
pub fn remove_stale_children(parent: &Path, stale: &dyn Fn(&str) -> bool) {
    let version = detect();
    let roots: Vec<(String, PathBuf)> = match version {
        CgroupVersion::V2 => vec![(String::new(), PathBuf::from(CGROUP_ROOT))],
        CgroupVersion::V1 => {
            let Ok(mountinfo) = std::fs::read_to_string("/proc/self/mountinfo") else {
                return;
            };
            parse_v1_hierarchies(&mountinfo)
                .into_iter()
                .map(|h| (h.controllers, h.mountpoint))
                .collect()
        }
    };
    let mut names = std::collections::BTreeSet::new();
    for (_, root) in &roots {
        let Ok(entries) = std::fs::read_dir(root.join(parent)) else {
            continue;
        };
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                names.insert(entry.file_name().to_string_lossy().into_owned());
            }
        }
    }
    for name in names.into_iter().filter(|n| stale(n)) {
        let relative = parent.join(&name);
        let cgroup = Cgroup {
            version,
            dirs: roots
                .iter()
                .map(|(c, root)| (c.clone(), root.join(&relative)))
                .filter(|(_, d)| d.is_dir())
                .collect(),
        };
        let _ = cgroup.remove();
    }
}

/// rmdir a cgroup, killing its processes until it is empty (up to 5 s: a
/// process killed by SIGKILL leaves its cgroup only once it has exited).
fn remove_dir(dir: &Path) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut pause = Duration::from_micros(200);
    loop {
        match std::fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) if Instant::now() >= deadline => return Err(cgroup_err("remove", dir)(e)),
            Err(_) => {}
        }
        if let Ok(procs) = std::fs::read_to_string(dir.join("cgroup.procs")) {
            for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(20));
    }
}

fn write_file(path: &Path, value: &str, optional: bool) -> Result<()> {
    match std::fs::write(path, value) {
        Ok(()) => Ok(()),
        Err(e) if optional && e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(cgroup_err("write", path)(e)),
    }
}

/// On v2, controllers must be enabled in every ancestor's
/// cgroup.subtree_control for the leaf to get their files.
fn enable_v2_controllers(relative: &Path) -> Result<()> {
    let mut dir = PathBuf::from(CGROUP_ROOT);
    let available = std::fs::read_to_string(dir.join("cgroup.controllers")).unwrap_or_default();
    let wanted: Vec<String> = ["cpu", "memory", "pids"]
        .iter()
        .filter(|c| available.split_whitespace().any(|a| a == **c))
        .map(|c| format!("+{c}"))
        .collect();
    if wanted.is_empty() {
        return Ok(());
    }
    let line = wanted.join(" ");
    let parents: Vec<_> = relative
        .parent()
        .map(|p| p.components().collect())
        .unwrap_or_default();
    std::fs::write(dir.join("cgroup.subtree_control"), &line)
        .map_err(cgroup_err("enable controllers in", &dir))?;
    for component in parents {
        dir.push(component);
        std::fs::create_dir_all(&dir).map_err(cgroup_err("create", &dir))?;
        std::fs::write(dir.join("cgroup.subtree_control"), &line)
            .map_err(cgroup_err("enable controllers in", &dir))?;
    }
    Ok(())
}

/// Makes the coming move of a container's init into its cgroup quick; call
/// it early, as soon as a container is about to start.
///
/// Moving a process into a cgroup (a write to cgroup.procs) takes a global
/// kernel lock whose writer side waits for an RCU grace period unless
/// another move happened moments before: 5 to 15 ms on an idle 2-CPU host,
/// the longest single wait of a container start. This starts that wait at
/// once, on a short-lived thread, by "moving" this process into the cgroup
/// it is already in (a no-op move that takes the same lock), so the wait
/// overlaps the rest of the set-up; the init's real move then finds the
/// lock warm and takes a tenth of a millisecond. Failures are ignored:
/// they only cost the time saved.
pub fn warm_up_attach() {
    let spawned = std::thread::Builder::new()
        .name("kiln-cgroup-warm".into())
        .spawn(|| {
            let pid = std::process::id();
            let Ok(files) = procs_files_of(pid as i32) else {
                return;
            };
            if let Some(file) = files.first() {
                let _ = std::fs::write(file, pid.to_string());
            }
            crate::timing::mark("cgroup lock warm");
        });
    if let (Ok(handle), Ok(mut slot)) = (spawned, WARM_UP.lock()) {
        *slot = Some(handle);
    }
}

/// The thread [`warm_up_attach`] started, until joined.
static WARM_UP: std::sync::Mutex<Option<std::thread::JoinHandle<()>>> = std::sync::Mutex::new(None);

/// Joins the warm-up thread if it finished its write (it may still be
/// leaving); one still waiting for the kernel is left alone. Returns false
/// when it still runs.
pub(crate) fn join_warm_up() -> bool {
    let Ok(mut slot) = WARM_UP.lock() else {
        return true;
    };
    if slot.as_ref().is_some_and(|h| !h.is_finished()) {
        return false;
    }
    if let Some(handle) = slot.take() {
        let _ = handle.join();
    }
    true
}

/// The cgroup.procs files of the cgroups process `pid` is in, as seen from
/// the host: how `exec` joins a running container's cgroup.
pub(crate) fn procs_files_of(pid: i32) -> Result<Vec<PathBuf>> {
    let proc_path = PathBuf::from(format!("/proc/{pid}/cgroup"));
    let text = std::fs::read_to_string(&proc_path).map_err(cgroup_err("read", &proc_path))?;
    let mut out = Vec::new();
    match detect() {
        CgroupVersion::V2 => {
            if let Some(path) = text.lines().find_map(|l| l.strip_prefix("0::")) {
                out.push(
                    Path::new(CGROUP_ROOT)
                        .join(path.trim_start_matches('/'))
                        .join("cgroup.procs"),
                );
            }
        }
        CgroupVersion::V1 => {
            let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")
                .map_err(cgroup_err("read", Path::new("/proc/self/mountinfo")))?;
            let hierarchies = parse_v1_hierarchies(&mountinfo);
            for line in text.lines() {
                let mut parts = line.splitn(3, ':');
                let (_, controllers, path) = (
                    parts.next(),
                    parts.next().unwrap_or(""),
                    parts.next().unwrap_or(""),
                );
                if let Some(h) = hierarchies.iter().find(|h| h.controllers == controllers) {
                    out.push(
                        h.mountpoint
                            .join(path.trim_start_matches('/'))
                            .join("cgroup.procs"),
                    );
                }
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTINFO: &str = "\
30 23 0:26 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
31 30 0:27 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:10 - cgroup2 cgroup2 rw
32 30 0:28 / /sys/fs/cgroup/systemd rw,nosuid shared:11 - cgroup cgroup rw,xattr,name=systemd
33 30 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid shared:12 - cgroup cgroup rw,cpu,cpuacct
34 30 0:30 / /sys/fs/cgroup/memory rw,nosuid shared:13 - cgroup cgroup rw,memory
35 30 0:31 / /sys/fs/cgroup/cpuset rw,nosuid shared:14 - cgroup cgroup rw,cpuset
36 30 0:32 / /sys/fs/cgroup/pids rw,nosuid shared:15 - cgroup cgroup rw,pids
";

    #[test]
    fn hierarchies_from_mountinfo() {
        let h = parse_v1_hierarchies(MOUNTINFO);
        let names: Vec<_> = h.iter().map(|h| h.controllers.as_str()).collect();
        assert_eq!(names, ["cpu,cpuacct", "memory", "pids"]);
        assert_eq!(h[0].mountpoint, PathBuf::from("/sys/fs/cgroup/cpu,cpuacct"));
    }

    #[test]
    fn mount_paths_are_unescaped() {
        assert_eq!(unescape_mount_path("/a\\040b"), "/a b");
    }
}
