//! Running one command as a context's user, with an explicit environment and a time limit.

use crate::tools::find_in;
use crate::{Ctx, DEFAULT_TIMEOUT};
use std::io::{Read, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

/// A command being prepared: `ctx.cmd("prog").args(&[..]).env("K", "V").stdin("..").run()`.
///
/// The environment is exactly [`Ctx::base_env`] plus what [`Cmd::env`] adds, minus what
/// [`Cmd::env_remove`] removes. The working directory defaults to [`Ctx::dir`]. As root the
/// program is executed directly; for the other profiles through
/// `setpriv --reuid U --regid G --init-groups --` (no PAM, nothing inherited).
#[must_use]
pub struct Cmd<'a> {
    ctx: &'a Ctx,
    program: String,
    args: Vec<String>,
    env: Vec<(String, String)>,
    stdin: Option<Vec<u8>>,
    cwd: Option<PathBuf>,
    timeout: Duration,
}

impl<'a> Cmd<'a> {
    pub(crate) fn new(ctx: &'a Ctx, program: &str) -> Self {
        Cmd {
            ctx,
            program: program.to_string(),
            args: Vec::new(),
            env: ctx.base_env(),
            stdin: None,
            cwd: None,
            timeout: DEFAULT_TIMEOUT,
        }
    }

    pub fn arg(mut self, a: impl AsRef<str>) -> Self {
        self.args.push(a.as_ref().to_string());
        self
    }

    pub fn args<S: AsRef<str>>(mut self, args: &[S]) -> Self {
        self.args
            .extend(args.iter().map(|a| a.as_ref().to_string()));
        self
    }

    /// Set (or replace) one variable.
    pub fn env(mut self, key: impl AsRef<str>, val: impl AsRef<str>) -> Self {
        let key = key.as_ref().to_string();
        self.env.retain(|(k, _)| *k != key);
        self.env.push((key, val.as_ref().to_string()));
        self
    }

    /// Remove one variable of the base environment.
    pub fn env_remove(mut self, key: impl AsRef<str>) -> Self {
        self.env.retain(|(k, _)| k != key.as_ref());
        self
    }

    /// Bytes fed on stdin (default: /dev/null).
    pub fn stdin(mut self, data: impl AsRef<[u8]>) -> Self {
        self.stdin = Some(data.as_ref().to_vec());
        self
    }

    pub fn cwd(mut self, dir: impl AsRef<Path>) -> Self {
        self.cwd = Some(dir.as_ref().to_path_buf());
        self
    }

    /// Time limit (default [`DEFAULT_TIMEOUT`]); on expiry the process group is killed and the
    /// test panics.
    pub fn timeout(mut self, t: Duration) -> Self {
        self.timeout = t;
        self
    }

    /// The command line as the user would type it (for messages).
    pub fn display(&self) -> String {
        std::iter::once(&self.program)
            .chain(&self.args)
            .map(|w| shell_quote(w))
            .collect::<Vec<_>>()
            .join(" ")
    }

    fn resolve_program(&self) -> String {
        if self.program.contains('/') {
            return self.program.clone();
        }
        let path = self
            .env
            .iter()
            .find(|(k, _)| k == "PATH")
            .map(|(_, v)| v.clone())
            .unwrap_or_default();
        find_in(path.split(':'), &self.program)
            .unwrap_or_else(|| panic!("'{}' not found on PATH={path}", self.program))
            .display()
            .to_string()
    }

