//! `create`: a new container from a bundle, not started.
//!
//! The order is what makes a failure leave nothing behind and the bundle lock sound:
//! 1. the state directory (an id taken in our state or the runtime's fails here, before
//!    anything is made) with its `bundle` link and `runtime` record;
//! 2. the bundle lock (after the state directory: see `lifecycle::lock`);
//! 3. the crun hybrid-cgroup fix where needed, then the runtime's `create`.
//!
//! [`Reservation`] undoes 1 and 2 unless the create succeeds; a failed runtime create is also
//! deleted through the runtime. The conmon path (`oci-conmon-create`) makes the same
//! reservation and hands step 3 to conmon.

use super::super::error;
use super::super::host::Host;
use super::super::lock;
use super::super::process::{Call, Runtime};
use super::super::runtime::{RuntimeBinary, RuntimeKind};
use super::super::statedir::{self, StateDir};
use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};

/// A bundle as given on the command line, checked: absolute, a directory, with config.json.
pub fn check_bundle(bundle: &Path) -> Result<PathBuf> {
    let b = crate::fsutil::absolute(bundle)?;
    if !b.is_dir() {
        bail!(
            "bundle {} does not exist or is not a directory",
            b.display()
        );
    }
    if !b.join("config.json").is_file() {
        bail!("bundle {} has no config.json", b.display());
    }
    Ok(b)
}

/// The state directory and the bundle lock of a create in progress. Dropped without
/// [`Reservation::keep`], it releases the lock, removes conmon's files from the bundle (only
/// when the lock was ours: they belong to whoever holds it) and removes the state directory.
pub struct Reservation {
    sd: Option<StateDir>,
    bundle: PathBuf,
    locked: bool,
}

impl Reservation {
    /// Steps 1 and 2 for container `id` of `bundle`, to be made by `rt` under its root.
    pub fn new(rt: &dyn Runtime, id: &str, bundle: &Path) -> Result<Reservation> {
        let root = rt.root();
        let sd = StateDir::create(root, id)?;
        let mut r = Reservation {
            sd: Some(sd),
            bundle: bundle.to_path_buf(),
            locked: false,
        };
        r.state_dir().record(bundle, &rt.binary().path)?;
        lock::lock(bundle, id, root, &|p, root, id| rt.knows_at(p, root, id))?;
        r.locked = true;
        Ok(r)
    }

    pub fn state_dir(&self) -> &StateDir {
        self.sd.as_ref().expect("reservation kept already")
    }

    /// The create succeeded: keep everything.
    pub fn keep(mut self) -> StateDir {
        self.sd.take().expect("reservation kept already")
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        let Some(sd) = self.sd.take() else { return };
        if self.locked {
            statedir::remove_bundle_leftovers(&self.bundle);
            if let Err(e) = lock::release(&self.bundle, &sd.id) {
                crate::cli::warn(format!("{e:#}"));
            }
        }
        let dir = sd.dir.clone();
        if let Err(e) = sd.remove() {
            crate::cli::warn(format!("cannot remove {}: {e:#}", dir.display()));
        }
    }
}

/// Before `run` or `create`: the runtime's own private mount namespace, when we can make one
/// (root, or root of the outer user namespace: CAP_SYS_ADMIN) and either crun needs the
/// hybrid-cgroup fix or we are the unprivileged user inside `oci-userns-starter`. Host root
/// without the fix keeps the runtime in the host's mount namespace, as a bare runtime runs.
///
/// In that namespace the runtime's binary is bound read-only onto itself
/// ([`crate::lifecycle::readonly`]), so crun and runc skip copying themselves into memory before
/// every start. That part is best effort: when it fails the runtime copies itself, as it
/// always did.
pub fn prepare_new_container(bin: &RuntimeBinary, host: &dyn Host) -> Result<()> {
    let fix = bin.kind == RuntimeKind::Crun && host.cgroup_fix_needed();
    if fix && !host.euid_is_root() {
        bail!(
            "crun needs the hybrid-cgroup workaround here, which needs the outer user namespace: run 'oci-userns-starter -- oci-runtime-shim ...'"
        );
    }
    let in_starter = host.euid_is_root() && !host.privileged();
    if !fix && !in_starter {
        return Ok(());
    }
    host.private_mount_namespace()?;
    if fix {
        host.hide_cgroup_controllers()?;
    }
    if let Err(e) = host.read_only_runtime(&bin.path) {
        crate::cli::debug(format!(
            "the runtime copies itself before it starts: {}",
            crate::cli::format_chain(&e)
        ));
    }
    Ok(())
}

