//! Removing a directory tree without making the caller wait for it.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::Path;

/// Removes the tree at `dir` from a child process that outlives this one,
/// so the caller can return without waiting for the file system. `held` is
/// an open descriptor the child keeps until the tree is gone (e.g. `dir`
/// itself, flock'ed: whoever finds the tree later tells a removal under
/// way from one a killed child left behind by trying that lock).
///
/// Returns false, having started nothing, when this process runs other
/// threads or the fork fails: the caller removes the tree itself then.
pub fn remove_tree_detached(dir: &Path, held: &File) -> bool {
    match crate::sys::fork_detached(held.as_raw_fd()) {
        Ok(Some(_)) => true,
        Ok(None) => {
            let _ = std::fs::remove_dir_all(dir);
            crate::sys::exit_now(0)
        }
        Err(_) => false,
    }
}
