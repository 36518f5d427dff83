//! Copying files into and out of a container (`kiln cp`), as tar streams.
//!
//! Every path inside a container is looked up with openat2(2)
//! `RESOLVE_IN_ROOT` relative to a descriptor of the container's root: `..`
//! stops at that root and absolute symlinks resolve inside it, so a hostile
//! container cannot make kiln read or write a host file. Below the looked-up
//! path, trees are walked and written one name at a time relative to
//! directory descriptors, never following a symlink.
//!
//! The path rules are docker's (docs.docker.com, "docker container cp"):
//! see [`plan`].

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use anyhow::{bail, Context, Result};
use nix::errno::Errno;
use nix::fcntl::{openat, openat2, readlinkat, AtFlags, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::{
    fchmod, fstat, fstatat, futimens, major, makedev, minor, mkdirat, mknodat, FileStat, Mode,
    SFlag,
};
use nix::sys::time::TimeSpec;
use nix::unistd::{fchown, fchownat, linkat, symlinkat, unlinkat, Gid, Uid, UnlinkatFlags};

/// A directory that acts as `/` for every path looked up under it.
#[derive(Debug)]
pub struct Root {
    fd: OwnedFd,
}

/// What a path names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Missing,
    Dir,
    Other,
}

impl Root {
    /// Opens `dir` (a host path; symlinks in it are followed as usual).
    pub fn open(dir: &Path) -> Result<Root> {
        let fd = nix::fcntl::open(
            dir,
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .with_context(|| format!("opening {}", dir.display()))?;
        Ok(Root { fd })
    }

    /// Opens `path` (absolute or relative, both from this root) without
    /// leaving the root; `follow` decides whether a final symlink is followed.
    fn lookup(&self, path: &Path, follow: bool, flags: OFlag) -> nix::Result<OwnedFd> {
        let relative = relative(path);
        let mut flags = flags | OFlag::O_CLOEXEC;
        if !follow {
            flags |= OFlag::O_NOFOLLOW;
        }
        let how = OpenHow::new()
            .flags(flags)
            .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
        openat2(&self.fd, relative.as_path(), how)
    }

    /// Opens directory `path` (O_PATH) without leaving the root; `None`
    /// when it is missing or not a directory.
    pub fn open_dir(&self, path: &Path) -> Result<Option<OwnedFd>> {
        match self.lookup(path, true, OFlag::O_PATH | OFlag::O_DIRECTORY) {
            Ok(fd) => Ok(Some(fd)),
            Err(Errno::ENOENT) | Err(Errno::ENOTDIR) => Ok(None),
            Err(e) => Err(e).with_context(|| format!("looking up {}", path.display())),
        }
    }

    /// What `path` is (following every symlink, as docker does for a destination).
    pub fn kind(&self, path: &Path, follow: bool) -> Result<Kind> {
        match self.lookup(path, follow, OFlag::O_PATH) {
            Ok(fd) => Ok(if is_dir(&fstat(&fd)?) {
                Kind::Dir
            } else {
                Kind::Other
            }),
            Err(Errno::ENOENT) | Err(Errno::ENOTDIR) => Ok(Kind::Missing),
            Err(e) => Err(e).with_context(|| format!("looking up {}", path.display())),
        }
    }
}

/// `path` relative to a root: leading `/` dropped, empty becomes `.`.
fn relative(path: &Path) -> PathBuf {
    let rel: PathBuf = path
        .components()
        .filter(|c| !matches!(c, Component::RootDir | Component::Prefix(_)))
        .collect();
    if rel.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        rel
    }
}

fn is_dir(st: &FileStat) -> bool {
    st.st_mode & libc_s_ifmt() == SFlag::S_IFDIR.bits()
}

fn libc_s_ifmt() -> u32 {
    SFlag::S_IFMT.bits()
}

/// Where a copy lands: the directory to extract into and the name the
/// source's top entry gets there (`None`: only the source's contents).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub dir: PathBuf,
    pub top: Option<OsString>,
}

