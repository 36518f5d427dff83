//! COPY/ADD, heredoc files and WORKDIR's mkdir, written into a step's
//! merged root (an overlay, so only the changes land in the upper dir).
//!
//! Path rules follow docker's COPY reference: a directory source copies
//! its contents; a file source lands in `dest/` when the destination ends
//! in `/` or is an existing directory, else at `dest`; several sources need
//! a `/`-terminated destination; missing parents are created (0755, owned
//! by the `--chown` owner or root); ownership is 0:0 for the build context
//! and kept for `--from` sources unless `--chown`; modes are kept unless
//! `--chmod`; mtimes are kept.
//!
//! `--parents` keeps each match's path below the source's pivot (the part
//! after a `/./`, or the whole path). ADD unpacks a local tar archive
//! (plain, gzip, bzip2, xz or zstd, told by content) into the destination
//! directory, owners and modes from the archive unless `--chown`.

use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
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
    /// `None`: keep the source's owners.
    pub owner: Option<Ids>,
    pub chmod: Option<&'a Chmod>,
    pub exclude: &'a [String],
    /// ADD: unpack local tar archives.
    pub unpack: bool,
    /// Owner of what an archive unpacks to (`--chown`; `None`: the archive's).
    pub unpack_owner: Option<Ids>,
    /// `--parents`.
    pub parents: bool,
    /// Where archives are unpacked before they are merged into the root.
    pub scratch: &'a Path,
}

impl CopySpec<'_> {
    /// Owner of directories the copy creates.
    fn dir_owner(&self) -> Ids {
        self.owner.unwrap_or_default()
    }
}

/// The part of a `--parents` source that is not kept: what comes before
/// its last `/./` (nothing when there is none).
fn pivot_prefix(source: &str) -> String {
    match source.rfind("/./") {
        Some(i) => clean_relative(&source[..i]),
        None => String::new(),
    }
}

