//! `stop`: signal the instance, wait, kill it if it is still there, then remove its container,
//! state directory and bundle. The log files stay, as SingularityCE keeps them.

use crate::Global;
use anyhow::{Result, bail};
use common::lifecycle::host::RealHost;
use common::lifecycle::ops::{Target, delete, kill};
use common::lifecycle::statedir::StateDir;
use common::record::{Instance, InstanceStatus};
use std::time::Duration;

/// SingularityCE's default time between the signal and SIGKILL.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a SIGKILLed instance may take to be gone.
const KILL_WAIT: Duration = Duration::from_secs(10);

pub fn run(g: &Global, mut args: common::cli::Args) -> Result<i32> {
    let signal: Option<String> = args.opts.opt_value_from_str(["-s", "--signal"])?;
    let timeout = match args
        .opts
        .opt_value_from_str::<_, String>(["-t", "--timeout"])?
    {
        Some(v) => crate::seconds("--timeout", &v)?,
        None => DEFAULT_TIMEOUT,
    };
    let force = args.opts.contains(["-F", "--force"]);
    let all = args.opts.contains(["-a", "--all"]);
    let (names, after) = args.positionals()?;
    if !after.is_empty() {
        bail!("unexpected '--' (usage: oci-instance stop [OPTIONS] (--all | NAME...))");
    }
    let signal = kill::signal_to_send(signal.as_deref(), None, force);
    // A bad signal is refused before anything is touched.
    common::lifecycle::signals::parse(&signal)?;
    let root = common::lifecycle::root::resolve(g.root.as_deref())?;
    let targets: Vec<(StateDir, Instance)> = match (all, names.is_empty()) {
        (true, true) => matching(&root, "*")?,
        (false, false) => {
            let mut v = Vec::new();
            for n in &names {
                for (sd, i) in named(&root, n)? {
                    if !v
                        .iter()
                        .any(|(_, seen): &(StateDir, Instance)| seen.name == i.name)
                    {
                        v.push((sd, i));
                    }
                }
            }
            v
        }
        (true, false) => bail!("--all stops every instance: give no NAME with it"),
        (false, true) => bail!("usage: oci-instance stop [OPTIONS] (--all | NAME...)"),
    };
    for (sd, instance) in &targets {
        stop_one(g, sd, instance, &signal, timeout)?;
    }
    Ok(0)
}

/// The instances `name` stands for: itself, or with `*` or `?` every one it matches (as
/// SingularityCE's stop takes a pattern); none is an error.
fn named(root: &std::path::Path, name: &str) -> Result<Vec<(StateDir, Instance)>> {
    if !name.contains(['*', '?']) {
        return Ok(vec![common::instance::find(root, name)?]);
    }
    let found = matching(root, name)?;
    if found.is_empty() {
        bail!("no instance matches '{name}'");
    }
    Ok(found)
}

/// The instances whose names match the glob `pattern`.
fn matching(root: &std::path::Path, pattern: &str) -> Result<Vec<(StateDir, Instance)>> {
    Ok(common::instance::list(root, Some(pattern))?
        .into_iter()
        .filter_map(|l| Some((StateDir::open(root, &l.instance.name).ok()??, l.instance)))
        .collect())
}

fn stop_one(
    g: &Global,
    sd: &StateDir,
    instance: &Instance,
    signal: &str,
    timeout: Duration,
) -> Result<()> {
    common::cli::info(format!(
        "Stopping {} instance of {} (PID={})",
        instance.name, instance.image, instance.pid
    ));
    // Signalling and deleting an unprivileged instance joins its user namespace, for good; its
    // bundle must be removed from ours (where our own directories are ours), so the joining
    // half runs in a child.
    in_child(|| end_container(g, sd, instance, signal, timeout))?;
    let inode = match instance.bundle_inode.as_str() {
        "" => None,
        s => Some(common::bundleremoval::parse_dev_ino(s)?),
    };
    common::bundleremoval::remove_bundle(&instance.bundle, inode)
}

/// Run `work` in a forked child and wait for it. The child reports its own failure (one FATAL
/// line); the parent then exits with its status.
fn in_child(work: impl FnOnce() -> Result<()>) -> Result<()> {
    // SAFETY: oci-instance is single-threaded, so the child may run any code.
    match unsafe { libc::fork() } {
        -1 => Err(std::io::Error::last_os_error()).map_err(|e| anyhow::anyhow!("cannot fork: {e}")),
        0 => match work() {
            Ok(()) => std::process::exit(0),
            Err(e) => common::cli::fatal(common::cli::format_chain(&e)),
        },
        pid => {
            let mut status = 0;
            // SAFETY: waiting for the child we just forked.
            while unsafe { libc::waitpid(pid, &mut status, 0) } < 0 {
                if std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
                    bail!("cannot wait for the stopping child");
                }
            }
            match libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status)) {
                Some(0) => Ok(()),
                Some(code) => std::process::exit(code),
                None => std::process::exit(255),
            }
        }
    }
}

/// Signal, wait, SIGKILL if need be, and delete the container and its state directory.
fn end_container(
    g: &Global,
    sd: &StateDir,
    instance: &Instance,
    signal: &str,
    timeout: Duration,
) -> Result<()> {
    let rt = crate::runtime_of(g, instance)?;
    let t = Target::of(sd);
    let gone = || common::instance::status(sd).0 == InstanceStatus::Exited;
    if !gone() {
        // The instance may end on its own between the look and the signal.
        if let Err(e) = kill::kill(&rt, &RealHost, &t, signal)
            && !gone()
        {
            return Err(e);
        }
        if !common::lifecycle::monitor::poll_until(timeout, gone) {
            common::cli::debug(format!(
                "{} still runs after {} s: SIGKILL",
                instance.name,
                timeout.as_secs()
            ));
            if let Err(e) = kill::kill(&rt, &RealHost, &t, "KILL")
                && !gone()
            {
                return Err(e);
            }
            if !common::lifecycle::monitor::poll_until(KILL_WAIT, gone) {
                bail!("instance '{}' did not end after SIGKILL", instance.name);
            }
        }
    }
    delete::delete(&rt, &RealHost, &t, true)?;
    Ok(())
}
