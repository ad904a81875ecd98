//! The operations, one file each. An operation takes the [`Runtime`] to drive, the [`Host`]
//! it runs on and the container's [`Target`], and returns what the runtime printed, or one
//! error in the user's terms. The binaries only parse options and print.

pub mod attach;
pub mod create;
pub mod delete;
pub mod exec;
pub mod kill;
pub mod pause;
pub mod start;
pub mod state;
pub mod update;

use super::error;
use super::host::Host;
use super::process::{Call, Output, Runtime};
use super::statedir::StateDir;
use super::userns::{self, Decision};
use anyhow::{Result, bail};
use std::path::Path;

/// An existing container, as an operation sees it.
pub struct Target<'a> {
    pub id: &'a str,
    /// Its state directory, when one of our tools made it (a container made by the runtime
    /// alone has none, and is still managed by id).
    pub sd: Option<&'a StateDir>,
}

impl<'a> Target<'a> {
    /// The target of a container that has a state directory.
    pub fn of(sd: &'a StateDir) -> Target<'a> {
        Target {
            id: &sd.id,
            sd: Some(sd),
        }
    }
}

/// Open container `id` under `root`: its state directory, and the runtime recorded there.
pub fn open(root: &Path, id: &str) -> Result<Option<StateDir>> {
    StateDir::open(root, id)
}

/// A container with no state directory of ours must at least be known to the runtime.
pub fn require_known(rt: &dyn Runtime, t: &Target) -> Result<()> {
    if t.sd.is_none() && !rt.knows(t.id) {
        bail!(
            "no such container '{}' (state root {})",
            t.id,
            rt.root().display()
        );
    }
    Ok(())
}

/// Join the container's outer user namespace when the rule says so (see
/// [`super::userns::decide`]). `strict`: the operation cannot work from outside it.
pub fn enter(host: &dyn Host, t: &Target, strict: bool) -> Result<()> {
    let pid = t.sd.and_then(StateDir::live_pid);
    match userns::decide(host.privileged(), pid, |p| host.relation_to(p), strict)? {
        Decision::Stay => Ok(()),
        Decision::Join(pid) => match host.join_outer_of(pid) {
            Ok(()) => Ok(()),
            Err(e) if strict => Err(e),
            Err(e) => {
                crate::cli::debug(format!("not joining the container's namespace: {e:#}"));
                Ok(())
            }
        },
    }
}

/// Run `call`; a failure becomes `WHAT failed: <the runtime's last words>` plus `hint`.
pub fn checked(rt: &dyn Runtime, what: &str, call: &Call, hint: &str) -> Result<Output> {
    let out = rt.call(call)?;
    if out.success() {
        return Ok(out);
    }
    bail!(
        "{}{hint}",
        error::failure(what, &out.stderr, &rt.name(), out.code)
    )
}

/// `OP ID [EXTRA...]` on an existing container: join its namespace, run, fail in one line.
/// `hint` is added to a failure of an unprivileged caller.
pub fn simple(
    rt: &dyn Runtime,
    host: &dyn Host,
    t: &Target,
    op: &str,
    extra: &[String],
    hint: &str,
) -> Result<Output> {
    enter(host, t, false)?;
    let mut words = vec![op.to_string(), t.id.to_string()];
    words.extend(extra.iter().cloned());
    let hint = if host.privileged() { "" } else { hint };
    checked(rt, op, &Call::new(words), hint)
}

/// The runtime's stderr of a successful operation, without the noise: runc's `list` trips over
/// our own `containers/` directory under the same root, and says so every time.
pub fn significant_stderr(stderr: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(stderr)
        .lines()
        .filter(|l| !l.contains("load container containers:"))
        .map(str::to_string)
        .collect()
}

/// Hand a successful operation's output to the caller: stdout as is, stderr without noise.
pub fn pass_through(out: &Output) {
    use std::io::Write;
    let _ = std::io::stdout().write_all(&out.stdout);
    let _ = std::io::stdout().flush();
    for l in significant_stderr(&out.stderr) {
        eprintln!("{l}");
    }
}

#[cfg(test)]
pub(crate) mod testing {
    //! A state root with a fake runtime and host, for the operations' tests.
    use super::super::fake::{FakeRuntime, Status};
    use super::super::host::FakeHost;
    use super::super::runtime::RuntimeKind;
    use super::super::statedir::StateDir;
    use std::path::{Path, PathBuf};

    pub struct World {
        pub dir: tempfile::TempDir,
        pub rt: FakeRuntime,
        pub host: FakeHost,
    }