/// Copies `spec.sources` from `from` into the root `dest_root`.
pub(crate) fn copy(
    from: &SourceTree<'_>,
    dest_root: &Path,
    spec: &CopySpec<'_>,
) -> Result<(), SolveError> {
    DEST_DEV.set(std::fs::metadata(dest_root).ok().map(|m| m.dev()));
    let mut matched = Vec::new();
    for source in spec.sources {
        let prefix = pivot_prefix(source);
        for rel in from.expand(source)? {
            matched.push((rel, prefix.clone()));
        }
    }
    let dest_is_dir_syntax = spec.dest.ends_with('/');
    if spec.parents {
        return copy_parents(from, dest_root, spec, matched);
    }
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
    for (rel, _) in matched {
        // The source itself is followed when it is a symlink (inside the tree).
        let path = resolve_in_root(from.root, &rel)
            .map_err(SolveError::io("resolve", from.root.join(&rel)))?;
        let meta = std::fs::metadata(&path)
            .map_err(|_| SolveError::SourceNotFound { path: rel.clone() })?;
        if meta.is_dir() {
            let target = make_dirs(dest_root, spec.dest, spec.dir_owner())?;
            copy_tree(from, &rel, &path, &target, spec, exclude.as_ref())?;
        } else {
            if spec.unpack && unpack_archive(&path, dest_root, spec.dest, spec)? {
                continue;
            }
            let existing_dir = resolve_in_root(dest_root, spec.dest)
                .map(|p| p.is_dir())
                .unwrap_or(false);
            let target = if dest_is_dir_syntax || existing_dir {
                let dir = make_dirs(dest_root, spec.dest, spec.dir_owner())?;
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
                let dir = make_dirs(dest_root, &parent, spec.dir_owner())?;
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

/// `--parents`: each match lands at `dest/<its path below the pivot>`.
fn copy_parents(
    from: &SourceTree<'_>,
    dest_root: &Path,
    spec: &CopySpec<'_>,
    matched: Vec<(String, String)>,
) -> Result<(), SolveError> {
    let exclude = if spec.exclude.is_empty() {
        None
    } else {
        Some(
            crate::dockerfile::dockerignore::Matcher::new(spec.exclude)
                .map_err(|_| SolveError::unsupported("this --exclude pattern"))?,
        )
    };
    let base = spec.dest.trim_end_matches('/');
    for (rel, prefix) in matched {
        let kept = if prefix.is_empty() {
            rel.as_str()
        } else {
            rel.strip_prefix(prefix.as_str())
                .map(|r| r.trim_start_matches('/'))
                .unwrap_or(rel.as_str())
        };
        if exclude.as_ref().is_some_and(|m| m.matches(kept)) {
            continue;
        }
        let dest = format!("{base}/{kept}");
        let path = resolve_in_root(from.root, &rel)
            .map_err(SolveError::io("resolve", from.root.join(&rel)))?;
        let meta = std::fs::metadata(&path)
            .map_err(|_| SolveError::SourceNotFound { path: rel.clone() })?;
        if meta.is_dir() {
            let target = make_dirs(dest_root, &dest, spec.dir_owner())?;
            copy_tree(from, &rel, &path, &target, spec, exclude.as_ref())?;
        } else {
            let parent = Path::new(&dest)
                .parent()
                .map(|p| p.to_string_lossy().into_owned())
                .unwrap_or_default();
            let dir = make_dirs(dest_root, &parent, spec.dir_owner())?;
            let name = Path::new(&dest).file_name().unwrap_or_default();
            copy_entry(&path, &meta, &dir.join(name), spec)?;
        }
    }
    Ok(())
}

/// A reader of the archive at `path` with its compression (told by its
/// first bytes) undone; xz is decoded into `scratch` first.
fn decoded(path: &Path, scratch: &Path) -> Result<Box<dyn std::io::Read>, SolveError> {
    use std::io::Read;
    let mut file = std::fs::File::open(path).map_err(SolveError::io("open", path))?;
    let mut head = [0u8; 6];
    let mut n = 0;
    while n < head.len() {
        match file.read(&mut head[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) => return Err(SolveError::io("read", path)(e)),
        }
    }
    let whole = std::io::Cursor::new(head).take(n as u64).chain(file);
    let reader = std::io::BufReader::new(whole);
    let h = &head[..n];
    Ok(if h.starts_with(&[0x1f, 0x8b]) {
        Box::new(flate2::bufread::MultiGzDecoder::new(reader))
    } else if h.starts_with(b"BZh") {
        Box::new(bzip2::bufread::MultiBzDecoder::new(reader))
    } else if h.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Box::new(
            zstd::stream::read::Decoder::with_buffer(reader)
                .map_err(SolveError::io("read", path))?,
        )
    } else if h.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
        // lzma-rs decodes whole streams only: into an unnamed scratch file.
        let mut out =
            tempfile::tempfile_in(scratch).map_err(SolveError::io("create a file in", scratch))?;
        let mut input = reader;
        if lzma_rs::xz_decompress(&mut input, &mut out).is_err() {
            // Not a valid xz stream: not an archive.
            return Ok(Box::new(std::io::empty()));
        }
        std::io::Seek::rewind(&mut out).map_err(SolveError::io("read", path))?;
        Box::new(std::io::BufReader::new(out))
    } else {
        Box::new(reader)
    })
}

/// Whether `path` holds a (compressed) tar archive: its first header reads.
fn is_archive(path: &Path, scratch: &Path) -> Result<bool, SolveError> {
    let reader = decoded(path, scratch)?;
    let mut archive = tar::Archive::new(reader);
    let Ok(mut entries) = archive.entries() else {
        return Ok(false);
    };
    Ok(matches!(entries.next(), Some(Ok(_))))
}

/// ADD of a local archive: unpacks it into the directory `dest`; `false`
/// when `path` is not an archive (then it is copied as a file).
///
/// The archive goes into a fresh directory under `spec.scratch` first, each
/// entry's path resolved as if that directory were the root (`..` stops at
/// it, symlinks, absolute ones too, resolve inside it), so nothing is
/// written outside it; then it merges into the image like a directory COPY:
/// existing files are replaced, owners and modes come from the archive
/// unless `--chown`.
fn unpack_archive(
    path: &Path,
    dest_root: &Path,
    dest: &str,
    spec: &CopySpec<'_>,
) -> Result<bool, SolveError> {
    if !is_archive(path, spec.scratch)? {
        return Ok(false);
    }
    let temp = tempfile::Builder::new()
        .prefix("unpack-")
        .tempdir_in(spec.scratch)
        .map_err(SolveError::io("create a directory in", spec.scratch))?;
    let mut archive = tar::Archive::new(decoded(path, spec.scratch)?);
    archive.set_preserve_permissions(true);
    archive.set_preserve_ownerships(true);
    archive.set_preserve_mtime(true);
    archive.set_overwrite(true);
    let name = path
        .file_name()
        .unwrap_or_default()
        .to_string_lossy()
        .into_owned();
    let bad = |e: std::io::Error| SolveError::Archive {
        name: name.clone(),
        source: e,
    };
    let root = temp.path();
    let mut dirs = Vec::new();
    for entry in archive.entries().map_err(bad)? {
        let mut entry = entry.map_err(bad)?;
        let raw = entry.path().map_err(bad)?.to_string_lossy().into_owned();
        // As if chrooted to the destination (as docker unpacks): `..`
        // stops at the top, symlinks resolve inside it.
        let host = resolve_parent_in_root(root, &raw).map_err(bad)?;
        if host == root {
            continue;
        }
        if let Some(parent) = host.parent() {
            std::fs::create_dir_all(parent).map_err(bad)?;
        }
        let kind = entry.header().entry_type();
        if let Ok(existing) = std::fs::symlink_metadata(&host) {
            if !(existing.is_dir() && kind.is_dir()) {
                if existing.is_dir() {
                    std::fs::remove_dir_all(&host).map_err(bad)?;
                } else {
                    std::fs::remove_file(&host).map_err(bad)?;
                }
            }
        }
        if kind.is_hard_link() {
            let target = entry
                .link_name()
                .map_err(bad)?
                .map(|t| t.to_string_lossy().into_owned())
                .unwrap_or_default();
            let source = resolve_in_root(root, &target).map_err(bad)?;
            std::fs::hard_link(&source, &host).map_err(bad)?;
            continue;
        }
        entry.unpack(&host).map_err(bad)?;
        if kind.is_dir() {
            let mtime = entry.header().mtime().unwrap_or(0) as i64;
            dirs.push((host, mtime));
        }
    }
    // Directory mtimes last: their entries changed them.
    for (dir, mtime) in dirs.iter().rev() {
        let t = filetime::FileTime::from_unix_time(*mtime, 0);
        filetime::set_file_mtime(dir, t).map_err(SolveError::io("set mtime of", dir))?;
    }
    let target = make_dirs(dest_root, dest, spec.dir_owner())?;
    let merge = CopySpec {
        keyword: spec.keyword,
        sources: spec.sources,
        dest,
        owner: spec.unpack_owner,
        chmod: None,
        exclude: &[],
        unpack: false,
        unpack_owner: None,
        parents: false,
        scratch: spec.scratch,
    };
    let tree = SourceTree {
        root: temp.path(),
        index: None,
    };
    copy_tree(&tree, "", temp.path(), &target, &merge, None)?;
    Ok(true)
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
            // Create first; look at what is there only when that fails.
            match std::fs::create_dir(&dest) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    match std::fs::symlink_metadata(&dest) {
                        Ok(m) if m.is_dir() => {}
                        _ => {
                            std::fs::remove_file(&dest).map_err(SolveError::io("remove", &dest))?;
                            std::fs::create_dir(&dest)
                                .map_err(SolveError::io("create directory", &dest))?;
                        }
                    }
                }
                Err(e) => return Err(SolveError::io("create directory", &dest)(e)),
            }
            let mode = spec
                .chmod
                .map_or(meta.mode() & 0o7777, |c| c.apply(meta.mode(), true));
            let owner = owner_of(spec, &meta);
            std::os::unix::fs::lchown(&dest, Some(owner.uid), Some(owner.gid))
                .map_err(SolveError::io("chown", &dest))?;
            std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(mode))
                .map_err(SolveError::io("chmod", &dest))?;
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

