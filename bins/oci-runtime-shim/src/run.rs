//! `run`: a container in the foreground, tied to its launcher. The state directory comes from
//! the lifecycle core; what is `run`'s own is the launcher tie (`launcher.rs`), the signal proxy
//! (`proxy.rs`), the terminal relay (`console.rs`) and the throwaway bundle (`cleanup.rs`).

use crate::args::Global;
use anyhow::{Context, Result, bail};
use common::lifecycle::host::RealHost;
use common::lifecycle::ops::create::{check_bundle, prepare_new_container};
use common::lifecycle::process::{Program, Runtime};
use common::lifecycle::statedir::{self, SdGuard, StateDir};
use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// `--remove-bundle` and the dev:ino the bundle must still have.
pub type Removal = Option<Option<(u64, u64)>>;

pub fn run(
    g: &Global,
    bundle: &Path,
    pid_file: Option<PathBuf>,
    id: Option<String>,
    remove_bundle: Removal,
) -> Result<i32> {
    let bundle = check_bundle(bundle)?;
    let id = id.unwrap_or_else(|| format!("sioci-{}", common::fsutil::unique_suffix()));
    statedir::check_container_id(&id)?;
    // Resolved once: the runtime's path and the state root take a dozen path lookups.
    let rt = crate::ops::program(g, g.runtime.as_deref())?;
    let watchdog = match tie_to_launcher(&rt, &bundle, &id, remove_bundle) {
        Ok(w) => w,
        Err(e) => {
            // Nobody else will remove a throwaway bundle whose launcher is gone.
            if let Some(expected) = remove_bundle {
                let _ = crate::cleanup::remove_bundle(&bundle, expected);
            }
            return Err(e);
        }
    };
    let outcome = run_in(&rt, &bundle, pid_file, id, (&watchdog, remove_bundle));
    if let Some(expected) = remove_bundle {
        // Whatever the outcome: the bundle was made for this run only. A failure here must not
        // hide the container's exit status.
        if let Err(e) = crate::cleanup::remove_bundle(&bundle, expected) {
            common::cli::warn(format!(
                "cannot remove bundle {}: {}",
                bundle.display(),
                common::cli::format_chain(&e)
            ));
        }
    }
    watchdog.finish();
    outcome
}