/// docker's rules for `cp SRC DEST` (docs "docker container cp"): a file
/// goes to DEST when DEST is a file or missing, into DEST when DEST is a
/// directory; a directory is created as DEST when DEST is missing, copied
/// into DEST when it is a directory, and only its contents go when SRC ends
/// in `/.`. `dest_parent` is the kind of DEST's parent.
pub fn plan(
    src: &str,
    src_is_dir: bool,
    dest: &str,
    dest_kind: Kind,
    dest_parent: Kind,
) -> Result<Plan> {
    let contents = src.ends_with("/.") || src == ".";
    let src_trailing = src.ends_with('/') || contents;
    if src_trailing && !src_is_dir {
        bail!("source {src} is not a directory");
    }
    let dest_path = Path::new(dest);
    let src_name = Path::new(src.trim_end_matches("/.").trim_end_matches('/'))
        .file_name()
        .map(OsStr::to_os_string);
    let in_parent = || -> Result<Plan> {
        let name = dest_path
            .file_name()
            .with_context(|| format!("destination {dest} has no file name"))?;
        if dest_parent != Kind::Dir {
            bail!("destination directory of {dest} does not exist");
        }
        Ok(Plan {
            dir: dest_path.parent().unwrap_or(Path::new("/")).to_path_buf(),
            top: Some(name.to_os_string()),
        })
    };
    match (src_is_dir, dest_kind) {
        (false, Kind::Missing) if dest.ends_with('/') => {
            bail!("destination directory {dest} must exist")
        }
        (_, Kind::Missing) => in_parent(),
        (false, Kind::Other) => in_parent(),
        (true, Kind::Other) => bail!("cannot copy a directory to a file: {dest}"),
        (_, Kind::Dir) if contents || src_name.is_none() => Ok(Plan {
            dir: dest_path.to_path_buf(),
            top: None,
        }),
        (_, Kind::Dir) => Ok(Plan {
            dir: dest_path.to_path_buf(),
            top: src_name,
        }),
    }
}

/// Writes `src` (looked up in `root`) as a tar stream to `out`: the source
/// itself named `top`, or (with `top` None) the entries inside it. With
/// `follow`, a final symlink in `src` is followed (`-L`); symlinks below it
/// are copied as symlinks.
pub fn write_tar(
    root: &Root,
    src: &Path,
    follow: bool,
    top: Option<&OsStr>,
    out: impl Write,
) -> Result<()> {
    let mut builder = tar::Builder::new(out);
    builder.follow_symlinks(false);
    let fd = root
        .lookup(src, follow, OFlag::O_PATH)
        .map_err(|e| anyhow::anyhow!("{}: {}", src.display(), e.desc()))?;
    let st = fstat(&fd)?;
    match top {
        Some(name) => {
            let reopen = |flags: OFlag| {
                root.lookup(src, follow, flags | OFlag::O_RDONLY | OFlag::O_NONBLOCK)
                    .with_context(|| format!("opening {}", src.display()))
            };
            append(
                &mut builder,
                Path::new(name),
                &st,
                Opened::Lazy(&reopen),
                &|| readlinkat(&fd, "").with_context(|| format!("reading link {}", src.display())),
            )?;
        }
        None => {
            if !is_dir(&st) {
                bail!("{} is not a directory", src.display());
            }
            let dir = root
                .lookup(src, follow, OFlag::O_RDONLY | OFlag::O_DIRECTORY)
                .with_context(|| format!("opening {}", src.display()))?;
            append_children(&mut builder, &dir, Path::new(""))?;
        }
    }
    builder.finish().context("writing the tar stream")?;
    Ok(())
}

/// How [`append`] gets the content of a regular file or directory.
enum Opened<'a> {
    Lazy(&'a dyn Fn(OFlag) -> Result<OwnedFd>),
}

fn header(st: &FileStat, kind: tar::EntryType) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(st.st_mode & 0o7777);
    h.set_uid(st.st_uid as u64);
    h.set_gid(st.st_gid as u64);
    h.set_mtime(st.st_mtime.max(0) as u64);
    h.set_size(0);
    h
}

