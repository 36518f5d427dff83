//! `.dockerignore` (and `<Dockerfile>.dockerignore`) with docker's pattern
//! rules (moby/patternmatcher): `*`, `?`, `[...]`, `**` for any number of
//! directories, `!` to re-include, a leading `/` ignored, paths cleaned;
//! the last matching pattern wins and a pattern matching a parent directory
//! matches everything under it.

use std::path::Path;

use crate::error::{Error, ErrorKind, Result};

/// One compiled pattern.
#[derive(Debug, Clone)]
struct Pattern {
    text: String,
    exclusion: bool,
    regex: regex::Regex,
}

/// A list of patterns, in file order.
#[derive(Debug, Clone, Default)]
pub struct Matcher {
    patterns: Vec<Pattern>,
}

/// Reads the ignore file for a build: `<dockerfile>.dockerignore` next to
/// the Dockerfile when it exists, else `<context>/.dockerignore`. Returns
/// the cleaned patterns (`!` kept), empty when there is no file.
pub fn load(context: &Path, dockerfile: &Path) -> Result<Vec<String>> {
    let mut specific = dockerfile.as_os_str().to_owned();
    specific.push(".dockerignore");
    let candidates = [
        std::path::PathBuf::from(specific),
        context.join(".dockerignore"),
    ];
    for path in candidates {
        match std::fs::read_to_string(&path) {
            Ok(text) => return Ok(read_patterns(&text)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(source) => {
                return Err(Error::at(
                    0,
                    ErrorKind::Io {
                        path: path.display().to_string(),
                        source,
                    },
                ))
            }
        }
    }
    Ok(Vec::new())
}

/// Splits ignore-file text into cleaned patterns (docker's
/// `ignorefile.ReadAll`): comments and blank lines dropped, white space
/// trimmed, `!` kept in front, paths cleaned, a leading `/` removed.
pub fn read_patterns(text: &str) -> Vec<String> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut out = Vec::new();
    for line in text.lines() {
        if line.starts_with('#') {
            continue;
        }
        let mut pattern = line.trim();
        if pattern.is_empty() {
            continue;
        }
        let invert = pattern.starts_with('!');
        if invert {
            pattern = pattern[1..].trim();
        }
        if pattern.is_empty() {
            continue;
        }
        let mut cleaned = clean(pattern);
        if cleaned.len() > 1 && cleaned.starts_with('/') {
            cleaned.remove(0);
        }
        out.push(if invert {
            format!("!{cleaned}")
        } else {
            cleaned
        });
    }
    out
}

/// Go's `path.Clean` for slash-separated paths.
pub fn clean(path: &str) -> String {
    let rooted = path.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if parts.last().is_some_and(|p| *p != "..") {
                    parts.pop();
                } else if !rooted {
                    parts.push("..");
                }
            }
            p => parts.push(p),
        }
    }
    let joined = parts.join("/");
    match (rooted, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".to_string(),
        (false, false) => joined,
    }
}

impl Matcher {
    /// Compiles patterns as [`read_patterns`] returns them.
    pub fn new(patterns: &[String]) -> Result<Matcher> {
        let mut compiled = Vec::new();
        for text in patterns {
            let (exclusion, body) = match text.strip_prefix('!') {
                Some(rest) => (true, rest),
                None => (false, text.as_str()),
            };
            let regex = compile(body).map_err(|_| {
                Error::at(
                    0,
                    ErrorKind::InvalidFlagValue {
                        flag: "dockerignore".into(),
                        value: text.clone(),
                        expected: "a valid pattern",
                    },
                )
            })?;
            compiled.push(Pattern {
                text: text.clone(),
                exclusion,
                regex,
            });
        }
        Ok(Matcher { patterns: compiled })
    }

    /// The patterns, as given.
    pub fn patterns(&self) -> impl Iterator<Item = &str> {
        self.patterns.iter().map(|p| p.text.as_str())
    }

    /// True when `path` (relative to the context, `/`-separated) is
    /// ignored: the last pattern that matches it or one of its parent
    /// directories decides.
    pub fn matches(&self, path: &str) -> bool {
        let file = clean(path.trim_start_matches('/'));
        let parent = match file.rfind('/') {
            Some(i) => &file[..i],
            None => ".",
        };
        let parent_dirs: Vec<&str> = parent.split('/').collect();
        let mut matched = false;
        for pattern in &self.patterns {
            if pattern.exclusion != matched {
                continue;
            }
            let mut hit = pattern.regex.is_match(&file);
            if !hit && parent != "." {
                for i in 0..parent_dirs.len() {
                    if pattern.regex.is_match(&parent_dirs[..=i].join("/")) {
                        hit = true;
                        break;
                    }
                }
            }
            if hit {
                matched = !pattern.exclusion;
            }
        }
        matched
    }
}

/// Pattern to an anchored regular expression (patternmatcher `compile`).
fn compile(pattern: &str) -> std::result::Result<regex::Regex, regex::Error> {
    let mut out = String::from("^");
    let mut chars = pattern.chars().peekable();
    while let Some(ch) = chars.next() {
        match ch {
            '*' if chars.peek() == Some(&'*') => {
                chars.next();
                if chars.peek() == Some(&'/') {
                    chars.next();
                }
                if chars.peek().is_none() {
                    out.push_str(".*");
                } else {
                    out.push_str("(.*/)?");
                }
            }
            '*' => out.push_str("[^/]*"),
            '?' => out.push_str("[^/]"),
            '\\' => match chars.next() {
                Some(next) => out.push_str(&regex::escape(&next.to_string())),
                None => out.push_str("\\\\"),
            },
            '[' | ']' => out.push(ch),
            '^' if out.ends_with('[') => out.push('^'),
            '!' if out.ends_with('[') => out.push('^'),
            _ => out.push_str(&regex::escape(&ch.to_string())),
        }
    }
    out.push('$');
    regex::Regex::new(&out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matcher(text: &str) -> Matcher {
        Matcher::new(&read_patterns(text)).unwrap()
    }

    #[test]
    fn reads_and_cleans() {
        assert_eq!(
            read_patterns("# c\n\n /a/./b/ \n!c/../d\n*.md\n/\n"),
            ["a/b", "!d", "*.md", "/"]
        );
    }

    #[test]
    fn docker_rules() {
        let m = matcher("*.md\n!README.md\nnode_modules\n**/*.tmp\nbuild/**\n/secret\n");
        assert!(m.matches("a.md"));
        assert!(!m.matches("README.md"));
        assert!(!m.matches("docs/a.md"), "* does not cross /");
        assert!(m.matches("node_modules/x/y.js"), "parent dir match");
        assert!(m.matches("a/b/c.tmp"));
        assert!(m.matches("x.tmp"));
        assert!(m.matches("build/out/bin"));
        assert!(m.matches("secret"));
        assert!(!m.matches("src/main.rs"));
    }

    #[test]
    fn last_match_wins_and_reinclude() {
        let m = matcher("*\n!src\nsrc/*.o\n");
        assert!(m.matches("Cargo.toml"));
        assert!(!m.matches("src/main.rs"));
        assert!(m.matches("src/main.o"));
    }

    #[test]
    fn clean_like_go() {
        assert_eq!(clean("a//b/./c/.."), "a/b");
        assert_eq!(clean("/../a"), "/a");
        assert_eq!(clean("../a"), "../a");
        assert_eq!(clean(""), ".");
    }
}
