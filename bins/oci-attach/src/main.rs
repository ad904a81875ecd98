//! oci-attach: attach the user's terminal (or stdio) to a container monitored by conmon, as
//! created by oci-conmon-create.
//!
//! Exit status: the container's own when it exits while attached (from conmon's exit file);
//! 0 after a detach; 128+N when a signal N ends the session; 255 on errors.

mod detach;
mod session;
mod term;

use anyhow::Result;
use common::cli::Tool;
use common::lifecycle::ops::attach::{self, Ending};
use std::path::{Path, PathBuf};

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

struct Options {
    id: String,
    keys: Vec<u8>,
    root: Option<PathBuf>,
}

fn parse(mut args: common::cli::Args) -> Result<Options> {
    let keys: Option<String> = args.opts.opt_value_from_str("--detach-keys")?;
    let root: Option<PathBuf> = args.opts.opt_value_from_str("--root")?;
    let id = args.single_positional("container id", "oci-attach [--detach-keys KEYS] ID")?;
    common::lifecycle::statedir::check_container_id(&id)?;
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
    let at = attach::locate(o.root.as_deref(), &o.id)?;
    let sock =
        session::connect(&at.socket()).map_err(|e| attach::not_attachable(&o.id, &at.sd, e))?;
    let tty = term::stdin_is_tty();
    let ctl = tty.then(|| open_ctl(&at.ctl())).flatten();
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
    let ending = ending?;
    if ending == Ending::Detached {
        if tty {
            eprintln!();
        }
        common::cli::info(attach::detached_message(&o.id));
    }
    attach::exit_status(&o.id, &at.sd, ending, attach::EXIT_FILE_WAIT)
}

/// conmon's control FIFO, opened without blocking (no reader means no conmon: skip resizes).
fn open_ctl(p: &Path) -> Option<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    match std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(p)
    {
        Ok(f) => Some(f),
        Err(e) => {
            common::cli::debug(format!("no resize control ({}): {e}", p.display()));
            None
        }
    }
}
