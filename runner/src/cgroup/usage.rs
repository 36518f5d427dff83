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
        parse(self.version, &std::fs::read_to_string(&self.file).ok()?)
    }

    /// True when a thread of the cgroup is running or waiting for a CPU
    /// now (state `R` in /proc/<tid>/stat): busy even when other work on
    /// the host leaves it little CPU time.
    pub fn runnable(&self) -> bool {
        let list = self.file.with_file_name(match self.version {
            CgroupVersion::V1 => "tasks",
            CgroupVersion::V2 => "cgroup.threads",
        });
        let Ok(tids) = std::fs::read_to_string(list) else {
            return false;
        };
        tids.lines().any(|tid| {
            std::fs::read_to_string(format!("/proc/{}/stat", tid.trim()))
                .is_ok_and(|stat| state_of(&stat) == Some('R'))
        })
    }
}

/// The state letter of a /proc/<pid>/stat line (after the parenthesized
/// command name, which may hold spaces and parentheses).
fn state_of(stat: &str) -> Option<char> {
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

/// The CPU time in the text of `cpuacct.usage` (v1) or `cpu.stat` (v2).
fn parse(version: CgroupVersion, text: &str) -> Option<Duration> {
    match version {
        CgroupVersion::V1 => text.trim().parse().ok().map(Duration::from_nanos),
        CgroupVersion::V2 => text
            .lines()
            .find_map(|l| l.strip_prefix("usage_usec "))
            .and_then(|v| v.trim().parse().ok())
            .map(Duration::from_micros),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_from_v1_nanoseconds_and_v2_cpu_stat() {
        assert_eq!(
            parse(CgroupVersion::V1, "1500000000\n"),
            Some(Duration::from_millis(1500))
        );
        let stat = "usage_usec 2500000\nuser_usec 2000000\nsystem_usec 500000\n";
        assert_eq!(
            parse(CgroupVersion::V2, stat),
            Some(Duration::from_millis(2500))
        );
        assert_eq!(parse(CgroupVersion::V2, "user_usec 5\n"), None);
        assert_eq!(parse(CgroupVersion::V1, ""), None);
    }

    #[test]
    fn state_after_the_command_name() {
        assert_eq!(state_of("42 (sh) R 1 42 42 0 -1"), Some('R'));
        assert_eq!(state_of("43 (a) b) (c) S 1 43"), Some('S'));
        assert_eq!(state_of("garbage"), None);
    }
}
