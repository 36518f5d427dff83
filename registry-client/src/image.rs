//! Manifest-level operations: resolve a reference (index -> platform
//! manifest), fetch and push manifests, list repositories and tags.

use bytes::Bytes;
use oci_spec::image::{Descriptor, Digest, ImageManifest};
use reqwest::header::{ACCEPT, CONTENT_TYPE, LINK};
use reqwest::StatusCode;
use sha2::{Digest as _, Sha256};

use crate::auth::Scope;
use crate::client::{status_error, transport_error, Client, Target};
use crate::error::{Error, Result};
use crate::manifest::{
    self, describe_platforms, Manifest, ManifestDocument, Platform, ACCEPT_MANIFESTS,
    MAX_MANIFEST_BYTES,
};
use crate::reference::{parse_digest, Reference};

/// An image resolved to one platform's manifest.
#[derive(Clone, Debug)]
pub struct ResolvedImage {
    /// The reference that was resolved.
    pub reference: Reference,
    /// The platform manifest as served (exact bytes, digest, media type).
    pub manifest: ManifestDocument,
    /// The parsed platform manifest: config and layers.
    pub image: ImageManifest,
    /// The index or manifest list the reference pointed to, if it was one;
    /// keep its bytes to push the image again unchanged.
    pub index: Option<ManifestDocument>,
    /// The platform the manifest was chosen for, when chosen from an index.
    pub platform: Option<Platform>,
}

impl ResolvedImage {
    /// The config blob's descriptor.
    pub fn config(&self) -> &Descriptor {
        self.image.config()
    }

    /// The layers, base first.
    pub fn layers(&self) -> &[Descriptor] {
        self.image.layers()
    }

    /// The digest the reference resolves to: the index's when there is one
    /// (what `docker pull` prints), else the manifest's.
    pub fn digest(&self) -> &Digest {
        self.index
            .as_ref()
            .map_or(&self.manifest.digest, |index| &index.digest)
    }
}

impl Client {
    /// Resolves `reference` to an image manifest for `platform`: fetches the
    /// manifest, and when it is an index or manifest list, the entry for
    /// `platform` (see [`Platform::select`]). Every document is verified
    /// against the digest it was asked by and the registry's
    /// `Docker-Content-Digest`.
    pub async fn resolve(
        &self,
        reference: &Reference,
        platform: &Platform,
    ) -> Result<ResolvedImage> {
        let top = self.get_manifest(reference).await?;
        let index = match &top.manifest {
            Manifest::Image(image) => {
                return Ok(ResolvedImage {
                    reference: reference.clone(),
                    image: (**image).clone(),
                    manifest: top,
                    index: None,
                    platform: None,
                })
            }
            Manifest::Index(index) => index.clone(),
        };
        let chosen = platform
            .select(&index)
            .ok_or_else(|| Error::PlatformNotFound {
                target: reference.to_string(),
                platform: platform.to_string(),
                available: describe_platforms(&index),
            })?;
        let child = self
            .get_manifest(&reference.with_digest(chosen.digest().clone()))
            .await?;
        if child.bytes.len() as u64 != chosen.size() {
            return Err(Error::SizeMismatch {
                target: format!("{}@{}", reference.name(), chosen.digest()),
                expected: chosen.size(),
                actual: child.bytes.len() as u64,
            });
        }
        let image = match &child.manifest {
            Manifest::Image(image) => (**image).clone(),
            Manifest::Index(_) => {
                return Err(Error::UnsupportedMediaType {
                    target: format!("{}@{}", reference.name(), child.digest),
                    media_type: format!("nested index {}", child.media_type),
                })
            }
        };
        Ok(ResolvedImage {
            reference: reference.clone(),
            manifest: child,
            image,
            index: Some(top),
            platform: Some(platform.clone()),
        })
    }

    /// Fetches the manifest or index `reference` names, as served.
    pub async fn get_manifest(&self, reference: &Reference) -> Result<ManifestDocument> {
        let endpoint = self.endpoint(reference.registry()).await?;
        let wanted = reference.manifest_reference();
        let url = endpoint.url(&format!("{}/manifests/{wanted}", reference.repository()));
        let name = reference.to_string();
        let target = Target {
            method: "GET",
            what: "manifest",
            name: &name,
        };
        let scope = Scope::pull(reference.repository());
        let response = self
            .send(&endpoint, &scope, &target, &|http| {
                http.get(url.clone()).header(ACCEPT, ACCEPT_MANIFESTS)
            })
            .await?;
        if !response.status().is_success() {
            return Err(status_error(&endpoint.registry, &target, response).await);
        }
        if response
            .content_length()
            .is_some_and(|length| length > MAX_MANIFEST_BYTES)
        {
            return Err(Error::ManifestTooLarge {
                target: name,
                limit: MAX_MANIFEST_BYTES,
            });
        }
        let content_type = header_text(response.headers(), CONTENT_TYPE.as_str());
        let announced = header_text(response.headers(), "docker-content-digest");
        let bytes = read_body(&endpoint.registry, response, MAX_MANIFEST_BYTES, &name).await?;
        let actual = sha256_digest(&bytes);
        // Verify against what we asked for, else what the registry announced
        // (distribution spec: Docker-Content-Digest; only sha256 is computed).
        let expected = reference
            .digest()
            .map(ToString::to_string)
            .or_else(|| announced.filter(|d| d.starts_with("sha256:")));
        if let Some(expected) = expected {
            if expected.starts_with("sha256:") && expected != actual.to_string() {
                return Err(Error::DigestMismatch {
                    target: name,
                    expected,
                    actual: actual.to_string(),
                });
            }
        }
        let (media_type, manifest) =
            manifest::parse(&name, content_type.as_deref().unwrap_or(""), &bytes)?;
        Ok(ManifestDocument {
            digest: actual,
            media_type,
            bytes,
            manifest,
        })
    }

