//! oci-conmon-create: create a background container monitored by conmon.
//!
//! The container is created, not started: conmon stays behind as its monitor (logs, attach
//! socket, exit status), and `oci-runtime-shim start ID` starts it. conmon is driven with the
//! `_OCI_SYNCPIPE`/`_OCI_STARTPIPE` protocol of its API version 1 (see `launch.rs`).
//!
//! The same executable has two internal modes that conmon calls back (see `internal.rs`): the
//! runtime wrapper that applies the crun hybrid-cgroup fix, and the exit command.

mod bundle;
mod internal;
mod launch;
mod options;

use anyhow::{Context, Result, bail};
use common::cli::Tool;
use common::conmon as files;
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
    // conmon calls this executable back for the runtime and for the exit command; those modes
    // take raw argv (they are not user-facing) and must run before any option parsing.
    common::cli::install_panic_hook();
    internal::dispatch();
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
    let runtime = common::runtime::select(o.runtime.as_deref())?;
    let bundle = bundle::Bundle::open(&o.bundle)?;
    let root = match &o.root {
        Some(r) => {
            let r = common::fsutil::absolute(r)?;
            common::fsutil::private_dir(&r)?;
            r
        }
        None => common::statedir::runtime_state_root()?,
    };
    let sd = common::statedir::container_dir(&root, &o.id)?;
    refuse_existing(&root, &sd, &o.id)?;

    let log_path = match &o.log_path {
        Some(p) => check_log_path(p)?,
        None => sd.join(files::CONTAINER_LOG),
    };
    let pid_file = o
        .pid_file
        .as_deref()
        .map(common::fsutil::absolute)
        .transpose()?;

    // The bundle lock and the state directory are ours from here; `Prepared` undoes both unless
    // the create succeeds.
    let mut prepared = bundle::Prepared::new(&bundle, &o.id, &root, &sd)?;
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
    };
    let created = launch::run(&plan)?;

    std::os::unix::fs::symlink(&bundle.path, sd.join(files::BUNDLE_LINK))
        .with_context(|| format!("cannot link {} to the bundle", sd.display()))?;
    // Later operations (oci-runtime-shim) use the runtime that created the container.
    write_state_file(
        &sd.join(files::RUNTIME),
        runtime.path.as_os_str().as_encoded_bytes(),
    )?;
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
    write_state_file(&sd.join(files::CREATE_RECORD), json.as_bytes())?;
    prepared.keep();
    println!("{json}");
    common::cli::debug(format!(
        "container {} created with pid {} (conmon {})",
        o.id, created.pid, created.conmon_pid
    ));
    Ok(())
}

/// A new file in the fresh state directory. No temporary name and no fsync: nobody reads the
/// directory before the record is printed, and a container does not outlive a crash (the state
/// root is normally on tmpfs); fsyncs would cost milliseconds per create on a busy disk.
fn write_state_file(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut f| f.write_all(bytes))
        .with_context(|| format!("cannot write {}", path.display()))
}

/// An id that is already in use must fail before anything is touched: the failure path removes
/// the state directory and asks the runtime to delete `ID`, which must never hit another
/// container.
fn refuse_existing(root: &Path, sd: &Path, id: &str) -> Result<()> {
    if sd.symlink_metadata().is_ok() {
        bail!(
            "container '{id}' already exists (state directory {})",
            sd.display()
        );
    }
    // crun and runc both keep their state in ROOT/ID.
    if root.join(id).symlink_metadata().is_ok() {
        bail!(
            "container '{id}' already exists in the runtime state ({})",
            root.join(id).display()
        );
    }
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
