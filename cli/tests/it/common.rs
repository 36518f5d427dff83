//! Shared helpers for the CLI integration tests.
#![allow(dead_code)]

use std::path::Path;
use std::process::{Command, Output};

/// The `kiln` binary under test.
pub fn kiln_bin() -> &'static str {
    env!("CARGO_BIN_EXE_kiln")
}

/// Runs `kiln --root ROOT ARGS...` and returns its output.
pub fn kiln(root: &Path, args: &[&str]) -> Output {
    Command::new(kiln_bin())
        .arg("--root")
        .arg(root)
        .args(args)
        .output()
        .expect("spawning the kiln binary built by cargo")
}

/// True when the test process runs as root.
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .map(|s| s.lines().any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0")))
        .unwrap_or(false)
}

/// True when running under CI, where a test that cannot run must fail.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Skips (returns true) with a printed reason outside CI; panics under CI.
pub fn skip_or_fail(reason: &str) -> bool {
    if in_ci() {
        panic!("cannot run under CI: {reason}");
    }
    eprintln!("skipping: {reason}");
    true
}