/// What `create` is asked for.
pub struct Request<'a> {
    /// A checked bundle ([`check_bundle`]).
    pub bundle: &'a Path,
    pub id: &'a str,
    /// Also write the container's pid here.
    pub pid_file: Option<&'a Path>,
}

/// Create the container (no conmon): its output goes to `container.log` in its state
/// directory, the runtime's own log to `runtime.log`.
pub fn create(rt: &dyn Runtime, host: &dyn Host, req: &Request) -> Result<StateDir> {
    statedir::check_container_id(req.id)?;
    let r = Reservation::new(rt, req.id, req.bundle)?;
    let sd = r.state_dir();
    prepare_new_container(rt.binary(), host)?;
    let call = Call::new([
        "--log".as_ref(),
        sd.runtime_log().as_os_str(),
        "create".as_ref(),
        "--bundle".as_ref(),
        req.bundle.as_os_str(),
        "--pid-file".as_ref(),
        sd.pid_file().as_os_str(),
        req.id.as_ref(),
    ])
    .cwd(req.bundle)
    .log(&sd.container_log());
    let out = rt.call(&call)?;
    if !out.success() {
        rt.force_delete(req.id);
        bail!("create failed: {}", failure_words(sd, rt, out.code));
    }
    if let Some(p) = req.pid_file {
        let pid = std::fs::read(sd.pid_file()).context("the runtime wrote no pid file")?;
        crate::fsutil::atomic_write(&crate::fsutil::absolute(p)?, &pid, 0o644)?;
    }
    Ok(r.keep())
}

/// Why the runtime's create failed: the last words of its log, else of the container's
/// output, else its exit code.
fn failure_words(sd: &StateDir, rt: &dyn Runtime, code: i32) -> String {
    [sd.runtime_log(), sd.container_log()]
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .find_map(|t| error::last_message(&t))
        .unwrap_or_else(|| format!("{} exited with {code}", rt.name()))
}

#[cfg(test)]
mod tests {
    use super::super::super::fake::{FakeRuntime, Status};
    use super::super::super::host::FakeHost;
    use super::super::testing::World;
    use super::*;

    const CONFIG: &str = r#"{"process":{"args":["sh"]}}"#;

    fn req<'a>(b: &'a Path, id: &'a str) -> Request<'a> {
        Request {
            bundle: b,
            id,
            pid_file: None,
        }
    }

    #[test]
    fn create_makes_state_lock_and_container() {
        let w = World::new(FakeHost::user());
        let b = w.bundle("b", CONFIG);
        let sd = create(&w.rt, &w.host, &req(&b, "c1")).unwrap();
        assert_eq!(w.rt.status("c1"), Some(Status::Created));
        assert_eq!(sd.bundle(), Some(b.clone()));
        assert_eq!(sd.runtime().as_deref(), Some("/usr/bin/runc"));
        assert_eq!(lock::holder(&b).unwrap().unwrap().unwrap().id, "c1");
        assert!(sd.pid_file().is_file());
    }

    #[test]
    fn create_passes_log_bundle_and_pid_file() {
        let w = World::new(FakeHost::user());
        let b = w.bundle("b", CONFIG);
        let sd = create(&w.rt, &w.host, &req(&b, "c1")).unwrap();
        let calls = w.rt.calls.borrow();
        assert_eq!(
            calls[calls.len() - 1],
            [
                "--log".to_string(),
                sd.runtime_log().display().to_string(),
                "create".into(),
                "--bundle".into(),
                b.display().to_string(),
                "--pid-file".into(),
                sd.pid_file().display().to_string(),
                "c1".into(),
            ]
        );
    }

    #[test]
    fn a_failed_create_leaves_nothing() {
        let w = World::new(FakeHost::user());
        let b = w.bundle("b", CONFIG);
        w.rt.fail_next(
            "create",
            "time=\"t\" level=error msg=\"no \\\"sh\\\" here\"\n",
        );
        let e = create(&w.rt, &w.host, &req(&b, "c1")).unwrap_err();
        assert_eq!(e.to_string(), "create failed: no \"sh\" here");
        assert!(!w.root().join("containers/c1").exists());
        assert_eq!(lock::holder(&b).unwrap(), None);
        assert_eq!(
            w.rt.ops().last().unwrap(),
            "delete",
            "the runtime is told to forget it"
        );
    }

    #[test]
    fn a_failed_create_without_words_gives_the_code() {
        let w = World::new(FakeHost::user());
        let b = w.bundle("b", CONFIG);
        w.rt.fail_next("create", "");
        let e = create(&w.rt, &w.host, &req(&b, "c1")).unwrap_err();
        assert_eq!(e.to_string(), "create failed: runc exited with 1");
    }

