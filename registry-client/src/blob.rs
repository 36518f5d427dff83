//! Blob downloads: a byte stream that resumes with `Range` after a broken
//! connection, retries transient failures, and verifies size and digest.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::stream::{BoxStream, Stream, StreamExt};
use oci_spec::image::{Descriptor, Digest, DigestAlgorithm};
use reqwest::header::{CONTENT_RANGE, RANGE};
use reqwest::StatusCode;
use sha2::Digest as _;
use tokio::sync::OwnedSemaphorePermit;

use crate::auth::Scope;
use crate::client::{Client, Endpoint};
use crate::error::{Error, Result};
use crate::progress::{ProgressEvent, ProgressKind};
use crate::reference::Reference;
use crate::response::{status_error, transport_error, Target};

/// The bytes of one blob, in order. Yields an error and ends if the content
/// cannot be had or does not verify: the last item before the end is
/// `Err(DigestMismatch)` or `Err(SizeMismatch)` when the bytes were wrong,
/// so consumers must commit what they wrote only after the stream ended
/// without error. Broken connections resume transparently.
pub struct BlobStream {
    inner: BoxStream<'static, Result<Bytes>>,
}

impl Stream for BlobStream {
    type Item = Result<Bytes>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner.poll_next_unpin(cx)
    }
}

impl BlobStream {
    /// A blocking [`std::io::Read`] over this stream, for synchronous
    /// consumers (hashing into the store, decompressing, untarring) running
    /// in `tokio::task::spawn_blocking`. `handle` is the runtime the client
    /// runs on. Must not be called from an async task (it blocks). A stream
    /// error becomes an `io::Error` whose inner error is this crate's
    /// [`Error`](crate::Error) (`get_ref()` + `downcast_ref`); end of file
    /// comes only after the digest checked out.
    pub fn into_blocking_reader(self, handle: tokio::runtime::Handle) -> BlockingBlobReader {
        BlockingBlobReader {
            stream: self,
            current: Bytes::new(),
            handle,
            ended: false,
        }
    }
}

/// See [`BlobStream::into_blocking_reader`].
pub struct BlockingBlobReader {
    stream: BlobStream,
    current: Bytes,
    handle: tokio::runtime::Handle,
    /// The stream ended (or failed): it must not be polled again, and
    /// further reads return end of file, as `Read` callers expect.
    ended: bool,
}

impl std::io::Read for BlockingBlobReader {
    fn read(&mut self, buffer: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            if self.ended {
                return Ok(0);
            }
            match self.handle.block_on(self.stream.next()) {
                None => {
                    self.ended = true;
                    return Ok(0);
                }
                Some(Ok(chunk)) => self.current = chunk,
                Some(Err(error)) => {
                    self.ended = true;
                    return Err(std::io::Error::other(error));
                }
            }
        }
        let n = buffer.len().min(self.current.len());
        buffer[..n].copy_from_slice(&self.current.split_to(n));
        Ok(n)
    }
}

impl Client {
    /// Streams the blob `descriptor` names from `reference`'s repository.
    /// The stream waits for a transfer slot on first poll and frees it at
    /// its end, so all layers may be requested at once. Fails (as a stream
    /// item) with [`Error::NotFound`], [`Error::DigestMismatch`],
    /// [`Error::SizeMismatch`] or after the retries are spent.
    pub fn fetch_blob(&self, reference: &Reference, descriptor: &Descriptor) -> BlobStream {
        let download = Download {
            client: self.clone(),
            reference: reference.clone(),
            digest: descriptor.digest().clone(),
            size: descriptor.size(),
            endpoint: None,
            permit: None,
            body: None,
            offset: 0,
            skip: 0,
            hasher: Hasher::new(descriptor.digest().algorithm()),
            urls: descriptor
                .urls()
                .iter()
                .flatten()
                .filter_map(|url| url::Url::parse(url).ok())
                .filter(|url| matches!(url.scheme(), "http" | "https"))
                .collect(),
            foreign_url: None,
            failures: 0,
            finished: false,
        };
        let inner = futures_util::stream::unfold(download, |mut download| async move {
            let item = download.next_item().await?;
            Some((item, download))
        })
        .boxed();
        BlobStream { inner }
    }

