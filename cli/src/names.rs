//! Image names as users type them, normalized as docker does
//! (`busybox` -> `docker.io/library/busybox:latest`) by the registry
//! client's reference parser, the one place that knows the rules.

use anyhow::Result;
use kiln_registry::Reference;

/// The store's form of a name the user typed.
pub fn normalize(text: &str) -> Result<String> {
    Ok(Reference::parse(text)?.to_string())
}

/// Splits a normalized name into repository (short form) and tag, as
/// `kiln images` shows them.
pub fn repository_and_tag(name: &str) -> (String, String) {
    let Ok(reference) = Reference::parse(name) else {
        return (name.to_string(), "<none>".to_string());
    };
    let repository = reference
        .with_tag("latest")
        .map(|r| r.familiar())
        .unwrap_or_default();
    let repository = repository
        .strip_suffix(":latest")
        .unwrap_or(&repository)
        .to_string();
    let tag = match (reference.tag(), reference.digest()) {
        (Some(tag), _) => tag.to_string(),
        (None, Some(_)) => "<none>".to_string(),
        (None, None) => "<none>".to_string(),
    };
    (repository, tag)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_like_docker() {
        let cases = [
            ("busybox", "docker.io/library/busybox:latest"),
            ("busybox:1.36", "docker.io/library/busybox:1.36"),
            ("user/app", "docker.io/user/app:latest"),
            ("localhost:5000/x", "localhost:5000/x:latest"),
            ("ghcr.io/a/b/c:t", "ghcr.io/a/b/c:t"),
        ];
        for (input, want) in cases {
            assert_eq!(normalize(input).unwrap(), want, "{input}");
        }
        for bad in ["", "Busybox", "a//b", "x:"] {
            assert!(normalize(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn splits_for_display() {
        assert_eq!(
            repository_and_tag("docker.io/library/busybox:latest"),
            ("busybox".to_string(), "latest".to_string())
        );
        assert_eq!(
            repository_and_tag("localhost:5000/x:v1"),
            ("localhost:5000/x".to_string(), "v1".to_string())
        );
    }
}
