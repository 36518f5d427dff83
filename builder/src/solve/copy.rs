//! COPY/ADD, heredoc files and WORKDIR's mkdir, written into a step's
//! merged root (an overlay, so only the changes land in the upper dir).
//!
//! Path rules follow docker's COPY reference: a directory source copies
//! its contents; a file source lands in `dest/` when the destination ends
//! in `/` or is an existing directory, else at `dest`; several sources need
//! a `/`-terminated destination; missing parents are created; ownership is
//! 0:0 unless `--chown`; modes are kept unless `--chmod`; mtimes are kept.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::solve::context::{clean_relative, ContextIndex};
use crate::solve::error::SolveError;
use crate::solve::paths::{glob_match, has_wildcard, resolve_in_root, resolve_parent_in_root};
use crate::solve::users::Ids;

/// Where COPY reads from.
pub(crate) struct SourceTree<'a> {
    /// Host path of the tree.
    pub root: &'a Path,
    /// For the build context: what is included (after .dockerignore).
    pub index: Option<&'a ContextIndex>,
}

impl SourceTree<'_> {
    fn allowed(&self, rel: &str) -> bool {
        self.index.is_none_or(|i| i.contains(rel))
    }

    /// Expands one source argument to relative paths that exist.
    fn expand(&self, source: &str) -> Result<Vec<String>, SolveError> {
        let rel = clean_relative(source);
        if !has_wildcard(&rel) {
            let path = resolve_parent_in_root(self.root, &rel)
                .map_err(SolveError::io("resolve", self.root.join(&rel)))?;
            if rel.is_empty() || (path.symlink_metadata().is_ok() && self.allowed(&rel)) {
                return Ok(vec![rel]);
            }
            return Err(SolveError::SourceNotFound { path: rel });
        }
        let mut found = vec![String::new()];
        for part in rel.split('/') {
            let mut next = Vec::new();
            for base in &found {
                let dir = if base.is_empty() {
                    self.root.to_path_buf()
                } else {
                    self.root.join(base)
                };
                if !has_wildcard(part) {
                    let candidate = join_rel(base, part);
                    if dir.join(part).symlink_metadata().is_ok() && self.allowed(&candidate) {
                        next.push(candidate);
                    }
                    continue;
                }
                let Ok(read) = std::fs::read_dir(&dir) else {
                    continue;
                };
                let mut names: Vec<String> = read
                    .flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| glob_match(part, n))
                    .collect();
                names.sort();
                for name in names {
                    let candidate = join_rel(base, &name);
                    if self.allowed(&candidate) {
                        next.push(candidate);
                    }
                }
            }
            found = next;
        }
        if found.is_empty() {
            return Err(SolveError::SourceNotFound { path: rel });
        }
        Ok(found)
    }
}

fn join_rel(base: &str, name: &str) -> String {
    if base.is_empty() {
        name.to_string()
    } else {
        format!("{base}/{name}")
    }
}

/// A parsed `--chmod`.
#[derive(Debug, Clone)]
pub(crate) enum Chmod {
    Octal(u32),
    /// `u+x,go-w` clauses: (who mask, op, perms as written).
    Symbolic(Vec<(u32, char, String)>),
}

impl Chmod {
    pub fn parse(text: &str) -> Result<Chmod, SolveError> {
        let invalid = || SolveError::InvalidChmod {
            value: text.to_string(),
        };
        if text.bytes().all(|b| (b'0'..=b'7').contains(&b)) && !text.is_empty() {
            return u32::from_str_radix(text, 8)
                .map(Chmod::Octal)
                .map_err(|_| invalid());
        }
        let mut clauses = Vec::new();
        for clause in text.split(',') {
            let who_len = clause.bytes().take_while(|b| b"ugoa".contains(b)).count();
            let mut who = 0;
            for b in clause[..who_len].bytes() {
                who |= match b {
                    b'u' => 0o4700,
                    b'g' => 0o2070,
                    b'o' => 0o1007,
                    _ => 0o7777,
                };
            }
            if who == 0 {
                who = 0o7777;
            }
            let rest = &clause[who_len..];
            let op = rest
                .chars()
                .next()
                .filter(|c| "+-=".contains(*c))
                .ok_or_else(invalid)?;
            clauses.push((who, op, rest[1..].to_string()));
        }
        Ok(Chmod::Symbolic(clauses))
    }