    /// The whole blob in memory, verified: for configs and other small blobs.
    pub async fn fetch_blob_bytes(
        &self,
        reference: &Reference,
        descriptor: &Descriptor,
    ) -> Result<Bytes> {
        let mut stream = self.fetch_blob(reference, descriptor);
        let mut body = Vec::with_capacity(descriptor.size().min(64 * 1024 * 1024) as usize);
        while let Some(chunk) = stream.next().await {
            body.extend_from_slice(&chunk?);
        }
        Ok(Bytes::from(body))
    }

    /// Whether the repository holds blob `digest` (HEAD); its size if so.
    pub async fn blob_exists(&self, reference: &Reference, digest: &Digest) -> Result<Option<u64>> {
        self.blob_exists_scoped(reference, digest, &Scope::pull(reference.repository()))
            .await
    }

    pub(crate) async fn blob_exists_scoped(
        &self,
        reference: &Reference,
        digest: &Digest,
        scope: &Scope,
    ) -> Result<Option<u64>> {
        let endpoint = self.endpoint(reference.registry()).await?;
        let url = endpoint.url(&format!("{}/blobs/{digest}", reference.repository()));
        let name = format!("{}@{digest}", reference.name());
        let target = Target {
            method: "HEAD",
            what: "blob",
            name: &name,
        };
        let response = self
            .send(&endpoint, scope, &target, &|http| http.head(url.clone()))
            .await?;
        match response.status() {
            // The header, not content_length(): a HEAD response has no body.
            status if status.is_success() => Ok(Some(
                response
                    .headers()
                    .get(reqwest::header::CONTENT_LENGTH)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0),
            )),
            StatusCode::NOT_FOUND => Ok(None),
            _ => Err(status_error(&endpoint.registry, &target, response).await),
        }
    }
}

enum Hasher {
    Sha256(sha2::Sha256),
    Sha512(sha2::Sha512),
    /// An algorithm we cannot verify; the download fails at the end.
    Unsupported,
}

impl Hasher {
    fn new(algorithm: &DigestAlgorithm) -> Hasher {
        match algorithm {
            DigestAlgorithm::Sha256 => Hasher::Sha256(sha2::Sha256::new()),
            DigestAlgorithm::Sha512 => Hasher::Sha512(sha2::Sha512::new()),
            _ => Hasher::Unsupported,
        }
    }

    fn update(&mut self, bytes: &[u8]) {
        match self {
            Hasher::Sha256(hasher) => hasher.update(bytes),
            Hasher::Sha512(hasher) => hasher.update(bytes),
            Hasher::Unsupported => {}
        }
    }

    fn finish(&mut self) -> String {
        match std::mem::replace(self, Hasher::Unsupported) {
            Hasher::Sha256(hasher) => format!("sha256:{}", hex::encode(hasher.finalize())),
            Hasher::Sha512(hasher) => format!("sha512:{}", hex::encode(hasher.finalize())),
            Hasher::Unsupported => "unsupported digest algorithm".to_owned(),
        }
    }
}

struct Download {
    client: Client,
    reference: Reference,
    digest: Digest,
    size: u64,
    endpoint: Option<Arc<Endpoint>>,
    permit: Option<OwnedSemaphorePermit>,
    body: Option<BoxStream<'static, reqwest::Result<Bytes>>>,
    /// Verified bytes handed out so far.
    offset: u64,
    /// Bytes to drop from the current body (a server that ignored Range).
    skip: u64,
    hasher: Hasher,
    /// Where a foreign layer may be fetched when the registry lacks it.
    urls: Vec<url::Url>,
    /// The URL in use once the registry said it lacks the blob.
    foreign_url: Option<url::Url>,
    /// Consecutive failures without progress.
    failures: u32,
    finished: bool,
}

