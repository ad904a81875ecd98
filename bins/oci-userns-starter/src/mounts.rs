//! Mount preparation inside the starter's private mount namespace.
//!
//! Everything mounted here lives only as long as the namespace, i.e. as long as PROG and the
//! container it starts: nothing stays mounted on the host when the run ends, whatever happens.

use anyhow::{Context, Result, bail};
use nix::mount::{MsFlags, mount};
use std::path::{Path, PathBuf};

/// The overlay to mount over a bundle's rootfs.
#[derive(Debug)]
pub struct OverlayPlan {
    /// The image's tree: the read-only cache entry or sandbox (`rootfs.lower`), or the bundle's
    /// own `rootfs` when it was unpacked privately and `--overlay` directories ask for layers.
    base: PathBuf,
    scratch: PathBuf,
    target: PathBuf,
    /// The bundle's `--overlay` directories, checked and locked (common::overlay).
    layers: Option<common::overlay::Layers>,
}

impl OverlayPlan {
    /// `None` when the bundle has its own private rootfs and no overlay directories: nothing
    /// to do. The overlay directories are checked and locked here, before any namespace exists,
    /// as the host user.
    pub fn for_bundle(bundle: &Path) -> Result<Option<OverlayPlan>> {
        let bundle = common::fsutil::absolute(bundle)?;
        if !bundle.is_dir() {
            bail!("bundle {} is not a directory", bundle.display());
        }
        let dirs = common::overlay::read_bundle_file(&bundle)?;
        let target = bundle.join("rootfs");
        let link = bundle.join("rootfs.lower");
        let base = if std::fs::symlink_metadata(&link).is_ok() {
            let lower = std::fs::canonicalize(&link)
                .with_context(|| format!("{} does not lead to a rootfs", link.display()))?;
            if !lower.is_dir() {
                bail!("{} is not a directory", lower.display());
            }
            lower
        } else if dirs.is_empty() {
            return Ok(None);
        } else {
            // overlayfs resolves its layers before mounting, so the tree can be the lower
            // layer of an overlay mounted over itself.
            target.clone()
        };
        if !target.is_dir() {
            bail!(
                "{} is missing: the bundle needs an empty rootfs mount point",
                target.display()
            );
        }
        // The tmpfs goes on the mount point itself, under the overlay, when the image tree is
        // elsewhere: no `.overlay` directory is made on the bundle's disk and removed again
        // (on a disk mounted with `discard` and no journal, every directory removed waits for
        // a synchronous discard). A private rootfs that is the overlay's own lower layer would
        // be hidden by it, so then the tmpfs gets its own `.overlay`.
        let scratch = if base == target {
            bundle.join(".overlay")
        } else {
            target.clone()
        };
        let plan = OverlayPlan {
            base,
            scratch,
            target,
            layers: (!dirs.is_empty())
                .then(|| common::overlay::open(&dirs))
                .transpose()?,
        };
        for p in [&plan.base, &plan.scratch, &plan.target] {
            common::overlay::check_option_safe(p)?;
        }
        Ok(Some(plan))
    }

