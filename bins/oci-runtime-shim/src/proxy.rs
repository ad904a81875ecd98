//! Running the runtime in the foreground with a signal proxy (`run`).
//!
//! Every signal except SIGCHLD and SIGURG that reaches the shim is sent on to the runtime
//! process, which forwards it to the container process (`crun run` and `runc run` both do; the
//! e2e tests check that a container trapping TERM and INT sees them). Signals are blocked in the
//! shim and collected with sigwaitinfo, so none is lost between the spawn and the wait.

use anyhow::{Context, Result};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command};

/// Exit code of a finished child: N for exit N, 128+S for death by signal S.
pub fn exit_code(status: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(c), _) => c,
        (None, Some(s)) => 128 + s,
        _ => common::cli::EXIT_FATAL,
    }
}

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

fn empty_set() -> libc::sigset_t {
    // SAFETY: sigemptyset initialises the set.
    unsafe {
        let mut s: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut s);
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

/// Make `cmd` start with an empty signal mask, whatever mask we were given or set.
///
/// runc (Go) records its initial mask and hands it to the container process, so an inherited
/// mask would leave the container with SIGUSR1, SIGALRM, ... blocked (seen with runc 1.1.5).
pub fn reset_mask_in_child(cmd: &mut Command) {
    let empty = empty_set();
    // SAFETY: sigprocmask is async-signal-safe; the closure touches only a copied sigset.
    unsafe {
        cmd.pre_exec(move || {
            libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
            Ok(())
        });
    }
}

/// Spawn `cmd` and forward signals to it until it exits.
pub fn run_with_proxy(cmd: &mut Command) -> Result<Outcome> {
    let all = full_set();
    let old = set_mask(libc::SIG_BLOCK, &all);
    reset_mask_in_child(cmd);
    let spawned = cmd.spawn();
    let result = spawned
        .context("cannot start the runtime")
        .and_then(|child| proxy_until_exit(child, &all));
    set_mask(libc::SIG_SETMASK, &old);
    result
}

fn proxy_until_exit(mut child: Child, all: &libc::sigset_t) -> Result<Outcome> {
    let pid = child.id() as libc::pid_t;
    loop {
        if let Some(st) = child.try_wait().context("cannot wait for the runtime")? {
            use std::os::unix::process::ExitStatusExt;
            return Ok(Outcome {
                code: exit_code(st),
                killed: st.signal().is_some(),
            });
        }
        // SAFETY: waiting on a valid full set; info is written by the kernel.
        let sig = unsafe {
            let mut info: libc::siginfo_t = std::mem::zeroed();
            libc::sigwaitinfo(all, &mut info)
        };
        if sig < 0 || sig == libc::SIGCHLD || sig == libc::SIGURG {
            continue;
        }
        // SAFETY: plain kill(2) to our own child, which we have not reaped yet.
        unsafe {
            libc::kill(pid, sig);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_status_and_signal_death() {
        let o = run_with_proxy(Command::new("sh").args(["-c", "exit 42"])).unwrap();
        assert_eq!((o.code, o.killed), (42, false));
        let o = run_with_proxy(Command::new("sh").args(["-c", "kill -TERM $$"])).unwrap();
        assert_eq!((o.code, o.killed), (128 + 15, true));
    }
}