impl Download {
    fn name(&self) -> String {
        format!("{}@{}", self.reference.name(), self.digest)
    }

    /// The next chunk, an error (then the end), or the end.
    async fn next_item(&mut self) -> Option<Result<Bytes>> {
        if self.finished {
            return None;
        }
        let item = self.step().await;
        match &item {
            Some(Ok(_)) => {}
            Some(Err(_)) | None => {
                self.finished = true;
                self.body = None;
                self.permit = None;
            }
        }
        item
    }

    async fn step(&mut self) -> Option<Result<Bytes>> {
        if self.permit.is_none() {
            let slots = self.client.inner.transfers.clone();
            self.permit = Some(
                slots
                    .acquire_owned()
                    .await
                    .expect("the transfer semaphore is never closed"),
            );
        }
        loop {
            if self.body.is_none() {
                if self.offset == self.size {
                    return self.verify();
                }
                match self.open().await {
                    Ok(body) => self.body = Some(body),
                    Err(error) => return Some(Err(error)),
                }
            }
            let body = self.body.as_mut().expect("body was just opened");
            match body.next().await {
                Some(Ok(mut chunk)) => {
                    if self.skip > 0 {
                        let drop = self.skip.min(chunk.len() as u64) as usize;
                        let _ = chunk.split_to(drop);
                        self.skip -= drop as u64;
                    }
                    if chunk.is_empty() {
                        continue;
                    }
                    let end = self.offset + chunk.len() as u64;
                    if end > self.size {
                        return Some(Err(Error::SizeMismatch {
                            target: self.name(),
                            expected: self.size,
                            actual: end,
                        }));
                    }
                    self.hasher.update(&chunk);
                    self.offset = end;
                    self.failures = 0;
                    self.client.emit(ProgressEvent {
                        digest: self.digest.clone(),
                        kind: ProgressKind::Download,
                        bytes_done: self.offset,
                        total: self.size,
                    });
                    return Some(Ok(chunk));
                }
                Some(Err(error)) => {
                    let error = transport_error(self.reference.registry(), error);
                    if let Err(error) = self.backoff(error).await {
                        return Some(Err(error));
                    }
                }
                None if self.offset == self.size => {
                    self.body = None;
                    return self.verify();
                }
                None => {
                    // The body ended early without a transport error.
                    let error = Error::SizeMismatch {
                        target: self.name(),
                        expected: self.size,
                        actual: self.offset,
                    };
                    if let Err(error) = self.backoff(error).await {
                        return Some(Err(error));
                    }
                }
            }
        }
    }

    /// After a broken body: wait, then resume from `offset`.
    async fn backoff(&mut self, error: Error) -> Result<()> {
        self.body = None;
        self.failures += 1;
        let retry = self.client.inner.retry;
        if self.failures >= retry.attempts {
            return Err(Error::RetriesExhausted {
                target: self.name(),
                attempts: self.failures,
                source: Box::new(error),
            });
        }
        tracing::debug!(blob = %self.digest, offset = self.offset, error = %error, "blob download interrupted; resuming");
        self.client.emit(ProgressEvent {
            digest: self.digest.clone(),
            kind: ProgressKind::Retry,
            bytes_done: self.offset,
            total: self.size,
        });
        tokio::time::sleep(retry.delay(self.failures, None)).await;
        Ok(())
    }

    fn verify(&mut self) -> Option<Result<Bytes>> {
        let actual = self.hasher.finish();
        if actual != self.digest.to_string() {
            return Some(Err(Error::DigestMismatch {
                target: self.name(),
                expected: self.digest.to_string(),
                actual,
            }));
        }
        self.client.emit(ProgressEvent {
            digest: self.digest.clone(),
            kind: ProgressKind::Done,
            bytes_done: self.offset,
            total: self.size,
        });
        None
    }

