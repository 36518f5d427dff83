//! HTTP transport per registry: TLS roots (system plus `certs.d/HOST:PORT/*.crt`),
//! insecure registries, and choosing https or http.
//!
//! Policy (docker's, slightly stricter): https with verified certificates
//! everywhere. Loopback hosts (`localhost`, 127.0.0.0/8, `::1`) may fall back
//! to plain http when https does not answer. Registries listed as insecure
//! may also fall back, and their certificates are not verified.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::{Error, Result};

/// Directories with per-registry CA files when none are configured.
pub const DEFAULT_CERTS_DIRS: [&str; 2] = ["/etc/kiln/certs.d", "/etc/docker/certs.d"];

/// Transport settings shared by every registry a client talks to.
#[derive(Clone, Debug)]
pub(crate) struct TransportConfig {
    pub certs_dirs: Vec<PathBuf>,
    pub insecure: Vec<String>,
    pub user_agent: String,
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
}

impl TransportConfig {
    /// Whether `host` (with optional port) is listed as insecure. A listed
    /// name without port covers every port.
    pub fn is_insecure(&self, host: &str) -> bool {
        let bare = strip_port(host);
        self.insecure.iter().any(|entry| {
            let entry = entry
                .trim()
                .trim_start_matches("http://")
                .trim_start_matches("https://")
                .trim_end_matches('/');
            entry == host || entry == bare
        })
    }

    /// Whether plain http may be tried for `host`.
    pub fn allows_http(&self, host: &str) -> bool {
        is_loopback(host) || self.is_insecure(host)
    }

    /// An HTTP client for `host`: system roots, the host's CA files, and no
    /// certificate verification if the host is listed as insecure.
    pub fn http_client(&self, host: &str) -> Result<reqwest::Client> {
        let mut builder = reqwest::Client::builder()
            .use_rustls_tls()
            .user_agent(self.user_agent.clone())
            .connect_timeout(self.connect_timeout)
            .read_timeout(self.read_timeout)
            .pool_idle_timeout(Duration::from_secs(90))
            .tcp_nodelay(true);
        for path in ca_files(&self.certs_dirs, host)? {
            let pem = std::fs::read(&path).map_err(|source| Error::Io {
                action: "reading CA file",
                path: path.clone(),
                source,
            })?;
            let certificates = reqwest::Certificate::from_pem_bundle(&pem)
                .ok()
                .filter(|certificates| !certificates.is_empty())
                .ok_or_else(|| Error::Certificate {
                    path: path.clone(),
                    detail: "no PEM certificate in it".to_owned(),
                })?;
            for certificate in certificates {
                builder = builder.add_root_certificate(certificate);
            }
        }
        if self.is_insecure(host) {
            builder = builder.danger_accept_invalid_certs(true);
        }
        builder.build().map_err(|error| Error::ClientSetup {
            registry: host.to_owned(),
            detail: error.to_string(),
        })
    }
}

/// `*.crt` files in `DIR/HOST:PORT/` for each configured directory, sorted.
fn ca_files(dirs: &[PathBuf], host: &str) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for dir in dirs {
        let dir = dir.join(host);
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => continue,
            Err(source) => {
                return Err(Error::Io {
                    action: "listing",
                    path: dir,
                    source,
                })
            }
        };
        let mut found: Vec<PathBuf> = entries
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .filter(|path| has_extension(path, "crt"))
            .collect();
        found.sort();
        files.extend(found);
    }
    Ok(files)
}

fn has_extension(path: &Path, extension: &str) -> bool {
    path.extension().is_some_and(|e| e == extension)
}

/// `host:port` -> `host`; `[::1]:5000` -> `::1`.
fn strip_port(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match host.rsplit_once(':') {
        Some((name, port)) if !name.contains(':') && port.bytes().all(|b| b.is_ascii_digit()) => {
            name
        }
        _ => host,
    }
}

/// `localhost`, 127.0.0.0/8 and `::1`, with or without port.
pub(crate) fn is_loopback(host: &str) -> bool {
    let name = strip_port(host);
    name == "localhost" || name.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(insecure: &[&str]) -> TransportConfig {
        TransportConfig {
            certs_dirs: Vec::new(),
            insecure: insecure.iter().map(|s| s.to_string()).collect(),
            user_agent: "t".into(),
            connect_timeout: Duration::from_secs(1),
            read_timeout: Duration::from_secs(1),
        }
    }

    #[test]
    fn loopback_and_insecure() {
        for host in [
            "localhost",
            "localhost:5000",
            "127.0.0.1:5000",
            "127.1.2.3",
            "[::1]:5000",
            "::1",
        ] {
            assert!(is_loopback(host), "{host}");
        }
        for host in ["example.com", "10.0.0.1:5000", "localhost.example.com"] {
            assert!(!is_loopback(host), "{host}");
        }
        let config = config(&["reg.lan", "other.lan:5000", "http://third.lan:443/"]);
        assert!(config.allows_http("reg.lan:8080"));
        assert!(config.allows_http("other.lan:5000"));
        assert!(!config.allows_http("other.lan:5001"));
        assert!(config.allows_http("third.lan:443"));
        assert!(!config.allows_http("example.com"));
        assert!(config.allows_http("127.0.0.1:1234"));
        assert!(!config.is_insecure("127.0.0.1:1234"));
    }

    #[test]
    fn finds_ca_files_per_host() {
        let dir = tempfile::tempdir().unwrap();
        let host_dir = dir.path().join("reg.lan:5000");
        std::fs::create_dir_all(&host_dir).unwrap();
        std::fs::write(host_dir.join("ca.crt"), "x").unwrap();
        std::fs::write(host_dir.join("client.key"), "x").unwrap();
        let dirs = vec![dir.path().to_path_buf(), dir.path().join("missing")];
        assert_eq!(
            ca_files(&dirs, "reg.lan:5000").unwrap(),
            vec![host_dir.join("ca.crt")]
        );
        assert!(ca_files(&dirs, "reg.lan").unwrap().is_empty());
        // A garbage CA file is an error naming the file.
        let mut config = config(&[]);
        config.certs_dirs = dirs;
        let error = config.http_client("reg.lan:5000").unwrap_err().to_string();
        assert!(error.contains("ca.crt"), "{error}");
    }
}
