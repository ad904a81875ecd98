//! The [`Runtime`] trait: one runtime invocation is argv in; exit status, stdout and stderr out.
//!
//! [`Program`] runs the real crun or runc; [`crate::lifecycle::fake::FakeRuntime`] plays one in
//! unit tests. Every operation of the lifecycle talks to the runtime through this trait, so the
//! operations are tested without root and without a runtime installed.

use super::runtime::{RuntimeBinary, RuntimeKind};
use anyhow::{Context, Result};
use std::ffi::{OsStr, OsString};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// One invocation: the words after the runtime's global `--root ROOT`.
#[derive(Debug, Clone, Default)]
pub struct Call {
    pub args: Vec<OsString>,
    /// The working directory (the bundle for create and run: crun and runc resolve relative
    /// paths, such as a console socket, against it).
    pub cwd: Option<PathBuf>,
    /// Append stdout and stderr to this file instead of capturing them (a created container
    /// inherits them: they are its log).
    pub log: Option<PathBuf>,
}

impl Call {
    pub fn new<S: AsRef<OsStr>>(args: impl IntoIterator<Item = S>) -> Call {
        Call {
            args: args
                .into_iter()
                .map(|a| a.as_ref().to_os_string())
                .collect(),
            ..Call::default()
        }
    }
    pub fn cwd(mut self, dir: &Path) -> Call {
        self.cwd = Some(dir.to_path_buf());
        self
    }
    pub fn log(mut self, file: &Path) -> Call {
        self.log = Some(file.to_path_buf());
        self
    }
    /// The words as text, for messages and tests.
    pub fn words(&self) -> Vec<String> {
        self.args
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }
}

/// How an invocation ended.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Output {
    /// Exit code (128+N for death by signal N).
    pub code: i32,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

impl Output {
    pub fn success(&self) -> bool {
        self.code == 0
    }
}

/// An OCI runtime.
pub trait Runtime {
    /// Which runtime this is.
    fn binary(&self) -> &RuntimeBinary;
    /// Its state root (`--root`).
    fn root(&self) -> &Path;
    /// Run one operation to its end.
    fn call(&self, call: &Call) -> Result<Output>;
    /// Replace this process with the runtime (`exec`: the command's status and signals pass
    /// through untouched). Returns only on failure.
    fn replace(&self, args: &[OsString]) -> anyhow::Error;

    fn kind(&self) -> RuntimeKind {
        self.binary().kind
    }
    fn name(&self) -> String {
        self.binary().name()
    }
    /// Does the runtime know container `id`?
    fn knows(&self, id: &str) -> bool {
        self.call(&Call::new(["state", id]))
            .is_ok_and(|o| o.success())
    }
    /// Does the runtime at `program` (this one when `None`) know container `id` under `root`?
    /// For the holder of a bundle lock, which another runtime may have made.
    fn knows_at(&self, program: Option<&Path>, root: &Path, id: &str) -> bool {
        let _ = (program, root);
        self.knows(id)
    }
    /// Best-effort `delete --force`, for cleaning up after a failure.
    fn force_delete(&self, id: &str) {
        let _ = self.call(&Call::new(["delete", "--force", id]));
    }
}

/// The runtime's argv after the binary: global `--root`, then the operation's words.
pub fn argv(root: &Path, words: &[OsString]) -> Vec<OsString> {
    let mut v = vec![OsString::from("--root"), root.into()];
    v.extend(words.iter().cloned());
    v
}

/// The real runtime executable.
#[derive(Debug, Clone)]
pub struct Program {
    pub bin: RuntimeBinary,
    pub root: PathBuf,
    /// Print each argv on stderr.
    pub debug: bool,
}

impl Program {
    /// A command for `words`, with `--root` first and an empty signal mask in the child.
    pub fn command(&self, words: &[OsString]) -> Command {
        let argv = argv(&self.root, words);
        if self.debug {
            let shown: Vec<String> = argv.iter().map(|a| a.to_string_lossy().into()).collect();
            eprintln!(
                "DEBUG: {}: runtime argv: {} {}",
                crate::cli::program(),
                self.bin.path.display(),
                shown.join(" ")
            );
        }
        let mut c = Command::new(&self.bin.path);
        c.args(argv);
        reset_mask_in_child(&mut c);
        c
    }
}

impl Runtime for Program {
    fn binary(&self) -> &RuntimeBinary {
        &self.bin
    }
    fn root(&self) -> &Path {
        &self.root
    }
    fn call(&self, call: &Call) -> Result<Output> {
        let mut cmd = self.command(&call.args);
        cmd.stdin(Stdio::null());
        if let Some(d) = &call.cwd {
            cmd.current_dir(d);
        }
        let cannot_run = || format!("cannot run {}", self.bin.path.display());
        if let Some(log) = &call.log {
            let f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(log)
                .with_context(|| format!("cannot open {}", log.display()))?;
            cmd.stdout(f.try_clone()?).stderr(f);
            let st = cmd.status().with_context(cannot_run)?;
            return Ok(Output {
                code: super::status::exit_code(st),
                ..Output::default()
            });
        }
        let out = cmd.output().with_context(cannot_run)?;
        Ok(Output {
            code: super::status::exit_code(out.status),
            stdout: out.stdout,
            stderr: out.stderr,
        })
    }
    fn knows_at(&self, program: Option<&Path>, root: &Path, id: &str) -> bool {
        let other = Program {
            bin: RuntimeBinary {
                path: program.map_or_else(|| self.bin.path.clone(), Path::to_path_buf),
                kind: self.bin.kind,
            },
            root: root.to_path_buf(),
            debug: self.debug,
        };
        other.knows(id)
    }
    fn replace(&self, args: &[OsString]) -> anyhow::Error {
        let err = self.command(args).exec();
        anyhow::Error::from(err).context(format!("cannot execute {}", self.bin.path.display()))
    }
}