/// The container must not outlive its launcher: see launcher.rs. The watchdog undoes what this
/// run made (container, state directory, and the bundle with `--remove-bundle`) if the shim is
/// killed.
fn tie_to_launcher(
    rt: &Program,
    bundle: &Path,
    id: &str,
    remove_bundle: Removal,
) -> Result<crate::launcher::Watchdog> {
    crate::launcher::die_with_parent()?;
    let own_root = crate::escapees::own_root(bundle);
    crate::launcher::Watchdog::start(|| {
        // The shim's descriptors close (waking the watchdog) before the kernel sends the
        // runtime its parent-death signal: a runtime still finishing its `run` can write the
        // container's state just after a first `delete` found none. So delete again, until the
        // runtime has surely gone.
        for pause_ms in [0, 100, 300, 600] {
            std::thread::sleep(std::time::Duration::from_millis(pause_ms));
            rt.force_delete(id);
        }
        // A runtime killed after letting the container go but before writing its state leaves
        // a container no `delete` finds: kill what still runs on this run's root (escapees.rs).
        // Again while any were found (one may have forked), for at most about 2 s.
        if let Some(root) = own_root {
            for _ in 0..40 {
                if crate::escapees::kill_rooted_at(root) == 0 {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
        }
        if let Ok(Some(sd)) = StateDir::open(&rt.root, id) {
            let _ = sd.remove();
        }
        if let Some(expected) = remove_bundle
            && let Err(e) = crate::cleanup::remove_bundle(bundle, expected)
        {
            common::cli::warn(format!(
                "cannot remove bundle {}: {}",
                bundle.display(),
                common::cli::format_chain(&e)
            ));
        }
    })
}

/// Remove what earlier runs left when their shim and watchdog were both killed: the container
/// (through the runtime that made it), its bundle when that run owned it, its state.
fn sweep_orphans(rt: &Program) {
    for o in crate::launcher::orphans(&rt.root) {
        let made_by = Program {
            bin: common::lifecycle::runtime::RuntimeBinary {
                path: o
                    .runtime
                    .as_deref()
                    .map(PathBuf::from)
                    .unwrap_or_else(|| rt.bin.path.clone()),
                kind: rt.bin.kind,
            },
            root: rt.root.clone(),
            debug: false,
        };
        made_by.force_delete(&o.id);
        // A bundle that is gone, or is not a directory any more, is not touched.
        if let Some(b) = &o.bundle
            && std::fs::symlink_metadata(b).is_ok_and(|m| m.is_dir())
            && let Err(e) = crate::cleanup::remove_bundle(b, o.bundle_inode)
        {
            common::cli::warn(format!(
                "cannot remove bundle {} of killed container {}: {}",
                b.display(),
                o.id,
                common::cli::format_chain(&e)
            ));
        }
        common::cli::debug(format!("swept container {} of a killed launcher", o.id));
        o.forget();
    }
}

fn run_in(
    rt: &Program,
    bundle: &Path,
    pid_file: Option<PathBuf>,
    id: String,
    launcher: (&crate::launcher::Watchdog, Removal),
) -> Result<i32> {
    sweep_orphans(rt);
    prepare_new_container(&rt.bin, &RealHost)?;
    let guard = SdGuard::new(StateDir::create(&rt.root, &id)?);
    let dir = guard.get();
    dir.record(bundle, &rt.bin.path)?;
    crate::launcher::record(dir, launcher.0, launcher.1)?;
    let pid_file = match pid_file {
        Some(p) => {
            let p = common::fsutil::absolute(&p)?;
            std::os::unix::fs::symlink(&p, dir.pid_file()).context("cannot link the pid file")?;
            p
        }
        None => dir.pid_file(),
    };
    if crate::console::wants_terminal(bundle)? {
        return crate::console::run(
            rt,
            &crate::console::Paths {
                bundle,
                pid_file: &pid_file,
                state_dir: &dir.dir,
                id: &id,
            },
        );
    }
    // The container's stdio is the runtime's, so the runtime's stderr cannot be captured here:
    // its own words also go to its `--log`, read back when the container never started.
    let words: Vec<OsString> = vec![
        "--log".into(),
        dir.runtime_log().into(),
        "run".into(),
        "--bundle".into(),
        bundle.into(),
        "--pid-file".into(),
        pid_file.as_os_str().into(),
        id.as_str().into(),
    ];
    let mut cmd = rt.command(&words);
    cmd.current_dir(bundle);
    crate::launcher::kill_with_shim(&mut cmd);
    let before = pid_file_identity(&pid_file);
    let gate = crate::proxy::StartGate::new(&pid_file, bundle);
    let outcome = crate::proxy::run_with_proxy(&mut cmd, Some(gate))?;
    if outcome.killed {
        // The runtime died before it could remove its state: do it for it.
        rt.force_delete(&id);
    } else if outcome.code != 0 && pid_file_identity(&pid_file) == before {
        // crun and runc write the pid file only once the container's process has been set up
        // (mounts, devices, the command found): without it the status is the runtime's, not the
        // container's, and the failure is the launcher's.
        rt.force_delete(&id);
        let said = std::fs::read_to_string(dir.runtime_log())
            .ok()
            .and_then(|t| common::lifecycle::error::last_message(&t))
            .unwrap_or_else(|| format!("{} exited with {}", rt.name(), outcome.code));
        bail!("the container did not start: {said}");
    }
    Ok(outcome.code)
}

/// What tells a pid file the runtime wrote during this run from one that was there before
/// (a `--pid-file` the caller reuses): device, inode and modification time.
fn pid_file_identity(p: &Path) -> Option<(u64, u64, i64, i64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(p)
        .ok()
        .map(|m| (m.dev(), m.ino(), m.mtime(), m.mtime_nsec()))
}
