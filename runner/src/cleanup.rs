//! Removing a directory tree without making the caller wait for it.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
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

/// A detached process, started ahead of time, that removes one directory
/// tree once told which: [`remove_tree_detached`] without its fork at the
/// moment of removal. Start it where the caller would wait anyway (while a
/// container's init sets up); handing the tree over is then one write.
/// It exits, removing nothing, when the caller ends without handing one
/// over.
#[derive(Debug)]
pub struct Janitor {
    pipe: File,
}

impl Janitor {
    /// Forks the janitor; `None` when this process runs other threads or
    /// the fork fails (the caller then removes as before).
    pub fn start() -> Option<Janitor> {
        let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).ok()?;
        match crate::sys::fork_detached(read.as_raw_fd()) {
            Ok(Some(_)) => Some(Janitor {
                pipe: File::from(write),
            }),
            Ok(None) => {
                // Only `read` is open here: the end of the caller's writes
                // (or of the caller) is end-of-file.
                let mut told = Vec::new();
                let _ = File::from(read).read_to_end(&mut told);
                if !told.is_empty() {
                    let dir = std::path::PathBuf::from(std::ffi::OsString::from_vec(told));
                    // Like the deleter, hold the tree's lock while removing
                    // it; a sweep that got it first removes it instead.
                    if let Ok(held) = File::open(&dir) {
                        if held.try_lock().is_ok() {
                            let _ = std::fs::remove_dir_all(&dir);
                        }
                    }
                }
                crate::sys::exit_now(0)
            }
            Err(_) => None,
        }
    }

    /// Hands `dir` (already out of everyone's way, e.g. renamed to a trash
    /// name) over for removal and returns at once; false when the janitor
    /// is gone, and the caller removes it itself.
    pub fn remove(mut self, dir: &Path) -> bool {
        self.pipe.write_all(dir.as_os_str().as_bytes()).is_ok()
    }
}
