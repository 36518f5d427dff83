//! Freezing a container's cgroup (`kiln pause`): v1 `freezer.state`
//! (FROZEN/THAWED; FREEZING while in progress), v2 `cgroup.freeze` with
//! `frozen 1` in `cgroup.events` once done. Kernel
//! Documentation/admin-guide/cgroup-v1/freezer-subsystem.rst, cgroup-v2.rst.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::{cgroup_err, detect, parse_v1_hierarchies, CgroupVersion, CGROUP_ROOT};
use crate::{Error, Result};

/// The file to write and the file (and text) that says it is done.
fn files(relative: &Path, frozen: bool) -> Result<(PathBuf, String, PathBuf, String)> {
    let relative = relative.strip_prefix("/").unwrap_or(relative);
    Ok(match detect() {
        CgroupVersion::V2 => {
            let dir = Path::new(CGROUP_ROOT).join(relative);
            let (value, done) = if frozen {
                ("1", "frozen 1")
            } else {
                ("0", "frozen 0")
            };
            (
                dir.join("cgroup.freeze"),
                value.into(),
                dir.join("cgroup.events"),
                done.into(),
            )
        }
        CgroupVersion::V1 => {
            let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")
                .map_err(cgroup_err("read mountinfo for", Path::new(CGROUP_ROOT)))?;
            let dir = parse_v1_hierarchies(&mountinfo)
                .into_iter()
                .find(|h| h.controllers.split(',').any(|c| c == "freezer"))
                .ok_or_else(|| Error::InvalidSpec {
                    what: "no freezer cgroup hierarchy on this host".into(),
                })?
                .mountpoint
                .join(relative);
            let value = if frozen { "FROZEN" } else { "THAWED" };
            (
                dir.join("freezer.state"),
                value.into(),
                dir.join("freezer.state"),
                value.into(),
            )
        }
    })
}

/// Freezes (or thaws) every process of the cgroup `relative` (e.g.
/// `kiln/<id>`) and waits until the kernel says it is done.
pub fn set_frozen(relative: &Path, frozen: bool) -> Result<()> {
    let (control, value, status, done) = files(relative, frozen)?;
    std::fs::write(&control, &value).map_err(cgroup_err("freeze", &control))?;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let now = std::fs::read_to_string(&status).map_err(cgroup_err("read", &status))?;
        if now.lines().any(|l| l.trim() == done) {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(cgroup_err("wait for the freezer of", &status)(
                std::io::Error::from(std::io::ErrorKind::TimedOut),
            ));
        }
        // v1 may stay FREEZING while a task is in an uninterruptible
        // sleep: asking again moves it on.
        if frozen && now.trim() == "FREEZING" {
            let _ = std::fs::write(&control, &value);
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}