fn append<W: Write>(
    builder: &mut tar::Builder<W>,
    name: &Path,
    st: &FileStat,
    open: Opened<'_>,
    read_link: &dyn Fn() -> Result<OsString>,
) -> Result<()> {
    let Opened::Lazy(open) = open;
    let format = st.st_mode & libc_s_ifmt();
    let ctx = || format!("adding {} to the tar stream", name.display());
    if format == SFlag::S_IFREG.bits() {
        let fd = open(OFlag::empty())?;
        let now = fstat(&fd)?;
        if now.st_mode & libc_s_ifmt() != SFlag::S_IFREG.bits() {
            bail!("{} changed while being copied", name.display());
        }
        let mut h = header(&now, tar::EntryType::Regular);
        h.set_size(now.st_size as u64);
        let file = File::from(fd);
        builder
            .append_data(&mut h, name, Exact::new(file, now.st_size as u64))
            .with_context(ctx)?;
    } else if format == SFlag::S_IFDIR.bits() {
        let mut h = header(st, tar::EntryType::Directory);
        builder
            .append_data(&mut h, name, io::empty())
            .with_context(ctx)?;
        let dir = open(OFlag::O_DIRECTORY)?;
        append_children(builder, &dir, name)?;
    } else if format == SFlag::S_IFLNK.bits() {
        let mut h = header(st, tar::EntryType::Symlink);
        let target = read_link()?;
        builder
            .append_link(&mut h, name, Path::new(&target))
            .with_context(ctx)?;
    } else if format == SFlag::S_IFCHR.bits() || format == SFlag::S_IFBLK.bits() {
        let kind = if format == SFlag::S_IFCHR.bits() {
            tar::EntryType::Char
        } else {
            tar::EntryType::Block
        };
        let mut h = header(st, kind);
        h.set_device_major(major(st.st_rdev) as u32)?;
        h.set_device_minor(minor(st.st_rdev) as u32)?;
        builder
            .append_data(&mut h, name, io::empty())
            .with_context(ctx)?;
    } else if format == SFlag::S_IFIFO.bits() {
        let mut h = header(st, tar::EntryType::Fifo);
        builder
            .append_data(&mut h, name, io::empty())
            .with_context(ctx)?;
    }
    // Sockets cannot be copied; docker skips them too.
    Ok(())
}

fn append_children<W: Write>(
    builder: &mut tar::Builder<W>,
    dir: &OwnedFd,
    prefix: &Path,
) -> Result<()> {
    let listing = nix::dir::Dir::from_fd(dir.try_clone()?)?;
    let mut names: Vec<OsString> = Vec::new();
    for entry in listing {
        let entry = entry?;
        let name = OsStr::from_bytes(entry.file_name().to_bytes());
        if name != "." && name != ".." {
            names.push(name.to_os_string());
        }
    }
    names.sort();
    for name in names {
        let st = match fstatat(dir, name.as_os_str(), AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            // Gone since the listing: a running container changes its files.
            Err(Errno::ENOENT) => continue,
            Err(e) => return Err(e).context(format!("stat {}", prefix.join(&name).display())),
        };
        let path = prefix.join(&name);
        let open = |flags: OFlag| {
            openat(
                dir,
                name.as_os_str(),
                flags | OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC,
                Mode::empty(),
            )
            .with_context(|| format!("opening {}", path.display()))
        };
        let link = || {
            readlinkat(dir, name.as_os_str())
                .with_context(|| format!("reading link {}", path.display()))
        };
        append(builder, &path, &st, Opened::Lazy(&open), &link)?;
    }
    Ok(())
}

/// A reader that yields exactly `size` bytes: a file that shrank while
/// being read is padded with zeros, one that grew is cut, so the tar
/// stream stays well formed.
struct Exact {
    file: File,
    left: u64,
}

impl Exact {
    fn new(file: File, size: u64) -> Exact {
        Exact { file, left: size }
    }
}

impl Read for Exact {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 {
            return Ok(0);
        }
        let want = buf.len().min(self.left as usize);
        let n = match self.file.read(&mut buf[..want])? {
            0 => {
                buf[..want].fill(0);
                want
            }
            n => n,
        };
        self.left -= n as u64;
        Ok(n)
    }
}

/// Who owns extracted files.
#[derive(Debug, Clone, Copy)]
pub enum Owner {
    /// The uid and gid recorded in the stream (`-a`).
    Keep,
    /// These ids.
    Fixed(u32, u32),
}

/// The relative path of a tar entry, or an error when it would leave the
/// destination (`..`). Absolute names are taken as relative, as tar does.
fn entry_path(path: &Path) -> Result<PathBuf> {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir | Component::RootDir | Component::Prefix(_) => {}
            Component::ParentDir => {
                bail!("tar entry {} leaves the destination", path.display())
            }
        }
    }
    Ok(out)
}

