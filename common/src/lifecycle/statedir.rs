//! The per-container state directory `<root>/containers/<id>/`: its layout, written out here
//! and nowhere else.
//!
//! The directory is private (0700, below the private state root) and holds:
//!
//! | file | written by | what |
//! |---|---|---|
//! | `bundle` | create, run | symlink to the absolute bundle path |
//! | `runtime` | create, run | path of the runtime that made the container; later operations use the same one (a runc container cannot be managed by crun) |
//! | `container.pid` | the runtime (`--pid-file`) | the container's init process (a symlink to the caller's `--pid-file` for `run`) |
//! | `launcher` | run | the shim's and its watchdog's pid and start time, whether the bundle is the run's, its dev:ino |
//! | `container.log` | create | stdout and stderr of a container without a terminal (conmon: the k8s-file log) |
//! | `runtime.log` | create (shim) | the runtime's `--log` |
//! | `console.sock` | run with a terminal | where the runtime sends the pty master |
//! | `conmon.pid` | conmon | the monitor's pid |
//! | `conmon.json` | oci-conmon-create | the container record it printed |
//! | `exit` | conmon (`--persist-dir`) | the container's exit status |
//!
//! What conmon insists on putting in the bundle (the attach socket and the `ctl`/`winsz` FIFOs:
//! conmon 2.1.6 creates them in its `--bundle` directory whatever `--socket-dir-path` says) is
//! reached through the `bundle` link, so a client only ever needs the container id.
//!
//! `delete` removes the whole directory (SingularityCE leaves the files behind).

use anyhow::{Context, Result, bail};
use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Symlink to the absolute bundle path.
pub const BUNDLE_LINK: &str = "bundle";
/// Path of the runtime that created the container.
pub const RUNTIME: &str = "runtime";
/// Pid of the container's init process.
pub const CONTAINER_PID: &str = "container.pid";
/// The launcher record of a foreground `run`.
pub const LAUNCHER: &str = "launcher";
/// Default container log.
pub const CONTAINER_LOG: &str = "container.log";
/// The runtime's own log (`--log`) for a shim `create`.
pub const RUNTIME_LOG: &str = "runtime.log";
/// The console socket of a `run` with a terminal.
pub const CONSOLE_SOCKET: &str = "console.sock";
/// Pid of the conmon monitor (conmon `--conmon-pidfile`).
pub const CONMON_PID: &str = "conmon.pid";
/// The container record oci-conmon-create printed.
pub const CREATE_RECORD: &str = "conmon.json";
/// Exit status of the container as decimal text (conmon `--persist-dir` writes `exit`).
pub const EXIT_FILE: &str = "exit";

/// conmon's attach socket, inside the bundle.
pub const ATTACH_SOCKET: &str = "attach";
/// conmon's terminal control FIFO, inside the bundle (`"1 rows cols\n"` resizes).
pub const CTL_FIFO: &str = "ctl";
/// conmon's window-size FIFO, inside the bundle.
pub const WINSZ_FIFO: &str = "winsz";
/// The conmon-made files in the bundle, removed once conmon is gone.
pub const BUNDLE_LEFTOVERS: [&str; 3] = [ATTACH_SOCKET, CTL_FIFO, WINSZ_FIFO];

/// The directory below the state root that holds every container's state directory.
pub const CONTAINERS: &str = "containers";

/// Container ids become path components and runtime arguments: keep them boring.
pub fn check_container_id(id: &str) -> Result<()> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && !id.starts_with('.')
        && !id.starts_with('-')
        // The runtime keeps its own state at <root>/<id>, beside our <root>/containers/.
        && id != CONTAINERS;
    if !ok {
        bail!("invalid container id '{id}' (use letters, digits, '-', '_' and '.')");
    }
    Ok(())
}

/// `<root>/containers/<id>`, for a checked id.
pub fn container_dir(root: &Path, id: &str) -> Result<PathBuf> {
    check_container_id(id)?;
    Ok(root.join(CONTAINERS).join(id))
}

/// One container's state directory.
#[derive(Debug)]
pub struct StateDir {
    pub dir: PathBuf,
    pub id: String,
}

