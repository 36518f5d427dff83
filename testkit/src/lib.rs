//! kiln-testkit: dev-only test helpers shared by the integration suites of
//! `registry-client` and `cli` (never a normal dependency).
//!
//! Real `docker-registry` processes on free loopback ports (plain HTTP,
//! TLS + htpasswd, TLS + bearer tokens from [`token_server`]), certificates
//! made with openssl at test time ([`pki`]), a fault-injecting proxy
//! ([`proxy`]) and generated images ([`content`]). The servers run on tokio:
//! start them inside a runtime that outlives them.

pub mod content;
pub mod pki;
pub mod proxy;
pub mod registry;
pub mod token_server;

use std::path::Path;
use std::process::Command;

pub use content::{Blob, TestImage};
pub use proxy::{Fault, FaultProxy};
pub use registry::{Auth, Registry};

/// Whether `tools` are installed. Outside CI a missing tool prints why the
/// test is skipped; with CI=true it fails the test.
pub fn require(tools: &[&str]) -> bool {
    let missing: Vec<&str> = tools
        .iter()
        .copied()
        .filter(|tool| !is_installed(tool))
        .collect();
    if missing.is_empty() {
        return true;
    }
    let reason = format!(
        "test-registry precondition missing: {} (Debian packages docker-registry, openssl, apache2-utils, skopeo)",
        missing.join(", ")
    );
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{reason}");
    }
    eprintln!("SKIPPED: {reason}");
    false
}

fn is_installed(tool: &str) -> bool {
    if Path::new(tool).is_absolute() {
        return Path::new(tool).exists();
    }
    std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|dir| dir.join(tool).is_file()))
        .unwrap_or(false)
}

/// Runs a command and panics with its output when it fails.
pub fn run(command: &mut Command) -> String {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("running {command:?}: {e}"));
    assert!(
        output.status.success(),
        "{command:?} failed: {}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}
