//! Where runtime state lives (`crun/runc --root`), following SingularityCE's rules.
//!
//! 1. host root: `/run/singularity-oci`;
//! 2. `$XDG_RUNTIME_DIR/singularity-oci` when that variable names a writable directory;
//! 3. `/run/user/<uid>/singularity-oci` when `/run/user/<uid>` is a directory;
//! 4. `${TMPDIR:-/tmp}/singularity-oci-<uid>`, which must be a directory owned by the caller with
//!    mode exactly 0700 (it is created that way when missing).
//!
//! The host uid is used throughout, so the same directory is chosen inside and outside the outer
//! user namespace.

use crate::identity::host_uid;
use anyhow::{Result, bail};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// `SINGULARITY_OCI_STATE_ROOT` overrides the rules (tests, and sites with odd layouts).
pub const ENV_STATE_ROOT: &str = "SINGULARITY_OCI_STATE_ROOT";

fn writable_dir(p: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = std::ffi::CString::new(p.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: access(2) with a NUL-terminated path.
    p.is_dir() && unsafe { libc::access(c.as_ptr(), libc::W_OK | libc::X_OK) } == 0
}

/// Choose (and create, 0700) the runtime state root.
pub fn runtime_state_root() -> Result<PathBuf> {
    let root = choose_root()?;
    crate::fsutil::private_dir(&root)?;
    Ok(root)
}

fn choose_root() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os(ENV_STATE_ROOT).filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(p));
    }
    let uid = host_uid();
    if uid == 0 {
        return Ok(PathBuf::from("/run/singularity-oci"));
    }
    if let Some(x) = std::env::var_os("XDG_RUNTIME_DIR").filter(|v| !v.is_empty()) {
        let x = PathBuf::from(x);
        if writable_dir(&x) {
            return Ok(x.join("singularity-oci"));
        }
    }
    let run_user = PathBuf::from(format!("/run/user/{uid}"));
    if run_user.is_dir() {
        return Ok(run_user.join("singularity-oci"));
    }
    let tmp = std::env::var_os("TMPDIR")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/tmp"));
    let dir = tmp.join(format!("singularity-oci-{uid}"));
    match std::fs::symlink_metadata(&dir) {
        Ok(m) => {
            let euid = nix::unistd::geteuid().as_raw();
            if !m.is_dir() || m.uid() != euid || m.mode() & 0o7777 != 0o700 {
                bail!(
                    "state directory {} must be a directory owned by you with mode 0700",
                    dir.display()
                );
            }
        }
        Err(_) => crate::cli::debug(format!("using {} for runtime state", dir.display())),
    }
    Ok(dir)
}

/// Per-container state directory below the state root: `<root>/containers/<id>`.
pub fn container_dir(root: &Path, id: &str) -> Result<PathBuf> {
    check_container_id(id)?;
    Ok(root.join("containers").join(id))
}

/// Container ids become path components and runtime arguments: keep them boring.
pub fn check_container_id(id: &str) -> Result<()> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && !id.starts_with('.')
        && !id.starts_with('-')
        // The runtime keeps its own state at <root>/<id>, beside our <root>/containers/.
        && id != "containers";
    if !ok {
        bail!("invalid container id '{id}' (use letters, digits, '-', '_' and '.')");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids() {
        assert!(check_container_id("abc-123_x.y").is_ok());
        for bad in ["", "../x", "a/b", "-x", ".hidden", "a b", "containers"] {
            assert!(check_container_id(bad).is_err(), "{bad}");
        }
    }
}
