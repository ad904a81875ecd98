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
use common::record::{ContainerPlace, ContainerRecord, LogFormat};
use std::path::{Path, PathBuf};

const TOOL: Tool = Tool {
    name: "oci-conmon-create",
    help: "\
Usage: oci-conmon-create --bundle B [OPTIONS] ID

Create container ID from bundle B under conmon, in the background, without starting it
(start it with `oci-runtime-shim start ID`, attach with `oci-attach ID`).
Prints one JSON record (id, pid, conmonPid, stateDir, logPath, logFormat, ...).

Options:
  -b, --bundle B         the bundle directory (config.json + rootfs); required
  -l, --log-path P       container log (default STATE/containers/ID/container.log)
      --log-format F     k8s-file (default; 'kubernetes' is accepted too)
      --stdout F         with --stderr: the container writes its stdout and stderr straight
      --stderr F         into these files (appended, created 0644; conmon's passthrough: no
                         container log, no attach socket, stdin /dev/null)
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
    let passthrough = o
        .output
        .as_ref()
        .map(|(out, err)| -> Result<_> {
            Ok((
                (common::fsutil::absolute(out)?, output_file(out)?),
                (common::fsutil::absolute(err)?, output_file(err)?),
            ))
        })
        .transpose()?;
    let log_path = match (&o.log_path, &passthrough) {
        (_, Some(((out, _), _))) => out.clone(),
        (Some(p), None) => check_log_path(p)?,
        (None, None) => sd.join(files::CONTAINER_LOG),
    };
    let error_log_path = passthrough.as_ref().map(|(_, (err, _))| err.clone());
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
        passthrough: passthrough.map(|((_, out), (_, err))| (out, err)),
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
    let mut record = ContainerRecord {
        log_path,
        terminal: bundle.terminal,
        pid_file,
        ..ContainerRecord::created(place, created.pid, created.conmon_pid)
    };
    if error_log_path.is_some() {
        record.log_format = LogFormat::Passthrough;
        record.error_log_path = error_log_path;
        record.attach_socket = None;
    }
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

/// A file the container writes its output into: appended to, created 0644 (as SingularityCE
/// makes its instance logs), never through a symbolic link, and only a regular file of the
/// caller's (a FIFO or a device would block or leak the output elsewhere).
fn output_file(p: &Path) -> Result<std::fs::File> {
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    let f = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o644)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(p)
        .with_context(|| format!("cannot open the output file {}", p.display()))?;
    let md = f.metadata()?;
    if !md.is_file() || md.uid() != nix::unistd::geteuid().as_raw() {
        bail!(
            "the output file {} is not a regular file of yours",
            p.display()
        );
    }
    // Back to blocking writes for the container.
    nix::fcntl::fcntl(
        &f,
        nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_APPEND),
    )
    .with_context(|| format!("cannot set up {}", p.display()))?;
    Ok(f)
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
