//! `kill`: send a signal. The signal is checked here, so a bad name is one FATAL line before
//! the container is even looked up in the runtime.

use super::{Target, simple};
use crate::lifecycle::host::Host;
use crate::lifecycle::process::{Output, Runtime};
use crate::lifecycle::signals;
use anyhow::Result;

pub fn kill(rt: &dyn Runtime, host: &dyn Host, t: &Target, signal: &str) -> Result<Output> {
    let n = signals::parse(signal)?;
    simple(rt, host, t, "kill", &[n.to_string()], "")
}

/// The signal `kill` sends, SingularityCE's way: a second positional overrides `-s`, and `-f`
/// overrides both; TERM by default.
pub fn signal_to_send(flag: Option<&str>, positional: Option<&str>, force: bool) -> String {
    if force {
        return "KILL".into();
    }
    positional.or(flag).unwrap_or("TERM").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lifecycle::fake::Status;
    use crate::lifecycle::host::FakeHost;
    use crate::lifecycle::ops::testing::World;

    #[test]
    fn the_runtime_gets_a_number() {
        let w = World::new(FakeHost::user());
        let sd = w.container("c", Status::Running);
        kill(&w.rt, &w.host, &Target::of(&sd), "SIGKILL").unwrap();
        assert_eq!(w.rt.calls.borrow().last().unwrap(), &["kill", "c", "9"]);
        assert_eq!(w.rt.status("c"), Some(Status::Stopped));
    }

    #[test]
    fn a_non_fatal_signal_keeps_it_running() {
        let w = World::new(FakeHost::user());
        let sd = w.container("c", Status::Running);
        kill(&w.rt, &w.host, &Target::of(&sd), "USR1").unwrap();
        assert_eq!(w.rt.status("c"), Some(Status::Running));
        assert_eq!(w.rt.container("c").unwrap().signals, [libc::SIGUSR1]);
    }

    #[test]
    fn a_bad_signal_calls_nothing() {
        let w = World::new(FakeHost::user());
        let sd = w.container("c", Status::Running);
        let e = kill(&w.rt, &w.host, &Target::of(&sd), "NOPE").unwrap_err();
        assert!(e.to_string().starts_with("invalid signal 'NOPE'"), "{e}");
        assert!(w.rt.calls.borrow().is_empty());
        assert!(w.host.events().is_empty(), "no namespace joined either");
    }

    #[test]
    fn killing_a_stopped_container() {
        let w = World::new(FakeHost::user());
        let sd = w.container("c", Status::Stopped);
        let e = kill(&w.rt, &w.host, &Target::of(&sd), "TERM").unwrap_err();
        assert_eq!(e.to_string(), "kill failed: container not running");
    }

    #[test]
    fn signal_precedence_follows_singularity() {
        assert_eq!(signal_to_send(None, None, false), "TERM");
        assert_eq!(signal_to_send(Some("INT"), None, false), "INT");
        assert_eq!(signal_to_send(Some("INT"), Some("HUP"), false), "HUP");
        assert_eq!(signal_to_send(Some("INT"), Some("HUP"), true), "KILL");
        assert_eq!(signal_to_send(None, None, true), "KILL");
    }
}
