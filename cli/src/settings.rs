//! Typed settings resolved from what was typed (`args.rs`) and the
//! environment: which registries may use plain HTTP, where CA files live,
//! where credentials are kept.

use std::path::PathBuf;

use kiln_registry::{Client, CredentialStore, ProgressEvent, DEFAULT_CERTS_DIRS};

use crate::args::Cli;

/// Comma-separated registries (`host[:port]`) added to `--insecure-registry`.
pub const INSECURE_REGISTRIES_ENV: &str = "KILN_INSECURE_REGISTRIES";

/// How kiln talks to registries.
#[derive(Debug, Clone)]
pub struct RegistrySettings {
    /// Registries reachable over plain HTTP or with unverified TLS (flags
    /// first, then the environment; duplicates removed).
    pub insecure: Vec<String>,
    /// Directories holding `HOST:PORT/*.crt` CA files.
    pub certs_dirs: Vec<PathBuf>,
    /// docker's `config.json` (`$DOCKER_CONFIG`, else `~/.docker`).
    pub credentials: CredentialStore,
}

impl RegistrySettings {
    /// Resolves the global registry flags with the environment.
    pub fn from_cli(cli: &Cli) -> RegistrySettings {
        let from_env = std::env::var(INSECURE_REGISTRIES_ENV).unwrap_or_default();
        RegistrySettings::resolve(&cli.insecure_registry, &from_env, &cli.certs_dir)
    }

    /// The pure part of [`RegistrySettings::from_cli`].
    fn resolve(flags: &[String], from_env: &str, certs_dirs: &[PathBuf]) -> RegistrySettings {
        let mut insecure: Vec<String> = Vec::new();
        let typed = flags.iter().map(String::as_str).chain(from_env.split(','));
        for host in typed.map(normalize_registry).filter(|h| !h.is_empty()) {
            if !insecure.contains(&host) {
                insecure.push(host);
            }
        }
        let certs_dirs = if certs_dirs.is_empty() {
            DEFAULT_CERTS_DIRS.iter().map(PathBuf::from).collect()
        } else {
            certs_dirs.to_vec()
        };
        RegistrySettings {
            insecure,
            certs_dirs,
            credentials: CredentialStore::from_env(),
        }
    }

    /// A registry client with these settings, calling `progress` for every
    /// transfer event.
    pub fn client(&self, progress: Option<crate::progress::Callback>) -> Client {
        let mut builder = Client::builder()
            .insecure_registries(self.insecure.clone())
            .certs_dirs(self.certs_dirs.clone())
            .credential_store(self.credentials.clone());
        if let Some(progress) = progress {
            builder = builder.progress(move |event: &ProgressEvent| progress(event));
        }
        builder.build()
    }
}

/// A registry as users type it for login, logout, search and
/// `--insecure-registry`: `https://host:port/v2/` -> `host:port`;
/// Docker Hub's other spellings -> `docker.io`.
pub fn normalize_registry(text: &str) -> String {
    let text = text.trim();
    let text = text
        .strip_prefix("https://")
        .or_else(|| text.strip_prefix("http://"))
        .unwrap_or(text);
    let host = text
        .split('/')
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase();
    match host.as_str() {
        "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => {
            kiln_registry::DOCKER_HUB.to_string()
        }
        _ => host,
    }
}

/// A multi-threaded tokio runtime for one command's transfers.
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    use anyhow::Context;
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_and_env_merge() {
        let settings = RegistrySettings::resolve(
            &["localhost:5000".into(), "https://reg.example:443/".into()],
            "reg.example:443, other:1,,localhost:5000",
            &[],
        );
        assert_eq!(
            settings.insecure,
            ["localhost:5000", "reg.example:443", "other:1"]
        );
        assert_eq!(settings.certs_dirs.len(), DEFAULT_CERTS_DIRS.len());
        let custom = RegistrySettings::resolve(&[], "", &[PathBuf::from("/tmp/certs")]);
        assert_eq!(custom.certs_dirs, [PathBuf::from("/tmp/certs")]);
        assert!(custom.insecure.is_empty());
    }

    #[test]
    fn registries_normalize() {
        assert_eq!(
            normalize_registry("https://index.docker.io/v1/"),
            "docker.io"
        );
        assert_eq!(normalize_registry("Localhost:5000"), "localhost:5000");
        assert_eq!(
            normalize_registry("http://127.0.0.1:5000/v2/"),
            "127.0.0.1:5000"
        );
    }
}
