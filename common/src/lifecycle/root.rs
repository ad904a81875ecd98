//! The runtime state root (`crun/runc --root`), chosen in this one place for every tool.
//!
//! `--root DIR` on the command line wins, then `SINGULARITY_OCI_STATE_ROOT`, then
//! SingularityCE's rules:
//!
//! 1. host root: `/run/singularity-oci`;
//! 2. `$XDG_RUNTIME_DIR/singularity-oci` when that variable names a writable directory;
//! 3. `/run/user/<uid>/singularity-oci` when `/run/user/<uid>` is a directory;
//! 4. `${TMPDIR:-/tmp}/singularity-oci-<uid>`.
//!
//! Whatever is chosen, a given `--root` included, is reached without following a symlink,
//! created 0700 when missing, and must belong to the caller and be writable by nobody else
//! ([`crate::fsutil::private_dir`]): the root decides which container an id names, so a root
//! another user can write would let them swap the container under any operation.
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

/// The state root of this command: `explicit` (a `--root` option) or the rules above; created
/// and checked either way.
pub fn resolve(explicit: Option<&Path>) -> Result<PathBuf> {
    match explicit {
        Some(r) => {
            let r = crate::fsutil::absolute(r)?;
            crate::fsutil::private_dir(&r)?;
            Ok(r)
        }
        None => runtime_state_root(),
    }
}