impl StateDir {
    /// Create the directory of a new container. An id that is taken, in our state or in the
    /// runtime's (`<root>/<id>`, where crun and runc both keep theirs), fails before anything
    /// is made: a failed create deletes `ID` through the runtime, which must never hit another
    /// container.
    pub fn create(root: &Path, id: &str) -> Result<StateDir> {
        let dir = container_dir(root, id)?;
        if dir.symlink_metadata().is_ok() {
            bail!(
                "container '{id}' already exists (state directory {})",
                dir.display()
            );
        }
        if root.join(id).symlink_metadata().is_ok() {
            bail!(
                "container '{id}' already exists in the runtime state ({})",
                root.join(id).display()
            );
        }
        crate::fsutil::private_dir(&root.join(CONTAINERS))?;
        // create (not create_all): losing a race with another create of the same id fails
        // here rather than sharing the directory.
        match fs::DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => Ok(StateDir {
                dir,
                id: id.to_string(),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => bail!(
                "container '{id}' already exists (state directory {})",
                dir.display()
            ),
            Err(e) => Err(e).with_context(|| format!("cannot create {}", dir.display())),
        }
    }

    /// The state directory of an existing container, if there is one.
    pub fn open(root: &Path, id: &str) -> Result<Option<StateDir>> {
        let dir = container_dir(root, id)?;
        Ok(dir.is_dir().then(|| StateDir {
            dir,
            id: id.to_string(),
        }))
    }

    /// A file of the layout.
    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
    pub fn pid_file(&self) -> PathBuf {
        self.file(CONTAINER_PID)
    }
    pub fn container_log(&self) -> PathBuf {
        self.file(CONTAINER_LOG)
    }
    pub fn runtime_log(&self) -> PathBuf {
        self.file(RUNTIME_LOG)
    }
    pub fn exit_file(&self) -> PathBuf {
        self.file(EXIT_FILE)
    }

    /// Record which bundle and which runtime make this container.
    pub fn record(&self, bundle: &Path, runtime: &Path) -> Result<()> {
        self.link_bundle(bundle)?;
        self.write_new(RUNTIME, runtime.as_os_str().as_encoded_bytes())
    }

    /// The `bundle` link.
    pub fn link_bundle(&self, bundle: &Path) -> Result<()> {
        std::os::unix::fs::symlink(bundle, self.file(BUNDLE_LINK))
            .with_context(|| format!("cannot link {} to the bundle", self.dir.display()))
    }

    /// A new file in the fresh state directory, mode 0600. No temporary name and no fsync:
    /// nobody reads the directory before the create has reported, and a container does not
    /// outlive a crash (the state root is normally on tmpfs; an fsync on ext4 with discard
    /// cost ~10 ms per run here).
    pub fn write_new(&self, name: &str, bytes: &[u8]) -> Result<()> {
        let p = self.file(name);
        fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&p)
            .and_then(|mut f| f.write_all(bytes))
            .with_context(|| format!("cannot write {}", p.display()))
    }

    /// The bundle, through its link.
    pub fn bundle(&self) -> Option<PathBuf> {
        fs::read_link(self.file(BUNDLE_LINK)).ok()
    }

    /// The bundle, or why there is none.
    pub fn bundle_or_err(&self) -> Result<PathBuf> {
        let link = self.file(BUNDLE_LINK);
        fs::read_link(&link).with_context(|| format!("cannot read {}", link.display()))
    }

    /// The recorded runtime path.
    pub fn runtime(&self) -> Option<String> {
        fs::read_to_string(self.file(RUNTIME))
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
        let pid = parse_pid(&text)?;
        let written = fs::metadata(self.pid_file()).ok()?.modified().ok()?;
        let written = written
            .duration_since(std::time::UNIX_EPOCH)
            .ok()?
            .as_secs();
        let started = crate::lifecycle::proc::start_epoch(pid)?;
        pid_file_names(started, written).then_some(pid)
    }

