//! oci-conmon-create: create a background container monitored by conmon.
//!
//! The container is created, not started: conmon stays behind as its monitor (logs, attach
//! socket, exit status), and `oci-runtime-shim start ID` starts it. conmon is driven with the
//! `_OCI_SYNCPIPE`/`_OCI_STARTPIPE` protocol of its API version 1 (see `launch.rs`).
//!
//! conmon calls two other programs back, found beside this one: `oci-cgroup-fix`, the
//! chain-loader that applies crun's hybrid-cgroup fix before the runtime where the host needs
//! it, and `oci-runtime-shim conmon-exited`, the exit command.

mod bundle;
mod launch;
mod options;

use anyhow::{Context, Result, bail};
use common::cli::Tool;
use common::lifecycle::ops::create::Reservation;
use common::lifecycle::statedir as files;
use common::record::{ContainerPlace, ContainerRecord};
use std::path::{Path, PathBuf};

const TOOL: Tool = Tool {
    name: "oci-conmon-create",
    help: "\
Usage: oci-conmon-create --bundle B [OPTIONS] ID

Create container ID from bundle B under conmon, in the background, without starting it
(start it with `oci-runtime-shim start ID`, attach with `oci-attach ID`).
Prints one JSON record (id, pid, conmonPid, stateDir, logPath, attachSocket, ...).

Options:
  -b, --bundle B         the bundle directory (config.json + rootfs); required
  -l, --log-path P       container log (default STATE/containers/ID/container.log)
      --log-format F     k8s-file (default; 'kubernetes' is accepted too)
      --pid-file F       also write the container's pid to F
      --runtime R        crun, runc or a path (default: $SINGULARITY_OCI_RUNTIME, crun, runc)
      --root DIR         runtime state root (default: see oci-conmon-create(1))
      --timeout SECS     give up when the container is not created after SECS (default 30)
  -h, --help             print this help
      --version          print the version

Unprivileged users run it inside their outer namespaces:
  oci-userns-starter -- oci-conmon-create --bundle B ID
See oci-conmon-create(1).
",
};

fn main() {
    TOOL.main(|args| {
        let o = options::parse(args)?;
        create(o)?;
        Ok(0)
    })
}

fn create(o: options::Options) -> Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!(
            "run as root, or inside your outer namespaces: oci-userns-starter -- oci-conmon-create --bundle {} {}",
            o.bundle.display(),
            o.id
        );
    }
    let conmon = common::runtime::which("conmon")
        .context("conmon not found: install the 'conmon' package")?;
    let runtime = common::lifecycle::runtime::select(o.runtime.as_deref())?;
    let helpers = launch::Helpers::find(&runtime)?;
    let bundle = bundle::Bundle::open(&o.bundle)?;
    let root = common::lifecycle::root::resolve(o.root.as_deref())?;
    let sd = files::container_dir(&root, &o.id)?;
    let log_path = match &o.log_path {
        Some(p) => check_log_path(p)?,
        None => sd.join(files::CONTAINER_LOG),
    };
    let pid_file = o
        .pid_file
        .as_deref()
        .map(common::fsutil::absolute)
        .transpose()?;

    // The state directory (with its bundle link and runtime record) and the bundle lock are ours
    // from here; the reservation undoes both unless the create succeeds.
    let rt = common::lifecycle::process::Program {
        bin: runtime.clone(),
        root: root.clone(),
        debug: common::cli::debug_enabled(),
    };
    let reservation = Reservation::new(&rt, &o.id, &bundle.path)?;
    let plan = launch::Plan {
        conmon,
        runtime: runtime.clone(),
        root: root.clone(),
        id: o.id.clone(),
        bundle: bundle.path.clone(),
        state_dir: sd.clone(),
        log_path: log_path.clone(),
        terminal: bundle.terminal,
        timeout: o.timeout,
        helpers,
    };
    let created = launch::run(&plan)?;

    if let Some(f) = &pid_file {
        common::fsutil::atomic_write(f, created.pid.to_string().as_bytes(), 0o644)
            .with_context(|| format!("cannot write the pid file {}", f.display()))?;
    }
    let place = ContainerPlace {
        id: o.id.clone(),
        bundle: bundle.path.clone(),
        runtime: runtime.path.clone(),
        runtime_root: root.clone(),
        state_dir: sd.clone(),
    };
    let record = ContainerRecord {
        log_path,
        terminal: bundle.terminal,
        pid_file,
        ..ContainerRecord::created(place, created.pid, created.conmon_pid)
    };
    let json = serde_json::to_string(&record)?;
    reservation
        .state_dir()
        .write_new(files::CREATE_RECORD, json.as_bytes())?;
    reservation.keep();
    println!("{json}");
    common::cli::debug(format!(
        "container {} created with pid {} (conmon {})",
        o.id, created.pid, created.conmon_pid
    ));
    Ok(())
}

/// conmon parses `-l DRIVER:PATH` by splitting at ':', so a path with a colon cannot be passed.
fn check_log_path(p: &Path) -> Result<PathBuf> {
    let abs = common::fsutil::absolute(p)?;
    if abs.to_string_lossy().contains(':') {
        bail!(
            "log path {} contains ':', which conmon cannot accept",
            abs.display()
        );
    }
    match abs.parent() {
        Some(d) if d.is_dir() => Ok(abs),
        _ => bail!(
            "the directory of the log path {} does not exist",
            abs.display()
        ),
    }
}
