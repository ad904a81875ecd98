//! `--then PROGRAM [ARGS...]`: hand a stage's record to the next stage by exec, not by stdout.
//!
//! `oci-fetch IMAGE --then oci-unpack --then oci-mkspec ...` does what the pipeline
//! `oci-fetch IMAGE | oci-unpack | oci-mkspec ...` does, in one process: each stage writes its
//! record into a memory file, makes that file its standard input and execs the next stage with
//! the rest of the arguments. Nothing is forked, waited for or scheduled in between, which is
//! what a warm start pays for most on a loaded machine (a fork, an exit and a wakeup per stage),
//! and a stage that fails stops the chain with its one FATAL line (a pipeline would run the
//! next stage on empty input).
//!
//! Only the record is redirected: standard output and error stay the stage's own, so the last
//! stage prints its record where the first was asked to. The next program inherits the
//! environment, minus what the stage names with [`withhold_from_next`] (oci-fetch's registry
//! credentials never reach a later stage).
//!
//! A chain the front started (its pid in `_SINGULARITY_OCI_LAUNCHER_PID`) dies with the front
//! ([`die_with_launcher`]): the stages after a killed front would otherwise go on writing into
//! a bundle that the next run sweeps as abandoned.

use anyhow::{Context, Result, bail};
use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::sync::Mutex;

/// The word that starts the next stage's command line.
pub const THEN: &str = "--then";

struct Chain {
    next: Option<Vec<OsString>>,
    record: Option<Vec<u8>>,
    withheld: Vec<&'static str>,
}

static CHAIN: Mutex<Chain> = Mutex::new(Chain {
    next: None,
    record: None,
    withheld: Vec::new(),
});

fn chain() -> std::sync::MutexGuard<'static, Chain> {
    CHAIN.lock().unwrap_or_else(|e| e.into_inner())
}

/// Split `raw` at the first `--then` that comes before any `--`: what follows it is the next
/// stage's command line. Returns it (None when there is no `--then`).
pub fn split(raw: &mut Vec<OsString>) -> Result<Option<Vec<OsString>>> {
    let Some(at) = raw
        .iter()
        .take_while(|a| *a != "--")
        .position(|a| a == THEN)
    else {
        return Ok(None);
    };
    let next = raw.split_off(at + 1);
    raw.pop();
    if next.is_empty() {
        bail!("{THEN} needs a program to run");
    }
    Ok(Some(next))
}

/// Ask for SIGKILL when the launcher that started this chain dies (kept across the chain's
/// execs), and fail when it is gone already. Nothing to do when no launcher is named.
pub fn die_with_launcher() -> Result<()> {
    let Some(launcher) = std::env::var(crate::bundlesweep::ENV_LAUNCHER_PID)
        .ok()
        .and_then(|v| v.parse::<i32>().ok())
    else {
        return Ok(());
    };
    nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
        .context("cannot ask for the parent-death signal")?;
    // Checked after the request: a launcher that died before it was re-parented us already.
    if nix::unistd::getppid().as_raw() != launcher {
        bail!("the launcher that started this chain (pid {launcher}) is gone");
    }
    Ok(())
}

/// Remember the next stage's command line (from [`split`]).
pub fn set_next(next: Vec<OsString>) {
    chain().next = Some(next);
}

/// Whether this stage hands its record on by exec.
pub fn is_chained() -> bool {
    chain().next.is_some()
}

/// Keep the record (one JSON line) for the next stage instead of printing it.
pub fn keep_record(line: Vec<u8>) {
    chain().record = Some(line);
}

/// Do not pass the environment variable `name` on to the next stage.
pub fn withhold_from_next(name: &'static str) {
    chain().withheld.push(name);
}

/// Exec the next stage with the kept record as its standard input. Returns only on failure.
pub fn exec_next() -> anyhow::Error {
    match prepare() {
        Ok(mut cmd) => {
            let prog = cmd.get_program().to_string_lossy().into_owned();
            anyhow::Error::new(cmd.exec()).context(format!("cannot run the next stage {prog}"))
        }
        Err(e) => e,
    }
}

fn prepare() -> Result<std::process::Command> {
    let mut c = chain();
    let Some(next) = c.next.take() else {
        bail!("no next stage to run");
    };
    let Some(record) = c.record.take() else {
        bail!("this stage printed no record for {THEN} to hand on");
    };
    let input = record_file(&record)?;
    let mut words = next.into_iter();
    let mut cmd = std::process::Command::new(words.next().expect("split refuses an empty command"));
    cmd.args(words).stdin(input);
    for name in &c.withheld {
        cmd.env_remove(name);
    }
    Ok(cmd)
}

/// A memory file holding `record`, positioned at its start: a pipe would block a stage whose
/// record outgrew the pipe's buffer, since the reader only starts after the exec.
fn record_file(record: &[u8]) -> Result<std::fs::File> {
    use std::io::{Seek, Write};
    let fd = rustix::fs::memfd_create("sioci-record", rustix::fs::MemfdFlags::CLOEXEC)
        .context("cannot create a memory file for the record")?;
    let mut f = std::fs::File::from(fd);
    f.write_all(record)
        .and_then(|_| f.rewind())
        .context("cannot write the record for the next stage")?;
    Ok(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &str) -> Vec<OsString> {
        s.split_whitespace().map(OsString::from).collect()
    }

    #[test]
    fn the_first_then_before_a_double_dash_splits() {
        let mut raw = words("--quiet oci:x --then unpack --q --then mkspec -- sh --then");
        let next = split(&mut raw).unwrap().unwrap();
        assert_eq!(raw, words("--quiet oci:x"));
        assert_eq!(next, words("unpack --q --then mkspec -- sh --then"));
    }

    #[test]
    fn a_then_inside_the_command_is_the_commands() {
        let mut raw = words("--bundle b -- echo --then x");
        assert!(split(&mut raw).unwrap().is_none());
        assert_eq!(raw, words("--bundle b -- echo --then x"));
    }

    #[test]
    fn then_needs_a_program() {
        let mut raw = words("oci:x --then");
        assert!(split(&mut raw).is_err());
    }

    #[test]
    fn the_record_file_reads_back_from_its_start() {
        use std::io::Read;
        let mut f = record_file(b"{\"kind\":\"image\"}\n").unwrap();
        let mut s = String::new();
        f.read_to_string(&mut s).unwrap();
        assert_eq!(s, "{\"kind\":\"image\"}\n");
    }
}
