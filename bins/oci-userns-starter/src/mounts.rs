//! Mount preparation inside the starter's private mount namespace.
//!
//! Everything mounted here lives only as long as the namespace, i.e. as long as PROG and the
//! container it starts: nothing stays mounted on the host when the run ends, whatever happens.

use anyhow::{Context, Result, bail};
use nix::mount::{MsFlags, mount};
use std::path::{Path, PathBuf};

/// The overlay to mount for a bundle whose rootfs is a read-only cache entry.
#[derive(Debug)]
pub struct OverlayPlan {
    lower: PathBuf,
    scratch: PathBuf,
    target: PathBuf,
}

impl OverlayPlan {
    /// `None` when the bundle has its own private rootfs (no `rootfs.lower`): nothing to do.
    pub fn for_bundle(bundle: &Path) -> Result<Option<OverlayPlan>> {
        let bundle = common::fsutil::absolute(bundle)?;
        if !bundle.is_dir() {
            bail!("bundle {} is not a directory", bundle.display());
        }
        let link = bundle.join("rootfs.lower");
        if std::fs::symlink_metadata(&link).is_err() {
            return Ok(None);
        }
        let lower = std::fs::canonicalize(&link)
            .with_context(|| format!("{} does not lead to a rootfs", link.display()))?;
        if !lower.is_dir() {
            bail!("{} is not a directory", lower.display());
        }
        let target = bundle.join("rootfs");
        if !target.is_dir() {
            bail!(
                "{} is missing: the bundle needs an empty rootfs mount point",
                target.display()
            );
        }
        let plan = OverlayPlan {
            lower,
            scratch: bundle.join(".overlay"),
            target,
        };
        for p in [&plan.lower, &plan.scratch, &plan.target] {
            check_option_safe(p)?;
        }
        Ok(Some(plan))
    }

    /// Mount the tmpfs and the overlay. `in_userns` selects `userxattr`: in a user namespace
    /// overlayfs cannot use `trusted.*` xattrs, and without them removing a lower directory
    /// fails with EIO (checked on kernel 6.18).
    pub fn mount(&self, tmpfs_mib: u64, in_userns: bool) -> Result<()> {
        if !self.scratch.exists() {
            std::fs::create_dir(&self.scratch)
                .with_context(|| format!("cannot create {}", self.scratch.display()))?;
        }
        mount(
            Some("tmpfs"),
            &self.scratch,
            Some("tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some(format!("size={tmpfs_mib}m,mode=0755").as_str()),
        )
        .with_context(|| format!("cannot mount a tmpfs on {}", self.scratch.display()))?;
        let upper = self.scratch.join("upper");
        let work = self.scratch.join("work");
        for d in [&upper, &work] {
            std::fs::create_dir(d).with_context(|| format!("cannot create {}", d.display()))?;
        }
        let data = overlay_options(&self.lower, &upper, &work, in_userns);
        mount(
            Some("overlay"),
            &self.target,
            Some("overlay"),
            MsFlags::empty(),
            Some(data.as_str()),
        )
        .map_err(|e| {
            anyhow::anyhow!(
                "the kernel refused the overlay on {} ({data}): {e} (unprivileged overlayfs needs Linux 5.11 or later)",
                self.target.display()
            )
        })
    }
}

/// overlayfs mount data.
pub fn overlay_options(lower: &Path, upper: &Path, work: &Path, in_userns: bool) -> String {
    let mut s = format!(
        "lowerdir={},upperdir={},workdir={}",
        lower.display(),
        upper.display(),
        work.display()
    );
    if in_userns {
        s.push_str(",userxattr");
    }
    s
}

/// The legacy mount data string has no quoting: refuse paths it cannot carry.
fn check_option_safe(p: &Path) -> Result<()> {
    let s = p
        .to_str()
        .with_context(|| format!("{} is not UTF-8", p.display()))?;
    if s.contains([',', ':', '\\', '\n']) {
        bail!(
            "path {s} contains ',', ':' or '\\', which overlayfs mount options cannot carry: move the bundle or cache"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_use_userxattr_only_in_a_userns() {
        let o = overlay_options(Path::new("/l"), Path::new("/u"), Path::new("/w"), true);
        assert_eq!(o, "lowerdir=/l,upperdir=/u,workdir=/w,userxattr");
        let o = overlay_options(Path::new("/l"), Path::new("/u"), Path::new("/w"), false);
        assert_eq!(o, "lowerdir=/l,upperdir=/u,workdir=/w");
    }

    #[test]
    fn bundle_without_lower_needs_nothing() {
        let d = tempfile::tempdir().unwrap();
        assert!(OverlayPlan::for_bundle(d.path()).unwrap().is_none());
    }

    #[test]
    fn comma_in_path_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let b = d.path().join("a,b");
        std::fs::create_dir_all(b.join("rootfs")).unwrap();
        std::os::unix::fs::symlink(d.path(), b.join("rootfs.lower")).unwrap();
        let e = OverlayPlan::for_bundle(&b).unwrap_err();
        assert!(e.to_string().contains("cannot carry"), "{e}");
    }
}
