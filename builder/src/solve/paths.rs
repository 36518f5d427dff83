//! Paths inside a root file system seen from the host: symlinks resolve
//! inside the root (an absolute link target starts again at the root, `..`
//! stops there), so a hostile image cannot make kiln touch host files.

use std::path::{Component, Path, PathBuf};

const MAX_LINKS: usize = 40;

/// The host path of `path` inside `root`, every symlink on the way
/// followed inside `root` (the last component too). Missing components are
/// kept as they are.
pub(crate) fn resolve_in_root(root: &Path, path: &str) -> std::io::Result<PathBuf> {
    resolve(root, path, true)
}

/// As [`resolve_in_root`], but a symlink in the last component is not
/// followed (the path names the link itself).
pub(crate) fn resolve_parent_in_root(root: &Path, path: &str) -> std::io::Result<PathBuf> {
    resolve(root, path, false)
}

fn resolve(root: &Path, path: &str, follow_last: bool) -> std::io::Result<PathBuf> {
    let mut pending: Vec<String> = split(path).into_iter().rev().collect();
    let mut current: Vec<String> = Vec::new();
    let mut links = 0;
    while let Some(part) = pending.pop() {
        match part.as_str() {
            "." | "" => continue,
            ".." => {
                current.pop();
                continue;
            }
            _ => {}
        }
        let candidate = join(root, &current).join(&part);
        let is_last = pending.is_empty();
        let meta = std::fs::symlink_metadata(&candidate);
        match meta {
            Ok(m) if m.file_type().is_symlink() && (follow_last || !is_last) => {
                links += 1;
                if links > MAX_LINKS {
                    return Err(std::io::Error::other(format!(
                        "too many levels of symbolic links at {path}"
                    )));
                }
                let target = std::fs::read_link(&candidate)?;
                let target = target.to_string_lossy().into_owned();
                if target.starts_with('/') {
                    current.clear();
                }
                for p in split(&target).into_iter().rev() {
                    pending.push(p);
                }
            }
            _ => current.push(part),
        }
    }
    Ok(join(root, &current))
}

fn split(path: &str) -> Vec<String> {
    Path::new(path)
        .components()
        .filter_map(|c| match c {
            Component::Normal(s) => Some(s.to_string_lossy().into_owned()),
            Component::ParentDir => Some("..".to_string()),
            _ => None,
        })
        .collect()
}

fn join(root: &Path, parts: &[String]) -> PathBuf {
    let mut p = root.to_path_buf();
    for part in parts {
        p.push(part);
    }
    p
}

/// Matches one path component against a shell pattern (`*`, `?`, `[a-z]`,
/// `[!a]`, `\` escapes), as Go's filepath.Match does.
pub(crate) fn glob_match(pattern: &str, name: &str) -> bool {
    fn go(p: &[char], n: &[char]) -> bool {
        match p.first() {
            None => n.is_empty(),
            Some('*') => (0..=n.len()).any(|i| go(&p[1..], &n[i..])),
            Some('?') => !n.is_empty() && go(&p[1..], &n[1..]),
            Some('[') => {
                let Some(c) = n.first() else { return false };
                let mut i = 1;
                let negate = matches!(p.get(1), Some('!') | Some('^'));
                if negate {
                    i += 1;
                }
                let mut matched = false;
                let start = i;
                while i < p.len() && (p[i] != ']' || i == start) {
                    if i + 2 < p.len() && p[i + 1] == '-' && p[i + 2] != ']' {
                        if p[i] <= *c && *c <= p[i + 2] {
                            matched = true;
                        }
                        i += 3;
                    } else {
                        if p[i] == *c {
                            matched = true;
                        }
                        i += 1;
                    }
                }
                if i >= p.len() {
                    return false;
                }
                matched != negate && go(&p[i + 1..], &n[1..])
            }
            Some('\\') if p.len() > 1 => n.first() == Some(&p[1]) && go(&p[2..], &n[1..]),
            Some(c) => n.first() == Some(c) && go(&p[1..], &n[1..]),
        }
    }
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    go(&p, &n)
}

/// True when `text` holds a wildcard.
pub(crate) fn has_wildcard(text: &str) -> bool {
    text.contains(['*', '?', '['])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symlinks_stay_inside_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("real/sub")).unwrap();
        std::os::unix::fs::symlink("/real", root.join("abs")).unwrap();
        std::os::unix::fs::symlink("../../../../etc", root.join("real/up")).unwrap();
        assert_eq!(
            resolve_in_root(root, "/abs/sub").unwrap(),
            root.join("real/sub")
        );
        assert_eq!(
            resolve_in_root(root, "/real/up/passwd").unwrap(),
            root.join("etc/passwd")
        );
        assert_eq!(
            resolve_parent_in_root(root, "/abs").unwrap(),
            root.join("abs")
        );
        assert_eq!(resolve_in_root(root, "/../x").unwrap(), root.join("x"));
    }

    #[test]
    fn globs() {
        assert!(glob_match("*.txt", "a.txt"));
        assert!(!glob_match("*.txt", "a.rs"));
        assert!(glob_match("f?le[0-9]", "file7"));
        assert!(!glob_match("[!a]x", "ax"));
        assert!(glob_match("\\*", "*"));
    }
}
