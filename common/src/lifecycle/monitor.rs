//! conmon, the monitor of a background container: is it still running, has it written the exit
//! status. `oci-conmon-create` starts it, `oci-attach` waits on it, `delete` waits for it to
//! finish before removing the state directory.

use super::statedir::{CONMON_PID, StateDir, read_pid};
use anyhow::Result;
use std::path::Path;
use std::time::{Duration, Instant};

/// True while the conmon monitoring the container of `sd` is running. A zombie does not count:
/// a daemonised conmon is reparented to PID 1, which may take seconds to reap it.
pub fn running(sd: &StateDir) -> bool {
    read_pid(&sd.file(CONMON_PID)).is_ok_and(|pid| super::proc::is_running(pid, "conmon"))
}

/// Poll `done` with a doubling pause (1 ms up to 50 ms) until it holds or `timeout` passes.
/// True when it held.
pub fn poll_until(timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(1);
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

/// Wait (at most `timeout`) until the conmon of `sd` has finished: after the container exits it
/// still writes the exit file into `sd` and runs the exit command, so whoever removes `sd` must
/// wait for this first. True when conmon is gone.
pub fn wait_gone(sd: &StateDir, timeout: Duration) -> bool {
    poll_until(timeout, || !running(sd))
}

/// Wait up to `timeout` for conmon's exit file. conmon closes the attach connections just before
/// writing it, so an attach client that sees end-of-stream finds it within milliseconds.
pub fn wait_exit_status(sd: &StateDir, timeout: Duration) -> Result<Option<i32>> {
    let mut status = Ok(None);
    poll_until(timeout, || {
        status = sd.exit_status();
        !matches!(status, Ok(None))
    });
    status
}

/// conmon's exit command (`oci-runtime-shim conmon-exited`), run after the container has exited
/// and conmon has written its exit status: remove conmon's FIFOs and socket from `bundle`, and
/// nothing else (the runtime keeps the container as `stopped`, so `state` still answers and
/// `delete` removes it). `sd` is the container's state directory, `conmon` the pid of the conmon
/// that runs us.
pub fn exit_cleanup(sd: &Path, bundle: &Path, conmon: i32) {
    let id = sd.file_name().map(|n| n.to_string_lossy().into_owned());
    let recorded = read_pid(&sd.join(CONMON_PID)).ok();
    let sd_exists = sd.symlink_metadata().is_ok();
    let holder = super::lock::holder(bundle).ok();
    if leftovers_are_ours(recorded, sd_exists, conmon, holder, id.as_deref()) {
        super::statedir::remove_bundle_leftovers(bundle);
    }
}

/// The FIFOs are certainly this conmon's when the state directory still names it as the
/// monitor, or when the state directory is gone (the container is being deleted) and the bundle
/// is unlocked or still locked by this container's id. A new container on the same bundle has
/// its state directory before it takes the lock, so a quick `delete --force` + `create` never
/// loses the new container's FIFOs.
pub fn leftovers_are_ours(
    recorded_monitor: Option<i32>,
    sd_exists: bool,
    conmon: i32,
    holder: Option<Option<Option<super::lock::Holder>>>,
    id: Option<&str>,
) -> bool {
    match recorded_monitor {
        Some(pid) => pid == conmon,
        None if sd_exists => false,
        None => match holder {
            Some(None) => true,
            Some(Some(Some(h))) => Some(h.id.as_str()) == id,
            _ => false,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sd() -> (tempfile::TempDir, StateDir) {
        let r = tempfile::tempdir().unwrap();
        let s = StateDir::create(r.path(), "c").unwrap();
        (r, s)
    }

    #[test]
    fn no_pid_file_no_monitor() {
        let (_r, s) = sd();
        assert!(!running(&s));
        assert!(wait_gone(&s, Duration::ZERO));
    }

    #[test]
    fn a_pid_that_is_not_conmon_is_no_monitor() {
        let (_r, s) = sd();
        s.write_new(CONMON_PID, std::process::id().to_string().as_bytes())
            .unwrap();
        assert!(!running(&s));
    }

    #[test]
    fn poll_until_stops_at_the_deadline() {
        let t = Instant::now();
        assert!(!poll_until(Duration::from_millis(30), || false));
        assert!(t.elapsed() >= Duration::from_millis(30));
        let mut n = 0;
        assert!(poll_until(Duration::from_secs(5), || {
            n += 1;
            n == 3
        }));
    }

    #[test]
    fn exit_status_is_waited_for() {
        let (_r, s) = sd();
        assert_eq!(
            wait_exit_status(&s, Duration::from_millis(5)).unwrap(),
            None
        );
        std::fs::write(s.exit_file(), "0").unwrap();
        assert_eq!(wait_exit_status(&s, Duration::ZERO).unwrap(), Some(0));
        std::fs::write(s.exit_file(), "bad").unwrap();
        assert!(wait_exit_status(&s, Duration::ZERO).is_err());
    }

    use crate::lifecycle::lock::Holder;

    fn h(id: &str) -> Option<Option<Option<Holder>>> {
        Some(Some(Some(Holder {
            id: id.into(),
            root: "/r".into(),
        })))
    }

    #[test]
    fn our_monitor_cleans_up() {
        assert!(leftovers_are_ours(
            Some(10),
            true,
            10,
            h("other"),
            Some("c")
        ));
    }

    #[test]
    fn another_monitor_does_not() {
        assert!(!leftovers_are_ours(Some(11), true, 10, h("c"), Some("c")));
    }

    #[test]
    fn a_state_directory_without_our_pid_is_someone_elses() {
        assert!(!leftovers_are_ours(None, true, 10, Some(None), Some("c")));
    }

    #[test]
    fn deleted_and_unlocked_is_ours() {
        assert!(leftovers_are_ours(None, false, 10, Some(None), Some("c")));
    }

    #[test]
    fn deleted_and_still_locked_by_us_is_ours() {
        assert!(leftovers_are_ours(None, false, 10, h("c"), Some("c")));
    }

    #[test]
    fn deleted_and_locked_by_a_new_container_is_not() {
        assert!(!leftovers_are_ours(None, false, 10, h("new"), Some("c")));
    }

    #[test]
    fn an_unreadable_lock_is_not_ours() {
        assert!(!leftovers_are_ours(
            None,
            false,
            10,
            Some(Some(None)),
            Some("c")
        ));
        assert!(!leftovers_are_ours(None, false, 10, None, Some("c")));
    }

    #[test]
    fn exit_cleanup_removes_the_fifos_of_its_own_container() {
        let r = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        let s = StateDir::create(r.path(), "c").unwrap();
        s.write_new(CONMON_PID, b"4242").unwrap();
        nix::unistd::mkfifo(&b.path().join("ctl"), nix::sys::stat::Mode::S_IRWXU).unwrap();
        exit_cleanup(&s.dir, b.path(), 4243);
        assert!(b.path().join("ctl").exists(), "another conmon's");
        exit_cleanup(&s.dir, b.path(), 4242);
        assert!(!b.path().join("ctl").exists());
    }
}
