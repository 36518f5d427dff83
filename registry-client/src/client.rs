//! The client: configuration, one HTTP connection pool per registry, and the
//! request loop that answers auth challenges and retries transient failures.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use reqwest::header::{HeaderMap, AUTHORIZATION, RETRY_AFTER, WWW_AUTHENTICATE};
use reqwest::{RequestBuilder, Response, StatusCode};
use tokio::sync::{OnceCell, Semaphore};
use url::Url;

use crate::auth::{
    parse_challenges, Credential, CredentialStore, Scope, Secret, TokenCache, TokenResponse,
};
use crate::error::{Error, Result};
use crate::progress::{ProgressEvent, ProgressFn};
use crate::reference::api_host;
use crate::transport::{TransportConfig, DEFAULT_CERTS_DIRS};

/// A registry client. Cheap to clone (shared state behind an `Arc`); clones
/// share connections, tokens and the transfer limit, so spawn one task per
/// layer with a clone each.
#[derive(Clone)]
pub struct Client {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    transport: TransportConfig,
    /// One cell per registry, so a slow first contact with one registry
    /// does not hold up the others.
    endpoints: Mutex<HashMap<String, Arc<OnceCell<Arc<Endpoint>>>>>,
    tokens: TokenCache,
    store: Option<CredentialStore>,
    /// Credentials given to the builder or verified by `login`, and those
    /// read from the store (`None`: the store has none).
    credentials: Mutex<HashMap<String, Option<Credential>>>,
    pub(crate) progress: Option<ProgressFn>,
    pub(crate) transfers: Arc<Semaphore>,
    pub(crate) retry: RetryPolicy,
    pub(crate) chunk_size: usize,
    pub(crate) monolithic_limit: u64,
}

/// How often and how patiently transient failures are retried.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RetryPolicy {
    pub attempts: u32,
    pub base_delay: Duration,
    pub max_delay: Duration,
}

impl RetryPolicy {
    /// Exponential backoff with jitter for the `attempt`-th retry (1-based),
    /// or the server's Retry-After when it gave one (capped at a minute).
    pub fn delay(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        if let Some(wait) = retry_after {
            return wait.min(Duration::from_secs(60));
        }
        let exponential = self
            .base_delay
            .saturating_mul(1 << attempt.saturating_sub(1).min(16));
        let capped = exponential.min(self.max_delay);
        let jitter = rand::random::<f64>() * 0.5 + 0.75;
        capped.mul_f64(jitter)
    }
}

/// Builds a [`Client`].
pub struct ClientBuilder {
    transport: TransportConfig,
    store: Option<CredentialStore>,
    credentials: HashMap<String, Option<Credential>>,
    progress: Option<ProgressFn>,
    max_transfers: usize,
    retry: RetryPolicy,
    chunk_size: usize,
    monolithic_limit: u64,
}

impl Default for ClientBuilder {
    fn default() -> ClientBuilder {
        ClientBuilder {
            transport: TransportConfig {
                certs_dirs: DEFAULT_CERTS_DIRS.iter().map(PathBuf::from).collect(),
                insecure: Vec::new(),
                user_agent: concat!("kiln/", env!("CARGO_PKG_VERSION")).to_owned(),
                connect_timeout: Duration::from_secs(30),
                read_timeout: Duration::from_secs(120),
            },
            store: None,
            credentials: HashMap::new(),
            progress: None,
            max_transfers: 4,
            retry: RetryPolicy {
                attempts: 5,
                base_delay: Duration::from_millis(250),
                max_delay: Duration::from_secs(10),
            },
            chunk_size: 16 * 1024 * 1024,
            monolithic_limit: 16 * 1024 * 1024,
        }
    }
}

impl ClientBuilder {
    /// Directories holding `HOST:PORT/*.crt` CA files. Default:
    /// `/etc/kiln/certs.d` and `/etc/docker/certs.d`.
    pub fn certs_dirs(mut self, dirs: impl IntoIterator<Item = impl Into<PathBuf>>) -> Self {
        self.transport.certs_dirs = dirs.into_iter().map(Into::into).collect();
        self
    }

