//! Running the runtime in the foreground with a signal proxy (`run`).
//!
//! Every signal except SIGCHLD and SIGURG that reaches the shim is sent on to the runtime
//! process, which forwards it to the container process (`crun run` and `runc run` both do; the
//! e2e tests check that a container trapping TERM and INT sees them). Signals are blocked in the
//! shim and collected with sigwaitinfo, so none is lost between the spawn and the wait.
//!
//! A signal that comes while the container is still starting is held back (see [`StartGate`]):
//! the runtime hands it to the container's PID 1 as soon as that process exists, and the kernel
//! drops a signal sent to a PID namespace's init that neither catches nor blocks it. Between the
//! exec of the init (or the command) and its first instructions nothing catches anything, so a
//! SIGTERM from a batch system at that moment would be lost and the container would run on.

use anyhow::{Context, Result};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};

/// How the runtime ended.
pub struct Outcome {
    pub code: i32,
    /// The runtime itself died of a signal (it could not clean its state up).
    pub killed: bool,
}

fn full_set() -> libc::sigset_t {
    // SAFETY: sigfillset initialises the set.
    unsafe {
        let mut s: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut s);
        s
    }
}

fn set_mask(how: libc::c_int, set: &libc::sigset_t) -> libc::sigset_t {
    // SAFETY: both sets are valid; the shim is single-threaded here.
    unsafe {
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigprocmask(how, set, &mut old);
        old
    }
}

/// Spawn `cmd` and forward signals to it until it exits, each one once the container's PID 1
/// can take it (`gate`; without one, at once).
pub fn run_with_proxy(cmd: &mut Command, gate: Option<StartGate>) -> Result<Outcome> {
    let all = full_set();
    let old = set_mask(libc::SIG_BLOCK, &all);
    common::lifecycle::process::reset_mask_in_child(cmd);
    let spawned = cmd.spawn();
    let result = spawned
        .context("cannot start the runtime")
        .and_then(|child| proxy_until_exit(child, &all, gate));
    set_mask(libc::SIG_SETMASK, &old);
    result
}

/// How often held signals are looked at again.
const HOLD_POLL: libc::timespec = libc::timespec {
    tv_sec: 0,
    tv_nsec: 10_000_000,
};

fn proxy_until_exit(
    mut child: Child,
    all: &libc::sigset_t,
    mut gate: Option<StartGate>,
) -> Result<Outcome> {
    let pid = child.id() as libc::pid_t;
    let mut held: Vec<i32> = Vec::new();
    loop {
        if let Some(st) = child.try_wait().context("cannot wait for the runtime")? {
            use std::os::unix::process::ExitStatusExt;
            return Ok(Outcome {
                code: common::lifecycle::status::exit_code(st),
                killed: st.signal().is_some(),
            });
        }
        // In order: a signal waits for the ones before it.
        while let Some(&first) = held.first() {
            if !gate.as_mut().is_none_or(|g| g.ready(first)) {
                break;
            }
            held.remove(0);
            // SAFETY: plain kill(2) to our own child, which we have not reaped yet.
            unsafe {
                libc::kill(pid, first);
            }
        }
        // SAFETY: waiting on a valid full set; info is written by the kernel.
        let sig = unsafe {
            let mut info: libc::siginfo_t = std::mem::zeroed();
            if held.is_empty() {
                libc::sigwaitinfo(all, &mut info)
            } else {
                libc::sigtimedwait(all, &mut info, &HOLD_POLL)
            }
        };
        if sig < 0 || sig == libc::SIGCHLD || sig == libc::SIGURG {
            continue;
        }
        held.push(sig);
    }
}

/// When may a signal go to the runtime, which forwards it to the container's PID 1 at once?
/// When that process runs the container's own program (its argv[0] is `process.args[0]`, so it
/// is no longer the runtime's set-up code) and catches or blocks the signal. A PID 1 that never
/// does (`--no-init` and a plain command) gets it a moment after its exec anyway (the kernel
/// then drops it, as for any such PID 1), so a signal is never held for long.
pub struct StartGate {
    pid_file: PathBuf,
    bundle: PathBuf,
    argv0: Option<Option<Vec<u8>>>,
    exec_seen: Option<std::time::Instant>,
}

/// How long after its exec a PID 1 that neither catches nor blocks a signal still gets it held.
const GRACE: std::time::Duration = std::time::Duration::from_secs(1);

impl StartGate {
    pub fn new(pid_file: &Path, bundle: &Path) -> StartGate {
        StartGate {
            pid_file: pid_file.to_path_buf(),
            bundle: bundle.to_path_buf(),
            argv0: None,
            exec_seen: None,
        }
    }

    fn ready(&mut self, sig: i32) -> bool {
        if matches!(sig, libc::SIGKILL | libc::SIGSTOP) {
            return true;
        }
        let Some(pid) = std::fs::read_to_string(&self.pid_file)
            .ok()
            .and_then(|t| t.trim().parse::<i32>().ok())
        else {
            return false;
        };
        let bundle = &self.bundle;
        let Some(want) = self
            .argv0
            .get_or_insert_with(|| config_argv0(bundle))
            .as_deref()
        else {
            return true;
        };
        let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            // Gone already: the runtime reports its end.
            return true;
        };
        if cmdline.split(|&b| b == 0).next() != Some(want) {
            return false;
        }
        let since = *self.exec_seen.get_or_insert_with(std::time::Instant::now);
        takes_signal(pid, sig) || since.elapsed() > GRACE
    }
}

/// `process.args[0]` of the bundle's config.json.
fn config_argv0(bundle: &Path) -> Option<Vec<u8>> {
    let text = std::fs::read(bundle.join("config.json")).ok()?;
    let v: serde_json::Value = serde_json::from_slice(&text).ok()?;
    Some(v["process"]["args"][0].as_str()?.as_bytes().to_vec())
}

/// Does process `pid` catch or block signal `sig` (SigCgt, SigBlk of /proc/PID/status)?
fn takes_signal(pid: i32, sig: i32) -> bool {
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return true;
    };
    let bit = 1u64 << (sig - 1);
    status.lines().any(|l| {
        let mask = l
            .strip_prefix("SigCgt:")
            .or_else(|| l.strip_prefix("SigBlk:"));
        mask.and_then(|m| u64::from_str_radix(m.trim(), 16).ok())
            .is_some_and(|m| m & bit != 0)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_status_and_signal_death() {
        let o = run_with_proxy(Command::new("sh").args(["-c", "exit 42"]), None).unwrap();
        assert_eq!((o.code, o.killed), (42, false));
        let o = run_with_proxy(Command::new("sh").args(["-c", "kill -TERM $$"]), None).unwrap();
        assert_eq!((o.code, o.killed), (128 + 15, true));
    }
}
