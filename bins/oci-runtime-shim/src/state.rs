//! The shim's per-container state directory.
//!
//! `<root>/containers/<id>/` (mode 0700, below the runtime's own `--root`) holds:
//! * `bundle`: symlink to the absolute bundle path;
//! * `runtime`: the runtime binary that created the container, so later invocations use the same
//!   one (a runc container cannot be managed by crun);
//! * `container.pid`: the container process (written by the runtime's `--pid-file`);
//! * `container.log`: stdout and stderr of a plain `create`d container (it has no terminal);
//! * `runtime.log`: the runtime's `--log` for `create`.
//!
//! `delete` removes the whole directory (SingularityCE leaves the files behind, so a later
//! container with the same id would find a stale pid or log).
//!
//! The bundle lock is `common::bundlelock`; the shim judges a holder alive by asking the runtime
//! that created it.

use anyhow::{Context, Result, bail};
use std::fs;
use std::path::{Path, PathBuf};

pub struct StateDir {
    pub dir: PathBuf,
}

impl StateDir {
    pub fn path(root: &Path, id: &str) -> Result<PathBuf> {
        common::statedir::container_dir(root, id)
    }

    /// Create the directory for a new container; an existing one means the id is taken.
    pub fn create(root: &Path, id: &str) -> Result<StateDir> {
        let dir = Self::path(root, id)?;
        common::fsutil::private_dir(&root.join("containers"))?;
        match fs::DirBuilder::new().mode_0700().create(&dir) {
            Ok(()) => Ok(StateDir { dir }),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                bail!(
                    "container '{id}' already exists (state in {})",
                    dir.display()
                )
            }
            Err(e) => Err(e).with_context(|| format!("cannot create {}", dir.display())),
        }
    }

    pub fn open(root: &Path, id: &str) -> Result<Option<StateDir>> {
        let dir = Self::path(root, id)?;
        Ok(dir.is_dir().then_some(StateDir { dir }))
    }

    pub fn pid_file(&self) -> PathBuf {
        self.dir.join("container.pid")
    }
    pub fn container_log(&self) -> PathBuf {
        self.dir.join("container.log")
    }
    pub fn runtime_log(&self) -> PathBuf {
        self.dir.join("runtime.log")
    }

    pub fn record(&self, bundle: &Path, runtime: &Path) -> Result<()> {
        std::os::unix::fs::symlink(bundle, self.dir.join("bundle"))
            .context("cannot write the bundle link")?;
        // A plain write, no fsync: this directory is fresh and private, and a crash loses the
        // container with it (an fsync on ext4 with discard cost ~10 ms per run here).
        fs::write(
            self.dir.join("runtime"),
            runtime.as_os_str().as_encoded_bytes(),
        )
        .context("cannot record the runtime")
    }

    pub fn bundle(&self) -> Option<PathBuf> {
        fs::read_link(self.dir.join("bundle")).ok()
    }

    pub fn runtime(&self) -> Option<String> {
        fs::read_to_string(self.dir.join("runtime"))
            .ok()
            .filter(|s| !s.is_empty())
    }

    /// The container pid, if the pid file names a live process that is still the container.
    ///
    /// pid_max is small on many hosts (32768 here), so a pid can be reused soon after the
    /// container died: a process that started after the runtime wrote the pid file is someone
    /// else, and joining its namespace would be wrong.
    pub fn live_pid(&self) -> Option<i32> {
        let text = fs::read_to_string(self.pid_file()).ok()?;
        let pid: i32 = text.trim().parse().ok()?;
        let written = fs::metadata(self.pid_file()).ok()?.modified().ok()?;
        let written = written
            .duration_since(std::time::UNIX_EPOCH)
            .ok()?
            .as_secs();
        let started = process_start_epoch(pid)?;
        (pid > 0 && started <= written + 2).then_some(pid)
    }

    pub fn remove(self) -> Result<()> {
        fs::remove_dir_all(&self.dir)
            .with_context(|| format!("cannot remove {}", self.dir.display()))
    }
}

/// When process `pid` started, in seconds since the epoch (from /proc/PID/stat and btime).
fn process_start_epoch(pid: i32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Field 22 (starttime); fields after the ")" of the command name start at field 3.
    let ticks: u64 = stat
        .rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(19)?
        .parse()
        .ok()?;
    let btime: u64 = fs::read_to_string("/proc/stat")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let hz = if hz > 0 { hz as u64 } else { 100 };
    Some(btime + ticks / hz)
}

trait Mode0700 {
    fn mode_0700(&mut self) -> &mut Self;
}
impl Mode0700 for fs::DirBuilder {
    fn mode_0700(&mut self) -> &mut Self {
        use std::os::unix::fs::DirBuilderExt;
        self.mode(0o700)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn live_pid_sees_a_running_process_but_not_a_later_one() {
        let d = tempfile::tempdir().unwrap();
        let s = StateDir::create(d.path(), "c").unwrap();
        let me = std::process::id();
        fs::write(s.pid_file(), me.to_string()).unwrap();
        assert_eq!(s.live_pid(), Some(me as i32));
        // A pid file written long before the process started names an earlier process.
        let old = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1000);
        fs::File::options()
            .write(true)
            .open(s.pid_file())
            .unwrap()
            .set_modified(old)
            .unwrap();
        assert_eq!(s.live_pid(), None);
        fs::write(s.pid_file(), "999999999").unwrap();
        assert_eq!(s.live_pid(), None);
    }

    #[test]
    fn state_dir_refuses_a_taken_id() {
        let d = tempfile::tempdir().unwrap();
        let s = StateDir::create(d.path(), "c1").unwrap();
        assert!(StateDir::create(d.path(), "c1").is_err());
        s.remove().unwrap();
        assert!(StateDir::open(d.path(), "c1").unwrap().is_none());
    }
}
