//! `state` of one container and `list` of all of them: the runtime's JSON and table, as is.

use super::{Target, checked, simple};
use crate::lifecycle::host::Host;
use crate::lifecycle::process::{Call, Output, Runtime};
use anyhow::Result;

pub fn state(rt: &dyn Runtime, host: &dyn Host, t: &Target) -> Result<Output> {
    simple(rt, host, t, "state", &[], "")
}

pub fn list(rt: &dyn Runtime) -> Result<Output> {
    checked(rt, "list", &Call::new(["list"]), "")
}

/// The `status` field of the runtime's state JSON.
pub fn status_of(out: &Output) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    v.get("status")?.as_str().map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lifecycle::fake::Status;
    use crate::lifecycle::host::FakeHost;
    use crate::lifecycle::ops::testing::World;
    use crate::lifecycle::ops::{delete, kill, pause, start};

    fn st(w: &World, t: &Target) -> String {
        status_of(&state(&w.rt, &w.host, t).unwrap()).unwrap()
    }

    #[test]
    fn the_whole_life_of_a_container() {
        let w = World::new(FakeHost::user());
        let sd = w.container("c", Status::Created);
        let t = Target::of(&sd);
        assert_eq!(st(&w, &t), "created");
        start::start(&w.rt, &w.host, &t).unwrap();
        assert_eq!(st(&w, &t), "running");
        pause::pause(&w.rt, &w.host, &t).unwrap();
        assert_eq!(st(&w, &t), "paused");
        pause::resume(&w.rt, &w.host, &t).unwrap();
        assert_eq!(st(&w, &t), "running");
        kill::kill(&w.rt, &w.host, &t, "TERM").unwrap();
        assert_eq!(st(&w, &t), "stopped");
        delete::delete(&w.rt, &w.host, &t, false).unwrap();
        drop(sd);
        assert!(!w.root().join("containers/c").exists());
        let e = state(&w.rt, &w.host, &Target { id: "c", sd: None })
            .unwrap_err()
            .to_string();
        assert_eq!(e, "state failed: container does not exist: c");
    }

    #[test]
    fn state_prints_the_runtimes_json() {
        let w = World::new(FakeHost::user());
        let sd = w.container("c", Status::Running);
        let out = state(&w.rt, &w.host, &Target::of(&sd)).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["id"], "c");
    }

    #[test]
    fn list_shows_every_container() {
        let w = World::new(FakeHost::user());
        w.rt.add("a", Status::Running);
        w.rt.add("b", Status::Created);
        let out = String::from_utf8(list(&w.rt).unwrap().stdout).unwrap();
        assert!(out.contains("a  ") && out.contains("b  "), "{out}");
    }

    #[test]
    fn status_of_garbage() {
        assert_eq!(status_of(&Output::default()), None);
    }
}
