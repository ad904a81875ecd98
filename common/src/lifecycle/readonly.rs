//! The runtime's binary, read-only in the runtime's own mount namespace.
//!
//! crun and runc guard against CVE-2019-5736 (a container overwriting the host's runtime
//! through `/proc/PID/exe`) by copying their own executable into a sealed memfd and executing
//! that copy, on every start: 2 to 2.5 ms of a 16 ms rootless `crun run` here. Both skip the
//! copy when their executable sits on a read-only mount, because a write through `/proc/PID/exe`
//! then fails with EROFS whatever the container does (crun's and runc's `is_self_cloned`).
//! In a mount namespace that is ours alone (made for this one container), binding the binary
//! onto itself read-only gives them exactly that, and changes nothing outside.
//!
//! runc 1.1 trusts a read-only mount only when its `_LIBCONTAINER_CLONED_BINARY` is set too,
//! which it sets for itself and does not pass on to `runc init` (whose environment it builds
//! from nothing), so runc 1.1.5 still copies itself; the bind is made for every runtime anyway
//! (two mount calls), so any runtime with crun's check gains from it.

use anyhow::{Context, Result};
use nix::mount::{MsFlags, mount};
use nix::sys::statvfs::{FsFlags, statvfs};
use std::path::Path;

/// Bind `bin` (the file it names, links resolved) onto itself and make that mount read-only.
/// Only in a private mount namespace ([`super::cgroupfix::private_mount_namespace`]).
pub fn bind_read_only(bin: &Path) -> Result<()> {
    let file = std::fs::canonicalize(bin)
        .with_context(|| format!("cannot resolve the runtime binary {}", bin.display()))?;
    // The flags the kernel locks on a mount inherited from a more privileged user namespace
    // must be repeated in the remount, or it is refused (EPERM).
    let kept = statvfs(&file)
        .with_context(|| format!("cannot stat the file system of {}", file.display()))?
        .flags();
    mount(
        Some(&file),
        &file,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .with_context(|| format!("cannot bind {} onto itself", file.display()))?;
    mount(
        None::<&str>,
        &file,
        None::<&str>,
        MsFlags::MS_REMOUNT | MsFlags::MS_BIND | MsFlags::MS_RDONLY | locked_flags(kept),
        None::<&str>,
    )
    .with_context(|| format!("cannot make {} read-only", file.display()))
}

fn locked_flags(f: FsFlags) -> MsFlags {
    let pairs = [
        (FsFlags::ST_NOSUID, MsFlags::MS_NOSUID),
        (FsFlags::ST_NODEV, MsFlags::MS_NODEV),
        (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
        (FsFlags::ST_NOATIME, MsFlags::MS_NOATIME),
        (FsFlags::ST_NODIRATIME, MsFlags::MS_NODIRATIME),
        (FsFlags::ST_RELATIME, MsFlags::MS_RELATIME),
    ];
    pairs
        .iter()
        .filter(|(st, _)| f.contains(*st))
        .fold(MsFlags::empty(), |acc, (_, ms)| acc | *ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_remount_repeats_the_flags_the_kernel_locks() {
        let f = FsFlags::ST_NOSUID | FsFlags::ST_NODEV | FsFlags::ST_RELATIME | FsFlags::ST_RDONLY;
        assert_eq!(
            locked_flags(f),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_RELATIME
        );
        assert_eq!(locked_flags(FsFlags::empty()), MsFlags::empty());
    }
}
