//! Entering the outer namespaces.
//!
//! Unprivileged with subordinate IDs, the ID maps must be written by the setuid helpers
//! newuidmap/newgidmap from *outside* the new user namespace (a setuid binary run from inside an
//! unmapped namespace gains nothing). The starter therefore forks two short-lived helpers before
//! it unshares: the main process unshares, tells them through a pipe, one becomes
//! `newuidmap <pid> ...` and the other `newgidmap <pid> ...` on the main process, and the main
//! process reaps both. The main process then *is* the process that goes on to exec PROG, so no
//! parent stays behind.
//!
//! Supplementary groups: the starter itself never calls setgroups, and with newgidmap
//! `/proc/PID/setgroups` stays `allow`. The runtime (crun and runc alike) then sets the container
//! process's supplementary groups to the spec's `additionalGids`, which oci-mkspec leaves empty:
//! the host's supplementary groups are **dropped** in the container, as in SingularityCE without
//! `--no-setgroups`. A file whose group permission denies one of the user's groups (mode 0604,
//! say) is then readable in the container through its "others" bits: group-based *deny*
//! permissions do not hold there. In the single-ID fallback the kernel requires
//! `setgroups=deny` before an unprivileged gid_map write, so there the host's groups stay
//! attached (shown as `nobody`, 65534) and the runtime cannot change them.

use anyhow::{Context, Result, bail};
use common::subid::{IdMapEntry, OuterPlan};
use nix::sched::{CloneFlags, unshare};
use nix::unistd::{ForkResult, Gid, Pid, Uid};
use std::ffi::OsString;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;

/// What [`enter`] did.
pub struct Entered {
    /// A user namespace was created (the caller is not host root).
    pub unprivileged: bool,
    /// Host uid/gid to export as `_CONTAINERS_ROOTLESS_UID/GID`, when a user namespace was made.
    pub host_ids: Option<(u32, u32)>,
}

/// Enter the outer namespaces for the current caller.
pub fn enter() -> Result<Entered> {
    if nix::unistd::geteuid().is_root() {
        // Host root, or already root of an outer namespace made by an earlier starter: only a
        // private mount namespace is needed (the caller keeps its `_CONTAINERS_ROOTLESS_*`).
        unshare(CloneFlags::CLONE_NEWNS).context("cannot create a private mount namespace")?;
        return Ok(Entered {
            unprivileged: false,
            host_ids: None,
        });
    }
    let uid = nix::unistd::getuid().as_raw();
    let gid = nix::unistd::getgid().as_raw();
    let (name, plan) = common::subid::outer_plan_for_caller()?;
    match plan {
        OuterPlan::Single => {
            common::cli::info(common::subid::single_id_notice(&name));
            unshare_user_and_mount()?;
            write_own_single_maps(uid, gid)?;
        }
        OuterPlan::Subids {
            uids,
            gids,
            newuidmap,
            newgidmap,
        } => {
            let helpers = MapHelpers::fork(vec![
                (
                    newuidmap,
                    common::subid::outer_map(uid, Some(uids)),
                    "newuidmap",
                ),
                (
                    newgidmap,
                    common::subid::outer_map(gid, Some(gids)),
                    "newgidmap",
                ),
            ])?;
            let unshared = unshare_user_and_mount();
            helpers.finish(unshared.is_ok())?;
            unshared?;
        }
    }
    become_root()?;
    Ok(Entered {
        unprivileged: true,
        host_ids: Some((uid, gid)),
    })
}

fn unshare_user_and_mount() -> Result<()> {
    unshare(CloneFlags::CLONE_NEWUSER | CloneFlags::CLONE_NEWNS).context(
        "cannot create a user namespace (is user.max_user_namespaces 0, or are unprivileged user namespaces disabled?)",
    )
}

/// The single-ID map, written by the process itself (allowed for its own ids only, and for the
/// gid only after `setgroups` is denied).
fn write_own_single_maps(uid: u32, gid: u32) -> Result<()> {
    let write = |file: &str, text: String| {
        std::fs::write(file, text).with_context(|| format!("cannot write {file}"))
    };
    write("/proc/self/setgroups", "deny".into())?;
    write(
        "/proc/self/uid_map",
        map_text(&common::subid::outer_map(uid, None)),
    )?;
    write(
        "/proc/self/gid_map",
        map_text(&common::subid::outer_map(gid, None)),
    )?;
    Ok(())
}

fn become_root() -> Result<()> {
    let root_g = Gid::from_raw(0);
    let root_u = Uid::from_raw(0);
    nix::unistd::setresgid(root_g, root_g, root_g)
        .context("cannot become gid 0 in the namespace")?;
    nix::unistd::setresuid(root_u, root_u, root_u)
        .context("cannot become uid 0 in the namespace")?;
    Ok(())
}

/// `/proc/PID/uid_map` text for a map.
pub fn map_text(map: &[IdMapEntry]) -> String {
    map.iter()
        .map(|e| format!("{} {} {}\n", e.container, e.host, e.size))
        .collect()
}