/// Opens directory `dir` (from the root), creating missing components.
fn ensure_dir(root: &Root, dir: &Path) -> Result<OwnedFd> {
    let flags = OFlag::O_PATH | OFlag::O_DIRECTORY;
    match root.lookup(dir, true, flags) {
        Ok(fd) => return Ok(fd),
        Err(Errno::ENOENT) => {}
        Err(e) => return Err(e).context(format!("opening directory {}", dir.display())),
    }
    let mut current = root.lookup(Path::new("/"), true, flags)?;
    let mut sofar = PathBuf::from("/");
    for c in relative(dir).components() {
        let Component::Normal(name) = c else { continue };
        sofar.push(name);
        match mkdirat(&current, name, Mode::from_bits_truncate(0o755)) {
            Ok(()) | Err(Errno::EEXIST) => {}
            Err(e) => return Err(e).context(format!("creating {}", sofar.display())),
        }
        current = root
            .lookup(&sofar, true, flags)
            .with_context(|| format!("opening directory {}", sofar.display()))?;
    }
    Ok(current)
}

/// Removes a non-directory `name` in `parent` if there is one; errors when
/// it is a directory.
fn clear(parent: &OwnedFd, name: &OsStr, display: &Path) -> Result<()> {
    match fstatat(parent, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(st) if is_dir(&st) => {
            bail!(
                "cannot overwrite directory {} with a non-directory",
                display.display()
            )
        }
        Ok(_) => unlinkat(parent, name, UnlinkatFlags::NoRemoveDir)
            .with_context(|| format!("removing {}", display.display())),
        Err(Errno::ENOENT) => Ok(()),
        Err(e) => Err(e).context(format!("stat {}", display.display())),
    }
}

fn ids(owner: Owner, h: &tar::Header) -> (Option<Uid>, Option<Gid>) {
    match owner {
        Owner::Keep => (
            h.uid().ok().map(|u| Uid::from_raw(u as u32)),
            h.gid().ok().map(|g| Gid::from_raw(g as u32)),
        ),
        Owner::Fixed(u, g) => (Some(Uid::from_raw(u)), Some(Gid::from_raw(g))),
    }
}

