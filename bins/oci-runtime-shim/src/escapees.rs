//! The watchdog's last resort: container processes the runtime no longer knows about.
//!
//! crun's `run` lets the container go (its last sync) and only then writes the container's
//! state; runc has a similar gap. A runtime killed in between (its parent-death signal, when
//! the shim is killed) leaves a running container that `delete --force` cannot find. Such a
//! process is still recognisable: its root directory is this run's own root file system, a
//! mount made for this run alone (the starter's overlay or tmpfs on `BUNDLE/rootfs`). So once
//! the runtime is surely gone, the watchdog kills every process whose root is that mount.
//!
//! Only a root that is a mount of its own counts: a bundle whose `rootfs` is a plain directory
//! (of a cached tree other containers may share) gives no identity, and nothing is killed.

use rustix::fs::{AtFlags, CWD, statat};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// The device and inode that identify this run's root file system: `rootfs`'s when it is a
/// mount point (another device than its bundle's), else nothing.
pub fn own_root(bundle: &Path) -> Option<(u64, u64)> {
    let b = std::fs::symlink_metadata(bundle).ok()?;
    let r = std::fs::symlink_metadata(bundle.join("rootfs")).ok()?;
    (r.is_dir() && r.dev() != b.dev()).then_some((r.dev(), r.ino()))
}

/// SIGKILL every process whose root directory is `root` (device, inode); how many there were.
/// Each one is checked again through a pidfd, so a pid reused meanwhile is never signalled.
pub fn kill_rooted_at(root: (u64, u64)) -> usize {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0;
    };
    let me = std::process::id();
    let mut killed = 0;
    for e in dir.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        if pid == me || !rooted_at(pid, root) {
            continue;
        }
        let Some(p) = rustix::process::Pid::from_raw(pid as i32) else {
            continue;
        };
        let Ok(fd) = rustix::process::pidfd_open(p, rustix::process::PidfdFlags::empty()) else {
            continue;
        };
        if rooted_at(pid, root)
            && rustix::process::pidfd_send_signal(&fd, rustix::process::Signal::KILL).is_ok()
        {
            killed += 1;
        }
    }
    killed
}

fn rooted_at(pid: u32, root: (u64, u64)) -> bool {
    statat(CWD, format!("/proc/{pid}/root"), AtFlags::empty())
        .is_ok_and(|st| (st.st_dev, st.st_ino) == root)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plain_rootfs_directory_gives_no_identity() {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir(t.path().join("rootfs")).unwrap();
        assert_eq!(own_root(t.path()), None);
        assert_eq!(own_root(&t.path().join("missing")), None);
    }

    #[test]
    fn nothing_is_killed_for_a_root_no_process_has() {
        // An inode no process has as its root: a fresh directory.
        let t = tempfile::tempdir().unwrap();
        let m = std::fs::metadata(t.path()).unwrap();
        assert_eq!(kill_rooted_at((m.dev(), m.ino())), 0);
    }
}
