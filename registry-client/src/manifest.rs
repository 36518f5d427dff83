//! Manifests and indexes: media types, parsing of OCI and Docker v2 schema 2
//! documents (same JSON shape, so oci-spec's types read both), and platform
//! selection in an index (image-spec image-index.md, "platform").

use std::fmt;
use std::str::FromStr;

use bytes::Bytes;
use oci_spec::image::{Descriptor, Digest, ImageIndex, ImageManifest};

use crate::error::{Error, Result};

/// Media type of an OCI image manifest.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// Media type of an OCI image index.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// Media type of a Docker v2 schema 2 manifest.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Media type of a Docker manifest list.
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// The Accept header for manifest requests, best first.
pub(crate) const ACCEPT_MANIFESTS: &str = "application/vnd.oci.image.index.v1+json, \
     application/vnd.docker.distribution.manifest.list.v2+json, \
     application/vnd.oci.image.manifest.v1+json, \
     application/vnd.docker.distribution.manifest.v2+json";
/// The largest manifest we read (distribution spec: registries may refuse > 4 MiB).
pub(crate) const MAX_MANIFEST_BYTES: u64 = 4 * 1024 * 1024;

/// A parsed manifest document.
#[derive(Clone, Debug)]
pub enum Manifest {
    /// A single-platform image manifest (OCI or Docker v2 schema 2).
    Image(Box<ImageManifest>),
    /// An index of manifests (OCI index or Docker manifest list).
    Index(Box<ImageIndex>),
}

/// A manifest as the registry served it: exact bytes, their digest, the
/// media type, and the parsed document.
#[derive(Clone, Debug)]
pub struct ManifestDocument {
    /// Digest of `bytes` (sha256), verified.
    pub digest: Digest,
    /// Media type from the Content-Type header or the document's `mediaType`.
    pub media_type: String,
    /// The bytes exactly as served; push them unchanged to keep the digest.
    pub bytes: Bytes,
    /// The parsed document.
    pub manifest: Manifest,
}

impl ManifestDocument {
    /// A descriptor for this document, for building an index.
    pub fn descriptor(&self) -> Descriptor {
        Descriptor::new(
            self.media_type.as_str().into(),
            self.bytes.len() as u64,
            self.digest.clone(),
        )
    }
}

/// Parses `bytes` served as `content_type` (may be empty or generic).
/// Returns the effective media type and the document.
pub(crate) fn parse(target: &str, content_type: &str, bytes: &[u8]) -> Result<(String, Manifest)> {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Probe {
        #[serde(default)]
        schema_version: Option<u32>,
        #[serde(default)]
        media_type: Option<String>,
        #[serde(default)]
        manifests: Option<serde_json::Value>,
        #[serde(default)]
        config: Option<serde_json::Value>,
    }
    let malformed = |source| Error::MalformedManifest {
        target: target.to_owned(),
        source,
    };
    let probe: Probe = serde_json::from_slice(bytes).map_err(malformed)?;
    let header = content_type.split(';').next().unwrap_or("").trim();
    let known = [
        OCI_MANIFEST,
        OCI_INDEX,
        DOCKER_MANIFEST,
        DOCKER_MANIFEST_LIST,
    ];
    let media_type = if known.contains(&header) {
        header.to_owned()
    } else if let Some(media_type) = probe.media_type.clone() {
        media_type
    } else if probe.manifests.is_some() {
        OCI_INDEX.to_owned()
    } else if probe.config.is_some() {
        OCI_MANIFEST.to_owned()
    } else {
        header.to_owned()
    };
    if probe.schema_version == Some(1)
        || media_type.starts_with("application/vnd.docker.distribution.manifest.v1+")
    {
        return Err(Error::UnsupportedMediaType {
            target: target.to_owned(),
            media_type: "Docker schema 1 (deprecated)".to_owned(),
        });
    }
    let manifest = match media_type.as_str() {
        OCI_INDEX | DOCKER_MANIFEST_LIST => {
            Manifest::Index(Box::new(serde_json::from_slice(bytes).map_err(malformed)?))
        }
        OCI_MANIFEST | DOCKER_MANIFEST => {
            Manifest::Image(Box::new(serde_json::from_slice(bytes).map_err(malformed)?))
        }
        other => {
            return Err(Error::UnsupportedMediaType {
                target: target.to_owned(),
                media_type: other.to_owned(),
            })
        }
    };
    Ok((media_type, manifest))
}

/// True for layers that registries need not hold and pushes must not upload
/// (image-spec layer.md "non-distributable"; Docker "foreign" layers).
pub fn is_non_distributable(descriptor: &Descriptor) -> bool {
    let media_type = descriptor.media_type().to_string();
    media_type.contains(".nondistributable.") || media_type.contains(".foreign.")
}

