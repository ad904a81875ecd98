//! `run --remove-bundle`: remove a throwaway bundle once its container has ended.
//!
//! The front makes a fresh bundle for every `exec`; removing it here, in the process that waits
//! for the container anyway, saves the front an `rm -rf` process on every run. The shim usually
//! runs inside oci-userns-starter's private mount namespace, where the bundle's rootfs overlay
//! and its tmpfs are mounted: those are detached first (they exist only in this namespace), and
//! the tree is removed only when nothing below the bundle is mounted any more, so the removal
//! can never walk into another filesystem.

use anyhow::{Context, Result, bail};
use nix::mount::{MntFlags, umount2};
use std::path::{Path, PathBuf};

/// Detach the mounts strictly below `bundle` (deepest first), then remove the bundle.
pub fn remove_bundle(bundle: &Path) -> Result<()> {
    let bundle = std::fs::canonicalize(bundle)
        .with_context(|| format!("cannot resolve {}", bundle.display()))?;
    let mut below = mounts_below(&bundle)?;
    // Deepest first: a mount on top of another must go before it.
    below.sort_by_key(|m| std::cmp::Reverse(m.components().count()));
    below.dedup();
    for m in &below {
        // EINVAL: already gone with its parent (a detach takes the whole subtree).
        match umount2(m.as_path(), MntFlags::MNT_DETACH) {
            Ok(()) | Err(nix::errno::Errno::EINVAL) => {}
            Err(e) => return Err(e).with_context(|| format!("cannot unmount {}", m.display())),
        }
    }
    if let Some(m) = mounts_below(&bundle)?.first() {
        bail!("{} is still mounted", m.display());
    }
    std::fs::remove_dir_all(&bundle).with_context(|| format!("cannot remove {}", bundle.display()))
}

/// Mount points strictly below `dir` in this mount namespace.
fn mounts_below(dir: &Path) -> Result<Vec<PathBuf>> {
    Ok(common::mountns::mount_points()?
        .into_iter()
        .filter(|m| m != dir && m.starts_with(dir))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plain_bundle_is_removed_and_a_symlink_inside_is_not_followed() {
        let t = tempfile::tempdir().unwrap();
        let outside = t.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        std::fs::write(outside.join("keep"), "x").unwrap();
        let b = t.path().join("bundle");
        std::fs::create_dir_all(b.join("rootfs")).unwrap();
        std::fs::write(b.join("config.json"), "{}").unwrap();
        std::os::unix::fs::symlink(&outside, b.join("rootfs.lower")).unwrap();
        remove_bundle(&b).unwrap();
        assert!(!b.exists());
        assert!(outside.join("keep").is_file());
    }
}
