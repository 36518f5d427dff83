//! A small token server (docker token auth spec) issuing RS256 JWTs with the
//! signing certificate in `x5c`. `kiln`/PASSWORD gets what it asks for;
//! anonymous callers get pull only; wrong credentials get 401.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::registry::{PASSWORD, USER};

pub const SERVICE: &str = "kiln-test-registry";
pub const ISSUER: &str = "kiln-test-issuer";
/// The OAuth2 refresh token (docker's "identity token") the server accepts.
pub const REFRESH_TOKEN: &str = "kiln-refresh-token-s3cret";

#[derive(Default)]
pub struct Stats {
    pub requests: AtomicUsize,
    /// Every `scope` parameter asked for, in order.
    pub scopes: Mutex<Vec<String>>,
    /// Lifetime of issued tokens, seconds.
    pub expires_in: AtomicU64,
}

pub struct TokenServer {
    pub addr: SocketAddr,
    pub stats: Arc<Stats>,
    task: tokio::task::JoinHandle<()>,
}

impl TokenServer {
    pub async fn start(key_pem: Vec<u8>, cert_der_base64: String) -> TokenServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stats = Arc::new(Stats::default());
        stats.expires_in.store(300, Ordering::SeqCst);
        let key = Arc::new(jsonwebtoken::EncodingKey::from_rsa_pem(&key_pem).unwrap());
        let signer = Signing {
            key,
            x5c: cert_der_base64,
            stats: stats.clone(),
        };
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut socket, _)) = listener.accept().await else {
                    return;
                };
                let signer = signer.clone();
                tokio::spawn(async move {
                    let mut buffer = Vec::new();
                    let mut chunk = [0u8; 4096];
                    while !buffer.windows(4).any(|w| w == b"\r\n\r\n") {
                        match socket.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buffer.extend_from_slice(&chunk[..n]),
                        }
                        if buffer.len() > 64 * 1024 {
                            return;
                        }
                    }
                    let split = buffer.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
                    let head = String::from_utf8_lossy(&buffer[..split]).into_owned();
                    let length: usize = header(&head, "content-length")
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(0);
                    let mut form = buffer[split..].to_vec();
                    while form.len() < length {
                        match socket.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => form.extend_from_slice(&chunk[..n]),
                        }
                    }
                    let (status, body) = signer.answer(&head, &form);
                    let response = format!(
                        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = socket.write_all(response.as_bytes()).await;
                    let _ = socket.shutdown().await;
                });
            }
        });
        TokenServer { addr, stats, task }
    }
}

impl Drop for TokenServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[derive(Clone)]
struct Signing {
    key: Arc<jsonwebtoken::EncodingKey>,
    x5c: String,
    stats: Arc<Stats>,
}

impl Signing {
    fn answer(&self, head: &str, form: &[u8]) -> (&'static str, String) {
        self.stats.requests.fetch_add(1, Ordering::SeqCst);
        let request_line = head.lines().next().unwrap_or_default();
        let target = request_line.split(' ').nth(1).unwrap_or("/");
        let url = url::Url::parse(&format!("http://x{target}")).unwrap();
        let is_post = request_line.starts_with("POST ");
        // GET: parameters in the query; POST (OAuth2 refresh grant): in the form.
        let params: Vec<(String, String)> = if is_post {
            url::form_urlencoded::parse(form).into_owned().collect()
        } else {
            url.query_pairs().into_owned().collect()
        };
        let param = |name: &str| {
            params
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        };
        let scopes: Vec<String> = params
            .iter()
            .filter(|(k, _)| k == "scope")
            .map(|(_, v)| v.clone())
            .collect();
        self.stats
            .scopes
            .lock()
            .unwrap()
            .extend(scopes.iter().cloned());
        let user = if is_post {
            let valid = param("grant_type").as_deref() == Some("refresh_token")
                && param("refresh_token").as_deref() == Some(REFRESH_TOKEN);
            if !valid {
                return (
                    "401 Unauthorized",
                    r#"{"details":"bad refresh token"}"#.to_owned(),
                );
            }
            Some(USER)
        } else {
            match header(head, "authorization") {
                None => None,
                Some(value) => {
                    let decoded = value
                        .strip_prefix("Basic ")
                        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
                        .and_then(|b| String::from_utf8(b).ok());
                    if decoded.as_deref() != Some(&format!("{USER}:{PASSWORD}")) {
                        return (
                            "401 Unauthorized",
                            r#"{"details":"bad credentials"}"#.to_owned(),
                        );
                    }
                    Some(USER)
                }
            }
        };
        let mut access = Vec::new();
        for scope in scopes.iter().flat_map(|s| s.split(' ')) {
            let parts: Vec<&str> = scope.splitn(3, ':').collect();
            let [kind, name, actions] = parts.as_slice() else {
                continue;
            };
            let granted: Vec<&str> = actions
                .split(',')
                .filter(|action| user.is_some() || *action == "pull")
                .collect();
            access.push(serde_json::json!({"type": kind, "name": name, "actions": granted}));
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let expires_in = self.stats.expires_in.load(Ordering::SeqCst);
        let claims = serde_json::json!({
            "iss": ISSUER,
            "sub": user.unwrap_or(""),
            "aud": SERVICE,
            "exp": now + expires_in,
            "nbf": now - 10,
            "iat": now,
            "jti": format!("{}", rand::random::<u64>()),
            "access": access,
        });
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
        header.x5c = Some(vec![self.x5c.clone()]);
        let token = jsonwebtoken::encode(&header, &claims, &self.key).unwrap();
        // The OAuth2 answer names it access_token; the docker one token.
        let body = if is_post {
            serde_json::json!({"access_token": token, "expires_in": expires_in})
        } else {
            serde_json::json!({"token": token, "expires_in": expires_in})
        }
        .to_string();
        ("200 OK", body)
    }
}

fn header(head: &str, wanted: &str) -> Option<String> {
    head.lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.trim()
            .eq_ignore_ascii_case(wanted)
            .then(|| value.trim().to_owned())
    })
}