    /// Puts `bytes` as the manifest `reference` names (its tag, or its
    /// digest for index children), with `media_type` as Content-Type. The
    /// bytes go unchanged; returns their digest, checked against the one the
    /// registry answers with. Push every blob and child manifest first.
    pub async fn push_manifest(
        &self,
        reference: &Reference,
        media_type: &str,
        bytes: Bytes,
    ) -> Result<Digest> {
        let endpoint = self.endpoint(reference.registry()).await?;
        let digest = sha256_digest(&bytes);
        if let Some(wanted) = reference.digest() {
            if *wanted != digest {
                return Err(Error::DigestMismatch {
                    target: reference.to_string(),
                    expected: wanted.to_string(),
                    actual: digest.to_string(),
                });
            }
        }
        let url = endpoint.url(&format!(
            "{}/manifests/{}",
            reference.repository(),
            reference.manifest_reference()
        ));
        let name = reference.to_string();
        let target = Target {
            method: "PUT",
            what: "manifest",
            name: &name,
        };
        let scope = Scope::push(reference.repository());
        let media_type = media_type.to_owned();
        let response = self
            .send(&endpoint, &scope, &target, &|http| {
                http.put(url.clone())
                    .header(CONTENT_TYPE, media_type.clone())
                    .body(bytes.clone())
            })
            .await?;
        if !response.status().is_success() {
            return Err(status_error(&endpoint.registry, &target, response).await);
        }
        if let Some(answered) = header_text(response.headers(), "docker-content-digest") {
            if answered.starts_with("sha256:") && answered != digest.to_string() {
                return Err(Error::DigestMismatch {
                    target: name,
                    expected: digest.to_string(),
                    actual: answered,
                });
            }
        }
        Ok(digest)
    }

    /// Every repository name in `registry` (`/v2/_catalog`, following
    /// `Link` pages). Filtering for `kiln search` is the caller's.
    pub async fn catalog(&self, registry: &str) -> Result<Vec<String>> {
        #[derive(serde::Deserialize)]
        struct Page {
            #[serde(default)]
            repositories: Vec<String>,
        }
        let endpoint = self.endpoint(registry).await?;
        self.paged(
            &endpoint,
            &Scope::catalog(),
            endpoint.url("_catalog?n=1000"),
            "catalog",
            |bytes| serde_json::from_slice::<Page>(bytes).map(|p| p.repositories),
        )
        .await
    }

    /// The tags of `reference`'s repository (`/v2/NAME/tags/list`).
    pub async fn tags(&self, reference: &Reference) -> Result<Vec<String>> {
        #[derive(serde::Deserialize)]
        struct Page {
            #[serde(default)]
            tags: Option<Vec<String>>,
        }
        let endpoint = self.endpoint(reference.registry()).await?;
        let url = endpoint.url(&format!("{}/tags/list?n=1000", reference.repository()));
        self.paged(
            &endpoint,
            &Scope::pull(reference.repository()),
            url,
            "tags",
            |bytes| serde_json::from_slice::<Page>(bytes).map(|p| p.tags.unwrap_or_default()),
        )
        .await
    }

    async fn paged(
        &self,
        endpoint: &crate::client::Endpoint,
        scope: &Scope,
        first: url::Url,
        what: &'static str,
        parse: impl Fn(&[u8]) -> serde_json::Result<Vec<String>>,
    ) -> Result<Vec<String>> {
        let mut all = Vec::new();
        let mut next = Some(first);
        let mut pages = 0;
        while let Some(url) = next.take() {
            pages += 1;
            let name = url.path().to_owned();
            let target = Target {
                method: "GET",
                what,
                name: &name,
            };
            let response = self
                .send(endpoint, scope, &target, &|http| http.get(url.clone()))
                .await?;
            if !response.status().is_success() {
                return Err(status_error(&endpoint.registry, &target, response).await);
            }
            // Link: </v2/_catalog?last=x&n=1000>; rel="next"
            next = header_text(response.headers(), LINK.as_str())
                .and_then(|link| {
                    let start = link.find('<')? + 1;
                    let end = link.find('>')?;
                    (link[end..].contains("rel=\"next\"") && start < end)
                        .then(|| link[start..end].to_owned())
                })
                .and_then(|path| url.join(&path).ok())
                .filter(|_| pages < 10_000);
            let body = read_body(&endpoint.registry, response, 16 * 1024 * 1024, &name).await?;
            let items = parse(&body).map_err(|_| Error::Protocol {
                registry: endpoint.registry.clone(),
                detail: format!("{what} response is not the expected JSON"),
            })?;
            all.extend(items);
        }
        Ok(all)
    }
}

/// The sha256 digest of `bytes`.
pub fn sha256_digest(bytes: &[u8]) -> Digest {
    let hex = hex::encode(Sha256::digest(bytes));
    parse_digest(&format!("sha256:{hex}")).expect("a sha256 hex string is a valid digest")
}

pub(crate) fn header_text(headers: &reqwest::header::HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)?
        .to_str()
        .ok()
        .map(|v| v.trim().to_owned())
}

async fn read_body(
    registry: &str,
    response: reqwest::Response,
    limit: u64,
    name: &str,
) -> Result<Bytes> {
    if response.status() == StatusCode::NO_CONTENT {
        return Ok(Bytes::new());
    }
    let mut response = response;
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| transport_error(registry, e))?
    {
        body.extend_from_slice(&chunk);
        if body.len() as u64 > limit {
            return Err(Error::ManifestTooLarge {
                target: name.to_owned(),
                limit,
            });
        }
    }
    Ok(Bytes::from(body))
}