/// Extracts a tar stream into directory `base` of `root`. Entries never
/// leave the root: each is created by name in a directory looked up from
/// the root, without following a symlink at the name itself.
pub fn extract(root: &Root, base: &Path, input: impl Read, owner: Owner) -> Result<()> {
    let mut archive = tar::Archive::new(input);
    for entry in archive.entries().context("reading the tar stream")? {
        let mut entry = entry.context("reading the tar stream")?;
        let raw = entry
            .path()
            .context("reading a tar entry name")?
            .into_owned();
        let path = entry_path(&raw)?;
        let Some(name) = path.file_name().map(OsStr::to_os_string) else {
            continue;
        };
        let shown = base.join(&path);
        let parent_path = base.join(path.parent().unwrap_or(Path::new("")));
        let parent = ensure_dir(root, &parent_path)?;
        let header = entry.header().clone();
        let mode = Mode::from_bits_truncate(header.mode().unwrap_or(0o644) & 0o7777);
        let (uid, gid) = ids(owner, &header);
        let mtime = TimeSpec::new(header.mtime().unwrap_or(0) as i64, 0);
        let kind = header.entry_type();
        match kind {
            tar::EntryType::Directory => {
                match mkdirat(&parent, name.as_os_str(), mode) {
                    Ok(()) => {}
                    Err(Errno::EEXIST) => {
                        let st = fstatat(&parent, name.as_os_str(), AtFlags::AT_SYMLINK_NOFOLLOW)?;
                        if !is_dir(&st) {
                            bail!(
                                "cannot overwrite non-directory {} with a directory",
                                shown.display()
                            );
                        }
                    }
                    Err(e) => return Err(e).context(format!("creating {}", shown.display())),
                }
                let dir = openat(
                    &parent,
                    name.as_os_str(),
                    OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                    Mode::empty(),
                )
                .with_context(|| format!("opening {}", shown.display()))?;
                fchown(&dir, uid, gid).with_context(|| format!("chown {}", shown.display()))?;
                fchmod(&dir, mode).with_context(|| format!("chmod {}", shown.display()))?;
            }
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                clear(&parent, &name, &shown)?;
                let fd = openat(
                    &parent,
                    name.as_os_str(),
                    OFlag::O_WRONLY
                        | OFlag::O_CREAT
                        | OFlag::O_EXCL
                        | OFlag::O_NOFOLLOW
                        | OFlag::O_CLOEXEC,
                    Mode::from_bits_truncate(0o600),
                )
                .with_context(|| format!("creating {}", shown.display()))?;
                let mut file = File::from(fd);
                io::copy(&mut entry, &mut file)
                    .with_context(|| format!("writing {}", shown.display()))?;
                // chown before chmod: chown clears set-user-id bits.
                fchown(&file, uid, gid).with_context(|| format!("chown {}", shown.display()))?;
                fchmod(&file, mode).with_context(|| format!("chmod {}", shown.display()))?;
                futimens(&file, &mtime, &mtime)?;
            }
            tar::EntryType::Symlink => {
                let target = entry
                    .link_name()
                    .context("reading a symlink target")?
                    .with_context(|| format!("symlink {} has no target", shown.display()))?
                    .into_owned();
                clear(&parent, &name, &shown)?;
                symlinkat(target.as_os_str(), &parent, name.as_os_str())
                    .with_context(|| format!("creating symlink {}", shown.display()))?;
                fchownat(
                    &parent,
                    name.as_os_str(),
                    uid,
                    gid,
                    AtFlags::AT_SYMLINK_NOFOLLOW,
                )
                .with_context(|| format!("chown {}", shown.display()))?;
            }
            tar::EntryType::Link => {
                let target = entry
                    .link_name()
                    .context("reading a hard link target")?
                    .with_context(|| format!("hard link {} has no target", shown.display()))?;
                let target = entry_path(&target)?;
                let target_name = target
                    .file_name()
                    .with_context(|| format!("hard link {} has no target", shown.display()))?;
                let target_parent = root
                    .lookup(
                        &base.join(target.parent().unwrap_or(Path::new(""))),
                        true,
                        OFlag::O_PATH | OFlag::O_DIRECTORY,
                    )
                    .with_context(|| format!("finding the target of {}", shown.display()))?;
                clear(&parent, &name, &shown)?;
                linkat(
                    &target_parent,
                    target_name,
                    &parent,
                    name.as_os_str(),
                    AtFlags::empty(),
                )
                .with_context(|| format!("creating hard link {}", shown.display()))?;
            }
            tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => {
                let sflag = match kind {
                    tar::EntryType::Char => SFlag::S_IFCHR,
                    tar::EntryType::Block => SFlag::S_IFBLK,
                    _ => SFlag::S_IFIFO,
                };
                let dev = makedev(
                    header.device_major().ok().flatten().unwrap_or(0) as u64,
                    header.device_minor().ok().flatten().unwrap_or(0) as u64,
                );
                clear(&parent, &name, &shown)?;
                mknodat(&parent, name.as_os_str(), sflag, mode, dev)
                    .with_context(|| format!("creating device {}", shown.display()))?;
                fchownat(
                    &parent,
                    name.as_os_str(),
                    uid,
                    gid,
                    AtFlags::AT_SYMLINK_NOFOLLOW,
                )
                .with_context(|| format!("chown {}", shown.display()))?;
            }
            // pax and GNU long-name records are consumed by the tar crate;
            // anything else has no meaning here.
            _ => {}
        }
    }
    Ok(())
}

/// Copies `src` of `from` to `dest` of `to` by the rules of [`plan`],
/// streaming a tar archive through a pipe between two threads.
pub fn copy(from: Root, src: &str, follow: bool, to: Root, dest: &str, owner: Owner) -> Result<()> {
    let src_kind = from.kind(Path::new(src), follow)?;
    if src_kind == Kind::Missing {
        bail!("no such file or directory: {src}");
    }
    let dest_kind = to.kind(Path::new(dest), true)?;
    let dest_parent = match Path::new(dest).parent() {
        Some(p) => to.kind(p, true)?,
        None => Kind::Dir,
    };
    let plan = plan(src, src_kind == Kind::Dir, dest, dest_kind, dest_parent)?;
    let (reader, writer) = io::pipe().context("creating a pipe")?;
    let src_path = PathBuf::from(src);
    let top = plan.top.clone();
    let producer =
        std::thread::spawn(move || write_tar(&from, &src_path, follow, top.as_deref(), writer));
    let extracted = extract(&to, &plan.dir, reader, owner);
    let produced = producer
        .join()
        .map_err(|_| anyhow::anyhow!("the tar writer panicked"))?;
    // The reader's error is the consequence when the writer failed first.
    produced?;
    extracted
}

