//! `start`: create the instance's container under conmon (through `oci-conmon-create`, its
//! output going to the log files), record it, and start it.
//!
//! It runs where the container is created: as host root in the starter's private mount
//! namespace, unprivileged inside the starter's user and mount namespaces. conmon is created
//! here and stays in that namespace, so the bundle's overlay mounted there lives exactly as long
//! as the instance, and conmon detaches into its own session with no controlling terminal.

use crate::Global;
use anyhow::{Context, Result, bail};
use common::lifecycle::host::RealHost;
use common::lifecycle::ops::{Target, delete};
use common::lifecycle::process::{Call, Program};
use common::lifecycle::statedir::StateDir;
use common::record::{ContainerRecord, Instance};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

pub fn run(g: &Global, mut args: common::cli::Args) -> Result<()> {
    let bundle: Option<PathBuf> = args.opts.opt_value_from_str(["-b", "--bundle"])?;
    let bundle_inode: Option<String> = args.opts.opt_value_from_str("--bundle-inode")?;
    let image: Option<String> = args.opts.opt_value_from_str("--image")?;
    let usage = "oci-instance start --bundle B [--bundle-inode DEV:INO] --image IMAGE NAME";
    let name = args.single_positional("instance name", usage)?;
    let (Some(bundle), Some(image)) = (bundle, image) else {
        bail!("--bundle and --image are required (usage: {usage})");
    };
    common::instance::check_name(&name)?;
    if let Some(b) = &bundle_inode {
        common::bundleremoval::parse_dev_ino(b)?;
    }
    let root = common::lifecycle::root::resolve(g.root.as_deref())?;
    refuse_taken(&root, &name)?;

    let logs = common::instance::log_dir()?;
    common::trusted::create_dir_all(&logs, 0o700)?;
    let (out, err) = common::instance::log_paths(&logs, &name);

    let created = create(g, &root, &bundle, &out, &err, &name)?;
    let sd = StateDir::open(&root, &name)?
        .with_context(|| format!("the state directory of '{name}' vanished"))?;
    let rt = Program {
        bin: common::lifecycle::runtime::select(Some(&created.runtime.to_string_lossy()))?,
        root: root.clone(),
        debug: common::cli::debug_enabled(),
    };
    let started = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let instance = Instance {
        name: name.clone(),
        pid: created.pid,
        conmon_pid: created.conmon_pid,
        image,
        started,
        start_time: common::instance::rfc3339(started),
        runtime: created.runtime.clone(),
        runtime_root: root.clone(),
        bundle: created.bundle.clone(),
        bundle_inode: bundle_inode.unwrap_or_default(),
        state_dir: sd.dir.clone(),
        log_out_path: out,
        log_err_path: err,
    };
    let outcome = common::instance::write(&sd, &instance).and_then(|()| {
        // The bundle is the instance's now: oci-mkspec's sweep of bundles whose launcher is
        // gone (the front, which ends in a moment) must leave it alone.
        let marker = created.bundle.join(common::bundlesweep::MARKER);
        match std::fs::remove_file(&marker) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(e).with_context(|| format!("cannot remove {}", marker.display()));
            }
            _ => {}
        }
        in_place(&rt, &["start", &name]).map(|_| ())
    });
    if let Err(e) = outcome {
        undo(&rt, &sd);
        return Err(e);
    }
    common::cli::info(format!("instance {name} started successfully"));
    Ok(())
}

/// One clear error for a name in use, before anything is made.
pub fn refuse_taken(root: &Path, name: &str) -> Result<()> {
    if let Some(sd) = StateDir::open(root, name)? {
        if common::instance::read(&sd)?.is_some() {
            bail!(
                "an instance named '{name}' already exists (see `singularity-oci instance list`)"
            );
        }
        bail!("a container named '{name}' already exists (see `singularity-oci oci list`)");
    }
    if root.join(name).symlink_metadata().is_ok() {
        bail!("a container named '{name}' already exists in the runtime state");
    }
    Ok(())
}

/// `oci-conmon-create --stdout OUT --stderr ERR --bundle B NAME`, found beside us. Its FATAL
/// line, if any, reaches the caller's stderr as it is.
fn create(
    g: &Global,
    root: &Path,
    bundle: &Path,
    out: &Path,
    err: &Path,
    name: &str,
) -> Result<ContainerRecord> {
    let program = common::runtime::sibling("oci-conmon-create")?;
    let mut cmd = Command::new(&program);
    cmd.arg("--root").arg(root);
    if let Some(r) = &g.runtime {
        cmd.args(["--runtime", r]);
    }
    cmd.arg("--bundle")
        .arg(bundle)
        .arg("--stdout")
        .arg(out)
        .arg("--stderr")
        .arg(err)
        .arg(name)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let output = cmd
        .output()
        .with_context(|| format!("cannot run {}", program.display()))?;
    if !output.status.success() {
        // Its own FATAL line said why.
        std::process::exit(255);
    }
    common::record::parse_record(&output.stdout, "oci-conmon-create's record")
}

/// The runtime's `WORDS`, right here. We run in the namespaces the container was created in:
/// the lifecycle core's rule for a caller outside them (join the namespace above the
/// container's process) would pick the container's own inner namespace from in here.
fn in_place(rt: &Program, words: &[&str]) -> Result<common::lifecycle::process::Output> {
    common::lifecycle::ops::checked(rt, words[0], &Call::new(words), "")
}

/// Best effort: take a half-started instance down again (the bundle is the caller's to remove).
fn undo(rt: &Program, sd: &StateDir) {
    let _ = in_place(rt, &["delete", "--force", &sd.id]);
    // The container is gone, so nothing is joined: this removes its state and bundle lock.
    if let Err(e) = delete::delete(rt, &RealHost, &Target::of(sd), true) {
        common::cli::warn(format!(
            "cannot remove the half-started instance: {}",
            common::cli::format_chain(&e)
        ));
    }
}