    /// Registries (`host` or `host:port`) that may be reached over plain
    /// http and whose TLS certificates are not verified. Loopback hosts may
    /// use http without being listed.
    pub fn insecure_registries(
        mut self,
        hosts: impl IntoIterator<Item = impl Into<String>>,
    ) -> Self {
        self.transport.insecure = hosts.into_iter().map(Into::into).collect();
        self
    }

    /// Reads credentials from this docker config (usually
    /// [`CredentialStore::from_env`]) when a registry asks for them.
    pub fn credential_store(mut self, store: CredentialStore) -> Self {
        self.store = Some(store);
        self
    }

    /// Uses `credential` for `registry` (`docker.io`, `host:port`), before
    /// any credential store.
    pub fn credential(mut self, registry: &str, credential: Credential) -> Self {
        self.credentials
            .insert(registry.to_owned(), Some(credential));
        self
    }

    /// Called for every progress event of every transfer.
    pub fn progress(mut self, callback: impl Fn(&ProgressEvent) + Send + Sync + 'static) -> Self {
        self.progress = Some(Arc::new(callback));
        self
    }

    /// How many blob transfers may move bytes at once (default 4). Blob
    /// streams and pushes wait for a slot, so callers may start all layers at once.
    pub fn max_concurrent_transfers(mut self, limit: usize) -> Self {
        self.max_transfers = limit.max(1);
        self
    }

    /// Attempts per request for transient failures (default 5) and the first
    /// backoff delay (default 250 ms, doubling up to 10 s).
    pub fn retry(mut self, attempts: u32, base_delay: Duration) -> Self {
        self.retry.attempts = attempts.max(1);
        self.retry.base_delay = base_delay;
        self
    }

    /// Blobs up to `limit` bytes are uploaded with one PUT; larger ones in
    /// PATCH chunks of `chunk_size` bytes (defaults: 16 MiB each).
    pub fn upload_chunking(mut self, monolithic_limit: u64, chunk_size: usize) -> Self {
        self.monolithic_limit = monolithic_limit;
        self.chunk_size = chunk_size.max(1);
        self
    }

    /// Connect timeout and the longest pause between two reads of a response.
    pub fn timeouts(mut self, connect: Duration, read: Duration) -> Self {
        self.transport.connect_timeout = connect;
        self.transport.read_timeout = read;
        self
    }

    /// The User-Agent header (default `kiln/VERSION`).
    pub fn user_agent(mut self, user_agent: impl Into<String>) -> Self {
        self.transport.user_agent = user_agent.into();
        self
    }

    /// Builds the client. Connections are made lazily, per registry.
    pub fn build(self) -> Client {
        Client {
            inner: Arc::new(Inner {
                transport: self.transport,
                endpoints: Mutex::new(HashMap::new()),
                tokens: TokenCache::default(),
                store: self.store,
                credentials: Mutex::new(self.credentials),
                progress: self.progress,
                transfers: Arc::new(Semaphore::new(self.max_transfers)),
                retry: self.retry,
                chunk_size: self.chunk_size,
                monolithic_limit: self.monolithic_limit,
            }),
        }
    }
}

/// How a registry wants to be authenticated, learnt from its challenges.
#[derive(Clone, Debug)]
enum AuthScheme {
    None,
    Basic,
    Bearer { realm: Url, service: Option<String> },
}

/// One registry: its base URL, its connection pool and its auth scheme.
pub(crate) struct Endpoint {
    /// The registry as references name it (`docker.io`).
    pub registry: String,
    /// `https://registry-1.docker.io` or `http://127.0.0.1:5000`.
    pub base: Url,
    pub http: reqwest::Client,
    scheme: Mutex<AuthScheme>,
}

impl Endpoint {
    /// `BASE/v2/PATH`.
    pub fn url(&self, path: &str) -> Url {
        self.base
            .join(&format!("/v2/{path}"))
            .expect("a /v2/ path joins any base URL")
    }

