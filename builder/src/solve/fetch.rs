//! ADD of an http(s) URL: the file is downloaded into the store's scratch
//! area, hashed while it streams, checked against `--checksum`, and handed
//! to the copy as a one-file tree (mode 0600, mtime from `Last-Modified`,
//! named by `Content-Disposition` or the URL's last path segment).
//!
//! Cache: with `--checksum` the step's key is the URL and the checksum, so
//! a cached step downloads nothing. Without it the key covers the content's
//! digest (and name and mtime): unchanged content keeps the cache, changed
//! content rebuilds the step. Each build asks the server again; when the
//! last answer had an `ETag`, the request carries `If-None-Match` and a
//! `304 Not Modified` reuses the digest noted then (`cache/http/`, keyed by
//! the URL's sha256), so unchanged content is not downloaded again.

use std::io::Write;
use std::path::Path;

use sha2::Digest as _;

use crate::solve::error::SolveError;

/// A downloaded file.
pub(crate) struct Download {
    /// Directory holding only the file, named [`Download::name`].
    pub dir: tempfile::TempDir,
    /// File name in `dir`.
    pub name: String,
    /// `sha256:<hex>` of the content.
    pub digest: String,
    /// `Last-Modified`, as Unix seconds.
    pub mtime: Option<i64>,
    /// `ETag` of the answer.
    pub etag: Option<String>,
}

/// What a URL without `--checksum` gave this build.
pub(crate) enum Fetched {
    /// Downloaded whole.
    Whole(Download),
    /// `304 Not Modified`: the identity noted when it was downloaded.
    Unchanged(String),
}

impl Fetched {
    /// What the cache key covers.
    pub fn identity(&self) -> String {
        match self {
            Fetched::Whole(d) => d.identity(),
            Fetched::Unchanged(identity) => identity.clone(),
        }
    }
}

/// What `cache/http/<sha256 of the URL>.json` keeps.
#[derive(serde::Serialize, serde::Deserialize)]
struct Noted {
    etag: String,
    identity: String,
}

fn noted_path(notes: &Path, url: &str) -> std::path::PathBuf {
    notes.join(format!(
        "{}.json",
        hex::encode(sha2::Sha256::digest(url.as_bytes()))
    ))
}

/// Fetches `url` (no checksum), revalidating with the ETag noted last time.
pub(crate) fn fetch_unpinned(
    url: &str,
    scratch: &Path,
    notes: &Path,
) -> Result<Fetched, SolveError> {
    let path = noted_path(notes, url);
    let noted: Option<Noted> = std::fs::read(&path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    let etag = noted.as_ref().map(|n| n.etag.as_str());
    match request(url, None, scratch, etag)? {
        None => Ok(Fetched::Unchanged(
            noted.map(|n| n.identity).unwrap_or_default(),
        )),
        Some(download) => {
            match &download.etag {
                Some(etag) => {
                    let note = Noted {
                        etag: etag.clone(),
                        identity: download.identity(),
                    };
                    // Advisory: a lost note only costs a download.
                    let _ = crate::solve::context::write_atomic(
                        &path,
                        &serde_json::to_vec(&note).expect("serializes"),
                    );
                }
                None => {
                    let _ = std::fs::remove_file(&path);
                }
            }
            Ok(Fetched::Whole(download))
        }
    }
}

impl Download {
    /// What the cache key covers.
    pub fn identity(&self) -> String {
        format!("{} {} {}", self.digest, self.name, self.mtime.unwrap_or(0))
    }
}

/// Whether an ADD source is a URL kiln downloads.
pub(crate) fn is_url(source: &str) -> bool {
    source.starts_with("http://") || source.starts_with("https://")
}

/// The URL as errors show it: no user or password.
fn shown(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut u) => {
            let _ = u.set_username("");
            let _ = u.set_password(None);
            u.to_string()
        }
        Err(_) => url.to_string(),
    }
}

/// Downloads `url` into a new directory under `scratch`, checking it
/// against `checksum` (`sha256:`, `sha384:`, `sha512:` or bare sha256
/// hex). On any error nothing is left behind.
pub(crate) fn fetch(
    url: &str,
    checksum: Option<&str>,
    scratch: &Path,
) -> Result<Download, SolveError> {
    Ok(request(url, checksum, scratch, None)?.expect("no If-None-Match, so no 304"))
}

