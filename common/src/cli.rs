//! CLI conventions shared by every stage.
//!
//! * `--help` prints the usage text on stdout and exits 0; `--version` prints `NAME VERSION`.
//! * Launcher errors print exactly one line `FATAL: NAME: message` on stderr and exit 255.
//! * Diagnostics go to stderr; stdout carries only the stage's record.

use std::ffi::OsString;
use std::fmt::Display;
use std::sync::OnceLock;

/// Exit status for any launcher error (bad input, missing image, runtime not found, ...).
pub const EXIT_FATAL: i32 = 255;

static PROGRAM: OnceLock<&'static str> = OnceLock::new();

/// Name of the running stage, for messages printed from shared code.
pub fn program() -> &'static str {
    PROGRAM.get().copied().unwrap_or("singularity-oci")
}

/// Static description of one executable.
pub struct Tool {
    pub name: &'static str,
    /// Full `--help` text. Its first line is the usage line.
    pub help: &'static str,
}

/// The arguments of one invocation: options, and the command after the first `--`.
///
/// Splitting at `--` before option parsing matters: pico-args scans the whole vector, so an
/// option spelled inside the container command (`-- sh -c 'x --env y'`) must never be seen.
pub struct Args {
    pub opts: pico_args::Arguments,
    /// Everything after the first `--` (empty when there was none).
    pub command: Vec<String>,
    /// Whether a `--` was present at all.
    pub has_command: bool,
}

impl Args {
    /// Build from an explicit argument vector (without the program name).
    pub fn from_vec(raw: Vec<OsString>) -> anyhow::Result<Args> {
        let mut opts = Vec::new();
        let mut command = Vec::new();
        let mut has_command = false;
        for a in raw {
            if has_command {
                command.push(
                    a.into_string()
                        .map_err(|a| anyhow::anyhow!("argument is not valid UTF-8: {a:?}"))?,
                );
            } else if a == "--" {
                has_command = true;
            } else {
                opts.push(a);
            }
        }
        Ok(Args {
            opts: pico_args::Arguments::from_vec(opts),
            command,
            has_command,
        })
    }

    /// Reject leftover options; return the remaining positional arguments.
    pub fn positionals(self) -> anyhow::Result<(Vec<String>, Vec<String>)> {
        Ok((positionals(self.opts)?, self.command))
    }

    /// Exactly one positional argument (a container id, a reference...), no `--` command.
    /// `usage` is quoted in the errors.
    pub fn single_positional(self, what: &str, usage: &str) -> anyhow::Result<String> {
        if self.has_command {
            anyhow::bail!("unexpected '--' (usage: {usage})");
        }
        let mut pos = positionals(self.opts)?.into_iter();
        match (pos.next(), pos.next()) {
            (Some(one), None) => Ok(one),
            (None, _) => anyhow::bail!("no {what} given (usage: {usage})"),
            (Some(_), Some(extra)) => {
                anyhow::bail!("unexpected argument '{extra}' (usage: {usage})")
            }
        }
    }
}

/// What is left of `opts` once every option was taken: positional arguments only; an unknown
/// `-option` is an error.
pub fn positionals(opts: pico_args::Arguments) -> anyhow::Result<Vec<String>> {
    let mut pos = Vec::new();
    for a in opts.finish() {
        let s = a
            .into_string()
            .map_err(|a| anyhow::anyhow!("argument is not valid UTF-8: {a:?}"))?;
        if s.starts_with('-') && s.len() > 1 {
            anyhow::bail!("unknown option '{s}' (see --help)");
        }
        pos.push(s);
    }
    Ok(pos)
}

impl Tool {
    /// Parse the process arguments: handle `--help`/`--version` (anywhere before `--`).
    pub fn args(&self) -> anyhow::Result<Args> {
        self.args_from(false)
    }

    fn args_from(&self, chainable: bool) -> anyhow::Result<Args> {
        PROGRAM.get_or_init(|| self.name);
        install_panic_hook();
        restore_default_interrupts();
        let mut raw: Vec<OsString> = std::env::args_os().skip(1).collect();
        // The next stage's words are its own: its --help is not this stage's.
        if chainable && let Some(next) = crate::chain::split(&mut raw)? {
            crate::chain::die_with_launcher()?;
            crate::chain::set_next(next);
        }
        for a in &raw {
            if a == "--" {
                break;
            }
            if a == "--help" || a == "-h" {
                print!("{}", self.help);
                std::process::exit(0);
            }
            if a == "--version" {
                println!("{} {}", self.name, env!("CARGO_PKG_VERSION"));
                std::process::exit(0);
            }
        }
        Args::from_vec(raw)
    }

    /// Run `body`, turning an error into a FATAL line and exit 255, and an `Ok(code)` into that
    /// exit code. Never returns.
    pub fn main(&self, body: impl FnOnce(Args) -> anyhow::Result<i32>) -> ! {
        self.main_from(false, body)
    }

    /// [`Tool::main`] for a stage that takes `--then PROGRAM [ARGS...]` (`crate::chain`): on
    /// success its record goes to PROGRAM's stdin, by exec, instead of to stdout.
    pub fn main_chainable(&self, body: impl FnOnce(Args) -> anyhow::Result<i32>) -> ! {
        self.main_from(true, body)
    }

    fn main_from(&self, chainable: bool, body: impl FnOnce(Args) -> anyhow::Result<i32>) -> ! {
        let result = self.args_from(chainable).and_then(body);
        match result {
            Ok(0) if crate::chain::is_chained() => fatal(format_chain(&crate::chain::exec_next())),
            Ok(code) => {
                use std::io::Write;
                let _ = std::io::stdout().flush();
                std::process::exit(code)
            }
            Err(e) => fatal(format_chain(&e)),
        }
    }
}