    #[test]
    fn a_taken_id_touches_nothing() {
        let w = World::new(FakeHost::user());
        let _first = w.container("c1", Status::Running);
        let b = w.bundle("b2", CONFIG);
        let e = create(&w.rt, &w.host, &req(&b, "c1")).unwrap_err();
        assert!(
            e.to_string().contains("container 'c1' already exists"),
            "{e}"
        );
        assert_eq!(w.rt.status("c1"), Some(Status::Running), "not deleted");
        assert!(w.rt.ops().is_empty(), "the runtime was not called");
        assert_eq!(lock::holder(&b).unwrap(), None);
    }

    #[test]
    fn an_id_only_the_runtime_has_touches_nothing() {
        let w = World::new(FakeHost::user());
        std::fs::create_dir(w.root().join("c1")).unwrap();
        w.rt.add("c1", Status::Running);
        let b = w.bundle("b", CONFIG);
        assert!(create(&w.rt, &w.host, &req(&b, "c1")).is_err());
        assert_eq!(w.rt.status("c1"), Some(Status::Running));
    }

    #[test]
    fn a_locked_bundle_is_refused_and_its_holders_files_kept() {
        let w = World::new(FakeHost::user());
        let first = w.container("c1", Status::Running);
        let b = first.bundle().unwrap();
        nix::unistd::mkfifo(&b.join("ctl"), nix::sys::stat::Mode::S_IRWXU).unwrap();
        let e = create(&w.rt, &w.host, &req(&b, "c2")).unwrap_err();
        assert!(e.to_string().contains("is locked by container 'c1'"), "{e}");
        assert!(b.join("ctl").exists(), "the holder's conmon FIFO stays");
        assert!(!w.root().join("containers/c2").exists());
        assert_eq!(lock::holder(&b).unwrap().unwrap().unwrap().id, "c1");
    }

    #[test]
    fn a_stale_lock_is_taken_over() {
        let w = World::new(FakeHost::user());
        let b = w.bundle("b", CONFIG);
        std::fs::write(lock::marker(&b), "id=old\nroot=/nonexistent\n").unwrap();
        create(&w.rt, &w.host, &req(&b, "c1")).unwrap();
        assert_eq!(lock::holder(&b).unwrap().unwrap().unwrap().id, "c1");
    }

    #[test]
    fn a_lock_left_by_a_deleted_container_is_taken_over() {
        let w = World::new(FakeHost::user());
        let old = w.container("old", Status::Stopped);
        let b = old.bundle().unwrap();
        old.remove().unwrap();
        create(&w.rt, &w.host, &req(&b, "c1")).unwrap();
        assert_eq!(lock::holder(&b).unwrap().unwrap().unwrap().id, "c1");
    }

    #[test]
    fn a_container_deleted_behind_our_back_leaves_a_stale_lock() {
        let w = World::new(FakeHost::user());
        let old = w.container("old", Status::Stopped);
        let b = old.bundle().unwrap();
        std::fs::write(old.pid_file(), "999999999").unwrap();
        w.rt.force_delete("old");
        create(&w.rt, &w.host, &req(&b, "c1")).unwrap();
        assert_eq!(lock::holder(&b).unwrap().unwrap().unwrap().id, "c1");
    }

    #[test]
    fn a_stopped_container_the_runtime_keeps_holds_its_bundle() {
        let w = World::new(FakeHost::user());
        let old = w.container("old", Status::Stopped);
        let b = old.bundle().unwrap();
        std::fs::write(old.pid_file(), "999999999").unwrap();
        let e = create(&w.rt, &w.host, &req(&b, "c1")).unwrap_err();
        assert!(
            e.to_string().contains("is locked by container 'old'"),
            "{e}"
        );
    }

    #[test]
    fn the_pid_file_is_copied() {
        let w = World::new(FakeHost::user());
        let b = w.bundle("b", CONFIG);
        let p = w.dir.path().join("pid");
        create(
            &w.rt,
            &w.host,
            &Request {
                pid_file: Some(&p),
                ..req(&b, "c1")
            },
        )
        .unwrap();
        assert_eq!(
            std::fs::read_to_string(&p).unwrap(),
            std::process::id().to_string()
        );
    }

    #[test]
    fn invalid_ids_are_refused_first() {
        let w = World::new(FakeHost::user());
        let b = w.bundle("b", CONFIG);
        assert!(create(&w.rt, &w.host, &req(&b, "../x")).is_err());
        assert!(w.rt.ops().is_empty());
    }

