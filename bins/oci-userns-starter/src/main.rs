//! oci-userns-starter: a chain-loader that enters the outer namespaces and execs the rest of its
//! argv.
//!
//! It does one job and then replaces itself with `PROG`, in the style of s6's chain-loaders: no
//! resident parent, so `PROG`'s exit status and every signal sent to the starter's pid reach
//! `PROG` directly, with no proxy.
//!
//! * host root: a private mount namespace only (`/` made recursively private);
//! * unprivileged: a new user and mount namespace; the map is host id -> 0 plus the subordinate
//!   range -> 1..N (written by newuidmap/newgidmap from a short-lived helper child), or the
//!   single-ID map when there is no range;
//! * `--overlay BUNDLE`: the overlay over the read-only cached rootfs, with a tmpfs upper or
//!   the bundle's persistent overlay directory (`overlays.json`).

mod mountpoints;
mod mounts;
mod userns;

use anyhow::{Context, Result, bail};
use common::cli::Tool;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;

const TOOL: Tool = Tool {
    name: "oci-userns-starter",
    help: "\
Usage: oci-userns-starter [--overlay BUNDLE] [--tmpfs-size MIB] [--fakeroot] -- PROG [ARGS...]

Enter the outer namespaces and exec PROG (no resident parent).

As host root: a private mount namespace only. Unprivileged: a new user and mount namespace
mapping your uid/gid to 0 and your /etc/subuid and /etc/subgid ranges to 1..N (through
newuidmap/newgidmap), or a single-ID map when you have no ranges.

Options:
  --overlay BUNDLE     if BUNDLE/rootfs.lower or BUNDLE/overlays.json exists, mount an overlay
                       on BUNDLE/rootfs: lower = the overlays.json read-only directories (first
                       on top), then rootfs.lower (else BUNDLE/rootfs itself); upper/work = the
                       writable overlay directory's upper/ and work/ (locked for the run), else
                       a tmpfs on BUNDLE/.overlay
  --tmpfs-size MIB     size of that tmpfs in MiB (default 64)
  --fakeroot           accepted for symmetry with oci-mkspec: the outer map is the same
  -h, --help           print this help
  --version            print the version

Environment: SINGULARITY_OCI_SINGLE_ID=1 forces the single-ID map; PROG receives
_CONTAINERS_ROOTLESS_UID and _CONTAINERS_ROOTLESS_GID (the host identity).
See oci-userns-starter(1).
",
};

/// Default size of the overlay's tmpfs upper layer, in MiB.
const DEFAULT_TMPFS_MIB: u64 = 64;

struct Options {
    overlay: Option<PathBuf>,
    tmpfs_mib: u64,
    command: Vec<String>,
}

fn parse(args: common::cli::Args) -> Result<Options> {
    let mut opts = args.opts;
    let overlay: Option<PathBuf> = opts.opt_value_from_str("--overlay")?;
    let tmpfs_mib = match opts.opt_value_from_str::<_, String>("--tmpfs-size")? {
        Some(v) => v
            .parse::<u64>()
            .map_err(|_| anyhow::anyhow!("--tmpfs-size needs a whole number of MiB, got '{v}'"))?,
        None => DEFAULT_TMPFS_MIB,
    };
    // --fakeroot changes only the spec (oci-mkspec); the outer map is the same in both modes.
    let _fakeroot = opts.contains("--fakeroot");
    let has_command = args.has_command;
    let rest = common::cli::Args {
        opts,
        command: args.command,
        has_command,
    };
    let (pos, command) = rest.positionals()?;
    if let Some(p) = pos.first() {
        bail!("unexpected argument '{p}': put the program after '--'");
    }
    if command.is_empty() {
        bail!("no program given: usage: oci-userns-starter [OPTIONS] -- PROG [ARGS...]");
    }
    if tmpfs_mib == 0 {
        bail!("--tmpfs-size must be at least 1 (MiB)");
    }
    Ok(Options {
        overlay,
        tmpfs_mib,
        command,
    })
}

fn main() {
    TOOL.main(|args| {
        let o = parse(args)?;
        // Check the bundle before creating any namespace: a typo must not cost a userns.
        let overlay = o
            .overlay
            .as_deref()
            .map(mounts::OverlayPlan::for_bundle)
            .transpose()?
            .flatten();
        let entered = userns::enter()?;
        common::mountns::make_root_private()?;
        if let Some(plan) = overlay {
            plan.mount(o.tmpfs_mib, entered.unprivileged)?;
        }
        if let Some((uid, gid)) = entered.host_ids {
            // SAFETY of set_var: the starter is single-threaded.
            unsafe {
                std::env::set_var(common::identity::ENV_ROOTLESS_UID, uid.to_string());
                std::env::set_var(common::identity::ENV_ROOTLESS_GID, gid.to_string());
            }
        }
        // Our own PATH lookup, not execvp's: it would run a PROG from the working directory
        // through an empty PATH entry.
        let program = if o.command[0].contains('/') {
            PathBuf::from(&o.command[0])
        } else {
            common::runtime::which(&o.command[0])
                .with_context(|| format!("'{}' not found on PATH", o.command[0]))?
        };
        let err = std::process::Command::new(&program)
            .arg0(&o.command[0])
            .args(&o.command[1..])
            .exec();
        Err(err).with_context(|| format!("cannot execute '{}'", o.command[0]))
    })
}