    /// conmon's exit status, once written.
    pub fn exit_status(&self) -> Result<Option<i32>> {
        let p = self.exit_file();
        match fs::read_to_string(&p) {
            Ok(s) => crate::lifecycle::status::from_exit_file(&s)
                .with_context(|| format!("{} does not hold an exit status", p.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("cannot read {}", p.display())),
        }
    }

    /// Remove the whole directory.
    pub fn remove(&self) -> Result<()> {
        fs::remove_dir_all(&self.dir)
            .with_context(|| format!("cannot remove {}", self.dir.display()))
    }
}

/// A pid file's text: decimal, optional whitespace, positive.
pub fn parse_pid(text: &str) -> Option<i32> {
    text.trim().parse::<i32>().ok().filter(|&p| p > 0)
}

/// Read a pid file.
pub fn read_pid(path: &Path) -> Result<i32> {
    let s = fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    parse_pid(&s).with_context(|| format!("{} does not hold a pid: '{}'", path.display(), s.trim()))
}

/// A process that started (seconds since the epoch) no later than the pid file was written
/// (plus the clock's rounding) can be the one the file names; a later one reused the pid.
pub fn pid_file_names(process_started: u64, file_written: u64) -> bool {
    process_started <= file_written + 2
}

/// Remove conmon's FIFOs and socket from `bundle` (only FIFOs and sockets: a user's regular
/// file that happens to be called `ctl` is left alone).
pub fn remove_bundle_leftovers(bundle: &Path) {
    use std::os::unix::fs::FileTypeExt;
    for name in BUNDLE_LEFTOVERS {
        let p = bundle.join(name);
        if let Ok(m) = fs::symlink_metadata(&p)
            && (m.file_type().is_fifo() || m.file_type().is_socket())
        {
            let _ = fs::remove_file(&p);
        }
    }
}

/// Removes a half-made state directory unless disarmed with [`SdGuard::keep`].
pub struct SdGuard(Option<StateDir>);

impl SdGuard {
    pub fn new(sd: StateDir) -> SdGuard {
        SdGuard(Some(sd))
    }
    pub fn get(&self) -> &StateDir {
        self.0.as_ref().expect("state directory kept already")
    }
    /// The create succeeded: keep the directory.
    pub fn keep(mut self) -> StateDir {
        self.0.take().expect("state directory kept already")
    }
}

impl Drop for SdGuard {
    fn drop(&mut self) {
        if let Some(sd) = self.0.take() {
            let _ = sd.remove();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root() -> tempfile::TempDir {
        tempfile::tempdir().unwrap()
    }

    #[test]
    fn ids_that_are_fine() {
        for id in ["abc-123_x.y", "a", "A.b", "x-", &"z".repeat(128)] {
            assert!(check_container_id(id).is_ok(), "{id}");
        }
    }

    #[test]
    fn ids_that_are_refused() {
        for bad in [
            "",
            "../x",
            "a/b",
            "-x",
            ".hidden",
            "a b",
            "containers",
            "é",
            "a\nb",
            &"z".repeat(129),
        ] {
            let e = check_container_id(bad).unwrap_err().to_string();
            assert!(e.starts_with("invalid container id"), "{bad}: {e}");
        }
    }

    #[test]
    fn layout_is_below_containers() {
        assert_eq!(
            container_dir(Path::new("/r"), "c1").unwrap(),
            PathBuf::from("/r/containers/c1")
        );
        assert!(container_dir(Path::new("/r"), "../c1").is_err());
    }

    #[test]
    fn create_makes_a_private_directory() {
        use std::os::unix::fs::MetadataExt;
        let r = root();
        let sd = StateDir::create(r.path(), "c1").unwrap();
        assert_eq!(sd.dir, r.path().join("containers/c1"));
        assert_eq!(fs::metadata(&sd.dir).unwrap().mode() & 0o777, 0o700);
        assert_eq!(
            fs::metadata(r.path().join("containers")).unwrap().mode() & 0o777,
            0o700
        );
    }

    #[test]
    fn create_refuses_a_taken_id() {
        let r = root();
        let _s = StateDir::create(r.path(), "c1").unwrap();
        let e = StateDir::create(r.path(), "c1").unwrap_err().to_string();
        assert!(e.contains("container 'c1' already exists"), "{e}");
    }

    #[test]
    fn create_refuses_an_id_the_runtime_has() {
        let r = root();
        fs::create_dir(r.path().join("c1")).unwrap();
        let e = StateDir::create(r.path(), "c1").unwrap_err().to_string();
        assert!(e.contains("already exists in the runtime state"), "{e}");
        assert!(!r.path().join("containers/c1").exists());
    }

    #[test]
    fn create_refuses_a_symlink_in_place_of_the_directory() {
        let r = root();
        fs::create_dir(r.path().join("containers")).unwrap();
        std::os::unix::fs::symlink("/tmp", r.path().join("containers/c1")).unwrap();
        assert!(StateDir::create(r.path(), "c1").is_err());
    }

    #[test]
    fn open_finds_only_existing() {
        let r = root();
        assert!(StateDir::open(r.path(), "c1").unwrap().is_none());
        StateDir::create(r.path(), "c1").unwrap();
        assert_eq!(StateDir::open(r.path(), "c1").unwrap().unwrap().id, "c1");
        assert!(StateDir::open(r.path(), "bad/id").is_err());
    }

    #[test]
    fn record_and_read_back() {
        let r = root();
        let sd = StateDir::create(r.path(), "c1").unwrap();
        sd.record(Path::new("/b/bundle"), Path::new("/usr/bin/crun"))
            .unwrap();
        assert_eq!(sd.bundle(), Some(PathBuf::from("/b/bundle")));
        assert_eq!(sd.bundle_or_err().unwrap(), PathBuf::from("/b/bundle"));
        assert_eq!(sd.runtime().as_deref(), Some("/usr/bin/crun"));
    }

    #[test]
    fn record_twice_fails() {
        let r = root();
        let sd = StateDir::create(r.path(), "c1").unwrap();
        sd.record(Path::new("/b"), Path::new("/crun")).unwrap();
        assert!(sd.record(Path::new("/b"), Path::new("/crun")).is_err());
    }

    #[test]
    fn missing_records_read_as_none() {
        let r = root();
        let sd = StateDir::create(r.path(), "c1").unwrap();
        assert_eq!(sd.bundle(), None);
        assert_eq!(sd.runtime(), None);
        assert!(sd.bundle_or_err().is_err());
        sd.write_new(RUNTIME, b"").unwrap();
        assert_eq!(sd.runtime(), None, "an empty runtime file names none");
    }

    #[test]
    fn written_files_are_private() {
        use std::os::unix::fs::MetadataExt;
        let r = root();
        let sd = StateDir::create(r.path(), "c1").unwrap();
        sd.write_new(CREATE_RECORD, b"{}").unwrap();
        assert_eq!(
            fs::metadata(sd.file(CREATE_RECORD)).unwrap().mode() & 0o777,
            0o600
        );
    }

    #[test]
    fn remove_takes_everything() {
        let r = root();
        let sd = StateDir::create(r.path(), "c1").unwrap();
        sd.write_new(CONTAINER_LOG, b"x").unwrap();
        sd.remove().unwrap();
        assert!(StateDir::open(r.path(), "c1").unwrap().is_none());
    }

    #[test]
    fn guard_removes_unless_kept() {
        let r = root();
        drop(SdGuard::new(StateDir::create(r.path(), "c1").unwrap()));
        assert!(!r.path().join("containers/c1").exists());
        let kept = SdGuard::new(StateDir::create(r.path(), "c2").unwrap()).keep();
        assert!(kept.dir.is_dir());
    }

    #[test]
    fn pid_text() {
        assert_eq!(parse_pid("1234\n"), Some(1234));
        assert_eq!(parse_pid("  7 "), Some(7));
        for bad in ["", "0", "-5", "x", "12 13"] {
            assert_eq!(parse_pid(bad), None, "{bad}");
        }
    }

    #[test]
    fn pid_files_are_read() {
        let d = root();
        let p = d.path().join("p");
        fs::write(&p, "1234\n").unwrap();
        assert_eq!(read_pid(&p).unwrap(), 1234);
        fs::write(&p, "0").unwrap();
        assert!(
            read_pid(&p)
                .unwrap_err()
                .to_string()
                .contains("does not hold a pid")
        );
        assert!(read_pid(&d.path().join("none")).is_err());
    }

    #[test]
    fn a_pid_reused_after_the_file_was_written_is_not_the_container() {
        assert!(pid_file_names(100, 100));
        assert!(pid_file_names(102, 100), "clock rounding");
        assert!(pid_file_names(50, 100));
        assert!(!pid_file_names(103, 100));
    }

    #[test]
    fn live_pid_sees_a_running_process_but_not_a_later_one() {
        let d = root();
        let s = StateDir::create(d.path(), "c").unwrap();
        let me = std::process::id();
        fs::write(s.pid_file(), me.to_string()).unwrap();
        assert_eq!(s.live_pid(), Some(me as i32));
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
    fn exit_status_from_the_state_directory() {
        let d = root();
        let s = StateDir::create(d.path(), "c").unwrap();
        assert_eq!(s.exit_status().unwrap(), None);
        fs::write(s.exit_file(), "137").unwrap();
        assert_eq!(s.exit_status().unwrap(), Some(137));
        fs::write(s.exit_file(), "x").unwrap();
        assert!(s.exit_status().is_err());
    }

    #[test]
    fn leftovers_remove_only_fifos_and_sockets() {
        let d = root();
        let b = d.path();
        nix::unistd::mkfifo(&b.join(CTL_FIFO), nix::sys::stat::Mode::S_IRWXU).unwrap();
        let _l = std::os::unix::net::UnixListener::bind(b.join(ATTACH_SOCKET)).unwrap();
        fs::write(b.join(WINSZ_FIFO), "a user's file").unwrap();
        remove_bundle_leftovers(b);
        assert!(!b.join(CTL_FIFO).exists());
        assert!(fs::symlink_metadata(b.join(ATTACH_SOCKET)).is_err());
        assert!(b.join(WINSZ_FIFO).is_file());
    }
}
