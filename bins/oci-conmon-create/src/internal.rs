//! The two modes in which conmon calls this executable back. They are internal (the first
//! argument is a marker no user types), take their arguments raw, and never print a record.
//!
//! * `__runtime-wrapper RUNTIME ARGS...`: conmon's `--runtime` for crun on a hybrid-cgroup host.
//!   conmon can only exec a path, so the fix cannot be a flag: this mode applies
//!   `common::cgroupfix::apply()` (a private mount namespace in which `/dev/null` hides the cgroup2
//!   controllers) and execs RUNTIME with ARGS. Nothing changes outside that namespace.
//! * `__exit-cleanup STATE_DIR BUNDLE`: conmon's `--exit-command`, run after the container has
//!   exited and conmon has written the exit status. It removes conmon's FIFOs and socket from the
//!   bundle and nothing else: the runtime keeps the container as `stopped`, so `state` still
//!   answers and `oci-runtime-shim delete ID` removes it (runtime state, state directory, bundle
//!   lock).

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
        let bundle = argv.next().map(PathBuf::from);
        std::process::exit(match (sd, bundle) {
            (Some(sd), Some(bundle)) => exit_cleanup(&sd, &bundle),
            _ => 2,
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

/// The FIFOs are removed only when they are certainly this conmon's: the state directory still
/// names our parent (conmon forks the exit command) as its monitor, or the state directory is
/// gone (the container is being deleted) and the bundle is unlocked or still locked by this
/// container's id. A new container on the same bundle has its state directory before it takes
/// the lock, so a quick `delete --force` + `create` never loses the new container's FIFOs.
fn exit_cleanup(sd: &Path, bundle: &Path) -> i32 {
    let parent = std::os::unix::process::parent_id() as i32;
    let id = sd.file_name().map(|n| n.to_string_lossy().into_owned());
    let ours = match common::conmon::read_pid(&sd.join(common::conmon::CONMON_PID)) {
        Ok(pid) => pid == parent,
        Err(_) if sd.exists() => false,
        Err(_) => match common::bundlelock::holder(bundle) {
            Ok(None) => true,
            Ok(Some(Some(h))) => Some(h.id) == id,
            _ => false,
        },
    };
    if ours {
        common::conmon::remove_bundle_leftovers(bundle);
    }
    0
}
