//! kiln-runner: runs one OCI runtime spec on a root filesystem path.
//!
//! Namespaces, mounts, cgroups, pty and network arrive with their issue.
