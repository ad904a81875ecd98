//! `pause` and `resume`: freeze and thaw the container's processes (the cgroup freezer).

use super::{Target, simple};
use crate::lifecycle::host::Host;
use crate::lifecycle::process::{Output, Runtime};
use anyhow::Result;

/// Added to a failure of an unprivileged caller: the usual cause.
pub const FREEZER_HINT: &str = " (pause and resume need the cgroup freezer; rootless containers on hosts without cgroup delegation have none)";

pub fn pause(rt: &dyn Runtime, host: &dyn Host, t: &Target) -> Result<Output> {
    simple(rt, host, t, "pause", &[], FREEZER_HINT)
}

pub fn resume(rt: &dyn Runtime, host: &dyn Host, t: &Target) -> Result<Output> {
    simple(rt, host, t, "resume", &[], FREEZER_HINT)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lifecycle::fake::Status;
    use crate::lifecycle::host::FakeHost;
    use crate::lifecycle::ops::testing::World;

    #[test]
    fn pause_and_resume() {
        let w = World::new(FakeHost::user());
        let sd = w.container("c", Status::Running);
        let t = Target::of(&sd);
        pause(&w.rt, &w.host, &t).unwrap();
        assert_eq!(w.rt.status("c"), Some(Status::Paused));
        resume(&w.rt, &w.host, &t).unwrap();
        assert_eq!(w.rt.status("c"), Some(Status::Running));
    }

    #[test]
    fn pausing_a_created_container_fails_with_the_hint() {
        let w = World::new(FakeHost::user());
        let sd = w.container("c", Status::Created);
        let e = pause(&w.rt, &w.host, &Target::of(&sd))
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            format!("pause failed: container not running{FREEZER_HINT}")
        );
    }

    #[test]
    fn resuming_a_running_container_fails() {
        let w = World::new(FakeHost::host_root());
        let sd = w.container("c", Status::Running);
        let e = resume(&w.rt, &w.host, &Target::of(&sd))
            .unwrap_err()
            .to_string();
        assert_eq!(
            e, "resume failed: container not paused",
            "root gets no hint"
        );
    }
}
