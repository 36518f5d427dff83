//! Overlay mounts for build steps and containers: lower directories (the
//! image's snapshots) under a writable upper directory, merged at a target
//! (kernel doc filesystems/overlayfs.rst). The mount goes away when the
//! [`OverlayMount`] is dropped.

use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};

use crate::{Error, Result};

/// The mount options must fit one page (the kernel copies at most
/// PAGE_SIZE bytes of mount data).
const MAX_OPTIONS: usize = 4095;

/// A mounted overlay; unmounted on drop.
#[derive(Debug)]
pub struct OverlayMount {
    target: PathBuf,
    mounted: bool,
}

/// The writable part of an overlay: upper and work directories on the same
/// file system.
#[derive(Debug, Clone, Copy)]
pub struct Writable<'a> {
    /// Receives every change.
    pub upper: &'a Path,
    /// overlayfs scratch space; empty, same file system as `upper`.
    pub work: &'a Path,
    /// The upper directory is scratch, thrown away or read back by kiln
    /// itself (a `--rm` container, a build step): mount with overlayfs'
    /// `volatile`, so neither syncs nor the unmount flush it to disk (an
    /// unmount otherwise syncs the upper file system, tens of ms).
    pub volatile: bool,
}

/// The option string for these directories; pure, for tests. `lower` is
/// topmost first, as overlayfs wants it.
pub fn options(lower: &[PathBuf], writable: Option<Writable<'_>>) -> Result<String> {
    if lower.is_empty() || (writable.is_none() && lower.len() < 2) {
        return Err(Error::InvalidSpec {
            what: "an overlay needs a lower directory (two without an upper)".into(),
        });
    }
    let mut text = String::from("lowerdir=");
    for (i, dir) in lower.iter().enumerate() {
        let s = dir.to_str().filter(|s| !s.contains([':', ',']));
        let Some(s) = s else {
            return Err(Error::InvalidSpec {
                what: format!(
                    "overlay lower directory {} holds ':' or ',' or is not UTF-8",
                    dir.display()
                ),
            });
        };
        if i > 0 {
            text.push(':');
        }
        text.push_str(s);
    }
    if let Some(w) = writable {
        text.push_str(&format!(
            ",upperdir={},workdir={}",
            w.upper.display(),
            w.work.display()
        ));
        if w.volatile {
            text.push_str(",volatile");
        }
    }
    // No inode index, no redirects, no metacopy: the upper directory must
    // read as a plain tree plus whiteouts, so it can become a layer.
    text.push_str(",index=off,redirect_dir=off,metacopy=off");
    if text.len() > MAX_OPTIONS {
        return Err(Error::InvalidSpec {
            what: format!(
                "overlay options are {} bytes for {} layers, over the kernel's limit of {MAX_OPTIONS}; \
                 use an image with fewer layers or a shorter store root",
                text.len(),
                lower.len()
            ),
        });
    }
    Ok(text)
}

impl OverlayMount {
    /// Mounts `lower` (topmost first) with `writable` at `target` (an
    /// existing directory); read-only without `writable`.
    pub fn mount(
        lower: &[PathBuf],
        writable: Option<Writable<'_>>,
        target: &Path,
    ) -> Result<OverlayMount> {
        let data = options(lower, writable)?;
        if let Some(w) = writable.filter(|w| w.volatile) {
            // A volatile mount leaves work/incompat/volatile behind, and
            // overlayfs refuses the next mount while it is there: the upper
            // directory is scratch, so the marker can go.
            let marker = w.work.join("incompat");
            if marker.exists() {
                std::fs::remove_dir_all(&marker).map_err(|e| Error::Setup {
                    step: format!("removing {}", marker.display()),
                    detail: e.to_string(),
                })?;
            }
        }
        let flags = if writable.is_some() {
            MsFlags::empty()
        } else {
            MsFlags::MS_RDONLY
        };
        mount(
            Some("overlay"),
            target,
            Some("overlay"),
            flags,
            Some(data.as_str()),
        )
        .map_err(Error::sys("mount overlay"))?;
        Ok(OverlayMount {
            target: target.to_path_buf(),
            mounted: true,
        })
    }

    /// Where the merged tree is.
    pub fn target(&self) -> &Path {
        &self.target
    }

    /// Unmounts now and reports failure (drop only tries).
    pub fn unmount(mut self) -> Result<()> {
        self.mounted = false;
        unmount(&self.target)
    }
}

/// Unmounts whatever is mounted at `target` (lazily when busy): for
/// mounts a killed process left behind.
pub fn unmount(target: &Path) -> Result<()> {
    match umount2(target, MntFlags::empty()) {
        Ok(()) => Ok(()),
        // Something still has it open (a process being torn down): detach it.
        Err(nix::errno::Errno::EBUSY) => {
            umount2(target, MntFlags::MNT_DETACH).map_err(Error::sys("unmount overlay"))
        }
        Err(e) => Err(Error::sys("unmount overlay")(e)),
    }
}

impl Drop for OverlayMount {
    fn drop(&mut self) {
        if self.mounted {
            let _ = unmount(&self.target);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_order_and_limits() {
        let lower = vec![PathBuf::from("/s/b"), PathBuf::from("/s/a")];
        let text = options(
            &lower,
            Some(Writable {
                upper: Path::new("/u"),
                work: Path::new("/w"),
                volatile: false,
            }),
        )
        .unwrap();
        assert!(text.starts_with("lowerdir=/s/b:/s/a,upperdir=/u,workdir=/w,"));
        assert!(options(&lower[..1], None).is_err());
        let many: Vec<PathBuf> = (0..100)
            .map(|i| PathBuf::from(format!("/var/lib/kiln/snapshots/{i:064}/fs")))
            .collect();
        let err = options(&many, None).unwrap_err().to_string();
        assert!(err.contains("limit"), "{err}");
    }
}
