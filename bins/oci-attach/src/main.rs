//! oci-attach: attach the user's terminal (or stdio) to a container monitored by conmon, as
//! created by oci-conmon-create.
//!
//! Exit status: the container's own when it exits while attached (from conmon's exit file);
//! 0 after a detach; 128+N when a signal N ends the session; 255 on errors.

mod detach;
mod session;
mod term;

use anyhow::{Context, Result, bail};
use common::cli::Tool;
use common::conmon as files;
use std::path::{Path, PathBuf};
use std::time::Duration;

const TOOL: Tool = Tool {
    name: "oci-attach",
    help: "\
Usage: oci-attach [OPTIONS] ID

Attach to container ID (created by oci-conmon-create): show its output, send it your input.
When stdin is a terminal it is put into raw mode, its size follows yours, and the detach keys
leave the container running.

Options:
      --detach-keys KEYS  detach sequence, Docker syntax (default ctrl-p,ctrl-q; '' disables)
      --root DIR          runtime state root the container was created with
  -h, --help              print this help
      --version           print the version

Exit status: the container's exit status when it exits while attached, 0 after a detach,
255 on errors. See oci-attach(1).
",
};

/// How long to wait for conmon's exit file after the output stream ends (conmon writes it right
/// after closing its clients; this only matters when conmon itself was killed).
const EXIT_FILE_WAIT: Duration = Duration::from_secs(10);

struct Options {
    id: String,
    keys: Vec<u8>,
    root: Option<PathBuf>,
}

fn parse(mut args: common::cli::Args) -> Result<Options> {
    let keys: Option<String> = args.opts.opt_value_from_str("--detach-keys")?;
    let root: Option<PathBuf> = args.opts.opt_value_from_str("--root")?;
    let id = args.single_positional("container id", "oci-attach [--detach-keys KEYS] ID")?;
    common::statedir::check_container_id(&id)?;
    let keys = detach::parse(keys.as_deref().unwrap_or(detach::DEFAULT_KEYS))?;
    Ok(Options { id, keys, root })
}

fn main() {
    TOOL.main(|args| {
        let o = parse(args)?;
        attach(&o)
    })
}

fn attach(o: &Options) -> Result<i32> {
    let root = match &o.root {
        Some(r) => common::fsutil::absolute(r)?,
        None => common::statedir::runtime_state_root()?,
    };
    let sd = common::statedir::container_dir(&root, &o.id)?;
    if !sd.is_dir() {
        bail!(
            "no container '{}' (no state directory {})",
            o.id,
            sd.display()
        );
    }
    let bundle = files::bundle_of(&sd)
        .with_context(|| format!("container '{}' was not created by oci-conmon-create", o.id))?;
    let socket = bundle.join(files::ATTACH_SOCKET);
    let sock = match session::connect(&socket) {
        Ok(s) => s,
        Err(e) => return Err(not_attachable(&o.id, &sd, e)),
    };

    let tty = term::stdin_is_tty();
    let ctl = tty.then(|| open_ctl(&bundle)).flatten();
    let mut s = session::Session {
        sock,
        ctl,
        matcher: (tty && !o.keys.is_empty()).then(|| detach::Matcher::new(o.keys.clone())),
    };
    let raw = if tty {
        Some(term::RawMode::enter()?)
    } else {
        None
    };
    let ending = s.run();
    drop(raw);
    match ending? {
        session::Ending::Detached => {
            if tty {
                eprintln!();
            }
            common::cli::info(format!(
                "detached from container {} (it keeps running; re-attach with: oci-attach {})",
                o.id, o.id
            ));
            Ok(0)
        }
        session::Ending::Signalled(n) => Ok(128 + n),
        session::Ending::StreamEnded => match wait_exit(&sd)? {
            Some(code) => Ok(code),
            None => bail!(
                "the connection to conmon ended but container '{}' left no exit status in {}",
                o.id,
                sd.join(files::EXIT_FILE).display()
            ),
        },
    }
}

/// The exit file, waiting while conmon is still alive to write it.
fn wait_exit(sd: &Path) -> Result<Option<i32>> {
    let deadline = std::time::Instant::now() + EXIT_FILE_WAIT;
    loop {
        let step = files::wait_exit_status(sd, Duration::from_millis(200))?;
        if step.is_some() {
            // conmon still runs the exit command (cleanup of its files); let it finish so that
            // a `delete` typed right after this returns finds the container settled.
            files::wait_monitor_gone(sd, Duration::from_secs(5));
            return Ok(step);
        }
        if !files::monitor_running(sd) || std::time::Instant::now() >= deadline {
            return files::read_exit_status(sd);
        }
    }
}

/// Why we cannot attach, in the user's terms.
fn not_attachable(id: &str, sd: &Path, e: anyhow::Error) -> anyhow::Error {
    match files::read_exit_status(sd) {
        Ok(Some(code)) => {
            anyhow::anyhow!("container '{id}' has exited (status {code}); its output is in its log")
        }
        _ => e.context(format!(
            "container '{id}' is not attachable (is its conmon still running?)"
        )),
    }
}

/// conmon's control FIFO, opened without blocking (no reader means no conmon: skip resizes).
fn open_ctl(bundle: &Path) -> Option<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    let p = bundle.join(files::CTL_FIFO);
    match std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(&p)
    {
        Ok(f) => Some(f),
        Err(e) => {
            common::cli::debug(format!("no resize control ({}): {e}", p.display()));
            None
        }
    }
}
