//! Reading an image's root filesystem safely (`oci-mkspec`'s /etc files, `oci-unpack
//! --inspect`'s /.singularity.d).
//!
//! The rootfs comes from an image and may contain hostile symlinks (`etc/passwd -> /etc/shadow`,
//! `etc -> ../../..`). Every lookup resolves inside the root with `openat2(RESOLVE_IN_ROOT)`, so
//! an absolute or `..` symlink lands inside the tree, never on the host.

use anyhow::{Context, Result};
use rustix::fs::{FileType, Mode, OFlags, ResolveFlags};
use std::io::Read;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

/// Largest /etc file we read from an image (a passwd file is small; this bounds memory).
const MAX_ETC_FILE: u64 = 4 << 20;

pub struct RootDir {
    fd: OwnedFd,
    path: PathBuf,
}

fn resolve_flags() -> ResolveFlags {
    ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS
}

fn rel(p: &str) -> &str {
    let r = p.trim_start_matches('/');
    if r.is_empty() { "." } else { r }
}

impl RootDir {
    pub fn open(path: &Path) -> Result<RootDir> {
        let fd = rustix::fs::open(
            path,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .with_context(|| format!("cannot open rootfs {}", path.display()))?;
        Ok(RootDir {
            fd,
            path: path.to_path_buf(),
        })
    }

    fn open_in(&self, p: &str, flags: OFlags) -> std::io::Result<OwnedFd> {
        rustix::fs::openat2(
            &self.fd,
            rel(p),
            flags | OFlags::CLOEXEC,
            Mode::empty(),
            resolve_flags(),
        )
        .map_err(std::io::Error::from)
    }

    /// Read a regular file of the image (`None` when it does not exist). FIFOs, devices and
    /// directories are refused rather than read (a FIFO would block forever).
    pub fn read_file(&self, p: &str) -> Result<Option<String>> {
        let fd = match self.open_in(p, OFlags::RDONLY | OFlags::NONBLOCK | OFlags::NOCTTY) {
            Ok(fd) => fd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) if e.raw_os_error() == Some(libc::ENOTDIR) => return Ok(None),
            Err(e) => {
                return Err(e)
                    .with_context(|| format!("cannot open {p} in {}", self.path.display()));
            }
        };
        let st = rustix::fs::fstat(&fd)?;
        if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
            anyhow::bail!("{p} in the image is not a regular file");
        }
        let mut s = String::new();
        std::fs::File::from(fd)
            .take(MAX_ETC_FILE)
            .read_to_string(&mut s)
            .with_context(|| format!("cannot read {p} from the image (not UTF-8 text?)"))?;
        Ok(Some(s))
    }

    /// `(dev, ino, is_dir)` of a path resolved inside the root, `None` when it does not exist.
    pub fn identity(&self, p: &str) -> Option<(u64, u64, bool)> {
        let fd = self.open_in(p, OFlags::PATH).ok()?;
        let st = rustix::fs::fstat(&fd).ok()?;
        Some((
            st.st_dev,
            st.st_ino,
            FileType::from_raw_mode(st.st_mode) == FileType::Directory,
        ))
    }

    /// The names in directory `p` of the image, sorted bytewise as a shell glob sorts them in
    /// the C locale (empty when it is not a directory).
    pub fn list_dir(&self, p: &str) -> Vec<String> {
        let Ok(fd) = self.open_in(p, OFlags::RDONLY | OFlags::DIRECTORY) else {
            return Vec::new();
        };
        let Ok(dir) = rustix::fs::Dir::read_from(&fd) else {
            return Vec::new();
        };
        let mut names: Vec<String> = dir
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().to_str().ok().map(str::to_string))
            .filter(|n| n != "." && n != "..")
            .collect();
        names.sort();
        names
    }

    pub fn is_dir(&self, p: &str) -> bool {
        self.identity(p).is_some_and(|(_, _, d)| d)
    }

    /// True when `a` and `b` resolve (inside the root) to the same inode.
    pub fn same(&self, a: &str, b: &str) -> bool {
        match (self.identity(a), self.identity(b)) {
            (Some(x), Some(y)) => x.0 == y.0 && x.1 == y.1,
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn hostile_symlinks_stay_inside() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        std::fs::create_dir_all(r.join("etc")).unwrap();
        std::fs::create_dir_all(r.join("real")).unwrap();
        std::fs::write(r.join("real/passwd"), "inside:x:1:1::/:/bin/sh\n").unwrap();
        // An absolute symlink must resolve inside the root, not to the host's /etc/passwd.
        symlink("/real/passwd", r.join("etc/passwd")).unwrap();
        // A ../ escape is clamped at the root.
        symlink("../../../../../../etc/hostname", r.join("etc/myhost")).unwrap();
        let root = RootDir::open(r).unwrap();
        assert_eq!(
            root.read_file("/etc/passwd").unwrap().unwrap(),
            "inside:x:1:1::/:/bin/sh\n"
        );
        assert!(root.read_file("/etc/myhost").unwrap().is_none());
        assert!(root.read_file("/etc/group").unwrap().is_none());
        assert!(root.read_file("/etc").is_err());
    }

    #[test]
    fn var_tmp_link_is_detected() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        std::fs::create_dir_all(r.join("tmp")).unwrap();
        std::fs::create_dir_all(r.join("var")).unwrap();
        symlink("/tmp", r.join("var/tmp")).unwrap();
        let root = RootDir::open(r).unwrap();
        assert!(root.same("/var/tmp", "/tmp"));
        std::fs::remove_file(r.join("var/tmp")).unwrap();
        std::fs::create_dir(r.join("var/tmp")).unwrap();
        assert!(!root.same("/var/tmp", "/tmp"));
    }
}