/// Writes the source as a tar stream to `out` (`cp CTR:SRC -`).
pub fn copy_to_stream(from: &Root, src: &str, follow: bool, out: impl Write) -> Result<()> {
    let kind = from.kind(Path::new(src), follow)?;
    if kind == Kind::Missing {
        bail!("no such file or directory: {src}");
    }
    let name = Path::new(src.trim_end_matches("/.").trim_end_matches('/'))
        .file_name()
        .map(OsStr::to_os_string);
    let contents = src.ends_with("/.") || name.is_none();
    let top = if contents { None } else { name };
    write_tar(from, Path::new(src), follow, top.as_deref(), out)
}

/// Extracts a tar stream into directory `dest` (`cp - CTR:DEST`); `dest`
/// must exist and be a directory, as in docker.
pub fn copy_from_stream(to: &Root, dest: &str, input: impl Read, owner: Owner) -> Result<()> {
    if to.kind(Path::new(dest), true)? != Kind::Dir {
        bail!("destination {dest} must be an existing directory");
    }
    extract(to, Path::new(dest), input, owner)
}

/// The host's `/` as a [`Root`], and `path` made absolute against the
/// current directory.
pub fn host(path: &str) -> Result<(Root, String)> {
    let absolute = if path.starts_with('/') {
        path.to_string()
    } else {
        let cwd = std::env::current_dir().context("reading the current directory")?;
        let mut text = cwd.join(path).to_string_lossy().into_owned();
        // join drops a trailing "/." or "/": keep docker's meaning of them.
        if (path.ends_with("/.") || path == ".") && !text.ends_with("/.") {
            text.push_str("/.");
        } else if path.ends_with('/') && !text.ends_with('/') {
            text.push('/');
        }
        text
    };
    Ok((Root::open(Path::new("/"))?, absolute))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(dir: &str, top: Option<&str>) -> Plan {
        Plan {
            dir: dir.into(),
            top: top.map(OsString::from),
        }
    }

    #[test]
    fn docker_path_rules() {
        use Kind::*;
        // A file.
        assert_eq!(
            plan("/a/f", false, "/d", Dir, Dir).unwrap(),
            p("/d", Some("f"))
        );
        assert_eq!(
            plan("/a/f", false, "/d/g", Other, Dir).unwrap(),
            p("/d", Some("g"))
        );
        assert_eq!(
            plan("/a/f", false, "/d/g", Missing, Dir).unwrap(),
            p("/d", Some("g"))
        );
        assert!(plan("/a/f", false, "/d/g/", Missing, Dir).is_err());
        assert!(plan("/a/f", false, "/x/g", Missing, Missing).is_err());
        assert!(plan("/a/f/", false, "/d", Dir, Dir).is_err());
        // A directory.
        assert_eq!(
            plan("/a/s", true, "/d", Dir, Dir).unwrap(),
            p("/d", Some("s"))
        );
        assert_eq!(
            plan("/a/s/", true, "/d", Dir, Dir).unwrap(),
            p("/d", Some("s"))
        );
        assert_eq!(plan("/a/s/.", true, "/d", Dir, Dir).unwrap(), p("/d", None));
        assert_eq!(
            plan("/a/s", true, "/d/n", Missing, Dir).unwrap(),
            p("/d", Some("n"))
        );
        assert!(plan("/a/s", true, "/d/f", Other, Dir).is_err());
        assert_eq!(plan("/", true, "/d", Dir, Dir).unwrap(), p("/d", None));
    }

    #[test]
    fn entries_stay_inside() {
        assert_eq!(
            entry_path(Path::new("/a/./b")).unwrap(),
            PathBuf::from("a/b")
        );
        assert!(entry_path(Path::new("a/../../etc")).is_err());
    }
}
