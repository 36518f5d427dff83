//! Blob uploads (distribution spec "Pushing blobs"): HEAD first, then a
//! cross-repository mount, a monolithic PUT for small blobs, or chunked
//! PATCHes for large ones. A failed upload restarts from a fresh session,
//! re-opening the source.

use std::path::PathBuf;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures_util::future::BoxFuture;
use oci_spec::image::Descriptor;
use reqwest::header::{CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, LOCATION};
use reqwest::{Response, StatusCode};
use sha2::{Digest as _, Sha256};
use tokio::io::{AsyncRead, AsyncReadExt};
use url::Url;

use crate::auth::Scope;
use crate::client::{status_error, Client, Endpoint, Target};
use crate::error::{Error, Result};
use crate::manifest::is_non_distributable;
use crate::progress::{ProgressEvent, ProgressKind};
use crate::reference::Reference;

/// A reader of a blob's bytes.
pub type BlobReader = Box<dyn AsyncRead + Send + Unpin>;
type Opener = Arc<dyn Fn() -> BoxFuture<'static, std::io::Result<BlobReader>> + Send + Sync>;

/// Where a pushed blob's bytes come from. It can be opened again, so a
/// failed upload can start over.
#[derive(Clone)]
pub enum BlobSource {
    /// Bytes in memory.
    Bytes(Bytes),
    /// A file (e.g. the store's `blobs/sha256/<hex>`).
    File(PathBuf),
    /// Anything else: a function returning a fresh reader from the start.
    Open(Opener),
}

impl BlobSource {
    /// A source from a function that opens a fresh reader each time.
    pub fn from_fn<F>(open: F) -> BlobSource
    where
        F: Fn() -> BoxFuture<'static, std::io::Result<BlobReader>> + Send + Sync + 'static,
    {
        BlobSource::Open(Arc::new(open))
    }

    async fn open(&self) -> std::io::Result<BlobReader> {
        match self {
            BlobSource::Bytes(bytes) => Ok(Box::new(std::io::Cursor::new(bytes.clone()))),
            BlobSource::File(path) => Ok(Box::new(tokio::fs::File::open(path).await?)),
            BlobSource::Open(open) => open().await,
        }
    }
}

/// What a push did with a blob.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PushOutcome {
    /// The repository had it already (HEAD said so).
    Existed,
    /// Mounted from another repository of the registry; no bytes moved.
    Mounted,
    /// Uploaded.
    Uploaded,
    /// Not pushed: a non-distributable (foreign) layer, which registries
    /// need not hold (image-spec layer.md).
    SkippedNonDistributable,
}