/// The owner a copied entry gets: `--chown`'s, else the source's.
fn owner_of(spec: &CopySpec<'_>, meta: &std::fs::Metadata) -> Ids {
    spec.owner.unwrap_or(Ids {
        uid: meta.uid(),
        gid: meta.gid(),
    })
}

/// Copies one non-directory entry (file or symlink) to `dest`, replacing
/// what is there.
fn copy_entry(
    src: &Path,
    meta: &std::fs::Metadata,
    dest: &Path,
    spec: &CopySpec<'_>,
) -> Result<(), SolveError> {
    let ft = meta.file_type();
    if ft.is_symlink() {
        let target = std::fs::read_link(src).map_err(SolveError::io("read link", src))?;
        replacing(dest, || std::os::unix::fs::symlink(&target, dest))
            .map_err(SolveError::io("create symlink", dest))?;
        let owner = owner_of(spec, meta);
        std::os::unix::fs::lchown(dest, Some(owner.uid), Some(owner.gid))
            .map_err(SolveError::io("chown", dest))?;
        let mtime = filetime::FileTime::from_last_modification_time(meta);
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
    let mut input = std::fs::File::open(src).map_err(SolveError::io("open", src))?;
    // Everything below goes through the open descriptors: one path lookup
    // in the destination (the create), none after it.
    let mut output = replacing(dest, || {
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(dest)
    })
    .map_err(SolveError::io("create", dest))?;
    copy_data(&mut input, &mut output, meta.dev()).map_err(SolveError::io("copy to", dest))?;
    let owner = owner_of(spec, meta);
    std::os::unix::fs::fchown(&output, Some(owner.uid), Some(owner.gid))
        .map_err(SolveError::io("chown", dest))?;
    let mode = spec
        .chmod
        .map_or(meta.mode() & 0o7777, |c| c.apply(meta.mode(), false));
    output
        .set_permissions(std::fs::Permissions::from_mode(mode))
        .map_err(SolveError::io("chmod", dest))?;
    let mtime = meta.modified().map_err(SolveError::io("stat", src))?;
    output
        .set_times(std::fs::FileTimes::new().set_modified(mtime))
        .map_err(SolveError::io("set mtime of", dest))?;
    Ok(())
}

/// Runs `create` (which fails with `AlreadyExists` when `dest` is taken);
/// when something is in the way, removes it (never a directory) and runs
/// `create` again. Only a taken name costs a look at it.
fn replacing<T>(dest: &Path, create: impl Fn() -> std::io::Result<T>) -> std::io::Result<T> {
    match create() {
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            if std::fs::symlink_metadata(dest).is_ok_and(|m| m.is_dir()) {
                return Err(std::io::Error::from(std::io::ErrorKind::IsADirectory));
            }
            std::fs::remove_file(dest)?;
            create()
        }
        other => other,
    }
}

