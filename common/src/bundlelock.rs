//! The bundle lock: one container per bundle, from `create` until `delete`.
//!
//! As in SingularityCE (behaviour doc §1.1) the lock is a marker file
//! `<bundle>/.singularity-oci.lock`, created and removed while holding an flock on the bundle
//! directory, so two creates racing on one bundle cannot both win. Unlike SingularityCE the marker
//! names its holder (container id and state directory) so that
//!
//! * a second create is refused with the name of the container that holds the bundle, and
//! * a stale lock (its container's state directory is gone, e.g. after a crash or a manual
//!   cleanup) is reported as stale, with the command that removes it.
//!
//! A lock is held by a *container*, not by a process: `create` takes it (`oci-runtime-shim create`
//! and `oci-conmon-create` alike) and only `delete` (or a failed create) releases it.

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Name of the marker file inside the bundle.
pub const MARKER: &str = ".singularity-oci.lock";

/// What the marker records about its holder.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Holder {
    /// Container id holding the bundle.
    pub id: String,
    /// That container's state directory (`statedir::container_dir`).
    pub state_dir: PathBuf,
    /// Pid of the process that took the lock (informative only).
    pub pid: u32,
}

/// The marker path for `bundle`.
pub fn marker(bundle: &Path) -> PathBuf {
    bundle.join(MARKER)
}

/// The current holder of `bundle`, if any. A marker that cannot be parsed (for instance one left
/// by SingularityCE, which writes an empty file) is reported with an unknown holder.
pub fn holder(bundle: &Path) -> Result<Option<Holder>> {
    let m = marker(bundle);
    match std::fs::read(&m) {
        Ok(bytes) => Ok(Some(serde_json::from_slice(&bytes).unwrap_or(Holder {
            id: String::new(),
            state_dir: PathBuf::new(),
            pid: 0,
        }))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", m.display())),
    }
}

/// Serialise lock and release on one bundle through an flock on the directory itself.
fn dir_lock(bundle: &Path) -> Result<std::fs::File> {
    let f = std::fs::File::open(bundle)
        .with_context(|| format!("cannot open bundle {}", bundle.display()))?;
    f.lock()
        .with_context(|| format!("cannot lock bundle {}", bundle.display()))?;
    Ok(f)
}

/// Take the lock for container `id` whose state directory is `state_dir` (which should already
/// exist, so a concurrent create never mistakes this lock for a stale one).
pub fn lock(bundle: &Path, id: &str, state_dir: &Path) -> Result<()> {
    let _guard = dir_lock(bundle)?;
    if let Some(h) = holder(bundle)? {
        bail!("{}", held_message(bundle, &h));
    }
    let m = marker(bundle);
    let holder = Holder {
        id: id.to_string(),
        state_dir: state_dir.to_path_buf(),
        pid: std::process::id(),
    };
    let result = (|| -> Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&m)
            .with_context(|| format!("cannot create the bundle lock {}", m.display()))?;
        f.write_all(&serde_json::to_vec(&holder)?)?;
        f.sync_all()?;
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&m);
    }
    result
}

/// Release the lock held by container `id`. A marker naming another container is left alone
/// (that is an error); a missing marker is an error too, as in SingularityCE.
pub fn release(bundle: &Path, id: &str) -> Result<()> {
    let _guard = dir_lock(bundle)?;
    match holder(bundle)? {
        None => bail!("bundle {} is not locked", bundle.display()),
        Some(h) if !h.id.is_empty() && h.id != id => bail!(
            "bundle {} is locked by container '{}', not '{id}'",
            bundle.display(),
            h.id
        ),
        Some(_) => {
            let m = marker(bundle);
            std::fs::remove_file(&m).with_context(|| format!("cannot remove {}", m.display()))
        }
    }
}

/// True when the holder's state directory is gone: nothing can ever release the lock.
pub fn is_stale(h: &Holder) -> bool {
    h.state_dir.as_os_str().is_empty() || h.state_dir.symlink_metadata().is_err()
}

fn held_message(bundle: &Path, h: &Holder) -> String {
    let m = marker(bundle);
    if h.id.is_empty() {
        format!(
            "bundle {} is locked by another process (unreadable lock {}; remove it if no container uses this bundle)",
            bundle.display(),
            m.display()
        )
    } else if is_stale(h) {
        format!(
            "bundle {} has a stale lock: container '{}' no longer exists (its state directory {} is gone); remove it with: rm {}",
            bundle.display(),
            h.id,
            h.state_dir.display(),
            m.display()
        )
    } else {
        format!(
            "bundle {} is locked by container '{}' (delete that container first)",
            bundle.display(),
            h.id
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_refuse_release() {
        let b = tempfile::tempdir().unwrap();
        let sd = tempfile::tempdir().unwrap();
        lock(b.path(), "c1", sd.path()).unwrap();
        let e = lock(b.path(), "c2", sd.path()).unwrap_err().to_string();
        assert!(e.contains("locked by container 'c1'"), "{e}");
        assert!(release(b.path(), "c2").is_err());
        release(b.path(), "c1").unwrap();
        assert!(
            release(b.path(), "c1")
                .unwrap_err()
                .to_string()
                .contains("not locked")
        );
        assert!(!marker(b.path()).exists());
    }

    #[test]
    fn stale_lock_is_named() {
        let b = tempfile::tempdir().unwrap();
        let sd = tempfile::tempdir().unwrap();
        let gone = sd.path().join("gone");
        std::fs::create_dir(&gone).unwrap();
        lock(b.path(), "c1", &gone).unwrap();
        std::fs::remove_dir(&gone).unwrap();
        let e = lock(b.path(), "c2", sd.path()).unwrap_err().to_string();
        assert!(e.contains("stale lock") && e.contains("rm "), "{e}");
    }

    #[test]
    fn foreign_empty_marker_is_held() {
        let b = tempfile::tempdir().unwrap();
        std::fs::write(marker(b.path()), b"").unwrap();
        let e = lock(b.path(), "c1", b.path()).unwrap_err().to_string();
        assert!(e.contains("locked by another process"), "{e}");
    }
}
