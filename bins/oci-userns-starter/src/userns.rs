//! Entering the outer namespaces.
//!
//! Unprivileged with subordinate IDs, the ID maps must be written by the setuid helpers
//! newuidmap/newgidmap from *outside* the new user namespace (a setuid binary run from inside an
//! unmapped namespace gains nothing). The starter therefore forks one short-lived helper before
//! it unshares: the main process unshares, tells the helper through a pipe, the helper runs
//! `newuidmap <pid> ...` and `newgidmap <pid> ...` on the main process and exits, and the main
//! process reaps it. The main process then *is* the process that goes on to exec PROG, so no
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
            let helper = MapHelper::fork(vec![
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
            helper.finish(unshared.is_ok())?;
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

/// The forked helper that writes the maps once the main process has unshared.
struct MapHelper {
    pid: Pid,
    go: Option<OwnedFd>,
}

type HelperJob = (std::path::PathBuf, Vec<IdMapEntry>, &'static str);

impl MapHelper {
    fn fork(jobs: Vec<HelperJob>) -> Result<MapHelper> {
        let (rd, wr) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
            .context("cannot create a pipe for the ID-map helper")?;
        let parent = std::process::id();
        // SAFETY: the starter is single-threaded; the child only reads a pipe, runs two programs
        // and _exits.
        match unsafe { nix::unistd::fork() }.context("cannot fork the ID-map helper")? {
            ForkResult::Child => {
                drop(wr);
                let code = helper_main(rd, parent, &jobs);
                // SAFETY: _exit skips the parent's atexit handlers and buffered output.
                unsafe { libc::_exit(code) }
            }
            ForkResult::Parent { child } => {
                drop(rd);
                Ok(MapHelper {
                    pid: child,
                    go: Some(wr),
                })
            }
        }
    }

    /// Tell the helper to write the maps (or to give up, when unsharing failed), and reap it.
    fn finish(mut self, go: bool) -> Result<()> {
        let wr = self.go.take().expect("helper pipe");
        if go {
            nix::unistd::write(&wr, b"1").context("cannot signal the ID-map helper")?;
        }
        drop(wr);
        let status = loop {
            match nix::sys::wait::waitpid(self.pid, None) {
                Err(nix::errno::Errno::EINTR) => continue,
                other => break other.context("cannot wait for the ID-map helper")?,
            }
        };
        match status {
            nix::sys::wait::WaitStatus::Exited(_, 0) => Ok(()),
            _ if !go => Ok(()),
            nix::sys::wait::WaitStatus::Exited(_, 2) => {
                bail!("newuidmap failed to write the uid map (see its message above)")
            }
            nix::sys::wait::WaitStatus::Exited(_, 3) => {
                bail!("newgidmap failed to write the gid map (see its message above)")
            }
            other => bail!("the ID-map helper failed ({other:?})"),
        }
    }
}

/// Body of the helper child: wait for the go byte, then run each helper program. Exit codes:
/// 0 done, 1 told to give up, 2 newuidmap failed, 3 newgidmap failed.
fn helper_main(rd: OwnedFd, target: u32, jobs: &[HelperJob]) -> i32 {
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
    // The uid and gid maps are independent files: newuidmap and newgidmap run side by side
    // (each is a setuid program that parses /etc/sub[ug]id, about a millisecond apiece).
    let started: Vec<_> = jobs
        .iter()
        .map(|(prog, map, name)| start_helper(prog, name, &helper_args(target, map)))
        .collect();
    let mut code = 0;
    for (i, child) in started.into_iter().enumerate() {
        let ok = child.is_some_and(|mut c| c.wait().is_ok_and(|s| s.success()));
        if !ok && code == 0 {
            code = 2 + i as i32;
        }
    }
    code
}

fn start_helper(prog: &Path, name: &str, args: &[OsString]) -> Option<std::process::Child> {
    match std::process::Command::new(prog).args(args).spawn() {
        Ok(c) => Some(c),
        Err(e) => {
            eprintln!("FATAL: {}: cannot run {name}: {e}", common::cli::program());
            None
        }
    }
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