    fn scheme(&self) -> AuthScheme {
        self.scheme
            .lock()
            .expect("scheme lock is never poisoned")
            .clone()
    }

    fn set_scheme(&self, scheme: AuthScheme) {
        *self.scheme.lock().expect("scheme lock is never poisoned") = scheme;
    }
}

/// What a request is about, for errors and logs.
pub(crate) struct Target<'a> {
    pub method: &'static str,
    pub what: &'static str,
    pub name: &'a str,
}

impl Client {
    /// A builder with the defaults described on each setter.
    pub fn builder() -> ClientBuilder {
        ClientBuilder::default()
    }

    pub(crate) fn emit(&self, event: ProgressEvent) {
        if let Some(progress) = &self.inner.progress {
            progress(&event);
        }
    }

    /// The endpoint for `registry`, set up (and pinged) on first use.
    pub(crate) async fn endpoint(&self, registry: &str) -> Result<Arc<Endpoint>> {
        let cell = {
            let mut endpoints = self
                .inner
                .endpoints
                .lock()
                .expect("endpoints lock is never poisoned");
            endpoints.entry(registry.to_owned()).or_default().clone()
        };
        cell.get_or_try_init(|| self.connect(registry))
            .await
            .cloned()
    }

    /// Finds the base URL (https, or http where allowed) and the auth scheme
    /// with one `GET /v2/`.
    async fn connect(&self, registry: &str) -> Result<Arc<Endpoint>> {
        let host = api_host(registry);
        let http = self.inner.transport.http_client(host)?;
        let https =
            Url::parse(&format!("https://{host}/")).map_err(|_| Error::InvalidReference {
                input: registry.to_owned(),
                reason: "invalid registry host",
            })?;
        let (base, ping) = match ping(&http, &https).await {
            Ok(response) => (https, response),
            Err(https_error) if self.inner.transport.allows_http(host) => {
                let mut http_base = https.clone();
                http_base
                    .set_scheme("http")
                    .expect("http is a valid scheme");
                match ping(&http, &http_base).await {
                    // Only a registry's answer counts: a TLS server answers
                    // plain http with 400, which must not make us use http.
                    Ok(response) if is_registry_answer(&response) => (http_base, response),
                    _ => return Err(transport_error(registry, https_error)),
                }
            }
            Err(error) => return Err(transport_error(registry, error)),
        };
        tracing::debug!(registry, base = %base, status = ping.status().as_u16(), "registry endpoint");
        let scheme = if ping.status() == StatusCode::UNAUTHORIZED {
            scheme_from(registry, ping.headers())?
        } else {
            AuthScheme::None
        };
        let endpoint = Arc::new(Endpoint {
            registry: registry.to_owned(),
            base,
            http,
            scheme: Mutex::new(scheme),
        });
        Ok(endpoint)
    }

    /// The credential for `registry`: given, verified by login, or from the store.
    async fn credential(&self, registry: &str) -> Result<Option<Credential>> {
        if let Some(known) = self.cached_credential(registry) {
            return Ok(known);
        }
        let found = match &self.inner.store {
            Some(store) => {
                let store = store.clone();
                let name = registry.to_owned();
                tokio::task::spawn_blocking(move || store.get(&name))
                    .await
                    .expect("credential lookup does not panic")?
            }
            None => None,
        };
        self.inner
            .credentials
            .lock()
            .expect("credentials lock is never poisoned")
            .insert(registry.to_owned(), found.clone());
        Ok(found)
    }

    fn cached_credential(&self, registry: &str) -> Option<Option<Credential>> {
        let credentials = self
            .inner
            .credentials
            .lock()
            .expect("credentials lock is never poisoned");
        credentials.get(registry).cloned()
    }