/// Choose (and create, 0700) the runtime state root by the rules (no `--root`).
pub fn runtime_state_root() -> Result<PathBuf> {
    match choose(&Facts::of_this_process())? {
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

/// Where the rules lead, before anything is created.
#[derive(Debug, PartialEq, Eq)]
pub enum Choice {
    /// A place no other user can create for us.
    Fixed(PathBuf),
    /// A name in a shared temporary directory, which another user may have taken first.
    SharedTmp(PathBuf),
}

/// What the rules look at, gathered once so that [`choose`] is a pure function.
#[derive(Debug, Default, Clone)]
pub struct Facts {
    /// `SINGULARITY_OCI_STATE_ROOT`, when set and not empty.
    pub override_root: Option<PathBuf>,
    /// The host uid.
    pub uid: u32,
    /// `XDG_RUNTIME_DIR`, when set, not empty, and a directory we can write.
    pub usable_xdg: Option<PathBuf>,
    /// `/run/user/<uid>` is a directory.
    pub run_user_exists: bool,
    /// `TMPDIR`, when set and not empty.
    pub tmpdir: Option<PathBuf>,
}

impl Facts {
    fn of_this_process() -> Facts {
        let var = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());
        let uid = host_uid();
        Facts {
            override_root: var(ENV_STATE_ROOT).map(PathBuf::from),
            uid,
            usable_xdg: var("XDG_RUNTIME_DIR")
                .map(PathBuf::from)
                .filter(|x| writable_dir(x)),
            run_user_exists: Path::new(&format!("/run/user/{uid}")).is_dir(),
            tmpdir: var("TMPDIR").map(PathBuf::from),
        }
    }
}

fn writable_dir(p: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = std::ffi::CString::new(p.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: access(2) with a NUL-terminated path.
    p.is_dir() && unsafe { libc::access(c.as_ptr(), libc::W_OK | libc::X_OK) } == 0
}

/// The rules, applied to `f`.
pub fn choose(f: &Facts) -> Result<Choice> {
    if let Some(p) = &f.override_root {
        return Ok(Choice::Fixed(crate::fsutil::absolute(p)?));
    }
    if f.uid == 0 {
        return Ok(Choice::Fixed(PathBuf::from("/run/singularity-oci")));
    }
    if let Some(x) = &f.usable_xdg {
        return Ok(Choice::Fixed(x.join("singularity-oci")));
    }
    if f.run_user_exists {
        return Ok(Choice::Fixed(
            PathBuf::from(format!("/run/user/{}", f.uid)).join("singularity-oci"),
        ));
    }
    let tmp = f.tmpdir.clone().unwrap_or_else(|| PathBuf::from("/tmp"));
    let dir = crate::fsutil::absolute(&tmp.join(format!("singularity-oci-{}", f.uid)))?;
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
        .context("cannot read the host name")?;
    fallback_below(&base, host.trim())
}

fn fallback_below(base: &Path, host: &str) -> Result<PathBuf> {
    if host.is_empty() || host.contains('/') || host.starts_with('.') {
        bail!("unusable host name '{host}' for a state directory");
    }
    crate::fsutil::absolute(&base.join("oci-state").join(host))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn user(uid: u32) -> Facts {
        Facts {
            uid,
            ..Facts::default()
        }
    }

    #[test]
    fn override_wins_over_every_rule() {
        let f = Facts {
            override_root: Some("/srv/state".into()),
            usable_xdg: Some("/run/user/5".into()),
            ..user(0)
        };
        assert_eq!(choose(&f).unwrap(), Choice::Fixed("/srv/state".into()));
    }

    #[test]
    fn relative_override_is_made_absolute() {
        let f = Facts {
            override_root: Some("rel/state".into()),
            ..user(7)
        };
        let Choice::Fixed(p) = choose(&f).unwrap() else {
            panic!("fixed expected")
        };
        assert!(p.is_absolute() && p.ends_with("rel/state"), "{p:?}");
    }

    fn chosen(f: Facts) -> Choice {
        choose(&f).unwrap()
    }
    fn fixed(p: &str) -> Choice {
        Choice::Fixed(p.into())
    }

    #[test]
    fn root_uses_run() {
        assert_eq!(chosen(user(0)), fixed("/run/singularity-oci"));
    }

    #[test]
    fn root_ignores_xdg() {
        let f = Facts {
            usable_xdg: Some("/x".into()),
            ..user(0)
        };
        assert_eq!(chosen(f), fixed("/run/singularity-oci"));
    }

    #[test]
    fn user_with_xdg() {
        let f = Facts {
            usable_xdg: Some("/run/user/1000".into()),
            run_user_exists: true,
            ..user(1000)
        };
        assert_eq!(chosen(f), fixed("/run/user/1000/singularity-oci"));
    }

    #[test]
    fn user_with_run_user_but_no_xdg() {
        let f = Facts {
            run_user_exists: true,
            ..user(1000)
        };
        assert_eq!(chosen(f), fixed("/run/user/1000/singularity-oci"));
    }

    #[test]
    fn user_without_anything_goes_to_shared_tmp() {
        let shared = Choice::SharedTmp("/tmp/singularity-oci-1234".into());
        assert_eq!(chosen(user(1234)), shared);
    }

    #[test]
    fn user_tmpdir_is_honoured() {
        let f = Facts {
            tmpdir: Some("/scratch/t".into()),
            ..user(9)
        };
        let shared = Choice::SharedTmp("/scratch/t/singularity-oci-9".into());
        assert_eq!(chosen(f), shared);
    }

    #[test]
    fn fallback_is_per_host_below_the_base() {
        assert_eq!(
            fallback_below(Path::new("/home/u/.singularity"), "node1").unwrap(),
            PathBuf::from("/home/u/.singularity/oci-state/node1")
        );
    }

    #[test]
    fn fallback_refuses_odd_host_names() {
        for h in ["", "a/b", ".hidden", ".."] {
            let e = fallback_below(Path::new("/b"), h).unwrap_err().to_string();
            assert!(e.contains("unusable host name"), "{h}: {e}");
        }
    }

    #[test]
    fn explicit_root_is_created_private() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path().join("state");
        assert_eq!(resolve(Some(&r)).unwrap(), r);
        use std::os::unix::fs::MetadataExt;
        assert_eq!(std::fs::metadata(&r).unwrap().mode() & 0o777, 0o700);
    }

    #[test]
    fn explicit_root_writable_by_others_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path().join("state");
        std::fs::create_dir(&r).unwrap();
        std::fs::set_permissions(&r, std::fs::Permissions::from_mode(0o777)).unwrap();
        assert!(resolve(Some(&r)).is_err());
    }

    #[test]
    fn explicit_root_through_a_symlink_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let real = d.path().join("real");
        std::fs::create_dir(&real).unwrap();
        std::fs::set_permissions(&real, std::fs::Permissions::from_mode(0o700)).unwrap();
        let link = d.path().join("link");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        assert!(resolve(Some(&link)).is_err());
    }
}
