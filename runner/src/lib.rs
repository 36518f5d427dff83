//! kiln-runner: runs one OCI runtime spec on a root filesystem path.
//!
//! Namespaces, mounts, cgroups, pty and network arrive with their issue.

/// Hidden entry of the re-executed kiln binary that sets a container up in a
/// single-threaded process. Called first thing in `main`; returns when this
/// process is not such a re-exec.
pub fn init_if_requested() {}
