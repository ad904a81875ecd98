//! The bundle lock: one container per bundle, from `create` until `delete`.
//!
//! As in SingularityCE the lock is a marker file `<bundle>/.singularity-oci.lock`, created and
//! removed while holding an flock on the bundle directory, so two creates racing on one bundle
//! cannot both win. Unlike SingularityCE the marker names its holder, two lines `id=ID` and
//! `root=STATE_ROOT`, so that a second create is refused with the name of the container that
//! holds the bundle, and a stale lock is reported with a warning and taken over.
//!
//! A lock is held by a *container*, not by a process: `create` takes it and only `delete` (or a
//! failed create) releases it.
//!
//! **The one staleness rule** ([`holder_alive`]), in the order it is checked:
//!
//! 1. the holder's state directory `STATE_ROOT/containers/ID` is gone, or its `bundle` link
//!    leads to another directory (the id was reused): **stale**. Every create makes the state
//!    directory (and its link) *before* it takes the lock, and every delete or failed create
//!    releases the lock *before* it removes the directory, so a lock whose directory is gone
//!    can never be released by anyone;
//! 2. the state directory has no container pid file yet: a create in progress, **alive**;
//! 3. the pid file names a live process that is still the container: **alive**;
//! 4. the container has ended: alive while the runtime that created it (recorded in the state
//!    directory) still knows it (`stopped`, waiting for `delete`), **stale** once it was deleted
//!    behind our back.
//!
//! The runtime is asked only in case 4, never about a create in progress: a concurrent create
//! holds the lock before its runtime has heard of the container, and "no such container" then
//! would let a second create steal the bundle. Anything that cannot be read (another user's
//! root) counts as alive.

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
        self.root.join(super::statedir::CONTAINERS).join(&self.id)
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

/// Asks the runtime that made a container (its recorded path, if any), under a state root,
/// whether it still knows the container: `(runtime, root, id)`.
pub type Knows<'a> = &'a dyn Fn(Option<&Path>, &Path, &str) -> bool;

/// The staleness rule (see the module documentation): is the holder of a lock on `bundle`
/// still a container?
pub fn holder_alive(h: &Holder, bundle: &Path, knows: Knows) -> bool {
    let sd = super::statedir::StateDir {
        dir: h.state_dir(),
        id: h.id.clone(),
    };
    match sd.dir.symlink_metadata() {
        Ok(_) => {}
        Err(e) if gone(&e) => return false,
        Err(_) => return true,
    }
    if let Ok(link) = std::fs::read_link(sd.file(super::statedir::BUNDLE_LINK))
        && same_dir(&link, bundle) == Some(false)
    {
        return false;
    }
    if sd.pid_file().symlink_metadata().is_err() {
        return true;
    }
    if sd.live_pid().is_some() {
        return true;
    }
    let runtime = sd.runtime().map(PathBuf::from);
    knows(runtime.as_deref(), &h.root, &h.id)
}

fn gone(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
    )
}

/// Are `a` and `b` the same directory? `Some(false)` when `a` no longer exists; `None` when it
/// cannot be told.
fn same_dir(a: &Path, b: &Path) -> Option<bool> {
    use std::os::unix::fs::MetadataExt;
    let mb = std::fs::metadata(b).ok()?;
    match std::fs::metadata(a) {
        Ok(ma) => Some(ma.dev() == mb.dev() && ma.ino() == mb.ino()),
        Err(e) if gone(&e) => Some(false),
        Err(_) => None,
    }
}

