//! Entry names: cleaning tar member names into safe relative paths, and the
//! OCI whiteout naming rules (image-spec layer.md, "Whiteouts").

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

/// Prefix of a whiteout file: `.wh.<name>` hides `<name>` of lower layers.
pub(crate) const WHITEOUT_PREFIX: &[u8] = b".wh.";
/// The opaque marker: hides everything lower layers put in its directory.
pub(crate) const OPAQUE_MARKER: &[u8] = b".wh..wh..opq";
/// Longest path Linux accepts in one system call (PATH_MAX, limits.h).
const PATH_MAX: usize = 4096;

/// Turns a tar member name into a path relative to the destination root.
///
/// `Ok(None)` is the root itself (`.`, `./`). Empty and `.` components are
/// dropped (`./a//b/` is `a/b`). Absolute names and `..` components are
/// refused rather than stripped: a layer that carries them was made by a
/// broken or hostile tool, and GNU tar's silent stripping has hidden such
/// layers before.
pub(crate) fn clean(raw: &[u8]) -> Result<Option<PathBuf>, &'static str> {
    if raw.first() == Some(&b'/') {
        return Err("absolute path");
    }
    if raw.len() > PATH_MAX {
        return Err("path longer than PATH_MAX");
    }
    let mut out = PathBuf::new();
    for part in raw.split(|&b| b == b'/') {
        match part {
            b"" | b"." => {}
            b".." => return Err("path has a `..` component"),
            _ => out.push(OsStr::from_bytes(part)),
        }
    }
    Ok(if out.as_os_str().is_empty() {
        None
    } else {
        Some(out)
    })
}

/// What a member's file name means to an overlay-style apply.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Marker<'a> {
    /// An ordinary name.
    Plain,
    /// `.wh..wh..opq`: the directory holding it is opaque.
    Opaque,
    /// `.wh.<name>`: `<name>` in the same directory is deleted.
    Whiteout(&'a OsStr),
    /// Another `.wh..wh.` name: reserved for the implementation (aufs used
    /// them for hardlink bookkeeping); carries nothing for a layer's reader.
    Reserved,
}

/// Classifies a file name (the last component of a cleaned path).
/// A whiteout whose target is empty, `.` or `..` is refused: obeying it would
/// delete the directory holding it, or its parent.
pub(crate) fn classify(file_name: &OsStr) -> Result<Marker<'_>, &'static str> {
    let bytes = file_name.as_bytes();
    if bytes == OPAQUE_MARKER {
        return Ok(Marker::Opaque);
    }
    let Some(target) = bytes.strip_prefix(WHITEOUT_PREFIX) else {
        return Ok(Marker::Plain);
    };
    if target.starts_with(WHITEOUT_PREFIX) {
        return Ok(Marker::Reserved);
    }
    match target {
        b"" | b"." | b".." => Err("whiteout names no sibling"),
        _ => Ok(Marker::Whiteout(OsStr::from_bytes(target))),
    }
}

/// The whiteout name that hides `file_name`.
pub(crate) fn whiteout_for(file_name: &[u8]) -> Vec<u8> {
    [WHITEOUT_PREFIX, file_name].concat()
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    #[test]
    fn cleans_relative_names() {
        assert_eq!(clean(b"a/b").unwrap().unwrap(), Path::new("a/b"));
        assert_eq!(clean(b"./a//b/").unwrap().unwrap(), Path::new("a/b"));
        assert_eq!(clean(b"a/./b/.").unwrap().unwrap(), Path::new("a/b"));
        assert_eq!(clean(b".").unwrap(), None);
        assert_eq!(clean(b"./").unwrap(), None);
        assert_eq!(clean(b"").unwrap(), None);
    }

    #[test]
    fn refuses_escapes() {
        for bad in [
            &b"/etc/passwd"[..],
            b"../x",
            b"a/../../x",
            b"a/..",
            b"./..",
            b"//x",
        ] {
            assert!(clean(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
        assert!(clean(&vec![b'a'; PATH_MAX + 1]).is_err());
        // `..` inside a name is not a component.
        assert!(clean(b"a/..b/c..").unwrap().is_some());
    }

    #[test]
    fn classifies_markers() {
        fn c(s: &str) -> Result<Marker<'_>, &'static str> {
            classify(OsStr::new(s))
        }
        assert_eq!(c("file").unwrap(), Marker::Plain);
        assert_eq!(c(".wh..wh..opq").unwrap(), Marker::Opaque);
        assert_eq!(c(".wh.foo").unwrap(), Marker::Whiteout(OsStr::new("foo")));
        assert_eq!(
            c(".wh..hidden").unwrap(),
            Marker::Whiteout(OsStr::new(".hidden"))
        );
        assert_eq!(c(".wh..wh.plnk").unwrap(), Marker::Reserved);
        for bad in [".wh.", ".wh..", ".wh..."] {
            assert!(c(bad).is_err(), "{bad}");
        }
        assert_eq!(whiteout_for(b"foo"), b".wh.foo");
    }
}
