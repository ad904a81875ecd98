//! A foreground container lives no longer than its launcher (`run`).
//!
//! * The shim asks for SIGKILL when its parent (the front, or whoever typed the chain) dies
//!   (`PR_SET_PDEATHSIG`), and gives the runtime process the same rule towards the shim, so a
//!   `kill -9` anywhere up the chain takes the runtime down at once.
//! * Neither a SIGKILLed shim nor a SIGKILLed runtime can clean up, so before the runtime starts
//!   the shim forks a watchdog: a copy of itself, in the same namespaces, that ignores every
//!   signal and sleeps on a pipe whose only writer is the shim. A normal end writes one byte and
//!   the watchdog exits; end of file means the shim died, and the watchdog kills and deletes the
//!   container through the runtime, removes the state directory and the bundle, and exits.
//!
//! The watchdog is a fork without exec (no new program is loaded): about 0.1 ms per run.
//!
//! If the watchdog dies too (the whole process group killed, the OOM killer), the state directory
//! records both processes (`launcher`); the next `run` of the same user sweeps every container
//! whose shim and watchdog are both gone: the runtime's `delete --force`, the bundle (when that
//! run removed its bundle), the state directory.

use anyhow::{Context, Result, bail};
use common::lifecycle::statedir::{self, StateDir};
use common::process::start_ticks;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;

/// The front exports its pid here for the chain it starts (the starter execs the shim in the
/// same process, so the shim's parent is the front).
pub const ENV_LAUNCHER_PID: &str = common::bundlesweep::ENV_LAUNCHER_PID;

/// Die with SIGKILL when the parent process dies; fail when it is already gone.
pub fn die_with_parent() -> Result<()> {
    let parent = nix::unistd::getppid();
    nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
        .context("cannot ask for the parent-death signal")?;
    // The parent may have died before the request: then we were re-parented already, to PID 1
    // or to a subreaper, which only the launcher's own pid tells apart.
    let launcher = std::env::var(ENV_LAUNCHER_PID)
        .ok()
        .and_then(|v| v.parse::<i32>().ok());
    let now = nix::unistd::getppid();
    if now != parent || now.as_raw() == 1 || launcher.is_some_and(|l| l != now.as_raw()) {
        bail!("the process that started oci-runtime-shim run is gone");
    }
    Ok(())
}

/// Make `cmd`'s process die with SIGKILL when the shim dies.
///
/// The signal follows the *thread* that forked the child: the shim spawns the runtime from its
/// only thread, which lives until the shim exits. A shim killed between the fork and the
/// request would never send it, and the watchdog's `delete` would already have found nothing
/// to delete: the runtime would then make the container with nobody left to remove it. So the
/// child checks, after the request, that its parent is still the shim, and runs nothing if not.
pub fn kill_with_shim(cmd: &mut Command) {
    let shim = std::process::id() as libc::pid_t;
    // SAFETY: prctl and getppid are async-signal-safe and touch no memory of ours.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::getppid() != shim {
                return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        });
    }
}

/// The parent's end of a watchdog: [`Watchdog::finish`] on a normal end.
pub struct Watchdog {
    tell: Option<OwnedFd>,
    pid: i32,
}

impl Watchdog {
    /// Fork the watchdog; `cleanup` runs in it if the shim dies before [`Watchdog::finish`].
    ///
    /// Must be called while the shim is single-threaded (it forks without exec).
    pub fn start(cleanup: impl FnOnce()) -> Result<Watchdog> {
        let (rd, wr) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
            .context("cannot create the watchdog pipe")?;
        // SAFETY: the shim is single-threaded here, so the child may run ordinary code.
        match unsafe { nix::unistd::fork() }.context("cannot fork the watchdog")? {
            nix::unistd::ForkResult::Parent { child } => {
                drop(rd);
                Ok(Watchdog {
                    tell: Some(wr),
                    pid: child.as_raw(),
                })
            }
            nix::unistd::ForkResult::Child => {
                drop(wr);
                ignore_everything();
                if shim_died(&rd) {
                    cleanup();
                }
                // SAFETY: ends the watchdog without running the shim's exit handlers twice.
                unsafe { libc::_exit(0) }
            }
        }
    }

    /// The run ended normally: let the watchdog go.
    pub fn finish(mut self) {
        if let Some(fd) = self.tell.take() {
            let _ = nix::unistd::write(&fd, b"x");
        }
    }
}

/// Write `STATE_DIR/launcher`: the shim's and the watchdog's pid and start time, and whether the
/// bundle is this run's to remove (and the device and inode it must still have, 0 0 unknown).
pub fn record(
    state_dir: &StateDir,
    watchdog: &Watchdog,
    remove_bundle: Option<Option<(u64, u64)>>,
) -> Result<()> {
    let me = std::process::id() as i32;
    let (dev, ino) = remove_bundle.flatten().unwrap_or((0, 0));
    let text = format!(
        "{me} {} {} {} {} {dev} {ino}\n",
        start_ticks(me).unwrap_or(0),
        watchdog.pid,
        start_ticks(watchdog.pid).unwrap_or(0),
        u8::from(remove_bundle.is_some())
    );
    state_dir
        .write_new(statedir::LAUNCHER, text.as_bytes())
        .context("cannot record the launcher")
}

