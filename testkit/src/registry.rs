//! A `docker-registry serve` process on a free loopback port.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kiln_registry::{Client, ClientBuilder, Credential};

use crate::pki;
use crate::token_server::TokenServer;

pub const REGISTRY_BINARY: &str = "/usr/bin/docker-registry";
pub const USER: &str = "kiln";
pub const PASSWORD: &str = "correct-horse-battery";

/// Which of the three set-ups.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Auth {
    /// Plain HTTP, no auth.
    None,
    /// TLS with htpasswd basic auth.
    Basic,
    /// TLS with bearer tokens from the harness token server.
    Token,
    /// TLS that requires a client certificate signed by the test CA.
    MutualTls,
}

pub struct Registry {
    /// `127.0.0.1:PORT`.
    pub host: String,
    pub dir: tempfile::TempDir,
    /// The certs.d directory holding `127.0.0.1:PORT/ca.crt` (TLS set-ups).
    pub certs_dir: PathBuf,
    pub token_server: Option<Arc<TokenServer>>,
    /// Client certificate and key (TLS set-ups); not in `certs_dir` unless
    /// a test puts them there.
    pub client_pki: Option<(PathBuf, PathBuf)>,
    child: Child,
}

impl Registry {
    /// Starts a registry; `None` (after printing why) when a tool is missing.
    pub async fn start(auth: Auth) -> Option<Registry> {
        let mut tools = vec![REGISTRY_BINARY];
        if auth != Auth::None {
            tools.push("openssl");
        }
        if auth == Auth::Basic {
            tools.push("htpasswd");
        }
        if !crate::require(&tools) {
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let host = format!("127.0.0.1:{port}");
        let certs_dir = dir.path().join("certs.d");
        std::fs::create_dir_all(certs_dir.join(&host)).unwrap();
        let storage = dir.path().join("storage");
        std::fs::create_dir_all(&storage).unwrap();
        let mut client_pki = None;
        let mut config = format!(
            "version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {host}\n  secret: kiln-test-secret\n",
            storage.display()
        );
        if auth != Auth::None {
            let pki = pki::server_pki(dir.path());
            std::fs::copy(&pki.ca_cert, certs_dir.join(&host).join("ca.crt")).unwrap();
            client_pki = Some((pki.client_cert.clone(), pki.client_key.clone()));
            config += &format!(
                "  tls:\n    certificate: {}\n    key: {}\n",
                pki.server_cert.display(),
                pki.server_key.display()
            );
        }
        if auth == Auth::MutualTls {
            config += &format!(
                "    clientcas:\n      - {}\n",
                certs_dir.join(&host).join("ca.crt").display()
            );
        }
        let mut token_server = None;
        match auth {
            Auth::None | Auth::MutualTls => {}
            Auth::Basic => {
                let htpasswd = dir.path().join("htpasswd");
                let line = crate::run(
                    Command::new("htpasswd").args(["-B", "-C", "4", "-b", "-n", USER, PASSWORD]),
                );
                std::fs::write(&htpasswd, line.trim()).unwrap();
                config += &format!(
                    "auth:\n  htpasswd:\n    realm: kiln-test\n    path: {}\n",
                    htpasswd.display()
                );
            }
            Auth::Token => {
                let signer = pki::token_signer(dir.path());
                let server =
                    TokenServer::start(signer.key_pem.clone(), signer.cert_der_base64.clone())
                        .await;
                config += &format!(
                    "auth:\n  token:\n    realm: http://{}/token\n    service: {}\n    issuer: {}\n    rootcertbundle: {}\n",
                    server.addr,
                    crate::token_server::SERVICE,
                    crate::token_server::ISSUER,
                    signer.cert_pem_path.display()
                );
                token_server = Some(Arc::new(server));
            }
        }
        let config_path = dir.path().join("config.yml");
        std::fs::write(&config_path, config).unwrap();
        let log = std::fs::File::create(dir.path().join("registry.log")).unwrap();
        let child = Command::new(REGISTRY_BINARY)
            .arg("serve")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("starting docker-registry");
        let registry = Registry {
            host,
            dir,
            certs_dir,
            client_pki,
            token_server,
            child,
        };
        registry.wait_ready(port);
        Some(registry)
    }

    fn wait_ready(&self, port: u16) {
        let deadline = Instant::now() + Duration::from_secs(20);
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        while Instant::now() < deadline {
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("docker-registry did not listen on {addr}: {}", self.log());
    }

    /// The registry's log, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// A client builder that trusts this registry's CA and retries quickly.
    pub fn client_builder(&self) -> ClientBuilder {
        Client::builder()
            .certs_dirs([&self.certs_dir])
            .retry(4, Duration::from_millis(50))
            .timeouts(Duration::from_secs(5), Duration::from_secs(20))
    }

    /// A client with the right credentials for this set-up.
    pub fn client(&self) -> Client {
        self.client_builder()
            .credential(&self.host, Credential::basic(USER, PASSWORD))
            .build()
    }

    /// A reference in this registry.
    pub fn reference(&self, name: &str) -> kiln_registry::Reference {
        kiln_registry::Reference::parse(&format!("{}/{name}", self.host)).unwrap()
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
