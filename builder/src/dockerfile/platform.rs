//! Platforms (`linux/amd64`, `linux/arm/v7`) as OCI names them, and the
//! host's.

use std::fmt;

use serde::Serialize;

use crate::error::ErrorKind;

/// An OCI platform: os, architecture and optional variant.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct Platform {
    /// `linux`, `windows`.
    pub os: String,
    /// OCI architecture name: `amd64`, `arm64`, `arm`, `386`, `s390x`...
    pub architecture: String,
    /// `v7`, `v8`..., when it matters.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

impl Platform {
    /// The platform kiln runs on (Go/OCI names for Rust's `std::env::consts`).
    pub fn host() -> Platform {
        let os = match std::env::consts::OS {
            "macos" => "darwin",
            other => other,
        };
        let (architecture, variant) = normalize_arch(std::env::consts::ARCH, None);
        Platform {
            os: os.to_string(),
            architecture,
            variant,
        }
    }

    /// Parses `os[/arch[/variant]]` (an arch alone means linux), normalizing
    /// aliases (`x86_64` -> `amd64`, `aarch64` -> `arm64`).
    pub fn parse(text: &str) -> Result<Platform, ErrorKind> {
        let bad = || ErrorKind::InvalidPlatform {
            value: text.to_string(),
        };
        let lower = text.trim().to_ascii_lowercase();
        let parts: Vec<&str> = lower.split('/').collect();
        if parts.iter().any(|p| {
            p.is_empty()
                || !p
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        }) {
            return Err(bad());
        }
        let (os, arch, variant) = match parts.as_slice() {
            [one] if is_os(one) => (one.to_string(), Platform::host().architecture, None),
            [one] => ("linux".to_string(), one.to_string(), None),
            [os, arch] => (os.to_string(), arch.to_string(), None),
            [os, arch, variant] => (os.to_string(), arch.to_string(), Some(variant.to_string())),
            _ => return Err(bad()),
        };
        let (architecture, variant) = normalize_arch(&arch, variant);
        Ok(Platform {
            os: if os == "macos" { "darwin".into() } else { os },
            architecture,
            variant,
        })
    }
}

fn is_os(text: &str) -> bool {
    matches!(
        text,
        "linux" | "windows" | "darwin" | "freebsd" | "netbsd" | "openbsd" | "solaris" | "illumos"
    )
}

fn normalize_arch(arch: &str, variant: Option<String>) -> (String, Option<String>) {
    match arch {
        "x86_64" | "x86-64" | "amd64" => ("amd64".into(), variant.filter(|v| v != "v1")),
        "aarch64" | "arm64" => ("arm64".into(), variant.filter(|v| v != "v8" && v != "8")),
        "armhf" => ("arm".into(), Some("v7".into())),
        "armel" => ("arm".into(), Some("v6".into())),
        "arm" => ("arm".into(), Some(variant.unwrap_or_else(|| "v7".into()))),
        "i386" | "i486" | "i586" | "i686" | "x86" | "386" => ("386".into(), variant),
        "powerpc64le" => ("ppc64le".into(), variant),
        other => (other.to_string(), variant),
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_normalizes() {
        assert_eq!(
            Platform::parse("linux/x86_64").unwrap().to_string(),
            "linux/amd64"
        );
        assert_eq!(
            Platform::parse("linux/arm64/v8").unwrap().to_string(),
            "linux/arm64"
        );
        assert_eq!(
            Platform::parse("linux/arm").unwrap().to_string(),
            "linux/arm/v7"
        );
        assert_eq!(Platform::parse("arm64").unwrap().to_string(), "linux/arm64");
        assert!(Platform::parse("linux//x").is_err());
        assert!(Platform::parse("a/b/c/d").is_err());
    }

    #[test]
    fn host_is_oci_named() {
        let host = Platform::host();
        assert!(!host.architecture.contains('_'), "{host}");
    }
}