/// An `os/architecture[/variant]` platform.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Platform {
    /// GOOS value: `linux`, `windows`.
    pub os: String,
    /// GOARCH value: `amd64`, `arm64`, `arm`, ...
    pub architecture: String,
    /// CPU variant: `v7`, `v8`, ...
    pub variant: Option<String>,
}

impl Platform {
    /// The platform of this process (`linux/amd64` on x86-64), in GOARCH terms.
    pub fn host() -> Platform {
        let (architecture, variant) = match std::env::consts::ARCH {
            "x86_64" => ("amd64", None),
            "x86" => ("386", None),
            "aarch64" => ("arm64", Some("v8")),
            "arm" => ("arm", Some("v7")),
            "powerpc64" if cfg!(target_endian = "little") => ("ppc64le", None),
            "riscv64" => ("riscv64", None),
            "s390x" => ("s390x", None),
            "loongarch64" => ("loong64", None),
            other => (other, None),
        };
        Platform {
            os: std::env::consts::OS.to_owned(),
            architecture: architecture.to_owned(),
            variant: variant.map(str::to_owned),
        }
    }

    /// Parses `os/arch[/variant]` (`linux/arm64/v8`).
    pub fn parse(text: &str) -> Result<Platform> {
        let parts: Vec<&str> = text.split('/').collect();
        let invalid = || Error::InvalidPlatform {
            input: text.to_owned(),
        };
        if parts.iter().any(|p| p.is_empty()) {
            return Err(invalid());
        }
        match parts.as_slice() {
            [os, architecture] => Ok(Platform::new(os, architecture, None)),
            [os, architecture, variant] => Ok(Platform::new(os, architecture, Some(variant))),
            _ => Err(invalid()),
        }
    }

    fn new(os: &str, architecture: &str, variant: Option<&str>) -> Platform {
        let os = os.to_ascii_lowercase();
        let architecture = architecture.to_ascii_lowercase();
        // containerd's platforms.Normalize: the usual aliases.
        let (architecture, variant) = match (architecture.as_str(), variant) {
            ("x86_64" | "x86-64", _) => ("amd64".to_owned(), None),
            ("aarch64", v) => ("arm64".to_owned(), v.map(str::to_owned)),
            (arch, v) => (arch.to_owned(), v.map(str::to_owned)),
        };
        Platform {
            os,
            architecture,
            variant,
        }
    }

    /// Whether a manifest for `candidate` runs here. A wanted variant must
    /// match (arm64 without variant counts as v8); without a wanted variant
    /// any variant does.
    pub fn matches(&self, candidate: &oci_spec::image::Platform) -> bool {
        if candidate.os().to_string() != self.os
            || candidate.architecture().to_string() != self.architecture
        {
            return false;
        }
        match &self.variant {
            None => true,
            Some(wanted) => {
                let default = if self.architecture == "arm64" {
                    Some("v8")
                } else {
                    None
                };
                let have = candidate.variant().as_deref().or(default);
                let want = Some(wanted.as_str());
                have == want
            }
        }
    }

    /// Picks the manifest for this platform from `index`: the first entry
    /// whose platform matches, preferring an exact variant match.
    pub fn select<'a>(&self, index: &'a ImageIndex) -> Option<&'a Descriptor> {
        let matching: Vec<&Descriptor> = index
            .manifests()
            .iter()
            .filter(|d| d.platform().as_ref().is_some_and(|p| self.matches(p)))
            .collect();
        matching
            .iter()
            .find(|d| {
                d.platform().as_ref().and_then(|p| p.variant().as_deref())
                    == self.variant.as_deref()
            })
            .or(matching.first())
            .copied()
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(variant) = &self.variant {
            write!(f, "/{variant}")?;
        }
        Ok(())
    }
}

impl FromStr for Platform {
    type Err = Error;
    fn from_str(text: &str) -> Result<Platform> {
        Platform::parse(text)
    }
}

