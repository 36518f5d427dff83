//! `user[:group]` to numeric ids through the image's /etc/passwd and
//! /etc/group, as docker does for USER and `COPY --chown`.

use std::path::Path;

use crate::solve::error::SolveError;

/// Numeric owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Ids {
    pub uid: u32,
    pub gid: u32,
}

/// How a missing group part is filled in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Purpose {
    /// USER for RUN: the user's primary group from passwd, else 0.
    Process,
    /// `--chown=uid`: the gid equals the uid; a name takes its primary group.
    Chown,
}

fn entries(text: &str) -> impl Iterator<Item = Vec<&str>> {
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| l.split(':').collect::<Vec<_>>())
}

/// Resolves `spec` (`name`, `uid`, `name:group`, `uid:gid`) against the
/// files below `root` (already resolved inside the root file system).
pub(crate) fn resolve(
    passwd: Option<&str>,
    group: Option<&str>,
    spec: &str,
    purpose: Purpose,
) -> Result<Ids, SolveError> {
    if spec.is_empty() {
        return Ok(Ids::default());
    }
    let (user, group_part) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let passwd_entry = |pred: &dyn Fn(&[&str]) -> bool| {
        passwd.and_then(|text| entries(text).find(|f| f.len() >= 4 && pred(f)))
    };
    let (uid, primary) = match user.parse::<u32>() {
        Ok(uid) => {
            let primary = passwd_entry(&|f| f[2] == user).and_then(|f| f[3].parse().ok());
            (uid, primary)
        }
        Err(_) => {
            let entry = passwd_entry(&|f| f[0] == user).ok_or_else(|| SolveError::UnknownUser {
                name: user.to_string(),
            })?;
            let uid = entry[2].parse().map_err(|_| SolveError::UnknownUser {
                name: user.to_string(),
            })?;
            (uid, entry[3].parse().ok())
        }
    };
    let gid = match group_part {
        Some(g) if !g.is_empty() => match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => group
                .and_then(|text| entries(text).find(|f| f.len() >= 3 && f[0] == g))
                .and_then(|f| f[2].parse().ok())
                .ok_or_else(|| SolveError::UnknownGroup {
                    name: g.to_string(),
                })?,
        },
        _ => match (purpose, user.parse::<u32>().is_ok()) {
            (Purpose::Chown, true) => uid,
            _ => primary.unwrap_or(0),
        },
    };
    Ok(Ids { uid, gid })
}

/// Reads `/etc/passwd` and `/etc/group` of the tree at `root` (symlinks
/// resolved inside it) and resolves `spec`.
pub(crate) fn resolve_in(root: &Path, spec: &str, purpose: Purpose) -> Result<Ids, SolveError> {
    if spec.is_empty() {
        return Ok(Ids::default());
    }
    let all_numeric = spec
        .split(':')
        .all(|p| p.is_empty() || p.parse::<u32>().is_ok());
    if all_numeric && purpose == Purpose::Chown {
        return resolve(None, None, spec, purpose);
    }
    let read = |p: &str| {
        crate::solve::paths::resolve_in_root(root, p)
            .ok()
            .and_then(|path| std::fs::read_to_string(path).ok())
    };
    let passwd = read("/etc/passwd");
    let group = read("/etc/group");
    resolve(passwd.as_deref(), group.as_deref(), spec, purpose)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\nwww:x:33:34::/var/www:/bin/false\n";
    const GROUP: &str = "root:x:0:\nstaff:x:50:\n";

    #[test]
    fn names_and_numbers() {
        let r = |s, p| resolve(Some(PASSWD), Some(GROUP), s, p);
        assert_eq!(r("www", Purpose::Chown).unwrap(), Ids { uid: 33, gid: 34 });
        assert_eq!(
            r("www:staff", Purpose::Chown).unwrap(),
            Ids { uid: 33, gid: 50 }
        );
        assert_eq!(r("10", Purpose::Chown).unwrap(), Ids { uid: 10, gid: 10 });
        assert_eq!(r("10", Purpose::Process).unwrap(), Ids { uid: 10, gid: 0 });
        assert_eq!(r("33", Purpose::Process).unwrap(), Ids { uid: 33, gid: 34 });
        assert_eq!(r("1:2", Purpose::Process).unwrap(), Ids { uid: 1, gid: 2 });
        assert!(matches!(
            r("nobody", Purpose::Chown),
            Err(SolveError::UnknownUser { .. })
        ));
        assert!(matches!(
            r("www:nogroup", Purpose::Chown),
            Err(SolveError::UnknownGroup { .. })
        ));
    }
}
