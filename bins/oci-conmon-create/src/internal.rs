//! The two modes in which conmon calls this executable back. They are internal (the first
//! argument is a marker no user types), take their arguments raw, and never print a record.
//!
//! * `__runtime-wrapper RUNTIME ARGS...`: conmon's `--runtime` for crun on a hybrid-cgroup host.
//!   conmon can only exec a path, so the fix cannot be a flag: this mode applies
//!   `common::cgroupfix::apply()` (a private mount namespace in which `/dev/null` hides the cgroup2
//!   controllers) and execs RUNTIME with ARGS. Nothing changes outside that namespace.
//! * `__exit-cleanup STATE_DIR`: conmon's `--exit-command`, run after the container has exited
//!   and conmon has written the exit status. It removes conmon's FIFOs and socket from the bundle
//!   and nothing else: the runtime keeps the container as `stopped`, so `state` still answers and
//!   `oci-runtime-shim delete ID` removes it (runtime state, state directory, bundle lock).

use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};

pub const RUNTIME_WRAPPER: &str = "__runtime-wrapper";
pub const EXIT_CLEANUP: &str = "__exit-cleanup";

/// Run an internal mode if argv asks for one; otherwise return.
pub fn dispatch() {
    let mut argv = std::env::args_os().skip(1);
    let Some(first) = argv.next() else { return };
    if first == RUNTIME_WRAPPER {
        let rest: Vec<OsString> = argv.collect();
        std::process::exit(runtime_wrapper(rest));
    }
    if first == EXIT_CLEANUP {
        let sd = argv.next().map(PathBuf::from);
        std::process::exit(match sd {
            Some(sd) => exit_cleanup(&sd),
            None => 2,
        });
    }
}

fn runtime_wrapper(args: Vec<OsString>) -> i32 {
    let Some((runtime, rest)) = args.split_first() else {
        eprintln!("oci-conmon-create {RUNTIME_WRAPPER}: no runtime given");
        return 127;
    };
    if common::cgroupfix::host_needs_fix()
        && let Err(e) = common::cgroupfix::apply()
    {
        // conmon forwards the runtime's stderr as the create error: say it in one line.
        eprintln!(
            "cannot apply the crun hybrid-cgroup fix: {}",
            common::cli::format_chain(&e)
        );
        return 1;
    }
    let err = std::process::Command::new(runtime).args(rest).exec();
    eprintln!("cannot execute {}: {err}", Path::new(runtime).display());
    127
}

fn exit_cleanup(sd: &Path) -> i32 {
    // The container may have been deleted (`delete --force`) while running: then there is
    // nothing of ours left to clean.
    let Ok(bundle) = common::conmon::bundle_of(sd) else {
        return 0;
    };
    common::conmon::remove_bundle_leftovers(&bundle);
    0
}
