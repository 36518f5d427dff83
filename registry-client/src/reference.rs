//! Image references: `[REGISTRY/]REPOSITORY[:TAG][@DIGEST]`, normalized the
//! way docker does it (distribution/reference `ParseNormalizedNamed`):
//! `busybox` is `docker.io/library/busybox:latest`.

use std::fmt;
use std::str::FromStr;

use oci_spec::image::Digest;

use crate::error::{Error, Result};

/// The registry that names without a domain belong to.
pub const DOCKER_HUB: &str = "docker.io";
/// The host that actually serves Docker Hub's distribution API.
const DOCKER_HUB_API_HOST: &str = "registry-1.docker.io";
/// Tag used when a reference names neither a tag nor a digest.
pub const DEFAULT_TAG: &str = "latest";

/// A parsed, normalized image reference.
///
/// `registry` is a host with an optional port (`docker.io`, `localhost:5000`),
/// `repository` the path inside it (`library/busybox`). A reference carries a
/// tag, a digest, or both (`name:tag@sha256:...`, where the digest wins when
/// fetching). Parsing a name with neither adds the tag `latest`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Reference {
    registry: String,
    repository: String,
    tag: Option<String>,
    digest: Option<Digest>,
}

impl Reference {
    /// Parses and normalizes `text` as docker does: a first path component
    /// with a `.` or `:`, or equal to `localhost`, is a registry; otherwise the
    /// registry is `docker.io`, where one-component names get `library/`.
    /// `index.docker.io` is spelled `docker.io`. Errors name the input and why
    /// it is invalid.
    pub fn parse(text: &str) -> Result<Reference> {
        let invalid = |reason: &'static str| Error::InvalidReference {
            input: text.to_owned(),
            reason,
        };
        if text.is_empty() {
            return Err(invalid("empty reference"));
        }
        if text.len() > 4096 {
            return Err(invalid("reference too long"));
        }
        let (name_and_tag, digest) = match text.split_once('@') {
            Some((name, digest)) => {
                let digest = parse_digest(digest).ok_or_else(|| invalid("invalid digest"))?;
                (name, Some(digest))
            }
            None => (text, None),
        };
        // A tag is what follows the last ':' after the last '/'.
        let last_slash = name_and_tag.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match name_and_tag[last_slash..].rfind(':') {
            Some(i) => {
                let split = last_slash + i;
                (&name_and_tag[..split], Some(&name_and_tag[split + 1..]))
            }
            None => (name_and_tag, None),
        };
        if let Some(tag) = tag {
            if !is_valid_tag(tag) {
                return Err(invalid("invalid tag"));
            }
        }
        let (registry, repository) = split_registry(name);
        if !registry.is_empty() && !is_valid_registry(registry) {
            return Err(invalid("invalid registry host"));
        }
        let mut registry = if registry.is_empty() {
            DOCKER_HUB.to_owned()
        } else {
            registry.to_owned()
        };
        if registry == "index.docker.io" {
            registry = DOCKER_HUB.to_owned();
        }
        if repository.is_empty() {
            return Err(invalid("missing repository name"));
        }
        if repository.chars().any(|c| c.is_ascii_uppercase()) {
            return Err(invalid("repository name must be lowercase"));
        }
        if !repository.split('/').all(is_valid_path_component) {
            return Err(invalid("invalid repository name"));
        }
        let repository = if registry == DOCKER_HUB && !repository.contains('/') {
            format!("library/{repository}")
        } else {
            repository.to_owned()
        };
        if registry.len() + 1 + repository.len() > 255 {
            return Err(invalid("repository name longer than 255 characters"));
        }
        if registry == DOCKER_HUB
            && repository.len() == 72
            && repository.starts_with("library/")
            && repository[8..].bytes().all(|b| b.is_ascii_hexdigit())
        {
            // docker refuses names that look like image ids.
            return Err(invalid(
                "cannot use a 64-character hexadecimal string as a name",
            ));
        }
        let tag = match (tag, &digest) {
            (Some(tag), _) => Some(tag.to_owned()),
            (None, Some(_)) => None,
            (None, None) => Some(DEFAULT_TAG.to_owned()),
        };
        Ok(Reference {
            registry,
            repository,
            tag,
            digest,
        })
    }

    /// The registry host with optional port, e.g. `docker.io`, `127.0.0.1:5000`.
    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// The repository path inside the registry, e.g. `library/busybox`.
    pub fn repository(&self) -> &str {
        &self.repository
    }

    /// The tag, if any.
    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    /// The digest, if any.
    pub fn digest(&self) -> Option<&Digest> {
        self.digest.as_ref()
    }

    /// The tag or digest to ask the registry for: the digest when present.
    pub fn manifest_reference(&self) -> String {
        match (&self.digest, &self.tag) {
            (Some(digest), _) => digest.to_string(),
            (None, Some(tag)) => tag.clone(),
            (None, None) => DEFAULT_TAG.to_owned(),
        }
    }

    /// The same repository with `tag` instead of any tag or digest.
    pub fn with_tag(&self, tag: &str) -> Result<Reference> {
        if !is_valid_tag(tag) {
            return Err(Error::InvalidReference {
                input: tag.to_owned(),
                reason: "invalid tag",
            });
        }
        Ok(Reference {
            tag: Some(tag.to_owned()),
            digest: None,
            ..self.clone()
        })
    }

    /// The same repository pinned to `digest` (any tag is dropped).
    pub fn with_digest(&self, digest: Digest) -> Reference {
        Reference {
            tag: None,
            digest: Some(digest),
            ..self.clone()
        }
    }

    /// `registry/repository` without tag or digest.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// The short form docker prints: `busybox:latest` for
    /// `docker.io/library/busybox:latest`, `user/app` for `docker.io/user/app`.
    pub fn familiar(&self) -> String {
        let mut out = if self.registry == DOCKER_HUB {
            self.repository
                .strip_prefix("library/")
                .filter(|rest| !rest.contains('/'))
                .unwrap_or(&self.repository)
                .to_owned()
        } else {
            self.name()
        };
        self.push_suffix(&mut out);
        out
    }

    /// The host to talk HTTP to: `registry-1.docker.io` for `docker.io`.
    pub fn api_host(&self) -> &str {
        api_host(&self.registry)
    }

    fn push_suffix(&self, out: &mut String) {
        if let Some(tag) = &self.tag {
            out.push(':');
            out.push_str(tag);
        }
        if let Some(digest) = &self.digest {
            out.push('@');
            out.push_str(digest.as_ref());
        }
    }
}