/// One GET; `None` when `if_none_match` was sent and the server answered
/// 304.
fn request(
    url: &str,
    checksum: Option<&str>,
    scratch: &Path,
    if_none_match: Option<&str>,
) -> Result<Option<Download>, SolveError> {
    let fail = |problem: String| SolveError::Download {
        url: shown(url),
        problem,
    };
    let parsed = reqwest::Url::parse(url).map_err(|e| fail(e.to_string()))?;
    std::fs::create_dir_all(scratch).map_err(SolveError::io("create directory", scratch))?;
    let dir = tempfile::Builder::new()
        .prefix("download-")
        .tempdir_in(scratch)
        .map_err(SolveError::io("create a directory in", scratch))?;
    let (algorithm, expected) = match checksum {
        Some(c) => match c.split_once(':') {
            Some((a, h)) => (a.to_string(), Some(h.to_ascii_lowercase())),
            None => ("sha256".to_string(), Some(c.to_ascii_lowercase())),
        },
        None => ("sha256".to_string(), None),
    };
    let part = dir.path().join(".part");
    let handle = tokio::runtime::Handle::current();
    let answer = handle.block_on(async {
        let client = reqwest::Client::builder()
            .connect_timeout(std::time::Duration::from_secs(30))
            .build()
            .map_err(|e| fail(e.to_string()))?;
        let mut get = client.get(parsed.clone());
        if let Some(etag) = if_none_match {
            get = get.header(reqwest::header::IF_NONE_MATCH, etag);
        }
        let mut response = get
            .send()
            .await
            .map_err(|e| fail(crate::solve::error_chain(&e)))?;
        if if_none_match.is_some() && response.status() == reqwest::StatusCode::NOT_MODIFIED {
            return Ok(None);
        }
        if !response.status().is_success() {
            return Err(fail(format!("server answered {}", response.status())));
        }
        let headers = response.headers().clone();
        let mut file = std::fs::File::create(&part).map_err(SolveError::io("create", &part))?;
        let mut sha256 = sha2::Sha256::new();
        let mut other: Option<Box<dyn sha2::digest::DynDigest + Send>> = match algorithm.as_str() {
            "sha384" => Some(Box::new(sha2::Sha384::new())),
            "sha512" => Some(Box::new(sha2::Sha512::new())),
            _ => None,
        };
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| fail(crate::solve::error_chain(&e)))?
        {
            sha256.update(&chunk);
            if let Some(o) = other.as_mut() {
                o.update(&chunk);
            }
            file.write_all(&chunk)
                .map_err(SolveError::io("write", &part))?;
        }
        file.sync_all().map_err(SolveError::io("write", &part))?;
        Ok(Some((
            headers,
            sha256.finalize(),
            other.map(|o| o.finalize()),
        )))
    })?;
    let Some((headers, sha256, other)) = answer else {
        return Ok(None);
    };
    let sha256_hex = hex::encode(sha256);
    if let Some(expected) = expected {
        let actual = match other {
            Some(d) => hex::encode(d),
            None => sha256_hex.clone(),
        };
        if actual != expected {
            return Err(SolveError::ChecksumMismatch {
                url: shown(url),
                expected: checksum.unwrap_or_default().to_string(),
                actual: format!("{algorithm}:{actual}"),
            });
        }
    }
    let name = file_name(&parsed, headers.get(reqwest::header::CONTENT_DISPOSITION));
    let mtime = headers
        .get(reqwest::header::LAST_MODIFIED)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| chrono::DateTime::parse_from_rfc2822(v).ok())
        .map(|t| t.timestamp());
    let path = dir.path().join(&name);
    std::fs::rename(&part, &path).map_err(SolveError::io("rename", &path))?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
            .map_err(SolveError::io("chmod", &path))?;
    }
    if let Some(secs) = mtime {
        let t = filetime::FileTime::from_unix_time(secs, 0);
        filetime::set_file_mtime(&path, t).map_err(SolveError::io("set mtime of", &path))?;
    }
    let etag = headers
        .get(reqwest::header::ETAG)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    Ok(Some(Download {
        dir,
        name,
        digest: format!("sha256:{sha256_hex}"),
        mtime,
        etag,
    }))
}

/// `filename=` of `Content-Disposition`, else the URL's last path
/// segment, else `index` (never a path: only the last component counts).
fn file_name(url: &reqwest::Url, disposition: Option<&reqwest::header::HeaderValue>) -> String {
    let from_header = disposition.and_then(|v| v.to_str().ok()).and_then(|v| {
        v.split(';').find_map(|part| {
            let (k, val) = part.trim().split_once('=')?;
            (k.trim().eq_ignore_ascii_case("filename"))
                .then(|| val.trim().trim_matches('"').to_string())
        })
    });
    let from_path = url
        .path_segments()
        .and_then(|mut s| s.next_back().map(str::to_string))
        .filter(|s| !s.is_empty());
    let candidate = from_header.or(from_path).unwrap_or_default();
    let last = candidate.rsplit('/').next().unwrap_or_default().to_string();
    if last.is_empty() || last == "." || last == ".." {
        "index".to_string()
    } else {
        last
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        let u = |s: &str| reqwest::Url::parse(s).unwrap();
        assert_eq!(file_name(&u("http://h/a/b.tar.gz?x=1"), None), "b.tar.gz");
        assert_eq!(file_name(&u("http://h/"), None), "index");
        let h = reqwest::header::HeaderValue::from_static("attachment; filename=\"../x.txt\"");
        assert_eq!(file_name(&u("http://h/y"), Some(&h)), "x.txt");
        assert_eq!(shown("http://user:pw@h/p"), "http://h/p");
    }
}