    /// Sends a request built by `make`, adding auth for `scope`, answering
    /// one 401 challenge, and retrying connection failures, 429 and 5xx with
    /// backoff. Returns any other response for the caller to judge.
    pub(crate) async fn send(
        &self,
        endpoint: &Endpoint,
        scope: &Scope,
        target: &Target<'_>,
        make: &(dyn Fn(&reqwest::Client) -> RequestBuilder + Sync),
    ) -> Result<Response> {
        let retry = self.inner.retry;
        let mut attempt = 0;
        let mut answered_challenge = false;
        loop {
            attempt += 1;
            let authorization = self.authorization(endpoint, scope).await?;
            let mut request = make(&endpoint.http);
            if let Some(value) = &authorization {
                request = request.header(AUTHORIZATION, value.expose());
            }
            let outcome = request.send().await;
            let (failure, retry_after) = match outcome {
                Ok(response) if response.status() == StatusCode::UNAUTHORIZED => {
                    if answered_challenge {
                        return Err(self.unauthorized(endpoint, target).await);
                    }
                    answered_challenge = true;
                    attempt -= 1;
                    if let Ok(scheme) = scheme_from(&endpoint.registry, response.headers()) {
                        endpoint.set_scheme(scheme);
                    }
                    self.inner.tokens.remove(&endpoint.registry, scope);
                    if matches!(endpoint.scheme(), AuthScheme::None) {
                        return Err(self.unauthorized(endpoint, target).await);
                    }
                    continue;
                }
                Ok(response) if is_transient(response.status()) => {
                    let retry_after = parse_retry_after(response.headers());
                    let status = response.status().as_u16();
                    let error = status_error(&endpoint.registry, target, response).await;
                    tracing::debug!(registry = %endpoint.registry, status, "transient HTTP status");
                    (error, retry_after)
                }
                Ok(response) => return Ok(response),
                Err(error) => (transport_error(&endpoint.registry, error), None),
            };
            if attempt >= retry.attempts {
                return Err(Error::RetriesExhausted {
                    target: format!("{} {}", target.method, target.name),
                    attempts: attempt,
                    source: Box::new(failure),
                });
            }
            let delay = retry.delay(attempt, retry_after);
            tracing::debug!(registry = %endpoint.registry, attempt, ?delay, error = %failure, "retrying");
            tokio::time::sleep(delay).await;
        }
    }

    async fn unauthorized(&self, endpoint: &Endpoint, target: &Target<'_>) -> Error {
        let has_credentials = matches!(self.credential(&endpoint.registry).await, Ok(Some(_)));
        Error::Unauthorized {
            registry: endpoint.registry.clone(),
            target: target.name.to_owned(),
            has_credentials,
        }
    }

    /// The Authorization header value for `scope`, fetching a token if needed.
    async fn authorization(&self, endpoint: &Endpoint, scope: &Scope) -> Result<Option<Secret>> {
        match endpoint.scheme() {
            AuthScheme::None => Ok(None),
            AuthScheme::Basic => match self.credential(&endpoint.registry).await? {
                Some(Credential::Basic { username, password }) => {
                    Ok(Some(basic_header(&username, &password)))
                }
                _ => Ok(None),
            },
            AuthScheme::Bearer { realm, service } => {
                if let Some(token) = self.inner.tokens.get(&endpoint.registry, scope) {
                    return Ok(Some(Secret::new(format!("Bearer {}", token.expose()))));
                }
                let credential = self.credential(&endpoint.registry).await?;
                let (token, lifetime) = fetch_token(
                    endpoint,
                    &realm,
                    service.as_deref(),
                    scope,
                    credential.as_ref(),
                )
                .await?;
                self.inner
                    .tokens
                    .insert(&endpoint.registry, scope, token.clone(), lifetime);
                Ok(Some(Secret::new(format!("Bearer {}", token.expose()))))
            }
        }
    }

