//! Removing whatever sits at a name, directories recursively, through fds only (oci-unpack
//! replacing entries and dropping partial trees, the shim removing bundles).
//!
//! Paths are never used below the starting directory: each level is opened with
//! `O_NOFOLLOW|O_DIRECTORY` relative to its parent, so a symlink inside the tree is unlinked,
//! never followed.

use rustix::fs::{AtFlags, Dir, Mode, OFlags};
use rustix::io::Errno;
use std::ffi::CString;
use std::os::fd::{AsFd, BorrowedFd};

/// Bound on recursion: deeper than any tree oci-unpack builds (its `path::MAX_DEPTH`, plus
/// depth gained through symlinked parents).
const MAX_REMOVE_DEPTH: usize = 4096;

/// Remove `name` inside `dir`, whatever it is. Missing is fine.
pub fn remove_all(dir: BorrowedFd<'_>, name: &[u8]) -> Result<(), Errno> {
    remove_at(dir, name, 0)
}

fn remove_at(dir: BorrowedFd<'_>, name: &[u8], depth: usize) -> Result<(), Errno> {
    match rustix::fs::unlinkat(dir, name, AtFlags::empty()) {
        Ok(()) | Err(Errno::NOENT) => return Ok(()),
        // EISDIR is Linux's answer for a directory; EPERM is POSIX's.
        Err(Errno::ISDIR) | Err(Errno::PERM) => {}
        Err(e) => return Err(e),
    }
    if depth > MAX_REMOVE_DEPTH {
        return Err(Errno::LOOP);
    }
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let fd = match rustix::fs::openat(dir, name, flags, Mode::empty()) {
        Ok(fd) => fd,
        // An unreadable directory of our own (a `0000` dir in an unprivileged unpack): make it
        // ours to empty. `name` was just seen to be a directory, not a symlink.
        Err(Errno::ACCESS) => {
            rustix::fs::chmodat(dir, name, Mode::from_raw_mode(0o700), AtFlags::empty())?;
            rustix::fs::openat(dir, name, flags, Mode::empty())?
        }
        Err(Errno::NOENT) => return Ok(()),
        Err(e) => return Err(e),
    };
    // A directory we may read but not write (`0555`): we own it, so allow ourselves.
    let st = rustix::fs::fstat(&fd)?;
    if st.st_mode & 0o300 != 0o300 && st.st_uid == rustix::process::geteuid().as_raw() {
        rustix::fs::fchmod(&fd, Mode::from_raw_mode(0o700))?;
    }
    // Collect the names first: unlinking while getdents walks the same directory is allowed but
    // may skip entries on some filesystems.
    let mut names: Vec<CString> = Vec::new();
    for ent in Dir::read_from(fd.as_fd())? {
        let ent = ent?;
        let n = ent.file_name();
        if n.to_bytes() != b"." && n.to_bytes() != b".." {
            names.push(n.to_owned());
        }
    }
    for n in &names {
        remove_at(fd.as_fd(), n.to_bytes(), depth + 1)?;
    }
    drop(fd);
    match rustix::fs::unlinkat(dir, name, AtFlags::REMOVEDIR) {
        Ok(()) | Err(Errno::NOENT) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Remove a whole directory tree given by path (used for our own temporary trees only).
pub fn remove_tree(path: &std::path::Path) -> std::io::Result<()> {
    let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(std::io::Error::other("cannot remove a root directory"));
    };
    let parent = rustix::fs::open(
        parent,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    use std::os::unix::ffi::OsStrExt;
    remove_all(parent.as_fd(), name.as_bytes()).map_err(Into::into)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{PermissionsExt, symlink};

    #[test]
    fn removes_trees_without_following_symlinks() {
        let t = tempfile::tempdir().unwrap();
        let outside = t.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        std::fs::write(outside.join("keep"), b"x").unwrap();
        let victim = t.path().join("victim");
        std::fs::create_dir_all(victim.join("a/b")).unwrap();
        std::fs::write(victim.join("a/b/f"), b"x").unwrap();
        symlink(&outside, victim.join("a/link")).unwrap();
        std::fs::set_permissions(victim.join("a/b"), std::fs::Permissions::from_mode(0o555))
            .unwrap();
        remove_tree(&victim).unwrap();
        assert!(!victim.exists());
        assert!(outside.join("keep").exists());
        // missing is fine
        remove_tree(&victim).unwrap();
    }
}