/// A container whose launcher is gone: its id, runtime, and bundle to remove (if any).
pub struct Orphan {
    pub id: String,
    pub runtime: Option<String>,
    pub bundle: Option<std::path::PathBuf>,
    /// The device and inode the bundle must still have to be removed.
    pub bundle_inode: Option<(u64, u64)>,
    dir: std::path::PathBuf,
}

/// The containers under `root` whose shim and watchdog are both dead. Only directories (never
/// symbolic links) owned by the caller are looked at, and files are opened without following
/// links.
pub fn orphans(root: &Path) -> Vec<Orphan> {
    let me = nix::unistd::geteuid().as_raw();
    let Ok(rd) = std::fs::read_dir(root.join(statedir::CONTAINERS)) else {
        return Vec::new();
    };
    let read = |p: &Path| -> Option<String> {
        use std::io::Read;
        let mut f = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(p)
            .ok()?;
        let mut s = String::new();
        f.read_to_string(&mut s).ok()?;
        Some(s)
    };
    let mut v = Vec::new();
    for e in rd.flatten() {
        let dir = e.path();
        let Ok(md) = std::fs::symlink_metadata(&dir) else {
            continue;
        };
        if !md.is_dir() || md.uid() != me {
            continue;
        }
        let Some(rec) = read(&dir.join(statedir::LAUNCHER)) else {
            continue;
        };
        let f: Vec<u64> = rec
            .split_whitespace()
            .filter_map(|w| w.parse().ok())
            .collect();
        let [shim, shim_t, dog, dog_t, remove, dev, ino] = f[..] else {
            continue;
        };
        let alive = |pid: u64, t: u64| common::process::alive(pid as i32, t);
        if alive(shim, shim_t) || alive(dog, dog_t) {
            continue;
        }
        v.push(Orphan {
            id: e.file_name().to_string_lossy().into_owned(),
            runtime: read(&dir.join(statedir::RUNTIME)).filter(|s| !s.is_empty()),
            bundle: (remove == 1)
                .then(|| std::fs::read_link(dir.join(statedir::BUNDLE_LINK)).ok())
                .flatten(),
            bundle_inode: (ino != 0).then_some((dev, ino)),
            dir,
        });
    }
    v
}

impl Orphan {
    /// Remove the state directory, once the container and the bundle are dealt with.
    pub fn forget(self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Block every signal (a Ctrl-C or a batch system's TERM is for the container, which the shim
/// proxies; the watchdog must outlive them to clean up) and detach from the terminal's input.
fn ignore_everything() {
    // SAFETY: plain signal-mask and descriptor calls on our own process.
    unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::sigprocmask(libc::SIG_BLOCK, &all, std::ptr::null_mut());
        let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR | libc::O_CLOEXEC);
        if null >= 0 {
            libc::dup2(null, 0);
            libc::close(null);
        }
    }
}

/// Wait for the shim's word: true when the pipe ended without it.
fn shim_died(rd: &OwnedFd) -> bool {
    let mut b = [0u8; 1];
    loop {
        // SAFETY: reading one byte into a stack buffer from a descriptor we own.
        let n = unsafe { libc::read(rd.as_raw_fd(), b.as_mut_ptr().cast(), 1) };
        if n < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
            continue;
        }
        return n != 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The watchdog cleans up exactly when its shim dies without finishing.
    #[test]
    fn the_watchdog_acts_only_when_the_shim_dies() {
        let d = tempfile::tempdir().unwrap();
        for finish in [true, false] {
            let marker = d.path().join(format!("cleaned-{finish}"));
            // A stand-in shim: a child process that starts a watchdog, then finishes or dies.
            // SAFETY: the test child only forks again and exits.
            match unsafe { nix::unistd::fork() }.unwrap() {
                nix::unistd::ForkResult::Child => {
                    let m = marker.clone();
                    let w = Watchdog::start(move || {
                        let _ = std::fs::write(&m, "x");
                    });
                    if finish && let Ok(w) = w {
                        w.finish();
                    }
                    // SAFETY: leave the forked test process at once.
                    unsafe { libc::_exit(0) }
                }
                nix::unistd::ForkResult::Parent { child } => {
                    nix::sys::wait::waitpid(child, None).unwrap();
                }
            }
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
            while !marker.exists() && std::time::Instant::now() < deadline && !finish {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
            assert_eq!(marker.exists(), !finish, "finish={finish}");
        }
    }
}
