//! Small file-system helpers: atomic writes, directory fsync, process-owned
//! temporary names.

use std::fs::{self, File};
use std::io::Write;
use std::path::Path;

use crate::{Error, Result};

/// Writes `bytes` to `path` atomically: a temp file in the same directory,
/// fsync, rename, fsync of the directory.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path
        .parent()
        .expect("atomic writes target a file inside a directory");
    let temp = dir.join(format!(
        ".{}.{}",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("tmp"),
        temp_suffix()
    ));
    let result = (|| {
        let mut file = File::create(&temp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        fs::rename(&temp, path)?;
        sync_dir(dir)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&temp);
    }
    result.map_err(Error::io(path))
}

/// fsyncs a directory so a rename inside it is durable.
pub(crate) fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

/// `<pid>-<random>`: temporary names carry their writer's pid so garbage
/// collection can tell a live writer's file from a dead one's.
pub(crate) fn temp_suffix() -> String {
    format!(
        "{}-{:012x}",
        std::process::id(),
        rand::random::<u64>() & 0xffff_ffff_ffff
    )
}

/// The pid a temporary name was made by, if it has one.
pub(crate) fn temp_owner(name: &str) -> Option<i32> {
    let name = name.trim_start_matches('.');
    let name = name.rsplit('.').next().unwrap_or(name);
    let name = name.strip_prefix("tmp-").unwrap_or(name);
    name.split('-').next()?.parse().ok()
}

/// True while a process with this pid exists.
pub(crate) fn pid_alive(pid: i32) -> bool {
    pid > 0 && Path::new(&format!("/proc/{pid}")).exists()
}

/// The entries of `dir` whose names are 64-hex digests, sorted.
pub(crate) fn digests_in(dir: &Path) -> crate::Result<Vec<crate::Digest>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).map_err(Error::io(dir))? {
        let entry = entry.map_err(Error::io(dir))?;
        if let Some(d) = entry
            .file_name()
            .to_str()
            .and_then(|n| crate::Digest::from_hex(n).ok())
        {
            out.push(d);
        }
    }
    out.sort();
    Ok(out)
}

/// Size and count of everything below `dir` (not following symlinks).
pub(crate) fn tree_usage(dir: &Path) -> (u64, u64) {
    let mut bytes = 0;
    let mut entries = 0;
    for entry in walkdir::WalkDir::new(dir)
        .min_depth(1)
        .into_iter()
        .flatten()
    {
        entries += 1;
        if let Ok(meta) = entry.metadata() {
            if meta.is_file() {
                bytes += meta.len();
            }
        }
    }
    (bytes, entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temp_names_carry_their_pid() {
        let name = format!("tmp-{}", temp_suffix());
        assert_eq!(temp_owner(&name), Some(std::process::id() as i32));
        assert_eq!(temp_owner(".index.json.123-abc"), Some(123));
        assert_eq!(temp_owner("nonsense"), None);
    }
}
