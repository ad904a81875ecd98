//! `delete`: the runtime forgets the container, then its state directory and its bundle lock
//! go. A container the runtime no longer knows (deleted behind our back) still has its state
//! removed, with a WARNING.

use super::{Target, checked, enter};
use crate::lifecycle::host::Host;
use crate::lifecycle::process::{Call, Output, Runtime};
use crate::lifecycle::{lock, monitor, statedir};
use anyhow::Result;
use std::time::Duration;

/// How long to wait for a conmon monitor to finish its exit work.
const MONITOR_WAIT: Duration = Duration::from_secs(5);

pub fn delete(rt: &dyn Runtime, host: &dyn Host, t: &Target, force: bool) -> Result<Output> {
    enter(host, t, false)?;
    let mut words = vec!["delete"];
    if force {
        words.push("--force");
    }
    words.push(t.id);
    let out = match checked(rt, "delete", &Call::new(words), "") {
        Ok(out) => out,
        Err(e) if t.sd.is_none() || rt.knows(t.id) => return Err(e),
        Err(_) => {
            crate::cli::warn(format!(
                "the runtime no longer knows container '{}'; removing its leftover state",
                t.id
            ));
            Output::default()
        }
    };
    if let Some(sd) = t.sd {
        // A conmon-created container: after the container exits its conmon still writes the
        // exit file into the state directory and runs the exit command, so wait for it before
        // removing the directory (removing it under conmon's feet made `delete --force` fail).
        if !monitor::wait_gone(sd, MONITOR_WAIT) {
            crate::cli::warn(format!(
                "conmon of container '{}' is still running after 5 s",
                t.id
            ));
        }
        // The lock goes before the state directory: a lock whose directory is gone is stale,
        // and that must never be true of a lock someone still means to release.
        if let Some(b) = sd.bundle() {
            statedir::remove_bundle_leftovers(&b);
            lock::release(&b, t.id)?;
        }
        sd.remove()?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lifecycle::fake::Status;
    use crate::lifecycle::host::FakeHost;
    use crate::lifecycle::ops::testing::World;

    #[test]
    fn delete_removes_container_state_and_lock() {
        let w = World::new(FakeHost::user());
        let sd = w.container("c", Status::Stopped);
        let b = sd.bundle().unwrap();
        delete(&w.rt, &w.host, &Target::of(&sd), false).unwrap();
        assert_eq!(w.rt.status("c"), None);
        assert!(!sd.dir.exists());
        assert_eq!(lock::holder(&b).unwrap(), None);
    }

    #[test]
    fn a_running_container_needs_force() {
        let w = World::new(FakeHost::user());
        let sd = w.container("c", Status::Running);
        let t = Target::of(&sd);
        let e = delete(&w.rt, &w.host, &t, false).unwrap_err().to_string();
        assert_eq!(
            e,
            "delete failed: cannot delete container c that is not stopped: running"
        );
        assert!(
            sd.dir.is_dir(),
            "state kept when the runtime keeps the container"
        );
        delete(&w.rt, &w.host, &t, true).unwrap();
        assert!(!sd.dir.exists());
        assert_eq!(
            w.rt.calls.borrow().last().unwrap(),
            &["delete", "--force", "c"]
        );
    }

    #[test]
    fn leftover_state_of_a_container_the_runtime_forgot() {
        let w = World::new(FakeHost::user());
        let sd = w.container("c", Status::Stopped);
        w.rt.force_delete("c");
        delete(&w.rt, &w.host, &Target::of(&sd), false).unwrap();
        assert!(!sd.dir.exists());
    }

    #[test]
    fn an_unknown_container_without_state_is_an_error() {
        let w = World::new(FakeHost::user());
        let e = delete(&w.rt, &w.host, &Target { id: "c", sd: None }, false)
            .unwrap_err()
            .to_string();
        assert_eq!(e, "delete failed: container does not exist: c");
    }

    #[test]
    fn a_runtime_only_container_is_deleted() {
        let w = World::new(FakeHost::user());
        w.rt.add("c", Status::Stopped);
        delete(&w.rt, &w.host, &Target { id: "c", sd: None }, false).unwrap();
        assert_eq!(w.rt.status("c"), None);
    }

    #[test]
    fn a_container_whose_bundle_is_gone_is_still_deleted() {
        let w = World::new(FakeHost::user());
        let sd = w.container("c", Status::Stopped);
        std::fs::remove_dir_all(sd.bundle().unwrap()).unwrap();
        delete(&w.rt, &w.host, &Target::of(&sd), false).unwrap();
        assert!(!sd.dir.exists());
    }

    #[test]
    fn the_lock_of_another_container_is_left_alone() {
        let w = World::new(FakeHost::user());
        let sd = w.container("c", Status::Stopped);
        let b = sd.bundle().unwrap();
        std::fs::write(lock::marker(&b), "id=other\nroot=/r\n").unwrap();
        delete(&w.rt, &w.host, &Target::of(&sd), false).unwrap();
        assert_eq!(lock::holder(&b).unwrap().unwrap().unwrap().id, "other");
    }

    #[test]
    fn conmon_leftovers_go_with_the_container() {
        let w = World::new(FakeHost::user());
        let sd = w.container("c", Status::Stopped);
        let b = sd.bundle().unwrap();
        nix::unistd::mkfifo(&b.join("winsz"), nix::sys::stat::Mode::S_IRWXU).unwrap();
        delete(&w.rt, &w.host, &Target::of(&sd), false).unwrap();
        assert!(!b.join("winsz").exists());
    }

    #[test]
    fn delete_then_create_on_the_same_bundle_works() {
        let w = World::new(FakeHost::user());
        let sd = w.container("c", Status::Stopped);
        let b = sd.bundle().unwrap();
        delete(&w.rt, &w.host, &Target::of(&sd), false).unwrap();
        crate::lifecycle::ops::create::create(
            &w.rt,
            &w.host,
            &crate::lifecycle::ops::create::Request {
                bundle: &b,
                id: "c",
                pid_file: None,
            },
        )
        .unwrap();
        assert_eq!(w.rt.status("c"), Some(Status::Created));
    }
}