    /// Checks `credential` against `registry` (a `/v2/` request with basic
    /// auth, or a token request) and, when it works, uses it from now on.
    /// Saving it is the caller's business ([`CredentialStore::store`]).
    /// A wrong credential gives [`Error::Unauthorized`].
    pub async fn login(&self, registry: &str, credential: &Credential) -> Result<()> {
        let endpoint = self.endpoint(registry).await?;
        let target = Target {
            method: "GET",
            what: "registry",
            name: "/v2/",
        };
        let refused = || Error::Unauthorized {
            registry: registry.to_owned(),
            target: "login".to_owned(),
            has_credentials: true,
        };
        match endpoint.scheme() {
            AuthScheme::None => {}
            AuthScheme::Basic => {
                let Credential::Basic { username, password } = credential else {
                    return Err(refused());
                };
                let response = endpoint
                    .http
                    .get(endpoint.url(""))
                    .header(AUTHORIZATION, basic_header(username, password).expose())
                    .send()
                    .await
                    .map_err(|e| transport_error(registry, e))?;
                if response.status() == StatusCode::UNAUTHORIZED {
                    return Err(refused());
                }
                if !response.status().is_success() {
                    return Err(status_error(registry, &target, response).await);
                }
            }
            AuthScheme::Bearer { realm, service } => {
                fetch_token(
                    &endpoint,
                    &realm,
                    service.as_deref(),
                    &Scope::none(),
                    Some(credential),
                )
                .await?;
            }
        }
        self.inner
            .credentials
            .lock()
            .expect("credentials lock is never poisoned")
            .insert(registry.to_owned(), Some(credential.clone()));
        Ok(())
    }
}

async fn ping(http: &reqwest::Client, base: &Url) -> std::result::Result<Response, reqwest::Error> {
    let url = base.join("/v2/").expect("/v2/ joins a base URL");
    http.get(url).send().await
}

/// A `/v2/` answer from a distribution registry: 200 or 401, or its API header.
fn is_registry_answer(response: &Response) -> bool {
    matches!(response.status(), StatusCode::OK | StatusCode::UNAUTHORIZED)
        || response
            .headers()
            .contains_key("docker-distribution-api-version")
}

fn scheme_from(registry: &str, headers: &HeaderMap) -> Result<AuthScheme> {
    let header = headers
        .get_all(WWW_AUTHENTICATE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .collect::<Vec<_>>()
        .join(", ");
    let challenges = parse_challenges(&header);
    let unsupported = || Error::Challenge {
        registry: registry.to_owned(),
        challenge: header.chars().take(200).collect(),
    };
    if let Some(bearer) = challenges.iter().find(|c| c.scheme == "bearer") {
        let realm = bearer
            .param("realm")
            .and_then(|realm| Url::parse(realm).ok())
            .filter(|realm| matches!(realm.scheme(), "http" | "https"))
            .ok_or_else(unsupported)?;
        return Ok(AuthScheme::Bearer {
            realm,
            service: bearer.param("service").map(str::to_owned),
        });
    }
    if challenges.iter().any(|c| c.scheme == "basic") {
        return Ok(AuthScheme::Basic);
    }
    Err(unsupported())
}

fn basic_header(username: &str, password: &Secret) -> Secret {
    let encoded = base64::engine::general_purpose::STANDARD
        .encode(format!("{username}:{}", password.expose()));
    Secret::new(format!("Basic {encoded}"))
}

/// Asks the token server for a bearer token (docker token auth spec; OAuth2
/// refresh-token grant for identity tokens).
async fn fetch_token(
    endpoint: &Endpoint,
    realm: &Url,
    service: Option<&str>,
    scope: &Scope,
    credential: Option<&Credential>,
) -> Result<(Secret, Duration)> {
    let realm_name = realm.host_str().unwrap_or("token server").to_owned();
    let request = match credential {
        Some(Credential::IdentityToken(refresh)) => {
            let mut form: Vec<(&str, &str)> = vec![
                ("grant_type", "refresh_token"),
                ("refresh_token", refresh.expose()),
                ("client_id", "kiln"),
            ];
            if let Some(service) = service {
                form.push(("service", service));
            }
            let joined = scope.items().join(" ");
            if !joined.is_empty() {
                form.push(("scope", &joined));
            }
            let body = url::form_urlencoded::Serializer::new(String::new())
                .extend_pairs(form)
                .finish();
            endpoint
                .http
                .post(realm.clone())
                .header(
                    reqwest::header::CONTENT_TYPE,
                    "application/x-www-form-urlencoded",
                )
                .body(body)
        }
        _ => {
            let mut url = realm.clone();
            {
                let mut query = url.query_pairs_mut();
                if let Some(service) = service {
                    query.append_pair("service", service);
                }
                for item in scope.items() {
                    query.append_pair("scope", item);
                }
                if let Some(Credential::Basic { username, .. }) = credential {
                    query.append_pair("account", username);
                }
            }
            let request = endpoint.http.get(url);
            match credential {
                Some(Credential::Basic { username, password }) => {
                    request.header(AUTHORIZATION, basic_header(username, password).expose())
                }
                _ => request,
            }
        }
    };
    let response = request
        .send()
        .await
        .map_err(|e| transport_error(&realm_name, e))?;
    let status = response.status();
    if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
        return Err(Error::Unauthorized {
            registry: endpoint.registry.clone(),
            target: scope.describe(),
            has_credentials: credential.is_some(),
        });
    }
    let target = Target {
        method: "GET",
        what: "token",
        name: realm.path(),
    };
    if !status.is_success() {
        return Err(status_error(&realm_name, &target, response).await);
    }
    let body = response
        .bytes()
        .await
        .map_err(|e| transport_error(&realm_name, e))?;
    serde_json::from_slice::<TokenResponse>(&body)
        .ok()
        .and_then(TokenResponse::into_token)
        .ok_or_else(|| Error::Protocol {
            registry: realm_name,
            detail: "token response has no token".to_owned(),
        })
}