    /// Mount the overlay: its upper layer is the writable overlay directory's `upper`, or a
    /// tmpfs (`tmpfs_mib`, see [`OverlayPlan::mount_scratch`]). `in_userns` selects `userxattr`: in a
    /// user namespace overlayfs cannot use `trusted.*` xattrs, and without them removing a
    /// lower directory fails with EIO (checked on kernel 6.18). The overlay directories' locks
    /// are then handed on to the program the starter execs.
    pub fn mount(self, tmpfs_mib: u64, in_userns: bool) -> Result<()> {
        let mut lowers: Vec<PathBuf> = Vec::new();
        let persistent = self.layers.as_ref().and_then(|l| l.upper_work.clone());
        if let Some(l) = &self.layers {
            lowers.extend(l.lowers.iter().cloned());
        }
        lowers.push(self.base.clone());
        let (upper, work) = match persistent {
            Some(uw) => uw,
            None => self.mount_scratch(tmpfs_mib)?,
        };
        if in_userns {
            self.prepare_mount_points(&upper)?;
        }
        let data = overlay_options(&lowers, &upper, &work, in_userns);
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
        })?;
        if let Some(l) = self.layers {
            l.hold_across_exec()?;
        }
        Ok(())
    }

    /// The directories of the image tree the runtime must create mount points in but cannot
    /// write, made in the upper layer (`crate::mountpoints`).
    fn prepare_mount_points(&self, upper: &Path) -> Result<()> {
        let Some(bundle) = self.target.parent() else {
            return Ok(());
        };
        for dest in crate::mountpoints::destinations(&bundle.join("config.json"))? {
            crate::mountpoints::prepare(&self.base, upper, &dest)?;
        }
        Ok(())
    }

    /// The tmpfs upper layer: `upper` and `work` in a tmpfs on the rootfs mount point (then
    /// covered by the overlay; overlayfs holds its layers from the moment it is mounted), or on
    /// the bundle's `.overlay` when the rootfs mount point holds the lower layer.
    fn mount_scratch(&self, tmpfs_mib: u64) -> Result<(PathBuf, PathBuf)> {
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
        Ok((upper, work))
    }
}

/// overlayfs mount data; `lowers` topmost first.
pub fn overlay_options(lowers: &[PathBuf], upper: &Path, work: &Path, in_userns: bool) -> String {
    let lowers: Vec<String> = lowers.iter().map(|l| l.display().to_string()).collect();
    let mut s = format!(
        "lowerdir={},upperdir={},workdir={}",
        lowers.join(":"),
        upper.display(),
        work.display()
    );
    if in_userns {
        s.push_str(",userxattr");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_use_userxattr_only_in_a_userns() {
        let l = [PathBuf::from("/l")];
        let o = overlay_options(&l, Path::new("/u"), Path::new("/w"), true);
        assert_eq!(o, "lowerdir=/l,upperdir=/u,workdir=/w,userxattr");
        let o = overlay_options(&l, Path::new("/u"), Path::new("/w"), false);
        assert_eq!(o, "lowerdir=/l,upperdir=/u,workdir=/w");
        let l = [
            PathBuf::from("/a"),
            PathBuf::from("/b"),
            PathBuf::from("/l"),
        ];
        let o = overlay_options(&l, Path::new("/u"), Path::new("/w"), false);
        assert_eq!(
            o, "lowerdir=/a:/b:/l,upperdir=/u,workdir=/w",
            "topmost first"
        );
    }

    #[test]
    fn bundle_without_lower_needs_nothing() {
        let d = tempfile::tempdir().unwrap();
        assert!(OverlayPlan::for_bundle(d.path()).unwrap().is_none());
    }

    #[test]
    fn overlay_directories_alone_put_the_layers_over_the_private_rootfs() {
        let d = tempfile::tempdir().unwrap();
        let b = d.path().join("b");
        let ov = d.path().join("ov");
        std::fs::create_dir_all(b.join("rootfs")).unwrap();
        std::fs::create_dir(&ov).unwrap();
        let dirs = [common::overlay::OverlayDir {
            dir: ov.clone(),
            read_only: false,
        }];
        std::fs::write(
            b.join(common::overlay::BUNDLE_FILE),
            serde_json::to_vec(&dirs).unwrap(),
        )
        .unwrap();
        let plan = OverlayPlan::for_bundle(&b).unwrap().unwrap();
        assert_eq!(
            plan.base, plan.target,
            "the private tree is its own lower layer"
        );
        let layers = plan.layers.as_ref().unwrap();
        assert_eq!(layers.upper_work, Some((ov.join("upper"), ov.join("work"))));
        // The plan holds the writable directory's lock.
        let e = format!("{:#}", OverlayPlan::for_bundle(&b).unwrap_err());
        assert!(e.contains("in use"), "{e}");
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