/// newuidmap/newgidmap argv (without the program): `PID ID LOWERID COUNT [...]`.
pub fn helper_args(pid: u32, map: &[IdMapEntry]) -> Vec<OsString> {
    let mut v = vec![OsString::from(pid.to_string())];
    for e in map {
        v.extend([e.container, e.host, e.size].map(|n| OsString::from(n.to_string())));
    }
    v
}

/// The forked helpers that write the maps once the main process has unshared: one child per
/// map, each exec'ing its setuid program itself. The uid and gid maps are independent files, so
/// newuidmap and newgidmap run side by side, and no intermediate process stands between them and
/// the starter: on a loaded machine every extra process is one more wait for a CPU.
struct MapHelpers {
    children: Vec<(Pid, &'static str)>,
    go: Option<OwnedFd>,
}

type HelperJob = (std::path::PathBuf, Vec<IdMapEntry>, &'static str);

impl MapHelpers {
    fn fork(jobs: Vec<HelperJob>) -> Result<MapHelpers> {
        let (rd, wr) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
            .context("cannot create a pipe for the ID-map helpers")?;
        let target = std::process::id();
        let mut helpers = MapHelpers {
            children: Vec::with_capacity(jobs.len()),
            go: Some(wr),
        };
        for (prog, map, name) in &jobs {
            // SAFETY: the starter is single-threaded; the child only reads a pipe and execs.
            match unsafe { nix::unistd::fork() } {
                Ok(ForkResult::Child) => {
                    drop(helpers.go.take());
                    let code = helper_main(&rd, prog, name, &helper_args(target, map));
                    // SAFETY: _exit skips the parent's atexit handlers and buffered output.
                    unsafe { libc::_exit(code) }
                }
                Ok(ForkResult::Parent { child }) => helpers.children.push((child, *name)),
                Err(e) => {
                    // Dropping `helpers` tells the children already forked to give up.
                    helpers.finish(false)?;
                    return Err(e).context("cannot fork the ID-map helper");
                }
            }
        }
        drop(rd);
        Ok(helpers)
    }

    /// Tell the helpers to write the maps (or to give up, when unsharing failed), and reap them.
    fn finish(mut self, go: bool) -> Result<()> {
        let wr = self.go.take().expect("helper pipe");
        if go {
            // One byte for each helper: each takes one and goes.
            let bytes = vec![b'1'; self.children.len()];
            nix::unistd::write(&wr, &bytes).context("cannot signal the ID-map helpers")?;
        }
        drop(wr);
        let mut failed = None;
        for (pid, name) in std::mem::take(&mut self.children) {
            let status = loop {
                match nix::sys::wait::waitpid(pid, None) {
                    Err(nix::errno::Errno::EINTR) => continue,
                    other => break other.context("cannot wait for the ID-map helper")?,
                }
            };
            if go && failed.is_none() && status != nix::sys::wait::WaitStatus::Exited(pid, 0) {
                failed = Some((name, status));
            }
        }
        match failed {
            None => Ok(()),
            Some((name, nix::sys::wait::WaitStatus::Exited(_, _))) => {
                let which = if name == "newgidmap" { "gid" } else { "uid" };
                bail!("{name} failed to write the {which} map (see its message above)")
            }
            Some((name, other)) => bail!("{name} failed ({other:?})"),
        }
    }
}

/// Body of a helper child: wait for its go byte, then become the map program. Exits 1 when told
/// to give up (no byte), 127 when the program cannot be run.
fn helper_main(rd: &OwnedFd, prog: &Path, name: &str, args: &[OsString]) -> i32 {
    let mut b = [0u8; 1];
    let n = loop {
        // SAFETY: reading into a one-byte stack buffer from an owned fd.
        let r = unsafe { libc::read(rd.as_raw_fd(), b.as_mut_ptr().cast(), 1) };
        if r < 0 && nix::errno::Errno::last() == nix::errno::Errno::EINTR {
            continue;
        }
        break r;
    };
    if n != 1 {
        return 1;
    }
    use std::os::unix::process::CommandExt;
    let e = std::process::Command::new(prog).args(args).exec();
    eprintln!("FATAL: {}: cannot run {name}: {e}", common::cli::program());
    127
}

#[cfg(test)]
mod tests {
    use super::*;
    use common::subid::IdRange;

    #[test]
    fn newuidmap_argv_maps_host_to_zero_and_range_to_one() {
        let map = common::subid::outer_map(
            1001,
            Some(IdRange {
                start: 100000,
                count: 65536,
            }),
        );
        let a: Vec<String> = helper_args(4242, &map)
            .into_iter()
            .map(|s| s.into_string().unwrap())
            .collect();
        assert_eq!(a, ["4242", "0", "1001", "1", "1", "100000", "65536"]);
    }

    #[test]
    fn single_map_text() {
        assert_eq!(
            map_text(&common::subid::outer_map(1002, None)),
            "0 1002 1\n"
        );
    }
}
