//! What a container's cgroup holds now, as `docker stats` shows it: memory
//! in use (less the inactive page cache, as docker counts it) and its limit,
//! processes, and bytes read and written on block devices. cgroup v1
//! (memory, pids, blkio hierarchies) and v2 (memory.current, memory.stat,
//! pids.current, io.stat); kernel Documentation/admin-guide/cgroup-v{1,2}.

use std::path::{Path, PathBuf};

use super::{detect, parse_v1_hierarchies, CgroupVersion, CGROUP_ROOT};

/// One reading of a cgroup.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Memory in use, without inactive file pages.
    pub memory: u64,
    /// The memory limit; `None` when unlimited.
    pub memory_limit: Option<u64>,
    /// Processes and threads.
    pub pids: u64,
    /// Bytes read from and written to block devices.
    pub block_read: u64,
    pub block_write: u64,
}

fn read(path: &Path) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

fn number(path: &Path) -> Option<u64> {
    read(path)?.trim().parse().ok()
}

/// `key value` lines (memory.stat).
fn stat_value(text: &str, key: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(' ')?.trim().parse().ok())
}

/// Reads the cgroup `relative` (e.g. `kiln/<id>`); `None` when it does not
/// exist (the container is not running).
pub fn read_stats(relative: &Path) -> Option<Stats> {
    let relative = relative.strip_prefix("/").unwrap_or(relative);
    match detect() {
        CgroupVersion::V2 => v2(&Path::new(CGROUP_ROOT).join(relative)),
        CgroupVersion::V1 => {
            let mountinfo = read(Path::new("/proc/self/mountinfo"))?;
            let dir = |controller: &str| -> Option<PathBuf> {
                parse_v1_hierarchies(&mountinfo)
                    .into_iter()
                    .find(|h| h.controllers.split(',').any(|c| c == controller))
                    .map(|h| h.mountpoint.join(relative))
            };
            v1(&dir("memory")?, dir("pids"), dir("blkio"))
        }
    }
}

fn v1(memory: &Path, pids: Option<PathBuf>, blkio: Option<PathBuf>) -> Option<Stats> {
    let usage = number(&memory.join("memory.usage_in_bytes"))?;
    let stat = read(&memory.join("memory.stat")).unwrap_or_default();
    let inactive = stat_value(&stat, "total_inactive_file").unwrap_or(0);
    // An unlimited v1 cgroup reports a page-rounded i64::MAX.
    let limit = number(&memory.join("memory.limit_in_bytes")).filter(|l| *l < 1 << 62);
    let (block_read, block_write) = blkio
        .and_then(|d| read(&d.join("blkio.throttle.io_service_bytes")))
        .map(|text| {
            let mut rw = (0, 0);
            for line in text.lines() {
                let mut fields = line.split_whitespace();
                let (Some(_dev), Some(op), Some(n)) = (fields.next(), fields.next(), fields.next())
                else {
                    continue;
                };
                let n: u64 = n.parse().unwrap_or(0);
                match op {
                    "Read" => rw.0 += n,
                    "Write" => rw.1 += n,
                    _ => {}
                }
            }
            rw
        })
        .unwrap_or((0, 0));
    Some(Stats {
        memory: usage.saturating_sub(inactive),
        memory_limit: limit,
        pids: pids
            .and_then(|d| number(&d.join("pids.current")))
            .unwrap_or(0),
        block_read,
        block_write,
    })
}

fn v2(dir: &Path) -> Option<Stats> {
    let usage = number(&dir.join("memory.current"))?;
    let stat = read(&dir.join("memory.stat")).unwrap_or_default();
    let inactive = stat_value(&stat, "inactive_file").unwrap_or(0);
    let limit = read(&dir.join("memory.max")).and_then(|t| t.trim().parse().ok());
    let (mut block_read, mut block_write) = (0, 0);
    for line in read(&dir.join("io.stat")).unwrap_or_default().lines() {
        for field in line.split_whitespace().skip(1) {
            match field.split_once('=') {
                Some(("rbytes", n)) => block_read += n.parse::<u64>().unwrap_or(0),
                Some(("wbytes", n)) => block_write += n.parse::<u64>().unwrap_or(0),
                _ => {}
            }
        }
    }
    Some(Stats {
        memory: usage.saturating_sub(inactive),
        memory_limit: limit,
        pids: number(&dir.join("pids.current")).unwrap_or(0),
        block_read,
        block_write,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_v1_and_v2_files() {
        let d = tempfile::tempdir().unwrap();
        let (m, p, b) = (d.path().join("m"), d.path().join("p"), d.path().join("b"));
        for dir in [&m, &p, &b] {
            std::fs::create_dir(dir).unwrap();
        }
        std::fs::write(m.join("memory.usage_in_bytes"), "10000\n").unwrap();
        std::fs::write(m.join("memory.stat"), "cache 5\ntotal_inactive_file 4000\n").unwrap();
        std::fs::write(m.join("memory.limit_in_bytes"), "9223372036854771712\n").unwrap();
        std::fs::write(p.join("pids.current"), "3\n").unwrap();
        std::fs::write(
            b.join("blkio.throttle.io_service_bytes"),
            "8:0 Read 100\n8:0 Write 50\n8:0 Total 150\n8:16 Read 1\nTotal 151\n",
        )
        .unwrap();
        let s = v1(&m, Some(p), Some(b)).unwrap();
        assert_eq!(
            s,
            Stats {
                memory: 6000,
                memory_limit: None,
                pids: 3,
                block_read: 101,
                block_write: 50
            }
        );
        let v = d.path().join("v2");
        std::fs::create_dir(&v).unwrap();
        std::fs::write(v.join("memory.current"), "8192\n").unwrap();
        std::fs::write(v.join("memory.stat"), "anon 1\ninactive_file 4096\n").unwrap();
        std::fs::write(v.join("memory.max"), "67108864\n").unwrap();
        std::fs::write(v.join("pids.current"), "2\n").unwrap();
        std::fs::write(v.join("io.stat"), "8:0 rbytes=10 wbytes=20 rios=1 wios=2\n").unwrap();
        let s = v2(&v).unwrap();
        assert_eq!(
            (s.memory, s.memory_limit, s.pids),
            (4096, Some(67108864), 2)
        );
        assert_eq!((s.block_read, s.block_write), (10, 20));
        assert!(v2(&d.path().join("gone")).is_none());
    }
}