std::thread_local! {
    /// The device of the current COPY's destination root: copy_file_range(2)
    /// is tried only for sources on the same one (elsewhere it fails with
    /// EXDEV, on every file; an overlay destination always is another one).
    static DEST_DEV: std::cell::Cell<Option<u64>> = const { std::cell::Cell::new(None) };
    static BUFFER: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Copies `input` from where it is to its end into `output`.
fn copy_data(
    input: &mut std::fs::File,
    output: &mut std::fs::File,
    src_dev: u64,
) -> std::io::Result<()> {
    use std::io::{Read, Write};
    if DEST_DEV.get() == Some(src_dev) {
        // Same file system: std tries copy_file_range (reflinks where the
        // file system has them) and falls back by itself.
        return std::io::copy(input, output).map(|_| ());
    }
    BUFFER.with_borrow_mut(|buf| {
        if buf.is_empty() {
            buf.resize(256 * 1024, 0);
        }
        loop {
            let n = match input.read(buf) {
                Ok(0) => return Ok(()),
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            output.write_all(&buf[..n])?;
        }
    })
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
                owner: Some(Ids::default()),
                chmod: None,
                exclude: &[],
                unpack: false,
                unpack_owner: None,
                parents: false,
                scratch: src,
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

    fn spec<'a>(sources: &'a [String], dest: &'a str, scratch: &'a Path) -> CopySpec<'a> {
        CopySpec {
            keyword: "ADD",
            sources,
            dest,
            owner: None,
            chmod: None,
            exclude: &[],
            unpack: true,
            unpack_owner: None,
            parents: false,
            scratch,
        }
    }

    #[test]
    fn parents_keep_the_path_below_the_pivot() {
        assert_eq!(pivot_prefix("./src/./b/two.txt"), "src");
        assert_eq!(pivot_prefix("src/b/two.txt"), "");
        let src = tree(&[("src/a/one.txt", "1"), ("src/b/two.txt", "2")]);
        let dest = tempfile::tempdir().unwrap();
        let sources = vec!["src/*/*.txt".to_string(), "./src/./b/two.txt".to_string()];
        let mut s = spec(&sources, "/out/", src.path());
        s.parents = true;
        s.owner = Some(Ids::default());
        copy(
            &SourceTree {
                root: src.path(),
                index: None,
            },
            dest.path(),
            &s,
        )
        .unwrap();
        for p in ["out/src/a/one.txt", "out/src/b/two.txt", "out/b/two.txt"] {
            assert!(dest.path().join(p).is_file(), "{p}");
        }
    }

    /// A tar with `entries` (name, data), gzip-compressed when asked.
    fn tar_of(entries: &[(&str, &[u8])], gzip: bool) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for (name, data) in entries {
            let mut header = tar::Header::new_gnu();
            header.set_size(data.len() as u64);
            header.set_mode(0o644);
            header.set_uid(0);
            header.set_gid(0);
            header.set_mtime(0);
            header.set_entry_type(tar::EntryType::Regular);
            // `..` names are written raw: set_path refuses them.
            let bytes = name.as_bytes();
            header.as_old_mut().name[..bytes.len()].copy_from_slice(bytes);
            header.set_cksum();
            builder.append(&header, *data).unwrap();
        }
        let raw = builder.into_inner().unwrap();
        if !gzip {
            return raw;
        }
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut enc, &raw).unwrap();
        enc.finish().unwrap()
    }

    #[test]
    fn archives_are_told_by_content_and_contained() {
        let scratch = tempfile::tempdir().unwrap();
        let src = tempfile::tempdir().unwrap();
        std::fs::write(
            src.path().join("a.bin"),
            tar_of(&[("x.txt", b"x"), ("../../escape.txt", b"e")], true),
        )
        .unwrap();
        let mut text = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut text, b"not a tar").unwrap();
        std::fs::write(src.path().join("t.gz"), text.finish().unwrap()).unwrap();
        assert!(is_archive(&src.path().join("a.bin"), scratch.path()).unwrap());
        assert!(!is_archive(&src.path().join("t.gz"), scratch.path()).unwrap());
        let dest = tempfile::tempdir().unwrap();
        let root = dest.path().join("root");
        std::fs::create_dir(&root).unwrap();
        let sources = vec!["a.bin".to_string(), "t.gz".to_string()];
        copy(
            &SourceTree {
                root: src.path(),
                index: None,
            },
            &root,
            &spec(&sources, "/in/", scratch.path()),
        )
        .unwrap();
        assert_eq!(std::fs::read(root.join("in/x.txt")).unwrap(), b"x");
        assert_eq!(
            std::fs::read(root.join("in/escape.txt")).unwrap(),
            b"e",
            "`..` stops at the destination"
        );
        assert!(root.join("in/t.gz").is_file(), "not a tar: copied");
        assert!(!root.join("in/a.bin").exists(), "a tar: unpacked");
        assert!(!dest.path().join("escape.txt").exists());
        assert!(!root.join("escape.txt").exists());
    }

    #[test]
    fn chmod_modes() {
        assert_eq!(Chmod::parse("0640").unwrap().apply(0o777, false), 0o640);
        assert_eq!(Chmod::parse("u+x,go-w").unwrap().apply(0o666, false), 0o744);
        assert_eq!(Chmod::parse("a=r").unwrap().apply(0o777, false), 0o444);
        assert!(Chmod::parse("z+q").is_err());
    }
}