pub(crate) fn transport_error(registry: &str, cause: reqwest::Error) -> Error {
    Error::Transport {
        registry: registry.to_owned(),
        cause: cause.without_url(),
    }
}

/// 429 and the 5xx statuses that mean "try again".
fn is_transient(status: StatusCode) -> bool {
    status == StatusCode::TOO_MANY_REQUESTS
        || (status.is_server_error()
            && status != StatusCode::NOT_IMPLEMENTED
            && status != StatusCode::HTTP_VERSION_NOT_SUPPORTED)
}

/// Retry-After in seconds (the HTTP-date form falls back to backoff).
fn parse_retry_after(headers: &HeaderMap) -> Option<Duration> {
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
    fn backoff_grows_and_honours_retry_after() {
        let policy = RetryPolicy {
            attempts: 5,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(1),
        };
        assert!(policy.delay(1, None) <= Duration::from_millis(125));
        assert!(policy.delay(3, None) >= Duration::from_millis(300));
        assert!(policy.delay(30, None) <= Duration::from_millis(1250));
        assert_eq!(
            policy.delay(1, Some(Duration::from_secs(2))),
            Duration::from_secs(2)
        );
        assert_eq!(
            policy.delay(1, Some(Duration::from_secs(3600))),
            Duration::from_secs(60)
        );
    }

    #[test]
    fn transient_statuses() {
        for code in [429, 500, 502, 503, 504] {
            assert!(is_transient(StatusCode::from_u16(code).unwrap()), "{code}");
        }
        for code in [400, 401, 403, 404, 416, 501] {
            assert!(!is_transient(StatusCode::from_u16(code).unwrap()), "{code}");
        }
    }

    #[test]
    fn challenges_to_schemes() {
        let mut headers = HeaderMap::new();
        headers.insert(
            WWW_AUTHENTICATE,
            r#"Bearer realm="http://127.0.0.1:1/token",service="reg""#
                .parse()
                .unwrap(),
        );
        assert!(
            matches!(scheme_from("r", &headers).unwrap(), AuthScheme::Bearer { service: Some(s), .. } if s == "reg")
        );
        headers.insert(WWW_AUTHENTICATE, r#"Basic realm="x""#.parse().unwrap());
        assert!(matches!(
            scheme_from("r", &headers).unwrap(),
            AuthScheme::Basic
        ));
        headers.insert(
            WWW_AUTHENTICATE,
            r#"Bearer realm="file:///etc/passwd""#.parse().unwrap(),
        );
        assert!(scheme_from("r", &headers).is_err());
    }
}