/// `linux/amd64, linux/arm64/v8` for error messages.
pub(crate) fn describe_platforms(index: &ImageIndex) -> String {
    let names: Vec<String> = index
        .manifests()
        .iter()
        .filter_map(|d| d.platform().as_ref())
        .map(|p| {
            let mut name = format!("{}/{}", p.os(), p.architecture());
            if let Some(variant) = p.variant() {
                name.push('/');
                name.push_str(variant);
            }
            name
        })
        .collect();
    if names.is_empty() {
        "no platforms".to_owned()
    } else {
        names.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D1: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
    const D2: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";
    const D3: &str = "sha256:3333333333333333333333333333333333333333333333333333333333333333";
    const D4: &str = "sha256:4444444444444444444444444444444444444444444444444444444444444444";

    fn index() -> ImageIndex {
        let text = format!(
            r#"{{"schemaVersion":2,"mediaType":"{DOCKER_MANIFEST_LIST}","manifests":[
            {{"mediaType":"{DOCKER_MANIFEST}","digest":"{D1}","size":1,"platform":{{"os":"linux","architecture":"amd64"}}}},
            {{"mediaType":"{DOCKER_MANIFEST}","digest":"{D2}","size":1,"platform":{{"os":"linux","architecture":"arm","variant":"v6"}}}},
            {{"mediaType":"{DOCKER_MANIFEST}","digest":"{D3}","size":1,"platform":{{"os":"linux","architecture":"arm","variant":"v7"}}}},
            {{"mediaType":"{DOCKER_MANIFEST}","digest":"{D4}","size":1,"platform":{{"os":"linux","architecture":"arm64","variant":"v8"}}}},
            {{"mediaType":"{OCI_MANIFEST}","digest":"{D1}","size":1,"platform":{{"os":"unknown","architecture":"unknown"}}}}
            ]}}"#
        );
        match parse("t", DOCKER_MANIFEST_LIST, text.as_bytes()).unwrap().1 {
            Manifest::Index(index) => *index,
            Manifest::Image(_) => panic!("parsed as image"),
        }
    }

    #[test]
    fn platform_selection() {
        let index = index();
        let pick = |text: &str| {
            Platform::parse(text)
                .unwrap()
                .select(&index)
                .map(|d| d.digest().to_string())
        };
        assert_eq!(pick("linux/amd64").as_deref(), Some(D1));
        assert_eq!(pick("linux/x86_64").as_deref(), Some(D1));
        assert_eq!(pick("linux/arm/v7").as_deref(), Some(D3));
        assert_eq!(pick("linux/arm/v6").as_deref(), Some(D2));
        assert_eq!(pick("linux/arm").as_deref(), Some(D2));
        assert_eq!(pick("linux/arm64").as_deref(), Some(D4));
        assert_eq!(pick("linux/aarch64/v8").as_deref(), Some(D4));
        assert_eq!(pick("linux/arm/v5"), None);
        assert_eq!(pick("windows/amd64"), None);
        assert_eq!(
            describe_platforms(&index),
            "linux/amd64, linux/arm/v6, linux/arm/v7, linux/arm64/v8, unknown/unknown"
        );
    }

    #[test]
    fn platform_parse_and_host() {
        assert_eq!(
            Platform::parse("linux/arm64/v8").unwrap().to_string(),
            "linux/arm64/v8"
        );
        assert!(Platform::parse("linux").is_err());
        assert!(Platform::parse("linux//v7").is_err());
        assert!(Platform::parse("a/b/c/d").is_err());
        let host = Platform::host();
        assert_eq!(host.os, "linux");
        if cfg!(target_arch = "x86_64") {
            assert_eq!(host.to_string(), "linux/amd64");
        }
    }

    #[test]
    fn media_type_from_header_or_body() {
        let body = format!(
            r#"{{"schemaVersion":2,"config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{D1}","size":2}},"layers":[]}}"#
        );
        let (media_type, manifest) = parse("t", "", body.as_bytes()).unwrap();
        assert_eq!(media_type, OCI_MANIFEST);
        assert!(matches!(manifest, Manifest::Image(_)));
        let (media_type, _) = parse("t", "application/json", body.as_bytes()).unwrap();
        assert_eq!(media_type, OCI_MANIFEST);
        let (media_type, _) = parse(
            "t",
            &format!("{DOCKER_MANIFEST}; charset=utf-8"),
            body.as_bytes(),
        )
        .unwrap();
        assert_eq!(media_type, DOCKER_MANIFEST);
    }

    #[test]
    fn malformed_and_unsupported() {
        let error = parse("x:1", OCI_MANIFEST, b"{not json").unwrap_err();
        assert!(matches!(error, Error::MalformedManifest { .. }));
        assert!(!error.to_string().contains('\n'));
        let error =
            parse("x:1", OCI_MANIFEST, br#"{"schemaVersion":2,"layers":"no"}"#).unwrap_err();
        assert!(matches!(error, Error::MalformedManifest { .. }));
        let error = parse("x:1", "", br#"{"schemaVersion":1,"fsLayers":[]}"#).unwrap_err();
        assert!(matches!(error, Error::UnsupportedMediaType { .. }));
        let error = parse("x:1", "text/html", b"{}").unwrap_err();
        assert!(matches!(error, Error::UnsupportedMediaType { .. }));
    }

    #[test]
    fn non_distributable() {
        let foreign = Descriptor::new(
            "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip".into(),
            1,
            Digest::from_str(D1).unwrap(),
        );
        assert!(is_non_distributable(&foreign));
        let normal = Descriptor::new(
            oci_spec::image::MediaType::ImageLayerGzip,
            1,
            Digest::from_str(D1).unwrap(),
        );
        assert!(!is_non_distributable(&normal));
    }
}
