//! A fault-injecting HTTP proxy in front of a plain-HTTP registry. One
//! request per connection (it answers `Connection: close`), so each fault
//! hits exactly the request it matches.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What to do to a matching request.
#[derive(Clone, Debug)]
pub enum Fault {
    /// Answer this status with `Retry-After` seconds, without asking upstream.
    Status { code: u16, retry_after: Option<u64> },
    /// Forward, but send only half of the response body, then hang up.
    Cut,
    /// Forward with one body byte flipped.
    FlipByte,
    /// Replace the body (dropping Docker-Content-Digest).
    ReplaceBody(Vec<u8>),
    /// Forward without the Range header, like a server that ignores ranges.
    IgnoreRange,
    /// Answer 307 to the same path on the upstream registry, as registries
    /// do to send blob downloads to their storage.
    Redirect,
}

struct Rule {
    method: String,
    path_contains: String,
    fault: Fault,
    remaining: usize,
}

/// A request as the proxy saw it.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub range: Option<String>,
}

pub struct FaultProxy {
    /// `127.0.0.1:PORT` for references.
    pub host: String,
    rules: Arc<Mutex<Vec<Rule>>>,
    seen: Arc<Mutex<Vec<Seen>>>,
    task: tokio::task::JoinHandle<()>,
}

impl FaultProxy {
    pub async fn start(upstream: &str) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let upstream: SocketAddr = upstream.parse().unwrap();
        let rules: Arc<Mutex<Vec<Rule>>> = Arc::default();
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let (task_rules, task_seen) = (rules.clone(), seen.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((socket, _)) = listener.accept().await else {
                    return;
                };
                let rules = task_rules.clone();
                let seen = task_seen.clone();
                tokio::spawn(async move {
                    let _ = handle(socket, upstream, rules, seen).await;
                });
            }
        });
        FaultProxy {
            host: addr.to_string(),
            rules,
            seen,
            task,
        }
    }

    /// Applies `fault` to the next `times` requests with `method` whose path
    /// contains `path_contains`.
    pub fn inject(&self, method: &str, path_contains: &str, fault: Fault, times: usize) {
        self.rules.lock().unwrap().push(Rule {
            method: method.to_owned(),
            path_contains: path_contains.to_owned(),
            fault,
            remaining: times,
        });
    }

    /// Requests seen so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// A reference through the proxy.
    pub fn reference(&self, name: &str) -> kiln_registry::Reference {
        kiln_registry::Reference::parse(&format!("{}/{name}", self.host)).unwrap()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn handle(
    mut client: TcpStream,
    upstream: SocketAddr,
    rules: Arc<Mutex<Vec<Rule>>>,
    seen: Arc<Mutex<Vec<Seen>>>,
) -> std::io::Result<()> {
    let (head, mut body) = read_message_head(&mut client).await?;
    let Some(head) = head else { return Ok(()) };
    let mut lines = head.split("\r\n");
    let request_line = lines.next().unwrap_or_default().to_owned();
    let mut parts = request_line.split(' ');
    let method = parts.next().unwrap_or_default().to_owned();
    let path = parts.next().unwrap_or_default().to_owned();
    let headers: Vec<(String, String)> = lines
        .filter(|l| !l.is_empty())
        .filter_map(|l| {
            l.split_once(':')
                .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
        })
        .collect();
    let header = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    };
    let content_length: usize = header("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    while body.len() < content_length {
        let mut chunk = vec![0u8; 64 * 1024];
        let n = client.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        body.extend_from_slice(&chunk[..n]);
    }
    seen.lock().unwrap().push(Seen {
        method: method.clone(),
        path: path.clone(),
        range: header("range"),
    });
    let fault = {
        let mut rules = rules.lock().unwrap();
        let found = rules
            .iter_mut()
            .find(|r| r.remaining > 0 && r.method == method && path.contains(&r.path_contains));
        found.map(|rule| {
            rule.remaining -= 1;
            rule.fault.clone()
        })
    };
    if let Some(Fault::Status { code, retry_after }) = &fault {
        let retry = retry_after
            .map(|s| format!("Retry-After: {s}\r\n"))
            .unwrap_or_default();
        let response = format!(
            "HTTP/1.1 {code} Injected\r\n{retry}Content-Length: 0\r\nConnection: close\r\n\r\n"
        );
        client.write_all(response.as_bytes()).await?;
        return client.shutdown().await;
    }
    if let Some(Fault::Redirect) = &fault {
        let response = format!(
            "HTTP/1.1 307 Temporary Redirect\r\nLocation: http://{upstream}{path}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
        client.write_all(response.as_bytes()).await?;
        return client.shutdown().await;
    }
    let mut upstream = TcpStream::connect(upstream).await?;
    let mut request = format!("{request_line}\r\n");
    for (name, value) in &headers {
        let drop_range =
            matches!(fault, Some(Fault::IgnoreRange)) && name.eq_ignore_ascii_case("range");
        if !name.eq_ignore_ascii_case("connection") && !drop_range {
            request += &format!("{name}: {value}\r\n");
        }
    }
    request += "Connection: close\r\n\r\n";
    upstream.write_all(request.as_bytes()).await?;
    upstream.write_all(&body).await?;
    let mut response = Vec::new();
    upstream.read_to_end(&mut response).await?;
    let split = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|p| p + 4)
        .unwrap_or(response.len());
    let (response_head, response_body) = response.split_at(split);
    let mut response_head = String::from_utf8_lossy(response_head).into_owned();
    let mut response_body = response_body.to_vec();
    match fault {
        Some(Fault::Cut) => {
            client.write_all(response_head.as_bytes()).await?;
            client
                .write_all(&response_body[..response_body.len() / 2])
                .await?;
            client.flush().await?;
            return client.shutdown().await;
        }
        Some(Fault::FlipByte) if !response_body.is_empty() => {
            let middle = response_body.len() / 2;
            response_body[middle] ^= 0xff;
        }
        Some(Fault::ReplaceBody(replacement)) => {
            let kept: Vec<&str> = response_head
                .trim_end()
                .split("\r\n")
                .filter(|line| {
                    let lower = line.to_ascii_lowercase();
                    !lower.starts_with("content-length:")
                        && !lower.starts_with("transfer-encoding:")
                        && !lower.starts_with("docker-content-digest:")
                })
                .collect();
            response_head = format!(
                "{}\r\nContent-Length: {}\r\n\r\n",
                kept.join("\r\n"),
                replacement.len()
            );
            response_body = replacement;
        }
        _ => {}
    }
    client.write_all(response_head.as_bytes()).await?;
    client.write_all(&response_body).await?;
    client.shutdown().await
}

/// Reads up to the end of the head; `None` if this is not HTTP (e.g. a TLS
/// handshake from a client probing https).
async fn read_message_head(socket: &mut TcpStream) -> std::io::Result<(Option<String>, Vec<u8>)> {
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        let n = socket.read(&mut chunk).await?;
        if n == 0 {
            return Ok((None, Vec::new()));
        }
        buffer.extend_from_slice(&chunk[..n]);
        if !buffer[0].is_ascii_uppercase() || buffer.len() > 256 * 1024 {
            return Ok((None, Vec::new()));
        }
        if let Some(p) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            let body = buffer[p + 4..].to_vec();
            let head = String::from_utf8_lossy(&buffer[..p]).into_owned();
            return Ok((Some(head), body));
        }
    }
}
