//! Where runtime state lives (`crun/runc --root`), following SingularityCE's rules.
//!
//! 1. host root: `/run/singularity-oci`;
//! 2. `$XDG_RUNTIME_DIR/singularity-oci` when that variable names a writable directory;
//! 3. `/run/user/<uid>/singularity-oci` when `/run/user/<uid>` is a directory;
//! 4. `${TMPDIR:-/tmp}/singularity-oci-<uid>`.
//!
//! Whatever is chosen is reached without following a symlink, created 0700 when missing, and
//! must belong to the caller and be writable by nobody else ([`crate::fsutil::private_dir`]).
//! Any user can pre-create the name of rule 4 in a shared `/tmp`; when it is not ours, the
//! state goes (with one WARNING) to a place only we can create:
//! `${SINGULARITY_CACHEDIR:-$HOME/.singularity}/oci-state/<hostname>` (per host, because a
//! home directory may be shared between nodes). Every later command of the same user meets the
//! same squatter and so finds the same place.
//!
//! The host uid is used throughout, so the same directory is chosen inside and outside the outer
//! user namespace.

use crate::identity::host_uid;
use anyhow::{Context, Result, bail};
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
    match choose_root()? {
        Choice::Fixed(root) => {
            crate::fsutil::private_dir(&root)?;
            Ok(root)
        }
        Choice::SharedTmp(root) => match crate::fsutil::private_dir(&root) {
            Ok(()) => Ok(root),
            Err(e) => {
                let fallback = own_fallback_root()?;
                // One WARNING per process, however often a stage asks for the root.
                static WARNED: std::sync::atomic::AtomicBool =
                    std::sync::atomic::AtomicBool::new(false);
                if !WARNED.swap(true, std::sync::atomic::Ordering::Relaxed) {
                    crate::cli::warn(format!(
                        "{:#}; keeping runtime state in {} instead",
                        e,
                        fallback.display()
                    ));
                }
                crate::fsutil::private_dir(&fallback)?;
                Ok(fallback)
            }
        },
    }
}

enum Choice {
    /// A place no other user can create for us.
    Fixed(PathBuf),
    /// A name in a shared temporary directory, which another user may have taken first.
    SharedTmp(PathBuf),
}

fn choose_root() -> Result<Choice> {
    if let Some(p) = std::env::var_os(ENV_STATE_ROOT).filter(|v| !v.is_empty()) {
        return Ok(Choice::Fixed(crate::fsutil::absolute(Path::new(&p))?));
    }
    let uid = host_uid();
    if uid == 0 {
        return Ok(Choice::Fixed(PathBuf::from("/run/singularity-oci")));
    }
    if let Some(x) = std::env::var_os("XDG_RUNTIME_DIR").filter(|v| !v.is_empty()) {
        let x = PathBuf::from(x);
        if writable_dir(&x) {
            return Ok(Choice::Fixed(x.join("singularity-oci")));
        }
    }
    let run_user = PathBuf::from(format!("/run/user/{uid}"));
    if run_user.is_dir() {
        return Ok(Choice::Fixed(run_user.join("singularity-oci")));
    }
    let tmp = std::env::var_os("TMPDIR")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/tmp"));
    let dir = crate::fsutil::absolute(&tmp.join(format!("singularity-oci-{uid}")))?;
    crate::cli::debug(format!("using {} for runtime state", dir.display()));
    Ok(Choice::SharedTmp(dir))
}

/// `${SINGULARITY_CACHEDIR:-$HOME/.singularity}/oci-state/<hostname>`: below a directory of
/// the user's own, so nobody else can create it first.
fn own_fallback_root() -> Result<PathBuf> {
    let base = match std::env::var_os("SINGULARITY_CACHEDIR").filter(|v| !v.is_empty()) {
        Some(d) => PathBuf::from(d),
        None => crate::identity::home_dir()?.join(".singularity"),
    };
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .context("cannot read the host name")?
        .trim()
        .to_string();
    if host.is_empty() || host.contains('/') || host.starts_with('.') {
        bail!("unusable host name '{host}' for a state directory");
    }
    crate::fsutil::absolute(&base.join("oci-state").join(host))
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