    fn apply(&self, mode: u32, is_dir: bool) -> u32 {
        match self {
            Chmod::Octal(m) => *m,
            Chmod::Symbolic(clauses) => {
                let mut mode = mode & 0o7777;
                for (who, op, perms) in clauses {
                    let mut bits = 0;
                    for c in perms.chars() {
                        bits |= match c {
                            'r' => 0o444,
                            'w' => 0o222,
                            'x' => 0o111,
                            'X' if is_dir || mode & 0o111 != 0 => 0o111,
                            's' => 0o6000,
                            't' => 0o1000,
                            _ => 0,
                        };
                    }
                    let bits = bits & who;
                    mode = match op {
                        '+' => mode | bits,
                        '-' => mode & !bits,
                        _ => (mode & !who) | bits,
                    };
                }
                mode
            }
        }
    }
}

/// Options of one COPY.
pub(crate) struct CopySpec<'a> {
    pub keyword: &'static str,
    pub sources: &'a [String],
    pub dest: &'a str,
    pub owner: Ids,
    pub chmod: Option<&'a Chmod>,
    pub exclude: &'a [String],
    pub is_add: bool,
}

/// Copies `spec.sources` from `from` into the root `dest_root`.
pub(crate) fn copy(
    from: &SourceTree<'_>,
    dest_root: &Path,
    spec: &CopySpec<'_>,
) -> Result<(), SolveError> {
    let mut matched = Vec::new();
    for source in spec.sources {
        matched.extend(from.expand(source)?);
    }
    let dest_is_dir_syntax = spec.dest.ends_with('/');
    if (spec.sources.len() > 1 || matched.len() > 1) && !dest_is_dir_syntax {
        // docker accepts several matches into an existing directory too.
        let existing = resolve_in_root(dest_root, spec.dest)
            .map(|p| p.is_dir())
            .unwrap_or(false);
        if !existing {
            return Err(SolveError::DestinationNotDirectory {
                keyword: spec.keyword,
            });
        }
    }
    let exclude = if spec.exclude.is_empty() {
        None
    } else {
        Some(
            crate::dockerfile::dockerignore::Matcher::new(spec.exclude)
                .map_err(|_| SolveError::unsupported("this --exclude pattern"))?,
        )
    };
    for rel in matched {
        // The source itself is followed when it is a symlink (inside the tree).
        let path = resolve_in_root(from.root, &rel)
            .map_err(SolveError::io("resolve", from.root.join(&rel)))?;
        let meta = std::fs::metadata(&path)
            .map_err(|_| SolveError::SourceNotFound { path: rel.clone() })?;
        if meta.is_dir() {
            let target = make_dirs(dest_root, spec.dest, spec.owner)?;
            copy_tree(from, &rel, &path, &target, spec, exclude.as_ref())?;
        } else {
            if spec.is_add && is_archive(&path) {
                return Err(SolveError::unsupported(
                    "ADD of a local archive (auto-extraction)",
                ));
            }
            let existing_dir = resolve_in_root(dest_root, spec.dest)
                .map(|p| p.is_dir())
                .unwrap_or(false);
            let target = if dest_is_dir_syntax || existing_dir {
                let dir = make_dirs(dest_root, spec.dest, spec.owner)?;
                let name = Path::new(&rel)
                    .file_name()
                    .map(|n| n.to_os_string())
                    .unwrap_or_default();
                dir.join(name)
            } else {
                let parent = Path::new(spec.dest)
                    .parent()
                    .map(|p| p.to_string_lossy().into_owned())
                    .unwrap_or_default();
                let dir = make_dirs(dest_root, &parent, spec.owner)?;
                let name = Path::new(spec.dest)
                    .file_name()
                    .map(|n| n.to_os_string())
                    .unwrap_or_default();
                dir.join(name)
            };
            copy_entry(&path, &meta, &target, spec)?;
        }
    }
    Ok(())
}

fn is_archive(path: &Path) -> bool {
    let mut head = [0u8; 262];
    let Ok(mut f) = std::fs::File::open(path) else {
        return false;
    };
    let n = std::io::Read::read(&mut f, &mut head).unwrap_or(0);
    let h = &head[..n];
    h.starts_with(&[0x1f, 0x8b])
        || h.starts_with(b"BZh")
        || h.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0])
        || h.starts_with(&[0x28, 0xb5, 0x2f, 0xfd])
        || (n >= 262 && &h[257..262] == b"ustar")
}

/// Creates `dir` (inside `root`) and missing parents, owned by `owner`;
/// returns its host path.
pub(crate) fn make_dirs(root: &Path, dir: &str, owner: Ids) -> Result<PathBuf, SolveError> {
    make_dirs_mode(root, dir, owner, 0o755)
}

