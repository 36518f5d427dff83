//! `RUN --mount=type=...,key=value` (Dockerfile reference, "RUN --mount";
//! BuildKit `instructions/commands_runmount.go`).

use serde::Serialize;

use crate::error::ErrorKind;

/// The kind of a RUN mount.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MountType {
    /// A directory from the context, a stage or an image (read-only by default).
    Bind,
    /// A persistent cache directory.
    Cache,
    /// An empty in-memory file system.
    Tmpfs,
    /// A secret file (or env var) from the client.
    Secret,
    /// The client's SSH agent socket.
    Ssh,
}

/// How concurrent builds share a cache mount.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CacheSharing {
    /// Several writers at once.
    Shared,
    /// A new empty cache when the cache is in use.
    Private,
    /// Wait for the other writer.
    Locked,
}

/// One `--mount`, values as written (variables expanded later).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Mount {
    /// The mount type (bind when not given).
    #[serde(rename = "type")]
    pub kind: MountType,
    /// Where it appears in the container.
    pub target: Option<String>,
    /// Path inside `from` (or the context).
    pub source: Option<String>,
    /// A stage name, index or image; the context when absent.
    pub from: Option<String>,
    /// Read-only mount.
    pub readonly: bool,
    /// Cache or secret/ssh id.
    pub id: Option<String>,
    /// Cache sharing mode.
    pub sharing: CacheSharing,
    /// File mode (octal) for cache/secret/ssh.
    pub mode: Option<u32>,
    /// Owner uid for cache/secret/ssh.
    pub uid: Option<u32>,
    /// Owner gid for cache/secret/ssh.
    pub gid: Option<u32>,
    /// Fail when the secret or ssh socket is not provided.
    pub required: bool,
    /// tmpfs size in bytes.
    pub size: Option<u64>,
    /// Secret exposed as this environment variable.
    pub env: Option<String>,
}

fn invalid(field: &str, reason: &'static str) -> ErrorKind {
    ErrorKind::InvalidMount {
        field: field.to_string(),
        reason,
    }
}

/// Splits one CSV record (Go `encoding/csv`, as docker and buildx read
/// `--mount` and `--output`): commas separate fields, a field may be
/// double-quoted with `""` for a quote. The one error is an unterminated
/// quote.
pub fn split_csv(text: &str) -> Result<Vec<String>, ErrorKind> {
    let mut fields = Vec::new();
    let mut field = String::new();
    let mut chars = text.chars().peekable();
    let mut quoted = false;
    let mut at_start = true;
    while let Some(c) = chars.next() {
        if quoted {
            if c == '"' {
                if chars.peek() == Some(&'"') {
                    chars.next();
                    field.push('"');
                } else {
                    quoted = false;
                }
            } else {
                field.push(c);
            }
            continue;
        }
        match c {
            ',' => {
                fields.push(std::mem::take(&mut field));
                at_start = true;
                continue;
            }
            '"' if at_start => quoted = true,
            _ => field.push(c),
        }
        at_start = false;
    }
    if quoted {
        return Err(invalid(text, "unterminated quote"));
    }
    fields.push(field);
    Ok(fields)
}

fn parse_bool(field: &str, value: Option<&str>) -> Result<bool, ErrorKind> {
    match value.map(str::to_ascii_lowercase).as_deref() {
        None | Some("true") | Some("1") => Ok(true),
        Some("false") | Some("0") => Ok(false),
        Some(_) => Err(invalid(field, "expected a boolean")),
    }
}

fn parse_size(field: &str, value: &str) -> Result<u64, ErrorKind> {
    let lower = value.trim().to_ascii_lowercase();
    let digits = lower
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(lower.len());
    let number: f64 = lower[..digits]
        .parse()
        .map_err(|_| invalid(field, "expected a size"))?;
    let scale: f64 = match lower[digits..].trim() {
        "" | "b" => 1.0,
        "k" | "kb" | "kib" => 1024.0,
        "m" | "mb" | "mib" => 1024.0 * 1024.0,
        "g" | "gb" | "gib" => 1024.0 * 1024.0 * 1024.0,
        "t" | "tb" | "tib" => 1024f64.powi(4),
        _ => return Err(invalid(field, "expected a size")),
    };
    Ok((number * scale) as u64)
}

