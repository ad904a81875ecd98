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
use rustix::fd::{AsRawFd, OwnedFd};
use rustix::fs::{Mode, OFlags};
use rustix::mount::{MoveMountFlags, OpenTreeFlags, move_mount, open_tree};
use std::path::Path;

/// Bind `bin` (the file it names, links resolved) onto itself and make that mount read-only.
/// Only in a private mount namespace ([`super::cgroupfix::private_mount_namespace`]).
///
/// Every step after the one `open` works on descriptors (`open_tree`, `mount_setattr`,
/// `move_mount`): no path is resolved twice, so what is bound is the very file it is bound
/// onto, whatever a neighbour renames meanwhile, and the final name is never followed if it
/// has become a symbolic link. `mount_setattr` only adds the read-only flag, so the flags the
/// kernel locks on a mount inherited from the host (nosuid, nodev, ...) stay as they are.
pub fn bind_read_only(bin: &Path) -> Result<()> {
    let file = std::fs::canonicalize(bin)
        .with_context(|| format!("cannot resolve the runtime binary {}", bin.display()))?;
    let target: OwnedFd = rustix::fs::open(
        &file,
        OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .with_context(|| format!("cannot open {}", file.display()))?;
    let tree = open_tree(
        &target,
        "",
        OpenTreeFlags::OPEN_TREE_CLONE
            | OpenTreeFlags::OPEN_TREE_CLOEXEC
            | OpenTreeFlags::AT_EMPTY_PATH,
    )
    .with_context(|| format!("cannot clone the mount of {}", file.display()))?;
    set_read_only(&tree).with_context(|| format!("cannot make {} read-only", file.display()))?;
    move_mount(
        &tree,
        "",
        &target,
        "",
        MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH | MoveMountFlags::MOVE_MOUNT_T_EMPTY_PATH,
    )
    .with_context(|| format!("cannot bind {} onto itself", file.display()))?;
    Ok(())
}

/// `mount_setattr(tree, "", AT_EMPTY_PATH, {attr_set: MOUNT_ATTR_RDONLY})` (Linux 5.12; rustix
/// has no wrapper).
fn set_read_only(tree: &OwnedFd) -> std::io::Result<()> {
    let attr = libc::mount_attr {
        attr_set: libc::MOUNT_ATTR_RDONLY,
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    // SAFETY: a valid descriptor, a NUL-terminated empty path and a mount_attr of the size
    // passed; the kernel only reads them.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            tree.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH,
            &attr as *const libc::mount_attr,
            std::mem::size_of::<libc::mount_attr>(),
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}
