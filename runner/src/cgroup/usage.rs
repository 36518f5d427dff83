//! CPU time used by a cgroup's processes: v1 `cpuacct.usage` (nanoseconds)
//! of the hierarchy holding cpuacct (also on hybrid hosts), v2 `cpu.stat`
//! `usage_usec` (a core file, there without the cpu controller enabled).

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{detect, parse_v1_hierarchies, CgroupVersion, CGROUP_ROOT};

/// Reads the CPU time of one cgroup (the container's, e.g. `kiln/<id>`).
#[derive(Debug, Clone)]
pub struct CpuUsage {
    file: PathBuf,
    version: CgroupVersion,
}

impl CpuUsage {
    /// The reader for the cgroup `relative` (below the cgroup root). `None`
    /// on a v1 host without a cpuacct hierarchy. The cgroup need not exist
    /// yet: [`CpuUsage::read`] says `None` until it does.
    pub fn new(relative: &Path) -> Option<CpuUsage> {
        let relative = relative.strip_prefix("/").unwrap_or(relative);
        let version = detect();
        let file = match version {
            CgroupVersion::V2 => Path::new(CGROUP_ROOT).join(relative).join("cpu.stat"),
            CgroupVersion::V1 => {
                let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
                parse_v1_hierarchies(&mountinfo)
                    .into_iter()
                    .find(|h| h.controllers.split(',').any(|c| c == "cpuacct"))?
                    .mountpoint
                    .join(relative)
                    .join("cpuacct.usage")
            }
        };
        Some(CpuUsage { file, version })
    }

    /// CPU time used so far by the cgroup's processes (children that exited
    /// included); `None` while the cgroup does not exist.
    pub fn read(&self) -> Option<Duration> {
        let text = std::fs::read_to_string(&self.file).ok()?;
        match self.version {
            CgroupVersion::V1 => text.trim().parse().ok().map(Duration::from_nanos),
            CgroupVersion::V2 => text
                .lines()
                .find_map(|l| l.strip_prefix("usage_usec "))
                .and_then(|v| v.trim().parse().ok())
                .map(Duration::from_micros),
        }
    }
}