impl Client {
    /// Pushes one blob to `reference`'s repository unless it is there. With
    /// `mount_from` (another repository of the same registry that holds the
    /// blob), asks the registry to mount it instead of uploading. Blobs up
    /// to the monolithic limit go up in one PUT, larger ones in PATCH
    /// chunks. The bytes are hashed on the way; a source that does not
    /// match `descriptor` fails with [`Error::DigestMismatch`] or
    /// [`Error::SizeMismatch`] and nothing is committed. Waits for a
    /// transfer slot like downloads do.
    pub async fn push_blob(
        &self,
        reference: &Reference,
        descriptor: &Descriptor,
        source: &BlobSource,
        mount_from: Option<&str>,
    ) -> Result<PushOutcome> {
        if is_non_distributable(descriptor) {
            return Ok(PushOutcome::SkippedNonDistributable);
        }
        let _permit = self
            .inner
            .transfers
            .clone()
            .acquire_owned()
            .await
            .expect("the transfer semaphore is never closed");
        let digest = descriptor.digest();
        let scope = match mount_from {
            Some(from) => Scope::push_mounting(reference.repository(), from),
            None => Scope::push(reference.repository()),
        };
        let event = |kind, bytes_done| ProgressEvent {
            digest: digest.clone(),
            kind,
            bytes_done,
            total: descriptor.size(),
        };
        if self
            .blob_exists_scoped(reference, digest, &scope)
            .await?
            .is_some()
        {
            self.emit(event(ProgressKind::Exists, descriptor.size()));
            return Ok(PushOutcome::Existed);
        }
        let endpoint = self.endpoint(reference.registry()).await?;
        let retry = self.inner.retry;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let started = match self
                .start_upload(&endpoint, reference, descriptor, &scope, mount_from)
                .await
            {
                Ok(Some(location)) => {
                    self.upload(&endpoint, reference, descriptor, &scope, source, location)
                        .await
                }
                Ok(None) => {
                    self.emit(event(ProgressKind::Mounted, descriptor.size()));
                    return Ok(PushOutcome::Mounted);
                }
                Err(error) => Err(error),
            };
            match started {
                Ok(()) => {
                    self.emit(event(ProgressKind::Done, descriptor.size()));
                    return Ok(PushOutcome::Uploaded);
                }
                Err(error) if attempt < retry.attempts && is_restartable(&error) => {
                    tracing::debug!(blob = %digest, attempt, error = %error, "blob upload failed; starting over");
                    self.emit(event(ProgressKind::Retry, 0));
                    tokio::time::sleep(retry.delay(attempt, None)).await;
                }
                Err(error) => return Err(error),
            }
        }
    }

    /// POSTs a new upload session (or a mount). `None`: mounted.
    async fn start_upload(
        &self,
        endpoint: &Endpoint,
        reference: &Reference,
        descriptor: &Descriptor,
        scope: &Scope,
        mount_from: Option<&str>,
    ) -> Result<Option<Url>> {
        let mut url = endpoint.url(&format!("{}/blobs/uploads/", reference.repository()));
        if let Some(from) = mount_from.filter(|from| *from != reference.repository()) {
            url.query_pairs_mut()
                .append_pair("mount", descriptor.digest().as_ref())
                .append_pair("from", from);
        }
        let name = format!("{}@{}", reference.name(), descriptor.digest());
        let target = Target {
            method: "POST",
            what: "blob upload",
            name: &name,
        };
        let response = self
            .send(endpoint, scope, &target, &|http| {
                http.post(url.clone()).header(CONTENT_LENGTH, "0")
            })
            .await?;
        match response.status() {
            StatusCode::CREATED if mount_from.is_some() => Ok(None),
            StatusCode::ACCEPTED => Ok(Some(location(endpoint, &url, &response)?)),
            _ => Err(status_error(&endpoint.registry, &target, response).await),
        }
    }

    /// Sends the bytes to an open session and commits them with the digest.
    async fn upload(
        &self,
        endpoint: &Endpoint,
        reference: &Reference,
        descriptor: &Descriptor,
        scope: &Scope,
        source: &BlobSource,
        mut location: Url,
    ) -> Result<()> {
        let digest = descriptor.digest();
        let size = descriptor.size();
        let name = format!("{}@{digest}", reference.name());
        let read_error = |source| Error::Source {
            digest: digest.to_string(),
            source,
        };
        let mut reader = source.open().await.map_err(read_error)?;
        let mut hasher = Sha256::new();
        let mut sent: u64 = 0;
        let monolithic = size <= self.inner.monolithic_limit;
        let chunk_size = if monolithic {
            size as usize + 1
        } else {
            self.inner.chunk_size
        };
        let mut last_body = Bytes::new();
        loop {
            let chunk = read_chunk(&mut reader, chunk_size)
                .await
                .map_err(read_error)?;
            if chunk.is_empty() {
                break;
            }
            if sent + chunk.len() as u64 > size {
                return Err(Error::SizeMismatch {
                    target: name,
                    expected: size,
                    actual: sent + chunk.len() as u64,
                });
            }
            hasher.update(&chunk);
            if monolithic {
                // Held back for the PUT that commits.
                last_body = chunk;
                sent += last_body.len() as u64;
                continue;
            }
            let start = sent;
            let end = sent + chunk.len() as u64 - 1;
            let target = Target {
                method: "PATCH",
                what: "blob upload",
                name: &name,
            };
            let url = location.clone();
            let response = self
                .send(endpoint, scope, &target, &|http| {
                    http.patch(url.clone())
                        .header(CONTENT_TYPE, "application/octet-stream")
                        .header(CONTENT_RANGE, format!("{start}-{end}"))
                        .header(CONTENT_LENGTH, chunk.len().to_string())
                        .body(chunk.clone())
                })
                .await?;
            if response.status() != StatusCode::ACCEPTED {
                return Err(status_error(&endpoint.registry, &target, response).await);
            }
            location = self::location(endpoint, &location, &response)?;
            sent = end + 1;
            self.emit(ProgressEvent {
                digest: digest.clone(),
                kind: ProgressKind::Upload,
                bytes_done: sent,
                total: size,
            });
        }
        if sent != size {
            return Err(Error::SizeMismatch {
                target: name,
                expected: size,
                actual: sent,
            });
        }
        let actual = format!("sha256:{}", hex::encode(hasher.finalize()));
        if actual != digest.to_string() {
            return Err(Error::DigestMismatch {
                target: name,
                expected: digest.to_string(),
                actual,
            });
        }
        let mut url = location.clone();
        url.query_pairs_mut().append_pair("digest", digest.as_ref());
        let target = Target {
            method: "PUT",
            what: "blob upload",
            name: &name,
        };
        let response = self
            .send(endpoint, scope, &target, &|http| {
                http.put(url.clone())
                    .header(CONTENT_TYPE, "application/octet-stream")
                    .header(CONTENT_LENGTH, last_body.len().to_string())
                    .body(last_body.clone())
            })
            .await?;
        if response.status() != StatusCode::CREATED {
            return Err(status_error(&endpoint.registry, &target, response).await);
        }
        if monolithic {
            self.emit(ProgressEvent {
                digest: digest.clone(),
                kind: ProgressKind::Upload,
                bytes_done: size,
                total: size,
            });
        }
        Ok(())
    }
}

/// Reads up to `limit` bytes; fewer only at the end of the source.
async fn read_chunk(reader: &mut BlobReader, limit: usize) -> std::io::Result<Bytes> {
    let mut buffer = BytesMut::with_capacity(limit.min(16 * 1024 * 1024));
    while buffer.len() < limit {
        let want = (limit - buffer.len()).min(1024 * 1024);
        let before = buffer.len();
        buffer.reserve(want);
        let read = (&mut *reader)
            .take(want as u64)
            .read_buf(&mut buffer)
            .await?;
        if read == 0 {
            break;
        }
        debug_assert!(buffer.len() > before);
    }
    Ok(buffer.freeze())
}

/// The upload URL from a Location header, relative to the request URL.
fn location(endpoint: &Endpoint, base: &Url, response: &Response) -> Result<Url> {
    response
        .headers()
        .get(LOCATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| base.join(value).ok())
        .ok_or_else(|| Error::Protocol {
            registry: endpoint.registry.clone(),
            detail: "upload response without a usable Location header".to_owned(),
        })
}

/// Failures after which a fresh upload session may succeed.
fn is_restartable(error: &Error) -> bool {
    match error {
        Error::Transport { .. } | Error::Protocol { .. } => true,
        // A chunk the registry did not expect (416) or a lost session (404).
        Error::Status { status, .. } => *status == 416 || *status >= 500,
        Error::NotFound { what, .. } => *what == "blob upload",
        _ => false,
    }
}
