//! Sandbox directories: a root filesystem tree with `/.singularity.d` (what `singularity build
//! --sandbox` or `unsquashfs -d` of a SIF partition leaves) runs in place, as the read-only
//! lower layer of the container's overlay. Nothing of it is copied.
//!
//! The tree is an image, so what is inside it is the image's business; but the launcher mounts
//! it by path, later, so the path must keep leading to the directory that was checked. It is
//! therefore trusted like the cache (`trusted::open_dir`): the directory and every directory
//! above it are owned by the caller or root, the directory is writable by nobody else, and an
//! ancestor only when sticky. Whoever else could write there could swap the tree, or a parent
//! of it, between the check and the mount. Singularity also refuses `/` as a sandbox.

use crate::record::SandboxSource;
use crate::trusted;
use anyhow::{Context, Result, bail};
use rustix::fs::{AtFlags, FileType};
use std::path::{Path, PathBuf};

/// The directory that makes a tree a Singularity sandbox.
pub const SINGULARITY_D: &str = ".singularity.d";

/// Whether `p` looks like a sandbox: a directory holding `/.singularity.d` (cheap, no checks;
/// [`open`] decides whether it may be used).
pub fn looks_like_sandbox(p: &Path) -> bool {
    p.is_dir() && p.join(SINGULARITY_D).is_dir()
}

/// Check the sandbox at `path` (symbolic links in it resolved once, here) and return what the
/// image record carries: its real path and identity.
pub fn open(path: &Path) -> Result<SandboxSource> {
    let real = std::fs::canonicalize(path)
        .with_context(|| format!("cannot resolve the sandbox directory {}", path.display()))?;
    if real == Path::new("/") {
        bail!("/ cannot be used as a sandbox image");
    }
    let dir = trusted::open_dir(&real)
        .with_context(|| format!("{} cannot be used as a sandbox image", real.display()))?;
    let st = rustix::fs::statat(dir.fd(), SINGULARITY_D, AtFlags::SYMLINK_NOFOLLOW);
    if !st.is_ok_and(|s| FileType::from_raw_mode(s.st_mode) == FileType::Directory) {
        bail!(
            "{} is not a sandbox image: it has no /{SINGULARITY_D} directory",
            real.display()
        );
    }
    let (dev, ino) = dir.dev_ino();
    Ok(SandboxSource {
        path: real,
        dev,
        ino,
    })
}

/// Check a recorded sandbox again (the rules of [`open`]) and that its path still leads to the
/// directory `oci-fetch` checked. Returns the path to use.
pub fn reopen(src: &SandboxSource) -> Result<PathBuf> {
    let now = open(&src.path)?;
    if now.path != src.path || (now.dev, now.ino) != (src.dev, src.ino) {
        bail!(
            "the sandbox {} is not the directory oci-fetch checked any more (it was replaced): fetch it again",
            src.path.display()
        );
    }
    Ok(now.path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn private_tmp() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        d
    }

    #[test]
    fn a_tree_with_singularity_d_is_a_sandbox() {
        let d = private_tmp();
        let sb = d.path().join("sb");
        std::fs::create_dir_all(sb.join(".singularity.d")).unwrap();
        std::fs::set_permissions(&sb, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert!(looks_like_sandbox(&sb));
        let src = open(&sb).unwrap();
        assert_eq!(src.path, std::fs::canonicalize(&sb).unwrap());
        assert_eq!(reopen(&src).unwrap(), src.path);
        // A symlink to it resolves to the real directory.
        std::os::unix::fs::symlink(&sb, d.path().join("link")).unwrap();
        assert_eq!(open(&d.path().join("link")).unwrap(), src);
        // Replaced by another directory: refused.
        std::fs::rename(&sb, d.path().join("old")).unwrap();
        std::fs::create_dir_all(sb.join(".singularity.d")).unwrap();
        let e = reopen(&src).unwrap_err().to_string();
        assert!(e.contains("replaced"), "{e}");
    }

    #[test]
    fn refused_trees_say_why() {
        let d = private_tmp();
        let plain = d.path().join("plain");
        std::fs::create_dir(&plain).unwrap();
        assert!(!looks_like_sandbox(&plain));
        let e = open(&plain).unwrap_err().to_string();
        assert!(e.contains("no /.singularity.d"), "{e}");
        let open_to_all = d.path().join("shared");
        std::fs::create_dir_all(open_to_all.join(".singularity.d")).unwrap();
        std::fs::set_permissions(&open_to_all, std::fs::Permissions::from_mode(0o777)).unwrap();
        let e = format!("{:#}", open(&open_to_all).unwrap_err());
        assert!(e.contains("writable by group or others"), "{e}");
        let e = open(Path::new("/")).unwrap_err().to_string();
        assert!(e.contains("/ cannot be used"), "{e}");
    }
}