fn make_dirs_mode(root: &Path, dir: &str, owner: Ids, mode: u32) -> Result<PathBuf, SolveError> {
    let mut current = String::new();
    let mut host = root.to_path_buf();
    for part in Path::new(dir).components() {
        let std::path::Component::Normal(name) = part else {
            continue;
        };
        current.push('/');
        current.push_str(&name.to_string_lossy());
        host = resolve_in_root(root, &current)
            .map_err(SolveError::io("resolve", root.join(&current[1..])))?;
        match std::fs::symlink_metadata(&host) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err(SolveError::Io {
                    op: "create directory",
                    path: PathBuf::from(&current),
                    source: std::io::Error::from(std::io::ErrorKind::AlreadyExists),
                })
            }
            Err(_) => {
                std::fs::create_dir(&host).map_err(SolveError::io("create directory", &host))?;
                std::fs::set_permissions(&host, std::fs::Permissions::from_mode(mode))
                    .map_err(SolveError::io("chmod", &host))?;
                std::os::unix::fs::lchown(&host, Some(owner.uid), Some(owner.gid))
                    .map_err(SolveError::io("chown", &host))?;
            }
        }
    }
    Ok(host)
}

fn copy_tree(
    from: &SourceTree<'_>,
    rel_root: &str,
    src: &Path,
    target: &Path,
    spec: &CopySpec<'_>,
    exclude: Option<&crate::dockerfile::dockerignore::Matcher>,
) -> Result<(), SolveError> {
    let mut dirs = Vec::new();
    let mut walker = walkdir::WalkDir::new(src)
        .min_depth(1)
        .sort_by_file_name()
        .into_iter();
    while let Some(item) = walker.next() {
        let item = item.map_err(|e| SolveError::io("read", src)(e.into()))?;
        let inner = item
            .path()
            .strip_prefix(src)
            .expect("below its root")
            .to_string_lossy()
            .into_owned();
        let full_rel = join_rel(rel_root, &inner);
        let is_dir = item.file_type().is_dir();
        if !from.allowed(&full_rel) || exclude.is_some_and(|m| m.matches(&inner)) {
            if is_dir {
                walker.skip_current_dir();
            }
            continue;
        }
        let meta = item
            .metadata()
            .map_err(|e| SolveError::io("stat", item.path())(e.into()))?;
        let dest = target.join(&inner);
        if is_dir {
            match std::fs::symlink_metadata(&dest) {
                Ok(m) if m.is_dir() => {}
                Ok(_) => {
                    std::fs::remove_file(&dest).map_err(SolveError::io("remove", &dest))?;
                    std::fs::create_dir(&dest)
                        .map_err(SolveError::io("create directory", &dest))?;
                }
                Err(_) => {
                    std::fs::create_dir(&dest).map_err(SolveError::io("create directory", &dest))?
                }
            }
            let mode = spec
                .chmod
                .map_or(meta.mode() & 0o7777, |c| c.apply(meta.mode(), true));
            std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(mode))
                .map_err(SolveError::io("chmod", &dest))?;
            std::os::unix::fs::lchown(&dest, Some(spec.owner.uid), Some(spec.owner.gid))
                .map_err(SolveError::io("chown", &dest))?;
            dirs.push((dest, meta));
        } else {
            copy_entry(item.path(), &meta, &dest, spec)?;
        }
    }
    // Directory mtimes last: writing into them changed them.
    for (dest, meta) in dirs.iter().rev() {
        let mtime = filetime::FileTime::from_last_modification_time(meta);
        filetime::set_file_mtime(dest, mtime).map_err(SolveError::io("set mtime of", dest))?;
    }
    Ok(())
}

/// Copies one non-directory entry (file or symlink) to `dest`, replacing
/// what is there.
fn copy_entry(
    src: &Path,
    meta: &std::fs::Metadata,
    dest: &Path,
    spec: &CopySpec<'_>,
) -> Result<(), SolveError> {
    if let Ok(existing) = std::fs::symlink_metadata(dest) {
        if existing.is_dir() && !meta.is_dir() {
            return Err(SolveError::Io {
                op: "copy onto directory",
                path: dest.to_path_buf(),
                source: std::io::Error::from(std::io::ErrorKind::IsADirectory),
            });
        }
        std::fs::remove_file(dest).map_err(SolveError::io("remove", dest))?;
    }
    let mtime = filetime::FileTime::from_last_modification_time(meta);
    let ft = meta.file_type();
    if ft.is_symlink() {
        let target = std::fs::read_link(src).map_err(SolveError::io("read link", src))?;
        std::os::unix::fs::symlink(&target, dest)
            .map_err(SolveError::io("create symlink", dest))?;
        std::os::unix::fs::lchown(dest, Some(spec.owner.uid), Some(spec.owner.gid))
            .map_err(SolveError::io("chown", dest))?;
        filetime::set_symlink_file_times(dest, mtime, mtime)
            .map_err(SolveError::io("set mtime of", dest))?;
        return Ok(());
    }
    if !ft.is_file() {
        return Err(SolveError::unsupported(format!(
            "copying special file {}",
            src.display()
        )));
    }
    std::fs::copy(src, dest).map_err(SolveError::io("copy to", dest))?;
    std::os::unix::fs::lchown(dest, Some(spec.owner.uid), Some(spec.owner.gid))
        .map_err(SolveError::io("chown", dest))?;
    let mode = spec
        .chmod
        .map_or(meta.mode() & 0o7777, |c| c.apply(meta.mode(), false));
    std::fs::set_permissions(dest, std::fs::Permissions::from_mode(mode))
        .map_err(SolveError::io("chmod", dest))?;
    filetime::set_file_mtime(dest, mtime).map_err(SolveError::io("set mtime of", dest))?;
    Ok(())
}

