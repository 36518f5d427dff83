//! Turning HTTP responses into errors, and which failures are worth a retry.

use std::time::Duration;

use reqwest::header::{HeaderMap, RETRY_AFTER};
use reqwest::{Response, StatusCode};

use crate::error::Error;

/// What a request is about, for errors and logs.
pub(crate) struct Target<'a> {
    pub method: &'static str,
    pub what: &'static str,
    pub name: &'a str,
}

pub(crate) fn transport_error(registry: &str, cause: reqwest::Error) -> Error {
    Error::Transport {
        registry: registry.to_owned(),
        cause: cause.without_url(),
    }
}

/// 429 and the 5xx statuses that mean "try again".
pub(crate) fn is_transient(status: StatusCode) -> bool {
    status == StatusCode::TOO_MANY_REQUESTS
        || (status.is_server_error()
            && status != StatusCode::NOT_IMPLEMENTED
            && status != StatusCode::HTTP_VERSION_NOT_SUPPORTED)
}

/// Retry-After in seconds (the HTTP-date form falls back to backoff).
pub(crate) fn parse_retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?;
    value.trim().parse::<u64>().ok().map(Duration::from_secs)
}

/// Maps an unexpected response to an error, reading the distribution
/// spec's error body (`{"errors":[{"code","message"}]}`) for details.
pub(crate) async fn status_error(registry: &str, target: &Target<'_>, response: Response) -> Error {
    let status = response.status();
    let body = read_limited(response, 64 * 1024).await;
    #[derive(serde::Deserialize)]
    struct Body {
        #[serde(default)]
        errors: Vec<Entry>,
    }
    #[derive(serde::Deserialize)]
    struct Entry {
        #[serde(default)]
        code: String,
        #[serde(default)]
        message: String,
    }
    let entries = serde_json::from_slice::<Body>(&body)
        .map(|b| b.errors)
        .unwrap_or_default();
    let code = entries.first().map(|e| e.code.as_str()).unwrap_or("");
    match status {
        StatusCode::NOT_FOUND => {
            let what = match code {
                "MANIFEST_UNKNOWN" => "manifest",
                "BLOB_UNKNOWN" => "blob",
                "NAME_UNKNOWN" => "repository",
                "BLOB_UPLOAD_UNKNOWN" => "blob upload",
                _ => target.what,
            };
            Error::NotFound {
                what,
                target: target.name.to_owned(),
            }
        }
        StatusCode::UNAUTHORIZED => Error::Unauthorized {
            registry: registry.to_owned(),
            target: target.name.to_owned(),
            has_credentials: false,
        },
        StatusCode::FORBIDDEN => Error::Denied {
            registry: registry.to_owned(),
            target: target.name.to_owned(),
        },
        _ => {
            let message = entries
                .iter()
                .map(|e| {
                    if e.message.is_empty() {
                        e.code.clone()
                    } else {
                        format!("{}: {}", e.code, e.message)
                    }
                })
                .collect::<Vec<_>>()
                .join("; ");
            Error::Status {
                registry: registry.to_owned(),
                method: target.method,
                target: target.name.to_owned(),
                status: status.as_u16(),
                message: one_line(&message, 300),
            }
        }
    }
}

/// Reads at most `limit` bytes of a body; errors read as an empty body.
pub(crate) async fn read_limited(mut response: Response, limit: usize) -> Vec<u8> {
    let mut body = Vec::new();
    while let Ok(Some(chunk)) = response.chunk().await {
        body.extend_from_slice(&chunk);
        if body.len() >= limit {
            body.truncate(limit);
            break;
        }
    }
    body
}

fn one_line(text: &str, limit: usize) -> String {
    let flat: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    flat.chars().take(limit).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transient_statuses() {
        for code in [429, 500, 502, 503, 504] {
            assert!(is_transient(StatusCode::from_u16(code).unwrap()), "{code}");
        }
        for code in [400, 401, 403, 404, 416, 501] {
            assert!(!is_transient(StatusCode::from_u16(code).unwrap()), "{code}");
        }
    }
}