/// Put SIGINT and SIGQUIT back to their default action.
///
/// A POSIX shell starts asynchronous commands (`cmd &`) with SIGINT and SIGQUIT ignored when job
/// control is off, and ignored dispositions survive exec: without this, the front's background
/// stage chain, the runtime and finally the container process would all ignore Ctrl-C, and a
/// container shell could not even `trap` SIGINT.
fn restore_default_interrupts() {
    for sig in [libc::SIGINT, libc::SIGQUIT] {
        // SAFETY: installing SIG_DFL has no preconditions.
        unsafe {
            libc::signal(sig, libc::SIG_DFL);
        }
    }
}

/// Make a panic (a bug) end like every other launcher error: one `FATAL:` line and exit 255.
///
/// The release profile aborts on panic, which would otherwise kill the stage with SIGABRT
/// (status 134, indistinguishable from a container killed by SIGABRT) after a multi-line message.
/// `_exit` rather than `exit`: another thread may be mid-write to stdout, and a half record must
/// not be flushed out; nothing a stage leaves behind is cleaned by atexit handlers anyway.
pub fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let what = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "panic".into());
        let place = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        eprintln!(
            "FATAL: {}: internal error (a bug, please report it): {}{place}",
            program(),
            one_line(&what)
        );
        // SAFETY: _exit ends the process at once; no Rust state is touched afterwards.
        unsafe { libc::_exit(EXIT_FATAL) }
    }));
}

/// Print `FATAL: prog: msg` and exit 255.
pub fn fatal(msg: impl Display) -> ! {
    eprintln!("FATAL: {}: {}", program(), one_line(&msg.to_string()));
    std::process::exit(EXIT_FATAL)
}

/// Print a `WARNING:` line on stderr unless `SINGULARITY_SILENT` is set (the front's
/// `--silent`: errors only, as SingularityCE's).
pub fn warn(msg: impl Display) {
    if std::env::var_os("SINGULARITY_SILENT").is_none() {
        eprintln!("WARNING: {}: {}", program(), one_line(&msg.to_string()));
    }
}

/// Print an `INFO:` line on stderr unless `SINGULARITY_QUIET` is set.
pub fn info(msg: impl Display) {
    if std::env::var_os("SINGULARITY_QUIET").is_none() {
        eprintln!("INFO: {}: {}", program(), one_line(&msg.to_string()));
    }
}

/// Print a debug line when `SINGULARITY_DEBUG` is set (the front sets it for `--debug`).
pub fn debug(msg: impl Display) {
    if debug_enabled() {
        eprintln!("DEBUG: {}: {}", program(), msg);
    }
}

pub fn debug_enabled() -> bool {
    std::env::var_os("SINGULARITY_DEBUG").is_some_and(|v| !v.is_empty() && v != "0")
}

/// `outer: inner: innermost` for an anyhow chain, on one line.
pub fn format_chain(e: &anyhow::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for cause in e.chain() {
        let s = cause.to_string();
        if !parts.iter().any(|p| p.contains(&s)) {
            parts.push(s);
        }
    }
    parts.join(": ")
}

fn one_line(s: &str) -> String {
    s.trim_end().replace('\n', " | ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(a: &[&str]) -> Vec<OsString> {
        a.iter().map(OsString::from).collect()
    }

    #[test]
    fn options_after_dashdash_belong_to_the_command() {
        let mut a = Args::from_vec(v(&["--env", "A=1", "--", "sh", "-c", "x --env B=2"])).unwrap();
        let envs: Vec<String> = a.opts.values_from_str("--env").unwrap();
        assert_eq!(envs, vec!["A=1"]);
        let (pos, cmd) = a.positionals().unwrap();
        assert!(pos.is_empty());
        assert_eq!(cmd, vec!["sh", "-c", "x --env B=2"]);
    }

    #[test]
    fn unknown_option_is_refused() {
        let a = Args::from_vec(v(&["--bogus"])).unwrap();
        assert!(a.positionals().is_err());
    }

    const PANIC_CHILD: &str = "SIOCI_TEST_PANIC_CHILD";

    /// Runs only as the child of `a_panic_is_one_fatal_line_and_exit_255`: a panic off the main
    /// thread, as in the parallel blob downloads.
    #[test]
    fn panic_hook_child() {
        if std::env::var_os(PANIC_CHILD).is_none() {
            return;
        }
        install_panic_hook();
        let _ = std::thread::spawn(|| panic!("boom\nsecond line")).join();
        unreachable!("the hook exits");
    }

    #[test]
    fn a_panic_is_one_fatal_line_and_exit_255() {
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["cli::tests::panic_hook_child", "--exact", "--nocapture"])
            .env(PANIC_CHILD, "1")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(EXIT_FATAL), "stderr: {err}");
        let lines: Vec<&str> = err.lines().collect();
        assert_eq!(lines.len(), 1, "stderr: {err}");
        assert!(
            lines[0].starts_with("FATAL: ") && lines[0].contains("boom | second line"),
            "{err}"
        );
        assert!(lines[0].contains("cli.rs:"), "{err}");
    }

    #[test]
    fn chain_is_one_line_without_repeats() {
        let e = anyhow::anyhow!("inner").context("outer");
        assert_eq!(format_chain(&e), "outer: inner");
    }
}