/// Parses one `--mount` value. `expand` is applied to each value first.
pub fn parse_mount(
    text: &str,
    expand: &mut dyn FnMut(&str) -> Result<String, ErrorKind>,
) -> Result<Mount, ErrorKind> {
    let mut mount = Mount {
        kind: MountType::Bind,
        target: None,
        source: None,
        from: None,
        readonly: false,
        id: None,
        sharing: CacheSharing::Shared,
        mode: None,
        uid: None,
        gid: None,
        required: false,
        size: None,
        env: None,
    };
    let mut readonly: Option<bool> = None;
    let fields = split_csv(text)?;
    // The type decides which keys are allowed, so read it first.
    for field in &fields {
        if let Some((key, value)) = field.split_once('=') {
            if key.trim().eq_ignore_ascii_case("type") {
                mount.kind = match expand(value)?.to_ascii_lowercase().as_str() {
                    "bind" => MountType::Bind,
                    "cache" => MountType::Cache,
                    "tmpfs" => MountType::Tmpfs,
                    "secret" => MountType::Secret,
                    "ssh" => MountType::Ssh,
                    _ => return Err(invalid(field, "unsupported mount type")),
                };
            }
        }
    }
    for field in &fields {
        let field = field.trim();
        if field.is_empty() {
            continue;
        }
        let (key, raw_value) = match field.split_once('=') {
            Some((k, v)) => (k.trim().to_ascii_lowercase(), Some(v)),
            None => (field.to_ascii_lowercase(), None),
        };
        let value = match raw_value {
            Some(v) => Some(expand(v)?),
            None => None,
        };
        let need = |v: &Option<String>| {
            v.clone()
                .ok_or_else(|| invalid(field, "must be a key=value pair"))
        };
        let number = |v: &Option<String>, octal: bool| -> Result<u32, ErrorKind> {
            let v = need(v)?;
            let parsed = if octal {
                u32::from_str_radix(&v, 8)
            } else {
                v.parse()
            };
            parsed.map_err(|_| invalid(field, "expected a number"))
        };
        let kind = mount.kind;
        let owned = matches!(kind, MountType::Cache | MountType::Secret | MountType::Ssh);
        match key.as_str() {
            "type" => {}
            "target" | "dst" | "destination" => mount.target = Some(need(&value)?),
            "source" | "src" if kind != MountType::Tmpfs => mount.source = Some(need(&value)?),
            "from" if matches!(kind, MountType::Bind | MountType::Cache) => {
                mount.from = Some(need(&value)?)
            }
            "readonly" | "ro" => readonly = Some(parse_bool(field, value.as_deref())?),
            "readwrite" | "rw" => readonly = Some(!parse_bool(field, value.as_deref())?),
            "id" if kind != MountType::Tmpfs && kind != MountType::Bind => {
                mount.id = Some(need(&value)?)
            }
            "sharing" if kind == MountType::Cache => {
                mount.sharing = match need(&value)?.to_ascii_lowercase().as_str() {
                    "shared" => CacheSharing::Shared,
                    "private" => CacheSharing::Private,
                    "locked" => CacheSharing::Locked,
                    _ => return Err(invalid(field, "sharing must be shared, private or locked")),
                }
            }
            "mode" if owned => mount.mode = Some(number(&value, true)?),
            "uid" if owned => mount.uid = Some(number(&value, false)?),
            "gid" if owned => mount.gid = Some(number(&value, false)?),
            "required" if matches!(kind, MountType::Secret | MountType::Ssh) => {
                mount.required = parse_bool(field, value.as_deref())?
            }
            "size" if kind == MountType::Tmpfs => {
                mount.size = Some(parse_size(field, &need(&value)?)?)
            }
            "env" if kind == MountType::Secret => mount.env = Some(need(&value)?),
            _ => return Err(invalid(field, "unexpected key for this mount type")),
        }
    }
    mount.readonly = readonly.unwrap_or(mount.kind == MountType::Bind);
    match mount.kind {
        MountType::Secret => {
            if mount.id.is_none() {
                let base = mount
                    .target
                    .as_deref()
                    .and_then(|t| t.trim_end_matches('/').rsplit('/').next())
                    .filter(|b| !b.is_empty());
                match base {
                    Some(b) => mount.id = Some(b.to_string()),
                    None if mount.env.is_some() => {}
                    None => return Err(invalid(text, "secret mount needs an id or a target")),
                }
            }
            if mount.target.is_none() && mount.env.is_none() {
                mount.target = Some(format!(
                    "/run/secrets/{}",
                    mount.id.as_deref().unwrap_or_default()
                ));
            }
        }
        MountType::Ssh => {
            if mount.id.is_none() {
                mount.id = Some("default".to_string());
            }
        }
        _ => {
            if mount.target.is_none() {
                return Err(invalid(text, "target is required"));
            }
        }
    }
    Ok(mount)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Mount, ErrorKind> {
        parse_mount(text, &mut |v: &str| Ok(v.to_string()))
    }

    #[test]
    fn kinds_and_defaults() {
        let m =
            parse("type=cache,target=/root/.cache,sharing=locked,id=x,mode=0755,uid=1").unwrap();
        assert_eq!(
            (m.kind, m.sharing, m.mode, m.readonly),
            (MountType::Cache, CacheSharing::Locked, Some(0o755), false)
        );
        let m = parse("target=/src,from=build,source=/out").unwrap();
        assert_eq!((m.kind, m.readonly), (MountType::Bind, true));
        let m = parse("type=bind,target=/src,rw").unwrap();
        assert!(!m.readonly);
        let m = parse("type=secret,id=tok").unwrap();
        assert_eq!(m.target.as_deref(), Some("/run/secrets/tok"));
        let m = parse("type=secret,target=/a/tok,required").unwrap();
        assert_eq!((m.id.as_deref(), m.required), (Some("tok"), true));
        let m = parse("type=tmpfs,target=/t,size=64m").unwrap();
        assert_eq!(m.size, Some(64 << 20));
        let m = parse("type=ssh").unwrap();
        assert_eq!(m.id.as_deref(), Some("default"));
        let m = parse("\"type=bind\",\"target=/a,b\"").unwrap();
        assert_eq!(m.target.as_deref(), Some("/a,b"));
    }

    #[test]
    fn errors() {
        assert!(parse("type=bind").is_err());
        assert!(parse("type=nope,target=/a").is_err());
        assert!(parse("type=tmpfs,target=/a,from=x").is_err());
        assert!(parse("type=cache,target=/a,sharing=sometimes").is_err());
        assert!(parse("type=cache,target=/a,bogus=1").is_err());
        assert!(parse("type=secret").is_err());
    }
}