/// The host that serves the distribution API of `registry`.
pub(crate) fn api_host(registry: &str) -> &str {
    if registry == DOCKER_HUB {
        DOCKER_HUB_API_HOST
    } else {
        registry
    }
}

impl fmt::Display for Reference {
    /// The fully qualified form: `docker.io/library/busybox:latest`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = self.name();
        self.push_suffix(&mut out);
        f.write_str(&out)
    }
}

impl FromStr for Reference {
    type Err = Error;
    fn from_str(text: &str) -> Result<Reference> {
        Reference::parse(text)
    }
}

/// Parses `algorithm:hex`; sha256 and sha512 must have their full length.
pub(crate) fn parse_digest(text: &str) -> Option<Digest> {
    let (algorithm, hex) = text.split_once(':')?;
    let hex_len = match algorithm {
        "sha256" => 64,
        "sha512" => 128,
        _ => return None,
    };
    if hex.len() != hex_len || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    Digest::from_str(text).ok()
}

/// Splits `name` into (registry, repository); registry is empty when the
/// first component is not a host.
fn split_registry(name: &str) -> (&str, &str) {
    match name.split_once('/') {
        Some((first, rest))
            if first.contains('.') || first.contains(':') || first == "localhost" =>
        {
            (first, rest)
        }
        _ => ("", name),
    }
}

fn is_valid_registry(host: &str) -> bool {
    let (name, port) = match host.rsplit_once(':') {
        Some((name, _)) if !name.ends_with(']') && name.contains(':') => (host, None),
        Some((name, port)) => (name, Some(port)),
        None => (host, None),
    };
    if let Some(port) = port {
        if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) || port.len() > 5 {
            return false;
        }
    }
    if let Some(inner) = name.strip_prefix('[').and_then(|n| n.strip_suffix(']')) {
        return inner.parse::<std::net::Ipv6Addr>().is_ok();
    }
    !name.is_empty()
        && name.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// `[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*` from the distribution grammar.
