//! Removing a throwaway bundle: `oci-runtime-shim run --remove-bundle` and `remove-bundle` once
//! its container has ended (or, for the front, when a run fails before the container starts),
//! and oci-mkspec's sweep of bundles whose launcher was killed before the shim ran.
//!
//! The front makes a fresh bundle for every `exec`; removing it here, in the process that waits
//! for the container anyway, saves the front an `rm -rf` process on every run. The shim usually
//! runs inside oci-userns-starter's private mount namespace, where the bundle's rootfs overlay
//! and its tmpfs are mounted: those are detached first (they exist only in this namespace), and
//! the tree is removed only when nothing below the bundle is mounted any more, so the removal
//! can never walk into another filesystem.
//!
//! A container that can write the bundle's parent directory (a root container with the host's
//! temporary directory bound in) can rename its bundle away and leave a symlink, or another
//! directory, at its path. So the bundle is reached from its parent's descriptor without
//! following a symlink, removed only when its device and inode are the ones oci-mkspec recorded
//! (`--bundle-inode DEV:INO`, from the bundle record), and emptied through descriptors only;
//! anything else is left where it is with one WARNING.

use anyhow::{Context, Result, bail};
use nix::mount::{MntFlags, umount2};
use rustix::fs::{AtFlags, Dir, Mode, OFlags};
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// Parse `DEV:INO` (the bundle record's `bundleInode`).
pub fn parse_dev_ino(s: &str) -> Result<(u64, u64)> {
    let parsed = s
        .split_once(':')
        .and_then(|(d, i)| Some((d.parse().ok()?, i.parse().ok()?)));
    parsed.with_context(|| format!("--bundle-inode '{s}' is not DEV:INO"))
}

/// Detach the mounts strictly below `bundle` (deepest first), then remove the bundle, when it
/// is still the directory `expected` names (without `expected`: a real directory of ours).
pub fn remove_bundle(bundle: &Path, expected: Option<(u64, u64)>) -> Result<()> {
    let bundle = crate::fsutil::absolute(bundle)?;
    let (Some(parent), Some(name)) = (bundle.parent(), bundle.file_name()) else {
        bail!("{} cannot be a bundle", bundle.display());
    };
    let parent = crate::trusted::open_ancestor(parent)?;
    let leave = |why: String| {
        crate::cli::warn(format!(
            "bundle {} {why}: not the directory oci-mkspec created, leaving it alone",
            bundle.display()
        ));
        Ok(())
    };
    let st = match rustix::fs::statat(parent.fd(), name.as_bytes(), AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => st,
        Err(rustix::io::Errno::NOENT) => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("cannot stat {}", bundle.display())),
    };
    let kind = rustix::fs::FileType::from_raw_mode(st.st_mode);
    if kind.is_symlink() {
        return leave("is now a symbolic link".into());
    }
    if !kind.is_dir() {
        return leave("is no longer a directory".into());
    }
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let dir = rustix::fs::openat(parent.fd(), name.as_bytes(), flags, Mode::empty())
        .with_context(|| format!("cannot open {}", bundle.display()))?;
    let st = rustix::fs::fstat(&dir)?;
    match expected {
        Some(want) if (st.st_dev, st.st_ino) != want => {
            return leave(format!(
                "is now device {} inode {} (oci-mkspec made {}:{})",
                st.st_dev, st.st_ino, want.0, want.1
            ));
        }
        None if st.st_uid != rustix::process::geteuid().as_raw() => {
            return leave(format!("belongs to uid {}", st.st_uid));
        }
        _ => {}
    }
    // Mount points are listed by real path: ask the kernel where the directory we hold is.
    let real = std::fs::read_link(format!("/proc/self/fd/{}", dir.as_raw_fd()))
        .with_context(|| format!("cannot resolve {}", bundle.display()))?;
    detach_mounts_below(&real)?;
    let mut names = Vec::new();
    for ent in Dir::read_from(dir.as_fd())? {
        let ent = ent?;
        let n = ent.file_name().to_bytes();
        if n != b"." && n != b".." {
            names.push(n.to_vec());
        }
    }
    for n in &names {
        crate::removal::remove_all(dir.as_fd(), n).with_context(|| {
            format!(
                "cannot remove {}",
                bundle.join(std::ffi::OsStr::from_bytes(n)).display()
            )
        })?;
    }
    // Only an empty directory goes with AT_REMOVEDIR, and never a symlink put there meanwhile.
    rustix::fs::unlinkat(parent.fd(), name.as_bytes(), AtFlags::REMOVEDIR)
        .with_context(|| format!("cannot remove {}", bundle.display()))
}

fn detach_mounts_below(dir: &Path) -> Result<()> {
    // Mounts can be stacked on one mount point (the starter's tmpfs under the overlay on
    // `rootfs`), and a detach takes only the top one: go round until none is left, a bounded
    // number of times.
    for _ in 0..8 {
        let mut below = mounts_below(dir)?;
        if below.is_empty() {
            return Ok(());
        }
        // Deepest first: a mount on top of another must go before it.
        below.sort_by_key(|m| std::cmp::Reverse(m.components().count()));
        below.dedup();
        for m in &below {
            // EINVAL: already gone with its parent (a detach takes the whole subtree).
            match umount2(
                m.as_path(),
                MntFlags::MNT_DETACH | MntFlags::UMOUNT_NOFOLLOW,
            ) {
                Ok(()) | Err(nix::errno::Errno::EINVAL) => {}
                Err(e) => {
                    return Err(e).with_context(|| format!("cannot unmount {}", m.display()));
                }
            }
        }
    }
    match mounts_below(dir)?.first() {
        Some(m) => bail!("{} is still mounted", m.display()),
        None => Ok(()),
    }
}

/// Mount points strictly below `dir` in this mount namespace.
fn mounts_below(dir: &Path) -> Result<Vec<PathBuf>> {
    Ok(crate::mountns::mount_points()?
        .into_iter()
        .filter(|m| m != dir && m.starts_with(dir))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn dev_ino(p: &Path) -> (u64, u64) {
        let m = std::fs::symlink_metadata(p).unwrap();
        (m.dev(), m.ino())
    }

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
        remove_bundle(&b, Some(dev_ino(&b))).unwrap();
        assert!(!b.exists());
        assert!(outside.join("keep").is_file());
    }

    #[test]
    fn a_bundle_swapped_for_a_symlink_or_another_directory_is_left_alone() {
        let t = tempfile::tempdir().unwrap();
        let precious = t.path().join("precious");
        std::fs::create_dir(&precious).unwrap();
        std::fs::write(precious.join("keep"), "x").unwrap();
        let b = t.path().join("bundle");
        std::fs::create_dir(&b).unwrap();
        let made = dev_ino(&b);
        std::fs::rename(&b, t.path().join("moved")).unwrap();
        std::os::unix::fs::symlink(&precious, &b).unwrap();
        remove_bundle(&b, Some(made)).unwrap();
        assert!(precious.join("keep").is_file() && b.is_symlink());
        std::fs::remove_file(&b).unwrap();
        std::fs::create_dir(&b).unwrap();
        std::fs::write(b.join("other"), "x").unwrap();
        remove_bundle(&b, Some(made)).unwrap();
        assert!(b.join("other").is_file());
        assert_eq!(parse_dev_ino("12:34").unwrap(), (12, 34));
        assert!(parse_dev_ino("12").is_err());
    }
}