    impl World {
        pub fn new(host: FakeHost) -> World {
            let dir = tempfile::tempdir().unwrap();
            let root = dir.path().join("root");
            std::fs::create_dir(&root).unwrap();
            World {
                rt: FakeRuntime::new(RuntimeKind::Runc, &root),
                dir,
                host,
            }
        }
        pub fn crun(host: FakeHost) -> World {
            let mut w = World::new(host);
            w.rt = FakeRuntime::new(RuntimeKind::Crun, &w.root());
            w
        }
        pub fn root(&self) -> PathBuf {
            self.dir.path().join("root")
        }
        /// A bundle with a config.json.
        pub fn bundle(&self, name: &str, config: &str) -> PathBuf {
            let b = self.dir.path().join(name);
            std::fs::create_dir_all(b.join("rootfs")).unwrap();
            std::fs::write(b.join("config.json"), config).unwrap();
            b
        }
        /// A container in `status` with a state directory linked to a bundle, as create
        /// leaves it.
        pub fn container(&self, id: &str, status: Status) -> StateDir {
            let b = self.bundle(&format!("b-{id}"), r#"{"process":{"args":["sh"]}}"#);
            self.rt.add(id, status);
            let sd = StateDir::create(&self.root(), id).unwrap();
            sd.record(&b, Path::new("/usr/bin/runc")).unwrap();
            std::fs::write(sd.pid_file(), std::process::id().to_string()).unwrap();
            super::super::lock::lock(&b, id, &self.root(), &|_, _, _| false).unwrap();
            sd
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::fake::Status;
    use super::super::host::FakeHost;
    use super::super::userns::Relation;
    use super::testing::World;
    use super::*;

    #[test]
    fn unknown_container_without_state() {
        let w = World::new(FakeHost::user());
        let t = Target { id: "c", sd: None };
        let e = require_known(&w.rt, &t).unwrap_err().to_string();
        assert_eq!(
            e,
            format!("no such container 'c' (state root {})", w.root().display())
        );
    }

    #[test]
    fn a_runtime_only_container_is_known() {
        let w = World::new(FakeHost::user());
        w.rt.add("c", Status::Running);
        require_known(&w.rt, &Target { id: "c", sd: None }).unwrap();
    }

    #[test]
    fn a_state_directory_is_enough() {
        let w = World::new(FakeHost::user());
        let sd = w.container("c", Status::Running);
        w.rt.force_delete("c");
        require_known(&w.rt, &Target::of(&sd)).unwrap();
    }

    #[test]
    fn enter_joins_a_running_containers_namespace() {
        let w = World::new(FakeHost::user());
        let sd = w.container("c", Status::Running);
        enter(&w.host, &Target::of(&sd), false).unwrap();
        assert_eq!(w.host.events(), [format!("join {}", std::process::id())]);
    }

    #[test]
    fn enter_stays_for_host_root() {
        let w = World::new(FakeHost::host_root());
        let sd = w.container("c", Status::Running);
        enter(&w.host, &Target::of(&sd), true).unwrap();
        assert!(w.host.events().is_empty());
    }

    #[test]
    fn enter_stays_without_a_live_pid() {
        let w = World::new(FakeHost::user());
        let sd = w.container("c", Status::Stopped);
        std::fs::remove_file(sd.pid_file()).unwrap();
        enter(&w.host, &Target::of(&sd), true).unwrap();
        assert!(w.host.events().is_empty());
    }

    #[test]
    fn a_failed_join_fails_only_strict_operations() {
        let w = World::new(FakeHost {
            join_fails: true,
            ..FakeHost::user()
        });
        let sd = w.container("c", Status::Running);
        let t = Target::of(&sd);
        enter(&w.host, &t, false).unwrap();
        let e = enter(&w.host, &t, true).unwrap_err().to_string();
        assert_eq!(e, "cannot join the container's user namespace");
    }

    #[test]
    fn an_unreachable_namespace_fails_only_strict_operations() {
        let w = World::new(FakeHost {
            relation: Some(Relation::Unreachable),
            ..FakeHost::user()
        });
        let sd = w.container("c", Status::Running);
        let t = Target::of(&sd);
        enter(&w.host, &t, false).unwrap();
        assert!(enter(&w.host, &t, true).is_err());
    }

    #[test]
    fn checked_failure_message_and_hint() {
        let w = World::new(FakeHost::user());
        let e = checked(&w.rt, "pause", &Call::new(["pause", "x"]), " (hint)")
            .unwrap_err()
            .to_string();
        assert_eq!(e, "pause failed: container does not exist: x (hint)");
    }

    #[test]
    fn checked_failure_without_words() {
        let w = World::new(FakeHost::user());
        w.rt.add("x", Status::Running);
        w.rt.fail_next("start", "");
        let e = checked(&w.rt, "start", &Call::new(["start", "x"]), "")
            .unwrap_err()
            .to_string();
        assert_eq!(e, "start failed: runc exited with 1");
    }

    #[test]
    fn hints_are_for_unprivileged_callers_only() {
        let w = World::new(FakeHost::host_root());
        let t = Target { id: "x", sd: None };
        let e = simple(&w.rt, &w.host, &t, "pause", &[], " (hint)")
            .unwrap_err()
            .to_string();
        assert!(!e.contains("hint"), "{e}");
    }

    #[test]
    fn runc_list_noise_is_dropped() {
        let lines = significant_stderr(
            b"time=x level=warning msg=\"load container containers: bad\"\nreal warning\n",
        );
        assert_eq!(lines, ["real warning"]);
    }
}
