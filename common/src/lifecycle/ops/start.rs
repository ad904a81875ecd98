//! `start`: run the process of a created container.

use super::{Target, simple};
use crate::lifecycle::host::Host;
use crate::lifecycle::process::{Output, Runtime};
use anyhow::Result;

pub fn start(rt: &dyn Runtime, host: &dyn Host, t: &Target) -> Result<Output> {
    simple(rt, host, t, "start", &[], "")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lifecycle::fake::Status;
    use crate::lifecycle::host::FakeHost;
    use crate::lifecycle::ops::testing::World;

    #[test]
    fn created_becomes_running() {
        let w = World::new(FakeHost::user());
        let sd = w.container("c", Status::Created);
        start(&w.rt, &w.host, &Target::of(&sd)).unwrap();
        assert_eq!(w.rt.status("c"), Some(Status::Running));
    }

    #[test]
    fn starting_twice_fails_in_the_runtimes_words() {
        let w = World::new(FakeHost::user());
        let sd = w.container("c", Status::Created);
        let t = Target::of(&sd);
        start(&w.rt, &w.host, &t).unwrap();
        let e = start(&w.rt, &w.host, &t).unwrap_err().to_string();
        assert_eq!(e, "start failed: cannot start an already running container");
    }

    #[test]
    fn a_stopped_container_cannot_start() {
        let w = World::new(FakeHost::user());
        let sd = w.container("c", Status::Stopped);
        let e = start(&w.rt, &w.host, &Target::of(&sd))
            .unwrap_err()
            .to_string();
        assert_eq!(e, "start failed: cannot start a container that has stopped");
    }

    #[test]
    fn start_runs_in_the_containers_namespace() {
        let w = World::new(FakeHost::user());
        let sd = w.container("c", Status::Created);
        start(&w.rt, &w.host, &Target::of(&sd)).unwrap();
        assert_eq!(w.host.events().len(), 1);
        assert_eq!(w.rt.calls.borrow().last().unwrap(), &["start", "c"]);
    }
}
