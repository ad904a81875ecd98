//! The bundle lock: one container per bundle, from `create` until `delete`.
//!
//! As in SingularityCE (its `oci` commands' bundle lock) the lock is a marker file
//! `<bundle>/.singularity-oci.lock`, created and removed while holding an flock on the bundle
//! directory, so two creates racing on one bundle cannot both win. Unlike SingularityCE the marker
//! names its holder, two lines `id=ID` and `root=STATE_ROOT` (the format `oci-runtime-shim`
//! writes), so that
//!
//! * a second create is refused with the name of the container that holds the bundle, and
//! * a stale lock (its container's state directory `STATE_ROOT/containers/ID` is gone, e.g. after
//!   a crash or a manual cleanup) is reported with a warning and taken over.
//!
//! A lock is held by a *container*, not by a process: `create` takes it and only `delete` (or a
//! failed create) releases it.

use anyhow::{Context, Result, bail};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Name of the marker file inside the bundle.
pub const MARKER: &str = ".singularity-oci.lock";

/// What the marker records about its holder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    /// Container id holding the bundle.
    pub id: String,
    /// The runtime state root of that container (its state directory is
    /// `statedir::container_dir(root, id)`).
    pub root: PathBuf,
}

impl Holder {
    /// The holder's state directory.
    pub fn state_dir(&self) -> PathBuf {
        self.root.join("containers").join(&self.id)
    }

    fn parse(text: &str) -> Option<Holder> {
        let mut l = text.lines();
        let id = l.next()?.strip_prefix("id=")?.to_string();
        let root = PathBuf::from(l.next()?.strip_prefix("root=")?);
        (!id.is_empty()).then_some(Holder { id, root })
    }
}

/// The marker path for `bundle`.
pub fn marker(bundle: &Path) -> PathBuf {
    bundle.join(MARKER)
}

/// The marker's text: `Ok(None)` without a marker, `Ok(Some(None))` for one that cannot be
/// parsed (for instance SingularityCE's empty marker).
pub fn holder(bundle: &Path) -> Result<Option<Option<Holder>>> {
    let m = marker(bundle);
    match std::fs::read_to_string(&m) {
        Ok(text) => Ok(Some(Holder::parse(&text))),
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

/// True while the holder's state directory exists (once it is gone, nothing can ever release
/// the lock).
pub fn state_dir_exists(h: &Holder) -> bool {
    h.state_dir().symlink_metadata().is_ok()
}

/// Take the lock for container `id` under state root `root`. Its state directory should already
/// exist, so that a concurrent create never mistakes this lock for a stale one. `alive` says
/// whether an existing holder is still a container: the shim asks the runtime that created it;
/// [`state_dir_exists`] is the cheap answer.
pub fn lock(bundle: &Path, id: &str, root: &Path, alive: impl Fn(&Holder) -> bool) -> Result<()> {
    let _guard = dir_lock(bundle)?;
    let m = marker(bundle);
    match holder(bundle)? {
        None => {}
        Some(None) => bail!(
            "bundle {} has an unreadable lock file {}: remove it if no container uses the bundle",
            bundle.display(),
            m.display()
        ),
        Some(Some(h)) if alive(&h) => bail!(
            "bundle {} is locked by container '{}' (delete it first)",
            bundle.display(),
            h.id
        ),
        Some(Some(h)) => {
            crate::cli::warn(format!(
                "stale lock on bundle {}: container '{}' no longer exists; taking the lock over",
                bundle.display(),
                h.id
            ));
            std::fs::remove_file(&m).with_context(|| format!("cannot remove {}", m.display()))?;
        }
    }
    let result = (|| -> Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&m)
            .with_context(|| format!("cannot create the bundle lock {}", m.display()))?;
        // No fsync: the marker only matters while the container exists, and no container
        // survives a crash or a reboot (a marker that does is reported as stale).
        writeln!(f, "id={id}\nroot={}", root.display())?;
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&m);
    }
    result
}

/// Release the lock if it is held by container `id`; a marker naming another container (or
/// none) is left alone.
pub fn release(bundle: &Path, id: &str) -> Result<()> {
    let _guard = dir_lock(bundle)?;
    match holder(bundle)? {
        Some(Some(h)) if h.id == id => {
            let m = marker(bundle);
            std::fs::remove_file(&m).with_context(|| format!("cannot remove {}", m.display()))
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(root: &Path, id: &str) {
        std::fs::create_dir_all(root.join("containers").join(id)).unwrap();
    }

    #[test]
    fn lock_refuse_release() {
        let b = tempfile::tempdir().unwrap();
        let r = tempfile::tempdir().unwrap();
        state(r.path(), "c1");
        lock(b.path(), "c1", r.path(), state_dir_exists).unwrap();
        assert_eq!(
            std::fs::read_to_string(marker(b.path())).unwrap(),
            format!("id=c1\nroot={}\n", r.path().display())
        );
        let e = lock(b.path(), "c2", r.path(), state_dir_exists)
            .unwrap_err()
            .to_string();
        assert!(e.contains("locked by container 'c1'"), "{e}");
        release(b.path(), "c2").unwrap();
        assert!(marker(b.path()).exists(), "another id must not release it");
        release(b.path(), "c1").unwrap();
        assert!(!marker(b.path()).exists());
    }

    #[test]
    fn stale_lock_is_taken_over() {
        let b = tempfile::tempdir().unwrap();
        let r = tempfile::tempdir().unwrap();
        lock(b.path(), "gone", r.path(), state_dir_exists).unwrap();
        lock(b.path(), "c2", r.path(), state_dir_exists).unwrap();
        assert_eq!(holder(b.path()).unwrap().unwrap().unwrap().id, "c2");
    }

    #[test]
    fn foreign_empty_marker_is_refused() {
        let b = tempfile::tempdir().unwrap();
        std::fs::write(marker(b.path()), b"").unwrap();
        let e = lock(b.path(), "c1", b.path(), state_dir_exists)
            .unwrap_err()
            .to_string();
        assert!(e.contains("unreadable lock"), "{e}");
    }
}
