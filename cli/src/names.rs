//! Image names as users type them, normalized as docker does:
//! `busybox` -> `docker.io/library/busybox:latest`.

use anyhow::{bail, Result};

/// Normalizes `text` to `domain/path[:tag][@digest]`, adding `docker.io`,
/// `library/` and `:latest` where docker would.
pub fn normalize(text: &str) -> Result<String> {
    if text.is_empty() {
        bail!("image name is empty");
    }
    let (rest, digest) = match text.split_once('@') {
        Some((r, d)) => {
            if kiln_store::Digest::parse(d).is_err() {
                bail!("image name {text:?}: invalid digest {d:?}");
            }
            (r, Some(d))
        }
        None => (text, None),
    };
    let (name, tag) = match rest.rfind(':') {
        Some(i) if !rest[i + 1..].contains('/') => (&rest[..i], Some(&rest[i + 1..])),
        _ => (rest, None),
    };
    if let Some(tag) = tag {
        let valid = !tag.is_empty()
            && tag.len() <= 128
            && tag
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
            && tag
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
        if !valid {
            bail!("image name {text:?}: invalid tag {tag:?}");
        }
    }
    let (domain, path) = match name.split_once('/') {
        Some((first, rest))
            if first.contains('.') || first.contains(':') || first == "localhost" =>
        {
            (first.to_string(), rest.to_string())
        }
        _ => ("docker.io".to_string(), name.to_string()),
    };
    let path = if domain == "docker.io" && !path.contains('/') {
        format!("library/{path}")
    } else {
        path
    };
    if path.is_empty()
        || path.split('/').any(|component| {
            component.is_empty()
                || !component
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c))
                || !component
                    .chars()
                    .next()
                    .is_some_and(|c| c.is_ascii_alphanumeric())
        })
    {
        bail!("image name {text:?}: repository must be lower-case letters, digits and separators");
    }
    let mut out = format!("{domain}/{path}");
    match (tag, digest) {
        (Some(t), _) => {
            out.push(':');
            out.push_str(t);
        }
        (None, None) => out.push_str(":latest"),
        (None, Some(_)) => {}
    }
    if let Some(d) = digest {
        out.push('@');
        out.push_str(d);
    }
    Ok(out)
}

/// Splits a normalized name into repository (short form) and tag, as
/// `kiln images` shows them.
pub fn repository_and_tag(name: &str) -> (String, String) {
    let short = kiln_store::familiar_name(name);
    if let Some((repo, digest)) = short.split_once('@') {
        return (repo.to_string(), format!("@{digest}"));
    }
    match short.rfind(':') {
        Some(i) if !short[i + 1..].contains('/') => {
            (short[..i].to_string(), short[i + 1..].to_string())
        }
        _ => (short.to_string(), "<none>".to_string()),
    }
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
            ("localhost/x:v1", "localhost/x:v1"),
            ("ghcr.io/a/b/c:t", "ghcr.io/a/b/c:t"),
            (
                "docker.io/library/busybox:latest",
                "docker.io/library/busybox:latest",
            ),
        ];
        for (input, want) in cases {
            assert_eq!(normalize(input).unwrap(), want, "{input}");
        }
        let d = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        assert_eq!(
            normalize(&format!("busybox@{d}")).unwrap(),
            format!("docker.io/library/busybox@{d}")
        );
    }

    #[test]
    fn rejects_bad_names() {
        for bad in [
            "",
            "Busybox",
            "a//b",
            "x:",
            "x:-bad",
            "busybox@sha256:12",
            "a/-b",
        ] {
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