/// A heredoc file: `data` at `path` with `mode`, owned by `owner`.
pub(crate) fn make_file(
    root: &Path,
    path: &str,
    data: &str,
    mode: u32,
    owner: Ids,
) -> Result<(), SolveError> {
    let parent = Path::new(path)
        .parent()
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default();
    let dir = make_dirs(root, &parent, owner)?;
    let name = Path::new(path)
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    let dest = dir.join(name);
    if std::fs::symlink_metadata(&dest).is_ok_and(|m| !m.is_dir()) {
        std::fs::remove_file(&dest).map_err(SolveError::io("remove", &dest))?;
    }
    std::fs::write(&dest, data).map_err(SolveError::io("write", &dest))?;
    std::os::unix::fs::lchown(&dest, Some(owner.uid), Some(owner.gid))
        .map_err(SolveError::io("chown", &dest))?;
    std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(mode))
        .map_err(SolveError::io("chmod", &dest))
}

/// WORKDIR: the directory and missing parents, owned by `owner`.
pub(crate) fn make_dir(root: &Path, path: &str, mode: u32, owner: Ids) -> Result<(), SolveError> {
    make_dirs_mode(root, path, owner, mode).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (p, data) in files {
            let path = dir.path().join(p);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, data).unwrap();
        }
        dir
    }

    fn run(src: &Path, dest: &Path, sources: &[&str], to: &str) -> Result<(), SolveError> {
        let sources: Vec<String> = sources.iter().map(|s| s.to_string()).collect();
        copy(
            &SourceTree {
                root: src,
                index: None,
            },
            dest,
            &CopySpec {
                keyword: "COPY",
                sources: &sources,
                dest: to,
                owner: Ids::default(),
                chmod: None,
                exclude: &[],
                is_add: false,
            },
        )
    }

    #[test]
    fn docker_path_rules() {
        let src = tree(&[
            ("a.txt", "a"),
            ("b.txt", "b"),
            ("dir/x/y", "y"),
            ("dir/z", "z"),
        ]);
        let dest = tempfile::tempdir().unwrap();
        let d = dest.path();
        std::fs::create_dir(d.join("existing")).unwrap();
        run(src.path(), d, &["a.txt"], "/file").unwrap();
        assert_eq!(std::fs::read_to_string(d.join("file")).unwrap(), "a");
        run(src.path(), d, &["a.txt"], "/new/").unwrap();
        assert!(d.join("new/a.txt").is_file());
        run(src.path(), d, &["a.txt"], "/existing").unwrap();
        assert!(d.join("existing/a.txt").is_file());
        run(src.path(), d, &["dir"], "/out").unwrap();
        assert!(
            d.join("out/x/y").is_file() && d.join("out/z").is_file() && !d.join("out/dir").exists()
        );
        run(src.path(), d, &["*.txt"], "/glob/").unwrap();
        assert!(d.join("glob/a.txt").is_file() && d.join("glob/b.txt").is_file());
        assert!(matches!(
            run(src.path(), d, &["a.txt", "b.txt"], "/nodir"),
            Err(SolveError::DestinationNotDirectory { .. })
        ));
        assert!(matches!(
            run(src.path(), d, &["missing"], "/m"),
            Err(SolveError::SourceNotFound { .. })
        ));
        assert!(matches!(
            run(src.path(), d, &["*.none"], "/m/"),
            Err(SolveError::SourceNotFound { .. })
        ));
    }

    #[test]
    fn chmod_modes() {
        assert_eq!(Chmod::parse("0640").unwrap().apply(0o777, false), 0o640);
        assert_eq!(Chmod::parse("u+x,go-w").unwrap().apply(0o666, false), 0o744);
        assert_eq!(Chmod::parse("a=r").unwrap().apply(0o777, false), 0o444);
        assert!(Chmod::parse("z+q").is_err());
    }
}