    /// Run to completion and collect the result. Panics only when the command cannot be
    /// started or times out; check the result with the `assert_*` methods of [`Output`].
    pub fn run(self) -> Output {
        let program = self.resolve_program();
        let mut command = self.ctx.command(&program);
        command
            .args(&self.args)
            .env_clear()
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .current_dir(self.cwd.as_deref().unwrap_or(self.ctx.dir()))
            .stdin(if self.stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own process group, so a timeout kills everything it started.
            .process_group(0);
        let argv = format!("[{}] {}", self.ctx.name, self.display());
        let started = Instant::now();
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {argv}: {e}"));

        let stdin_thread = self.stdin.map(|data| {
            let mut pipe = child.stdin.take().unwrap();
            std::thread::spawn(move || {
                // The command may exit without reading everything: a broken pipe is fine.
                let _ = pipe.write_all(&data);
            })
        });
        let out_thread = reader(child.stdout.take().unwrap());
        let err_thread = reader(child.stderr.take().unwrap());

        let status = loop {
            if let Some(s) = child.try_wait().expect("waitpid") {
                break s;
            }
            if started.elapsed() > self.timeout {
                // SAFETY: kill(2) of the child's own process group.
                unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
                let _ = child.wait();
                let stdout = out_thread.join().unwrap_or_default();
                let stderr = err_thread.join().unwrap_or_default();
                panic!(
                    "{argv}\ntimed out after {:?}\n--- stdout ---\n{stdout}--- stderr ---\n{stderr}",
                    self.timeout
                );
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        if let Some(t) = stdin_thread {
            let _ = t.join();
        }
        let code = match (status.code(), status.signal()) {
            (Some(c), _) => c,
            (None, Some(sig)) => 128 + sig,
            _ => -1,
        };
        Output {
            argv,
            code,
            stdout: out_thread.join().expect("stdout reader"),
            stderr: err_thread.join().expect("stderr reader"),
            elapsed: started.elapsed(),
        }
    }
}

fn reader(mut r: impl Read + Send + 'static) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = r.read_to_end(&mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    })
}

fn shell_quote(w: &str) -> String {
    let plain = !w.is_empty()
        && w.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./:=@%+,".contains(&b));
    if plain {
        w.to_string()
    } else {
        format!("'{}'", w.replace('\'', r"'\''"))
    }
}

/// What a command did. The `assert_*` methods panic with the command line, the exit code,
/// stdout and stderr, and return `&self` so they chain.
#[derive(Debug, Clone)]
pub struct Output {
    /// `[<ctx name>] <command line>`.
    pub argv: String,
    /// The exit status, or 128+N when killed by signal N.
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

impl Output {
    /// Panic with `what` and the whole result.
    pub fn fail(&self, what: &str) -> ! {
        panic!(
            "{what}\ncommand: {}\nexit code: {} (after {:?})\n--- stdout ---\n{}--- stderr ---\n{}--------------",
            self.argv, self.code, self.elapsed, self.stdout, self.stderr
        )
    }

    pub fn assert_code(&self, code: i32) -> &Self {
        if self.code != code {
            self.fail(&format!("expected exit code {code}, got {}", self.code));
        }
        self
    }

    pub fn assert_success(&self) -> &Self {
        self.assert_code(0)
    }

    /// stdout equals `expected`, ignoring trailing newlines on both sides.
    pub fn assert_stdout_eq(&self, expected: &str) -> &Self {
        if self.stdout.trim_end_matches('\n') != expected.trim_end_matches('\n') {
            self.fail(&format!("expected stdout {expected:?}"));
        }
        self
    }

    pub fn assert_stdout_contains(&self, needle: &str) -> &Self {
        if !self.stdout.contains(needle) {
            self.fail(&format!("expected stdout to contain {needle:?}"));
        }
        self
    }

    pub fn assert_stderr_contains(&self, needle: &str) -> &Self {
        if !self.stderr.contains(needle) {
            self.fail(&format!("expected stderr to contain {needle:?}"));
        }
        self
    }

    pub fn assert_stderr_empty(&self) -> &Self {
        if !self.stderr.trim().is_empty() {
            self.fail("expected empty stderr");
        }
        self
    }

    /// The launcher-error contract: exit 255 and stderr is exactly one line,
    /// `FATAL: <prog>: <message>`, containing `needle`.
    pub fn assert_fatal(&self, needle: &str) -> &Self {
        self.assert_code(255);
        let lines: Vec<&str> = self
            .stderr
            .lines()
            .filter(|l| !l.trim().is_empty())
            .collect();
        if lines.len() != 1 || !lines[0].starts_with("FATAL: ") {
            self.fail("expected exactly one line on stderr, starting with 'FATAL: '");
        }
        if !lines[0].contains(needle) {
            self.fail(&format!("expected the FATAL line to contain {needle:?}"));
        }
        self
    }

    /// A runtime that failed before the container started: exit 255 and one `FATAL: ` line,
    /// last, containing `needle`. Without a terminal the runtime's stderr is the container's,
    /// so its own message may come first; any such line must be repeated in the FATAL line.
    pub fn assert_launcher_failure(&self, needle: &str) -> &Self {
        self.assert_code(255);
        let lines: Vec<&str> = self
            .stderr
            .lines()
            .filter(|l| !l.trim().is_empty())
            .collect();
        let Some((last, before)) = lines.split_last() else {
            self.fail("expected a FATAL line on stderr");
        };
        if !last.starts_with("FATAL: ") || !last.contains(needle) {
            self.fail(&format!(
                "expected the last line to be FATAL containing {needle:?}"
            ));
        }
        if let Some(extra) = before.iter().find(|l| !last.contains(l.trim())) {
            self.fail(&format!("a line the FATAL line does not repeat: {extra:?}"));
        }
        self
    }

    /// stdout parsed as one JSON value.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(self.stdout.trim())
            .unwrap_or_else(|e| self.fail(&format!("stdout is not one JSON value: {e}")))
    }

    /// Non-empty stdout lines.
    pub fn lines(&self) -> Vec<&str> {
        self.stdout.lines().filter(|l| !l.is_empty()).collect()
    }
}