fn is_valid_path_component(component: &str) -> bool {
    let bytes = component.as_bytes();
    if bytes.is_empty() {
        return false;
    }
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    if !alnum(bytes[0]) || !alnum(bytes[bytes.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < bytes.len() {
        if alnum(bytes[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && !alnum(bytes[i]) {
            i += 1;
        }
        let separator = &component[start..i];
        let ok = separator == "."
            || separator == "_"
            || separator == "__"
            || separator.bytes().all(|b| b == b'-');
        if !ok {
            return false;
        }
    }
    true
}

/// `[\w][\w.-]{0,127}`.
fn is_valid_tag(tag: &str) -> bool {
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let bytes = tag.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 128
        && word(bytes[0])
        && bytes.iter().all(|&b| word(b) || b == b'.' || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn normalizes_like_docker() {
        let cases: &[(&str, &str, &str)] = &[
            (
                "busybox",
                "docker.io/library/busybox:latest",
                "busybox:latest",
            ),
            (
                "busybox:1.36",
                "docker.io/library/busybox:1.36",
                "busybox:1.36",
            ),
            (
                "library/busybox",
                "docker.io/library/busybox:latest",
                "busybox:latest",
            ),
            (
                "docker.io/busybox",
                "docker.io/library/busybox:latest",
                "busybox:latest",
            ),
            (
                "index.docker.io/busybox",
                "docker.io/library/busybox:latest",
                "busybox:latest",
            ),
            ("user/app", "docker.io/user/app:latest", "user/app:latest"),
            (
                "user/app/sub:v1",
                "docker.io/user/app/sub:v1",
                "user/app/sub:v1",
            ),
            ("localhost/x", "localhost/x:latest", "localhost/x:latest"),
            (
                "localhost:5000/x",
                "localhost:5000/x:latest",
                "localhost:5000/x:latest",
            ),
            (
                "127.0.0.1:5000/a/b:t",
                "127.0.0.1:5000/a/b:t",
                "127.0.0.1:5000/a/b:t",
            ),
            (
                "ghcr.io/o/r:1.0-rc.1",
                "ghcr.io/o/r:1.0-rc.1",
                "ghcr.io/o/r:1.0-rc.1",
            ),
            (
                "quay.io/a__b/c-d.e_f",
                "quay.io/a__b/c-d.e_f:latest",
                "quay.io/a__b/c-d.e_f:latest",
            ),
            ("[::1]:5000/x", "[::1]:5000/x:latest", "[::1]:5000/x:latest"),
        ];
        for (input, full, familiar) in cases {
            let reference = Reference::parse(input).unwrap();
            assert_eq!(reference.to_string(), *full, "{input}");
            assert_eq!(reference.familiar(), *familiar, "{input}");
        }
    }

    #[test]
    fn digests() {
        let text = format!("busybox@sha256:{HEX}");
        let reference = Reference::parse(&text).unwrap();
        assert_eq!(reference.tag(), None);
        assert_eq!(reference.digest().unwrap().digest(), HEX);
        assert_eq!(
            reference.to_string(),
            format!("docker.io/library/busybox@sha256:{HEX}")
        );
        assert_eq!(reference.manifest_reference(), format!("sha256:{HEX}"));

        let both = Reference::parse(&format!("localhost:5000/x:v1@sha256:{HEX}")).unwrap();
        assert_eq!(both.tag(), Some("v1"));
        assert_eq!(both.manifest_reference(), format!("sha256:{HEX}"));
        assert_eq!(
            both.to_string(),
            format!("localhost:5000/x:v1@sha256:{HEX}")
        );
    }

    #[test]
    fn rejects_bad_input() {
        let bad = [
            "",
            "Busybox",
            "busybox:",
            "busybox:-tag",
            "busybox@sha256:abc",
            "busybox@md5:0123",
            "a//b",
            "-a/b",
            "a/b-",
            "localhost:port/x",
            "busybox:a b",
            HEX,
            &format!("x:{}", "a".repeat(129)),
        ];
        for input in bad {
            let err = Reference::parse(input).unwrap_err();
            assert!(matches!(err, Error::InvalidReference { .. }), "{input}");
            assert!(!err.to_string().contains('\n'));
        }
    }

    #[test]
    fn api_host_of_docker_hub() {
        assert_eq!(
            Reference::parse("busybox").unwrap().api_host(),
            "registry-1.docker.io"
        );
        assert_eq!(
            Reference::parse("localhost:5000/x").unwrap().api_host(),
            "localhost:5000"
        );
    }
}