/// Take the lock for container `id` under state root `root`. Its state directory (with its
/// `bundle` link) must already exist, so that a concurrent create never mistakes this lock for
/// a stale one. `knows` asks a runtime about a holder whose container has ended.
pub fn lock(bundle: &Path, id: &str, root: &Path, knows: Knows) -> Result<()> {
    let _guard = dir_lock(bundle)?;
    let m = marker(bundle);
    match holder(bundle)? {
        None => {}
        Some(None) => bail!(
            "bundle {} has an unreadable lock file {}: remove it if no container uses the bundle",
            bundle.display(),
            m.display()
        ),
        Some(Some(h)) if holder_alive(&h, bundle, knows) => bail!(
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
/// none) is left alone, and so is a bundle that no longer exists (nothing is locked there, and
/// the container's state must still be removable).
pub fn release(bundle: &Path, id: &str) -> Result<()> {
    if let Err(e) = std::fs::symlink_metadata(bundle)
        && gone(&e)
    {
        return Ok(());
    }
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

    /// A runtime that has forgotten every container.
    const NEVER: Knows = &|_, _, _| false;
    /// A runtime that still knows every container.
    const ALWAYS: Knows = &|_, _, _| true;

    /// A state root with container `id` whose state directory links `bundle`.
    fn state(root: &Path, id: &str, bundle: Option<&Path>) {
        let sd = root.join("containers").join(id);
        std::fs::create_dir_all(&sd).unwrap();
        if let Some(b) = bundle {
            std::os::unix::fs::symlink(b, sd.join("bundle")).unwrap();
        }
    }

    fn dirs() -> (tempfile::TempDir, tempfile::TempDir) {
        (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap())
    }

    #[test]
    fn lock_writes_the_holder() {
        let (b, r) = dirs();
        state(r.path(), "c1", Some(b.path()));
        lock(b.path(), "c1", r.path(), NEVER).unwrap();
        assert_eq!(
            std::fs::read_to_string(marker(b.path())).unwrap(),
            format!("id=c1\nroot={}\n", r.path().display())
        );
        let h = holder(b.path()).unwrap().unwrap().unwrap();
        assert_eq!(h.id, "c1");
        assert_eq!(h.root, r.path());
        assert_eq!(h.state_dir(), r.path().join("containers/c1"));
    }

    #[test]
    fn marker_is_private() {
        use std::os::unix::fs::MetadataExt;
        let (b, r) = dirs();
        state(r.path(), "c1", Some(b.path()));
        lock(b.path(), "c1", r.path(), NEVER).unwrap();
        assert_eq!(
            std::fs::metadata(marker(b.path())).unwrap().mode() & 0o777,
            0o600
        );
    }

    #[test]
    fn a_live_holder_refuses_a_second_create() {
        let (b, r) = dirs();
        state(r.path(), "c1", Some(b.path()));
        lock(b.path(), "c1", r.path(), NEVER).unwrap();
        let e = lock(b.path(), "c2", r.path(), NEVER)
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            format!(
                "bundle {} is locked by container 'c1' (delete it first)",
                b.path().display()
            )
        );
    }

    #[test]
    fn the_same_id_cannot_lock_twice() {
        let (b, r) = dirs();
        state(r.path(), "c1", Some(b.path()));
        lock(b.path(), "c1", r.path(), NEVER).unwrap();
        assert!(lock(b.path(), "c1", r.path(), NEVER).is_err());
    }

    #[test]
    fn release_only_by_the_holder() {
        let (b, r) = dirs();
        state(r.path(), "c1", Some(b.path()));
        lock(b.path(), "c1", r.path(), NEVER).unwrap();
        release(b.path(), "c2").unwrap();
        assert!(marker(b.path()).exists(), "another id must not release it");
        release(b.path(), "c1").unwrap();
        assert!(!marker(b.path()).exists());
    }

    #[test]
    fn release_of_a_vanished_bundle_is_fine() {
        release(Path::new("/nonexistent/bundle"), "c1").unwrap();
    }

    #[test]
    fn release_without_a_marker_is_fine() {
        let (b, _r) = dirs();
        release(b.path(), "c1").unwrap();
    }

    #[test]
    fn stale_lock_without_state_is_taken_over() {
        let (b, r) = dirs();
        state(r.path(), "gone", Some(b.path()));
        lock(b.path(), "gone", r.path(), NEVER).unwrap();
        std::fs::remove_dir_all(r.path().join("containers/gone")).unwrap();
        state(r.path(), "c2", Some(b.path()));
        lock(b.path(), "c2", r.path(), NEVER).unwrap();
        assert_eq!(holder(b.path()).unwrap().unwrap().unwrap().id, "c2");
    }

    #[test]
    fn stale_lock_of_a_vanished_root_is_taken_over() {
        let (b, r) = dirs();
        std::fs::write(marker(b.path()), "id=old\nroot=/nonexistent/root\n").unwrap();
        state(r.path(), "c2", Some(b.path()));
        lock(b.path(), "c2", r.path(), NEVER).unwrap();
        assert_eq!(holder(b.path()).unwrap().unwrap().unwrap().id, "c2");
    }

    #[test]
    fn stale_lock_whose_root_is_a_file_is_taken_over() {
        let (b, r) = dirs();
        let f = r.path().join("file");
        std::fs::write(&f, "").unwrap();
        std::fs::write(marker(b.path()), format!("id=old\nroot={}\n", f.display())).unwrap();
        state(r.path(), "c2", Some(b.path()));
        lock(b.path(), "c2", r.path(), NEVER).unwrap();
    }

    #[test]
    fn a_reused_id_on_another_bundle_is_stale() {
        let (b, r) = dirs();
        let other = tempfile::tempdir().unwrap();
        // c1's lock on b was lost; c1 now names a container of another bundle.
        std::fs::write(
            marker(b.path()),
            format!("id=c1\nroot={}\n", r.path().display()),
        )
        .unwrap();
        state(r.path(), "c1", Some(other.path()));
        let h = holder(b.path()).unwrap().unwrap().unwrap();
        assert!(!holder_alive(&h, b.path(), NEVER));
        assert!(holder_alive(&h, other.path(), NEVER));
    }

    #[test]
    fn a_holder_whose_link_leads_nowhere_is_stale() {
        let (b, r) = dirs();
        state(r.path(), "c1", Some(Path::new("/nonexistent/bundle")));
        let h = Holder {
            id: "c1".into(),
            root: r.path().to_path_buf(),
        };
        assert!(!holder_alive(&h, b.path(), NEVER));
    }

    #[test]
    fn a_holder_mid_create_without_its_link_is_alive() {
        let (b, r) = dirs();
        state(r.path(), "c1", None);
        let h = Holder {
            id: "c1".into(),
            root: r.path().to_path_buf(),
        };
        assert!(holder_alive(&h, b.path(), NEVER));
    }

    #[test]
    fn a_holder_linked_through_another_path_is_alive() {
        let (b, r) = dirs();
        let alias = r.path().join("alias");
        std::os::unix::fs::symlink(b.path(), &alias).unwrap();
        state(r.path(), "c1", Some(&alias));
        let h = Holder {
            id: "c1".into(),
            root: r.path().to_path_buf(),
        };
        assert!(holder_alive(&h, b.path(), NEVER));
    }

    #[test]
    fn a_holder_in_an_unreadable_root_counts_as_alive() {
        use std::os::unix::fs::PermissionsExt;
        if nix::unistd::geteuid().is_root() {
            return; // root reads everything; the rule is for users
        }
        let (b, r) = dirs();
        let shut = r.path().join("shut");
        std::fs::create_dir(&shut).unwrap();
        std::fs::set_permissions(&shut, std::fs::Permissions::from_mode(0o000)).unwrap();
        let h = Holder {
            id: "c1".into(),
            root: shut.clone(),
        };
        assert!(holder_alive(&h, b.path(), NEVER));
        std::fs::set_permissions(&shut, std::fs::Permissions::from_mode(0o700)).unwrap();
    }

    #[test]
    fn stale_takeover_is_reported_and_the_new_holder_written() {
        let (b, r) = dirs();
        std::fs::write(marker(b.path()), "id=old\nroot=/nonexistent\n").unwrap();
        state(r.path(), "new", Some(b.path()));
        lock(b.path(), "new", r.path(), NEVER).unwrap();
        assert_eq!(
            std::fs::read_to_string(marker(b.path())).unwrap(),
            format!("id=new\nroot={}\n", r.path().display())
        );
    }

    #[test]
    fn foreign_empty_marker_is_refused() {
        let (b, r) = dirs();
        std::fs::write(marker(b.path()), b"").unwrap();
        let e = lock(b.path(), "c1", r.path(), NEVER)
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            format!(
                "bundle {} has an unreadable lock file {}: remove it if no container uses the bundle",
                b.path().display(),
                marker(b.path()).display()
            )
        );
    }

    #[test]
    fn markers_that_do_not_parse() {
        for text in ["", "id=\nroot=/r\n", "root=/r\nid=c\n", "id=c\n", "garbage"] {
            assert_eq!(Holder::parse(text), None, "{text:?}");
        }
        assert_eq!(
            Holder::parse("id=c\nroot=/r\n"),
            Some(Holder {
                id: "c".into(),
                root: "/r".into()
            })
        );
    }

    #[test]
    fn no_marker_no_holder() {
        let (b, _r) = dirs();
        assert_eq!(holder(b.path()).unwrap(), None);
    }

    #[test]
    fn a_missing_bundle_cannot_be_locked() {
        let r = tempfile::tempdir().unwrap();
        let e = lock(Path::new("/nonexistent/b"), "c1", r.path(), NEVER).unwrap_err();
        assert_eq!(e.to_string(), "cannot open bundle /nonexistent/b");
    }

    fn holding(r: &Path, id: &str) -> Holder {
        Holder {
            id: id.into(),
            root: r.to_path_buf(),
        }
    }

    #[test]
    fn a_create_in_progress_is_alive_whatever_the_runtime_says() {
        let (b, r) = dirs();
        state(r.path(), "c1", Some(b.path()));
        assert!(holder_alive(&holding(r.path(), "c1"), b.path(), NEVER));
    }

    #[test]
    fn a_live_container_process_is_alive_whatever_the_runtime_says() {
        let (b, r) = dirs();
        state(r.path(), "c1", Some(b.path()));
        let pid = r.path().join("containers/c1/container.pid");
        std::fs::write(&pid, std::process::id().to_string()).unwrap();
        assert!(holder_alive(&holding(r.path(), "c1"), b.path(), NEVER));
    }

    #[test]
    fn an_ended_container_the_runtime_keeps_is_alive() {
        let (b, r) = dirs();
        state(r.path(), "c1", Some(b.path()));
        std::fs::write(r.path().join("containers/c1/container.pid"), "999999999").unwrap();
        assert!(holder_alive(&holding(r.path(), "c1"), b.path(), ALWAYS));
    }

    #[test]
    fn an_ended_container_deleted_behind_our_back_is_stale() {
        let (b, r) = dirs();
        state(r.path(), "c1", Some(b.path()));
        std::fs::write(r.path().join("containers/c1/container.pid"), "999999999").unwrap();
        assert!(!holder_alive(&holding(r.path(), "c1"), b.path(), NEVER));
        lock(b.path(), "c1", r.path(), NEVER).unwrap();
    }

    #[test]
    fn the_runtime_asked_is_the_one_that_made_the_container() {
        let (b, r) = dirs();
        state(r.path(), "c1", Some(b.path()));
        let sd = r.path().join("containers/c1");
        std::fs::write(sd.join("container.pid"), "999999999").unwrap();
        std::fs::write(sd.join("runtime"), "/usr/bin/runc").unwrap();
        let asked = std::cell::RefCell::new(None);
        let knows = |rt: Option<&Path>, root: &Path, id: &str| {
            *asked.borrow_mut() = Some((
                rt.map(Path::to_path_buf),
                root.to_path_buf(),
                id.to_string(),
            ));
            true
        };
        assert!(holder_alive(&holding(r.path(), "c1"), b.path(), &knows));
        assert_eq!(
            asked.into_inner(),
            Some((
                Some("/usr/bin/runc".into()),
                r.path().to_path_buf(),
                "c1".into()
            ))
        );
    }

    #[test]
    fn a_live_holder_is_never_asked_about() {
        let (b, r) = dirs();
        state(r.path(), "c1", None);
        let panics: Knows = &|_, _, _| panic!("a create in progress must not be asked about");
        assert!(holder_alive(&holding(r.path(), "c1"), b.path(), panics));
    }
}
