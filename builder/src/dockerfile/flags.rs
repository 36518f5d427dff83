//! `--name[=value]` flags of one instruction, checked against the flags that
//! instruction accepts (BuildKit `instructions/bflag.go`).

use crate::error::{suggest, ErrorKind};

/// How a flag takes its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FlagKind {
    /// `--link` or `--link=true|false`.
    Bool,
    /// `--from=x`, once.
    String,
    /// `--mount=...`, repeatable.
    List,
}

/// The flags an instruction accepts, then the values given.
#[derive(Debug)]
pub(crate) struct Flags {
    instruction: String,
    spec: &'static [(&'static str, FlagKind)],
    values: Vec<(&'static str, Vec<String>)>,
}

impl Flags {
    /// Parses `raw` (`--name=value` strings from the AST) against `spec`.
    pub(crate) fn parse(
        instruction: &str,
        raw: &[String],
        spec: &'static [(&'static str, FlagKind)],
    ) -> Result<Flags, ErrorKind> {
        let mut flags = Flags {
            instruction: instruction.to_string(),
            spec,
            values: Vec::new(),
        };
        for text in raw {
            let body = text.strip_prefix("--").unwrap_or(text);
            let (name, value) = match body.split_once('=') {
                Some((n, v)) => (n, Some(v)),
                None => (body, None),
            };
            let Some(&(known, kind)) = spec.iter().find(|(n, _)| *n == name) else {
                return Err(ErrorKind::UnknownFlag {
                    instruction: instruction.to_string(),
                    flag: name.to_string(),
                    suggestion: suggest(name, spec.iter().map(|(n, _)| *n))
                        .map(|s| format!("--{s}")),
                });
            };
            let existing = flags.values.iter().position(|(n, _)| *n == known);
            if existing.is_some() && kind != FlagKind::List {
                return Err(ErrorKind::DuplicateFlag {
                    flag: known.to_string(),
                });
            }
            let value = match (kind, value) {
                (FlagKind::Bool, None) => "true".to_string(),
                (FlagKind::Bool, Some(v)) => match v.to_ascii_lowercase().as_str() {
                    "true" | "" => "true".to_string(),
                    "false" => "false".to_string(),
                    _ => {
                        return Err(ErrorKind::InvalidFlagValue {
                            flag: known.to_string(),
                            value: v.to_string(),
                            expected: "true or false",
                        })
                    }
                },
                (_, None) => {
                    return Err(ErrorKind::FlagNeedsValue {
                        flag: known.to_string(),
                    })
                }
                (_, Some(v)) => v.to_string(),
            };
            match existing {
                Some(i) => flags.values[i].1.push(value),
                None => flags.values.push((known, vec![value])),
            }
        }
        Ok(flags)
    }

    fn get(&self, name: &str) -> Option<&Vec<String>> {
        debug_assert!(
            self.spec.iter().any(|(n, _)| *n == name),
            "flag {name} read but not declared for {}",
            self.instruction
        );
        self.values.iter().find(|(n, _)| *n == name).map(|(_, v)| v)
    }

    /// A string flag's value, if given.
    pub(crate) fn string(&self, name: &str) -> Option<String> {
        self.get(name).and_then(|v| v.first().cloned())
    }

    /// A bool flag: false unless given as true.
    pub(crate) fn bool(&self, name: &str) -> bool {
        self.get(name)
            .is_some_and(|v| v.first().is_some_and(|s| s == "true"))
    }

    /// A repeatable flag's values, in order.
    pub(crate) fn list(&self, name: &str) -> Vec<String> {
        self.get(name).cloned().unwrap_or_default()
    }
}

/// Parses a Go `time.ParseDuration` string (`1h30m`, `2.5s`, `300ms`) into
/// nanoseconds.
pub fn parse_duration(text: &str) -> Option<i64> {
    let (negative, mut rest) = match text.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    if rest == "0" {
        return Some(0);
    }
    if rest.is_empty() {
        return None;
    }
    let mut total: f64 = 0.0;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if number_len == 0 {
            return None;
        }
        let number: f64 = rest[..number_len].parse().ok()?;
        rest = &rest[number_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total += number * scale;
    }
    if total > i64::MAX as f64 {
        return None;
    }
    Some(if negative {
        -(total as i64)
    } else {
        total as i64
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPEC: &[(&str, FlagKind)] = &[
        ("mount", FlagKind::List),
        ("network", FlagKind::String),
        ("link", FlagKind::Bool),
    ];

    fn raw(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn parses_kinds() {
        let f = Flags::parse(
            "RUN",
            &raw(&["--mount=a", "--mount=b", "--network=none", "--link"]),
            SPEC,
        )
        .unwrap();
        assert_eq!(f.list("mount"), ["a", "b"]);
        assert_eq!(f.string("network").as_deref(), Some("none"));
        assert!(f.bool("link"));
    }

    #[test]
    fn rejects_bad_flags() {
        let e = Flags::parse("RUN", &raw(&["--mout=x"]), SPEC).unwrap_err();
        assert_eq!(
            e.to_string(),
            "unknown flag: --mout for RUN (did you mean --mount?)"
        );
        assert!(Flags::parse("RUN", &raw(&["--network=a", "--network=b"]), SPEC).is_err());
        assert!(Flags::parse("RUN", &raw(&["--network"]), SPEC).is_err());
        assert!(Flags::parse("RUN", &raw(&["--link=maybe"]), SPEC).is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("5s"), Some(5_000_000_000));
        assert_eq!(parse_duration("1m30s"), Some(90_000_000_000));
        assert_eq!(parse_duration("1.5ms"), Some(1_500_000));
        assert_eq!(parse_duration("0"), Some(0));
        assert_eq!(parse_duration("5"), None);
        assert_eq!(parse_duration("s"), None);
    }
}