/// Make `cmd` start with an empty signal mask, whatever mask we were given or set.
///
/// runc (Go) records its initial mask and hands it to the container process, so an inherited
/// mask would leave the container with SIGUSR1, SIGALRM, ... blocked (seen with runc 1.1.5).
pub fn reset_mask_in_child(cmd: &mut Command) {
    // SAFETY: sigemptyset initialises the set.
    let empty = unsafe {
        let mut s: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut s);
        s
    };
    // SAFETY: sigprocmask is async-signal-safe; the closure touches only a copied sigset.
    unsafe {
        cmd.pre_exec(move || {
            libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
            Ok(())
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(v: &[&str]) -> Vec<OsString> {
        v.iter().map(OsString::from).collect()
    }

    #[test]
    fn root_comes_first_and_log_before_the_operation() {
        let v = argv(Path::new("/run/x"), &os(&["--log", "/l", "create", "c"]));
        let s: Vec<_> = v.iter().map(|a| a.to_str().unwrap()).collect();
        assert_eq!(s, ["--root", "/run/x", "--log", "/l", "create", "c"]);
    }

    #[test]
    fn call_builder() {
        let c = Call::new(["start", "c1"])
            .cwd(Path::new("/b"))
            .log(Path::new("/l"));
        assert_eq!(c.words(), ["start", "c1"]);
        assert_eq!(c.cwd.as_deref(), Some(Path::new("/b")));
        assert_eq!(c.log.as_deref(), Some(Path::new("/l")));
    }

    /// A stand-in runtime: a shell script that reports its argv, which needs no real runtime.
    fn script(dir: &Path, body: &str) -> Program {
        let p = dir.join("fake-runtime");
        // Written by a child process: a file this test process had open for writing could be
        // inherited by a child another test thread forks at that moment, and executing it would
        // then fail with ETXTBSY until that child execs.
        let made = std::process::Command::new("/bin/sh")
            .args([
                "-c",
                "printf '#!/bin/sh\\n%s\\n' \"$1\" > \"$0\" && chmod 0755 \"$0\"",
            ])
            .arg(&p)
            .arg(body)
            .status()
            .unwrap();
        assert!(made.success());
        Program {
            bin: RuntimeBinary {
                path: p,
                kind: RuntimeKind::Other,
            },
            root: dir.join("root"),
            debug: false,
        }
    }

    #[test]
    fn program_captures_status_and_streams() {
        let d = tempfile::tempdir().unwrap();
        let p = script(d.path(), "echo \"$@\"; echo err >&2; exit 3");
        let o = p.call(&Call::new(["state", "c1"])).unwrap();
        assert_eq!(o.code, 3);
        assert!(!o.success());
        assert_eq!(
            String::from_utf8_lossy(&o.stdout),
            format!("--root {}/root state c1\n", d.path().display())
        );
        assert_eq!(o.stderr, b"err\n");
    }

    #[test]
    fn program_appends_to_the_log() {
        let d = tempfile::tempdir().unwrap();
        let p = script(d.path(), "echo out; echo err >&2");
        let log = d.path().join("log");
        std::fs::write(&log, "before\n").unwrap();
        let o = p.call(&Call::new(["create"]).log(&log)).unwrap();
        assert!(o.success() && o.stdout.is_empty());
        assert_eq!(std::fs::read_to_string(&log).unwrap(), "before\nout\nerr\n");
    }

    #[test]
    fn program_runs_in_the_given_directory() {
        let d = tempfile::tempdir().unwrap();
        let p = script(d.path(), "pwd");
        let o = p.call(&Call::new(["x"]).cwd(d.path())).unwrap();
        let shown = String::from_utf8_lossy(&o.stdout).trim().to_string();
        assert_eq!(
            std::fs::canonicalize(shown).unwrap(),
            std::fs::canonicalize(d.path()).unwrap()
        );
    }

    #[test]
    fn program_maps_signal_death() {
        let d = tempfile::tempdir().unwrap();
        let p = script(d.path(), "kill -TERM $$");
        assert_eq!(p.call(&Call::new(["x"])).unwrap().code, 143);
    }

    #[test]
    fn program_knows_by_the_state_status() {
        let d = tempfile::tempdir().unwrap();
        let p = script(d.path(), "[ \"$3\" = state ] && [ \"$4\" = known ]");
        assert!(p.knows("known"));
        assert!(!p.knows("unknown"));
    }

    #[test]
    fn a_missing_program_is_an_error_naming_it() {
        let p = Program {
            bin: RuntimeBinary {
                path: "/nonexistent/crun".into(),
                kind: RuntimeKind::Crun,
            },
            root: "/r".into(),
            debug: false,
        };
        let e = p.call(&Call::new(["state", "c"])).unwrap_err();
        assert_eq!(e.to_string(), "cannot run /nonexistent/crun");
        assert!(!p.knows("c"));
    }
}
