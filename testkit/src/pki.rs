//! Certificates for the TLS set-ups and the token signer, made with the
//! openssl CLI in a temp dir.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::run;

/// A CA, a server certificate for 127.0.0.1 and localhost, and a client
/// certificate.
pub struct ServerPki {
    pub ca_cert: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
}

pub fn server_pki(dir: &Path) -> ServerPki {
    let path = |name: &str| dir.join(name);
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    run(Command::new("openssl")
        .args(["req", "-x509"])
        .args(ec)
        .arg("-keyout")
        .arg(path("ca.key"))
        .arg("-out")
        .arg(path("ca.crt"))
        .args(["-days", "2", "-subj", "/CN=kiln test CA"])
        .args(["-addext", "basicConstraints=critical,CA:TRUE"])
        .args(["-addext", "keyUsage=critical,keyCertSign,cRLSign"]));
    run(Command::new("openssl")
        .arg("req")
        .args(ec)
        .arg("-keyout")
        .arg(path("server.key"))
        .arg("-out")
        .arg(path("server.csr"))
        .args(["-subj", "/CN=127.0.0.1"]));
    std::fs::write(
        path("server.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    run(Command::new("openssl")
        .args(["x509", "-req", "-days", "2", "-set_serial", "2"])
        .arg("-in")
        .arg(path("server.csr"))
        .arg("-CA")
        .arg(path("ca.crt"))
        .arg("-CAkey")
        .arg(path("ca.key"))
        .arg("-out")
        .arg(path("server.crt"))
        .arg("-extfile")
        .arg(path("server.ext")));
    // A client certificate for mutual TLS, signed by the same CA.
    run(Command::new("openssl")
        .arg("req")
        .args(ec)
        .arg("-keyout")
        .arg(path("client.key"))
        .arg("-out")
        .arg(path("client.csr"))
        .args(["-subj", "/CN=kiln test client"]));
    std::fs::write(
        path("client.ext"),
        "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\n",
    )
    .unwrap();
    run(Command::new("openssl")
        .args(["x509", "-req", "-days", "2", "-set_serial", "3"])
        .arg("-in")
        .arg(path("client.csr"))
        .arg("-CA")
        .arg(path("ca.crt"))
        .arg("-CAkey")
        .arg(path("ca.key"))
        .arg("-out")
        .arg(path("client.cert"))
        .arg("-extfile")
        .arg(path("client.ext")));
    ServerPki {
        ca_cert: path("ca.crt"),
        client_cert: path("client.cert"),
        client_key: path("client.key"),
        server_cert: path("server.crt"),
        server_key: path("server.key"),
    }
}

/// An RSA key and self-signed certificate for signing tokens (RS256).
pub struct Signer {
    pub key_pem: Vec<u8>,
    pub cert_pem_path: PathBuf,
    /// Base64 of the DER certificate, for the JWT `x5c` header.
    pub cert_der_base64: String,
}

pub fn token_signer(dir: &Path) -> Signer {
    let key = dir.join("token.key");
    let cert = dir.join("token.crt");
    run(Command::new("openssl")
        .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .args(["-days", "2", "-subj", "/CN=kiln test token signer"]));
    let der = Command::new("openssl")
        .args(["x509", "-outform", "DER", "-in"])
        .arg(&cert)
        .output()
        .unwrap();
    assert!(der.status.success());
    use base64::Engine;
    Signer {
        key_pem: std::fs::read(&key).unwrap(),
        cert_pem_path: cert,
        cert_der_base64: base64::engine::general_purpose::STANDARD.encode(der.stdout),
    }
}
