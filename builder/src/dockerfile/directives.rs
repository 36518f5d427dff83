//! Parser directives: `# syntax=`, `# escape=`, `# check=` comments at the
//! very top of a Dockerfile (Dockerfile reference, "Parser directives").

use serde::Serialize;

use crate::error::ErrorKind;

/// The directives a Dockerfile set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Directives {
    /// `# syntax=` (kiln does not switch frontends; it is recorded).
    pub syntax: Option<String>,
    /// The escape token, `\` (default) or `` ` ``.
    pub escape: char,
    /// `# check=`.
    pub check: CheckDirective,
}

impl Default for Directives {
    fn default() -> Self {
        Directives {
            syntax: None,
            escape: '\\',
            check: CheckDirective::default(),
        }
    }
}

/// `# check=skip=A,B;error=true`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct CheckDirective {
    /// Rule names to skip.
    pub skip: Vec<String>,
    /// `skip=all`.
    pub skip_all: bool,
    /// `error=true`: warnings fail the build.
    pub error: bool,
}

impl CheckDirective {
    /// Parses the directive's value.
    pub fn parse(value: &str) -> Result<CheckDirective, ErrorKind> {
        let bad = || ErrorKind::InvalidCheckDirective {
            value: value.to_string(),
        };
        let mut out = CheckDirective::default();
        for part in value.split(';').map(str::trim).filter(|p| !p.is_empty()) {
            let (key, val) = part.split_once('=').ok_or_else(bad)?;
            match key.trim().to_ascii_lowercase().as_str() {
                "skip" => {
                    for rule in val.split(',').map(str::trim).filter(|r| !r.is_empty()) {
                        if rule.eq_ignore_ascii_case("all") {
                            out.skip_all = true;
                        } else {
                            out.skip.push(rule.to_string());
                        }
                    }
                }
                "error" => {
                    out.error = match val.trim().to_ascii_lowercase().as_str() {
                        "true" | "1" => true,
                        "false" | "0" => false,
                        _ => return Err(bad()),
                    }
                }
                _ => return Err(bad()),
            }
        }
        Ok(out)
    }
}

/// Reads directives line by line until the first line that is not one.
#[derive(Debug, Default)]
pub(crate) struct DirectiveParser {
    done: bool,
    seen: Vec<String>,
}

impl DirectiveParser {
    /// Looks at a line (leading white space already removed). Returns the
    /// directive's name and value when the line is one.
    pub(crate) fn parse_line(&mut self, line: &str) -> Result<Option<(String, String)>, ErrorKind> {
        if self.done {
            return Ok(None);
        }
        let Some((key, value)) = match_directive(line) else {
            self.done = true;
            return Ok(None);
        };
        let key = key.to_ascii_lowercase();
        if !matches!(key.as_str(), "syntax" | "escape" | "check") {
            self.done = true;
            return Ok(None);
        }
        if self.seen.contains(&key) {
            return Err(ErrorKind::DuplicateDirective { name: key });
        }
        self.seen.push(key.clone());
        Ok(Some((key, value.to_string())))
    }
}

/// RE2 `\s`: space, \t, \n, \f, \r.
fn is_re_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\u{c}' | '\r')
}

/// `^#\s*([a-zA-Z][a-zA-Z0-9]*)\s*=\s*(.+?)\s*$`, by hand.
fn match_directive(line: &str) -> Option<(&str, &str)> {
    let rest = line.strip_prefix('#')?.trim_start_matches(is_re_space);
    let key_len = rest
        .char_indices()
        .take_while(|&(i, c)| {
            if i == 0 {
                c.is_ascii_alphabetic()
            } else {
                c.is_ascii_alphanumeric()
            }
        })
        .count();
    if key_len == 0 {
        return None;
    }
    let (key, rest) = rest.split_at(key_len);
    let rest = rest.trim_start_matches(is_re_space).strip_prefix('=')?;
    if rest.contains('\n') || rest.is_empty() {
        return None;
    }
    let trimmed = rest.trim_start_matches(is_re_space);
    let value = if trimmed.is_empty() {
        // Only white space after `=`: `.+?` takes the last character.
        let last = rest.char_indices().last().map(|(i, _)| i).unwrap_or(0);
        &rest[last..]
    } else {
        trimmed.trim_end_matches(is_re_space)
    };
    Some((key, value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_directive_lines() {
        assert_eq!(match_directive("# escape = `"), Some(("escape", "`")));
        assert_eq!(
            match_directive("#syntax=docker/dockerfile:1  "),
            Some(("syntax", "docker/dockerfile:1"))
        );
        assert_eq!(match_directive("# Comment here. no"), None);
        assert_eq!(match_directive("FROM a"), None);
    }

    #[test]
    fn directives_stop_at_first_other_line() {
        let mut p = DirectiveParser::default();
        assert!(p.parse_line("# escape=`").unwrap().is_some());
        assert!(p.parse_line("# escape=`").is_err());
        assert!(p.parse_line("").unwrap().is_none());
        assert!(p.parse_line("# check=error=true").unwrap().is_none());
    }

    #[test]
    fn check_values() {
        let c =
            CheckDirective::parse("skip=JSONArgsRecommended,StageNameCasing;error=true").unwrap();
        assert_eq!(c.skip, ["JSONArgsRecommended", "StageNameCasing"]);
        assert!(c.error);
        assert!(CheckDirective::parse("skip=all").unwrap().skip_all);
        assert!(CheckDirective::parse("bogus").is_err());
    }
}
