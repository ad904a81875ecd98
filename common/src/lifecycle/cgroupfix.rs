//! The crun workaround for hybrid cgroup hosts.
//!
//! crun (at least 1.8) refuses to run when `/sys/fs/cgroup` is a v1 tmpfs, `/sys/fs/cgroup/unified`
//! is cgroup2 and its `cgroup.controllers` is non-empty ("cgroups in hybrid mode not supported").
//! No flag skips that check. The least invasive fix is to bind `/dev/null` over that one file in a
//! private mount namespace, which changes nothing on the host. It is applied only when all three
//! conditions hold, and only for crun.

use anyhow::{Context, Result};
use nix::mount::{MsFlags, mount};
use nix::sched::{CloneFlags, unshare};
use std::path::Path;

const CGROUP_ROOT: &str = "/sys/fs/cgroup";
const UNIFIED: &str = "/sys/fs/cgroup/unified";
const CONTROLLERS: &str = "/sys/fs/cgroup/unified/cgroup.controllers";

const TMPFS_MAGIC: i64 = 0x0102_1994;
const CGROUP2_MAGIC: i64 = 0x6367_7270;

fn fs_type(p: &str) -> Option<i64> {
    nix::sys::statfs::statfs(Path::new(p))
        .ok()
        .map(|s| s.filesystem_type().0)
}

/// True when this host needs the hybrid-cgroup workaround for crun.
pub fn host_needs_fix() -> bool {
    fs_type(CGROUP_ROOT) == Some(TMPFS_MAGIC)
        && fs_type(UNIFIED) == Some(CGROUP2_MAGIC)
        && std::fs::read_to_string(CONTROLLERS).is_ok_and(|s| !s.trim().is_empty())
}

/// In a new private mount namespace, hide the cgroup2 controllers from crun.
/// Needs CAP_SYS_ADMIN in the current user namespace (root, or root of our outer namespace).
pub fn apply() -> Result<()> {
    private_mount_namespace()?;
    hide_controllers()
}

/// Move this process into a new mount namespace whose mounts are all private: what is mounted
/// there for the runtime stays there.
pub fn private_mount_namespace() -> Result<()> {
    unshare(CloneFlags::CLONE_NEWNS)
        .context("cannot create a private mount namespace for the runtime")?;
    crate::mountns::make_root_private()
}

/// Bind `/dev/null` over the unified hierarchy's `cgroup.controllers` (in a private mount
/// namespace: [`private_mount_namespace`]).
pub fn hide_controllers() -> Result<()> {
    mount(
        Some("/dev/null"),
        CONTROLLERS,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .with_context(|| format!("cannot bind /dev/null over {CONTROLLERS}"))?;
    Ok(())
}
