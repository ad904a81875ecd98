//! Files of a conmon-monitored container, shared by `oci-conmon-create` (which makes them),
//! `oci-attach` (which reads them) and `oci-runtime-shim` (which may read the pid files and the
//! exit status).
//!
//! Everything lives in the per-container state directory
//! ([`crate::statedir::container_dir`]), except what conmon insists on putting in the bundle:
//! the attach socket and the `ctl`/`winsz` FIFOs (conmon 2.1.6 creates them in the directory it
//! is given with `--bundle`, whatever `--socket-dir-path` says). They are reached through the
//! state directory's `bundle` symlink, so a client only ever needs the container id.

use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Pid of the conmon monitor (conmon `--conmon-pidfile`).
pub const CONMON_PID: &str = "conmon.pid";
/// Pid of the container's init process (conmon `--container-pidfile`, written by the runtime).
pub const CONTAINER_PID: &str = "container.pid";
/// Default container log (k8s-file / CRI format).
pub const CONTAINER_LOG: &str = "container.log";
/// Exit status of the container as decimal text (conmon `--persist-dir` writes `exit`).
pub const EXIT_FILE: &str = "exit";
/// Path of the runtime that created the container (read by `oci-runtime-shim`, which then uses
/// the same runtime for every later operation).
pub const RUNTIME: &str = "runtime";
/// Symlink to the absolute bundle path.
pub const BUNDLE_LINK: &str = "bundle";
/// A small JSON note written by `oci-conmon-create`: which runtime and options made the
/// container (so later tools need not guess).
pub const CREATE_RECORD: &str = "conmon.json";

/// conmon's attach socket, inside the bundle.
pub const ATTACH_SOCKET: &str = "attach";
/// conmon's terminal control FIFO, inside the bundle (`"1 rows cols\n"` resizes).
pub const CTL_FIFO: &str = "ctl";
/// conmon's window-size FIFO, inside the bundle.
pub const WINSZ_FIFO: &str = "winsz";

/// The conmon-made files in the bundle, removed once conmon is gone.
pub const BUNDLE_LEFTOVERS: [&str; 3] = [ATTACH_SOCKET, CTL_FIFO, WINSZ_FIFO];

/// The bundle of the container whose state directory is `sd`, through its symlink.
pub fn bundle_of(sd: &Path) -> Result<PathBuf> {
    let link = sd.join(BUNDLE_LINK);
    std::fs::read_link(&link).with_context(|| format!("cannot read {}", link.display()))
}

/// Remove conmon's FIFOs and socket from `bundle` (only FIFOs and sockets: a user's regular
/// file that happens to be called `ctl` is left alone).
pub fn remove_bundle_leftovers(bundle: &Path) {
    use std::os::unix::fs::FileTypeExt;
    for name in BUNDLE_LEFTOVERS {
        let p = bundle.join(name);
        if let Ok(m) = std::fs::symlink_metadata(&p)
            && (m.file_type().is_fifo() || m.file_type().is_socket())
        {
            let _ = std::fs::remove_file(&p);
        }
    }
}

/// Read a pid file (decimal, optional trailing newline).
pub fn read_pid(path: &Path) -> Result<i32> {
    let s =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    match s.trim().parse::<i32>() {
        Ok(p) if p > 0 => Ok(p),
        _ => bail!("{} does not hold a pid: '{}'", path.display(), s.trim()),
    }
}

/// The container's exit status from conmon's exit file, if it has been written.
/// conmon writes `-1` when it killed the container for `--timeout`; that is reported as 255.
pub fn read_exit_status(sd: &Path) -> Result<Option<i32>> {
    let p = sd.join(EXIT_FILE);
    match std::fs::read_to_string(&p) {
        Ok(s) => match s.trim().parse::<i32>() {
            Ok(c) if (0..=255).contains(&c) => Ok(Some(c)),
            Ok(_) => Ok(Some(255)),
            Err(_) if s.trim().is_empty() => Ok(None),
            Err(_) => bail!(
                "{} does not hold an exit status: '{}'",
                p.display(),
                s.trim()
            ),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", p.display())),
    }
}

/// Wait up to `timeout` for conmon's exit file. conmon closes the attach connections just before
/// writing it, so an attach client that sees end-of-stream finds it within milliseconds.
pub fn wait_exit_status(sd: &Path, timeout: Duration) -> Result<Option<i32>> {
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(1);
    loop {
        if let Some(c) = read_exit_status(sd)? {
            return Ok(Some(c));
        }
        if Instant::now() >= deadline {
            return Ok(None);
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

/// True while the conmon monitoring the container of state directory `sd` is running. A zombie
/// does not count: a daemonised conmon is reparented to PID 1, which may take seconds to reap it.
pub fn monitor_running(sd: &Path) -> bool {
    let Ok(pid) = read_pid(&sd.join(CONMON_PID)) else {
        return false;
    };
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // "PID (COMM) STATE ...": COMM may hold spaces and parentheses, so split at the last ')'.
    let Some((head, tail)) = stat.rsplit_once(')') else {
        return false;
    };
    let comm = head.split_once('(').map(|(_, c)| c).unwrap_or("");
    let state = tail.split_whitespace().next().unwrap_or("");
    comm == "conmon" && !matches!(state, "Z" | "X" | "x")
}

/// Wait (at most `timeout`) until the conmon of `sd` has finished: after the container exits it
/// still writes the exit file into `sd` and runs the exit command, so whoever removes `sd` must
/// wait for this first. True when conmon is gone.
pub fn wait_monitor_gone(sd: &Path, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(1);
    while monitor_running(sd) {
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(50));
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_file_values() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(read_exit_status(d.path()).unwrap(), None);
        std::fs::write(d.path().join(EXIT_FILE), "137").unwrap();
        assert_eq!(read_exit_status(d.path()).unwrap(), Some(137));
        std::fs::write(d.path().join(EXIT_FILE), "-1").unwrap();
        assert_eq!(read_exit_status(d.path()).unwrap(), Some(255));
        std::fs::write(d.path().join(EXIT_FILE), "x").unwrap();
        assert!(read_exit_status(d.path()).is_err());
    }

    #[test]
    fn pid_files() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("p");
        std::fs::write(&p, "1234\n").unwrap();
        assert_eq!(read_pid(&p).unwrap(), 1234);
        std::fs::write(&p, "0").unwrap();
        assert!(read_pid(&p).is_err());
    }
}