    /// What preparing a new container of `kind` asked of `host`.
    fn prepared(kind: RuntimeKind, host: &FakeHost) -> Vec<String> {
        let rt = FakeRuntime::new(kind, Path::new("/nonexistent-state-root"));
        prepare_new_container(rt.binary(), host).unwrap();
        host.events()
    }

    #[test]
    fn crun_gets_the_cgroup_fix_when_needed() {
        let w = World::crun(FakeHost {
            needs_fix: true,
            ..FakeHost::starter_root()
        });
        let b = w.bundle("b", CONFIG);
        create(&w.rt, &w.host, &req(&b, "c1")).unwrap();
        assert_eq!(w.host.events(), ["mountns", "fix", "ro /usr/bin/crun"]);
    }

    #[test]
    fn host_root_gets_a_namespace_only_for_the_fix() {
        let host = FakeHost {
            needs_fix: true,
            ..FakeHost::host_root()
        };
        assert!(prepared(RuntimeKind::Runc, &host).is_empty());
        assert_eq!(
            prepared(RuntimeKind::Crun, &host),
            ["mountns", "fix", "ro /usr/bin/crun"]
        );
    }

    #[test]
    fn inside_the_starter_every_runtime_is_read_only_and_only_crun_gets_the_fix() {
        for needs_fix in [false, true] {
            let host = FakeHost {
                needs_fix,
                ..FakeHost::starter_root()
            };
            assert_eq!(
                prepared(RuntimeKind::Runc, &host),
                ["mountns", "ro /usr/bin/runc"]
            );
        }
        assert_eq!(
            prepared(RuntimeKind::Crun, &FakeHost::starter_root()),
            ["mountns", "ro /usr/bin/crun"]
        );
    }

    #[test]
    fn a_failed_read_only_bind_leaves_the_runtime_to_copy_itself() {
        let host = FakeHost {
            read_only_fails: true,
            ..FakeHost::starter_root()
        };
        assert_eq!(prepared(RuntimeKind::Crun, &host), ["mountns"]);
    }

    #[test]
    fn an_unprivileged_user_outside_the_starter_gets_nothing_without_the_fix() {
        assert!(prepared(RuntimeKind::Crun, &FakeHost::user()).is_empty());
    }

    #[test]
    fn an_unprivileged_crun_create_needing_the_fix_says_where_to_run() {
        let w = World::crun(FakeHost {
            needs_fix: true,
            ..FakeHost::user()
        });
        let b = w.bundle("b", CONFIG);
        let e = create(&w.rt, &w.host, &req(&b, "c1")).unwrap_err();
        assert!(e.to_string().contains("oci-userns-starter --"), "{e}");
        assert!(!w.root().join("containers/c1").exists());
        assert_eq!(lock::holder(&b).unwrap(), None);
    }

    #[test]
    fn a_failed_fix_leaves_nothing() {
        let w = World::crun(FakeHost {
            needs_fix: true,
            fix_fails: true,
            ..FakeHost::starter_root()
        });
        let b = w.bundle("b", CONFIG);
        assert!(create(&w.rt, &w.host, &req(&b, "c1")).is_err());
        assert!(!w.root().join("containers/c1").exists());
        assert!(w.rt.ops().is_empty());
    }

    #[test]
    fn reservation_kept_survives() {
        let w = World::new(FakeHost::user());
        let b = w.bundle("b", CONFIG);
        let r = Reservation::new(&w.rt, "c1", &b).unwrap();
        let sd = r.keep();
        assert!(sd.dir.is_dir());
        assert_eq!(lock::holder(&b).unwrap().unwrap().unwrap().id, "c1");
    }

    #[test]
    fn reservation_dropped_undoes_everything() {
        let w = World::new(FakeHost::user());
        let b = w.bundle("b", CONFIG);
        let r = Reservation::new(&w.rt, "c1", &b).unwrap();
        let _l = std::os::unix::net::UnixListener::bind(b.join("attach")).unwrap();
        drop(r);
        assert!(!w.root().join("containers/c1").exists());
        assert_eq!(lock::holder(&b).unwrap(), None);
        assert!(std::fs::symlink_metadata(b.join("attach")).is_err());
    }

    #[test]
    fn bundles_are_checked() {
        let d = tempfile::tempdir().unwrap();
        let e = check_bundle(&d.path().join("none"))
            .unwrap_err()
            .to_string();
        assert!(e.ends_with("does not exist or is not a directory"), "{e}");
        let e = check_bundle(d.path()).unwrap_err().to_string();
        assert!(e.ends_with("has no config.json"), "{e}");
        std::fs::write(d.path().join("config.json"), "{}").unwrap();
        assert_eq!(check_bundle(d.path()).unwrap(), d.path());
    }
}