    /// Starts (or resumes) the GET. Follows redirects to blob storage.
    async fn open(&mut self) -> Result<BoxStream<'static, reqwest::Result<Bytes>>> {
        let endpoint = match &self.endpoint {
            Some(endpoint) => endpoint.clone(),
            None => {
                let endpoint = self.client.endpoint(self.reference.registry()).await?;
                self.endpoint = Some(endpoint.clone());
                endpoint
            }
        };
        let name = self.name();
        let target = Target {
            method: "GET",
            what: "blob",
            name: &name,
        };
        let offset = self.offset;
        let with_range = |request: reqwest::RequestBuilder| {
            if offset > 0 {
                request.header(RANGE, format!("bytes={offset}-"))
            } else {
                request
            }
        };
        let response = match self.foreign_url.clone() {
            Some(url) => open_foreign(&endpoint, url, offset).await?,
            None => {
                let url = endpoint.url(&format!(
                    "{}/blobs/{}",
                    self.reference.repository(),
                    self.digest
                ));
                let scope = Scope::pull(self.reference.repository());
                let response = self
                    .client
                    .send(&endpoint, &scope, &target, &|http| {
                        with_range(http.get(url.clone()))
                    })
                    .await?;
                if response.status() == StatusCode::NOT_FOUND && !self.urls.is_empty() {
                    // A foreign layer: the registry need not hold it; its
                    // descriptor's `urls` say where it lives (image-spec
                    // descriptor.md). Registry credentials are not sent there.
                    let mut last_error = None;
                    let mut found = None;
                    for url in self.urls.clone() {
                        match open_foreign(&endpoint, url.clone(), offset).await {
                            Ok(response) if response.status().is_success() => {
                                self.foreign_url = Some(url);
                                found = Some(response);
                                break;
                            }
                            Ok(response) => {
                                let host = url.host_str().unwrap_or("blob host").to_owned();
                                last_error = Some(status_error(&host, &target, response).await)
                            }
                            Err(error) => last_error = Some(error),
                        }
                    }
                    match found {
                        Some(response) => response,
                        None => {
                            return Err(last_error.expect("urls is not empty, so one was tried"))
                        }
                    }
                } else {
                    response
                }
            }
        };
        match response.status() {
            StatusCode::OK => {
                // A full body: drop what we already have.
                self.skip = offset;
                if let Some(length) = response.content_length() {
                    if length != self.size {
                        return Err(Error::SizeMismatch {
                            target: name,
                            expected: self.size,
                            actual: length,
                        });
                    }
                }
            }
            StatusCode::PARTIAL_CONTENT => {
                let start = response
                    .headers()
                    .get(CONTENT_RANGE)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.strip_prefix("bytes "))
                    .and_then(|v| v.split('-').next())
                    .and_then(|v| v.parse::<u64>().ok());
                if start != Some(offset) {
                    return Err(Error::Protocol {
                        registry: endpoint.registry.clone(),
                        detail: format!("asked for {name} from byte {offset}, got another range"),
                    });
                }
                self.skip = 0;
            }
            StatusCode::RANGE_NOT_SATISFIABLE => {
                // The blob is shorter than its descriptor says.
                return Err(Error::SizeMismatch {
                    target: name,
                    expected: self.size,
                    actual: offset,
                });
            }
            _ => {
                let host = match &self.foreign_url {
                    Some(url) => url.host_str().unwrap_or("blob host").to_owned(),
                    None => endpoint.registry.clone(),
                };
                return Err(status_error(&host, &target, response).await);
            }
        }
        Ok(response.bytes_stream().boxed())
    }
}

/// GETs a foreign layer from one of its descriptor's URLs, without auth.
async fn open_foreign(
    endpoint: &Endpoint,
    url: url::Url,
    offset: u64,
) -> Result<reqwest::Response> {
    let host = url.host_str().unwrap_or("blob host").to_owned();
    let mut request = endpoint.http.get(url);
    if offset > 0 {
        request = request.header(RANGE, format!("bytes={offset}-"));
    }
    request.send().await.map_err(|e| transport_error(&host, e))
}
