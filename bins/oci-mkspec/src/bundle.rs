//! Writing the bundle, and removing what we wrote when anything fails.

use anyhow::{Context, Result, bail};
use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Everything created in the bundle, removed in reverse order unless `commit` is called.
pub struct Writer {
    pub dir: PathBuf,
    created: Vec<PathBuf>,
    created_dir: bool,
    committed: bool,
    /// `(st_dev, st_ino)` of the bundle directory, for the record: whoever removes the bundle
    /// later removes it only if the directory at its path is still this one.
    pub dev_ino: (u64, u64),
}

impl Writer {
    /// Use `dir` as the bundle, creating it (0700) when missing. An existing bundle must not
    /// already hold a config.json: a second oci-mkspec must not overwrite a bundle in use. It
    /// must also belong to the caller (or root) and be writable by nobody else: whoever can write
    /// the bundle can change the container's configuration before it runs, and the front lets
    /// oci-mkspec create its bundles under a random name in a shared temporary directory.
    pub fn open(dir: &Path) -> Result<Writer> {
        let dir = common::fsutil::absolute(dir)?;
        let (Some(parent), Some(name)) = (dir.parent(), dir.file_name()) else {
            bail!("{} cannot be a bundle directory", dir.display());
        };
        // The parent may be a shared sticky directory such as /tmp; the bundle itself must be
        // a real directory of the caller's (or root's) that nobody else can write.
        let parent = common::trusted::open_ancestor(parent)
            .with_context(|| format!("refusing bundle {}", dir.display()))?;
        let (d, created_dir) = match parent.create_subdir(name, 0o700) {
            Ok(Some(d)) => (d, true),
            Ok(None) => {
                let d = parent
                    .open_subdir(name)
                    .with_context(|| format!("refusing bundle {}", dir.display()))?;
                if dir.join("config.json").exists() {
                    bail!("{} already holds a config.json", dir.display());
                }
                (d, false)
            }
            Err(e) => return Err(e).context("cannot create the bundle directory"),
        };
        Ok(Writer {
            dir,
            created: Vec::new(),
            created_dir,
            committed: false,
            dev_ino: d.dev_ino(),
        })
    }

    /// Create a directory in the bundle unless it exists already.
    pub fn mkdir(&mut self, rel: &str, mode: u32) -> Result<PathBuf> {
        let p = self.dir.join(rel);
        match fs::symlink_metadata(&p) {
            Ok(m) if m.is_dir() => return Ok(p),
            Ok(_) => bail!("{} exists and is not a directory", p.display()),
            Err(_) => {}
        }
        fs::DirBuilder::new()
            .mode(mode)
            .create(&p)
            .with_context(|| format!("cannot create {}", p.display()))?;
        // The umask must not narrow what the container needs to read.
        fs::set_permissions(&p, fs::Permissions::from_mode(mode))?;
        self.created.push(p.clone());
        Ok(p)
    }

    /// Write a new file (refusing to replace anything).
    pub fn write(&mut self, rel: &str, bytes: &[u8], mode: u32) -> Result<PathBuf> {
        let p = self.dir.join(rel);
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&p)
            .with_context(|| format!("cannot create {}", p.display()))?;
        self.created.push(p.clone());
        f.write_all(bytes)
            .with_context(|| format!("cannot write {}", p.display()))?;
        fs::set_permissions(&p, fs::Permissions::from_mode(mode))?;
        Ok(p)
    }

    /// [`Writer::write`], unless the file is there already with exactly these bytes (then it is
    /// kept, and not removed on failure: an earlier stage made it).
    pub fn write_unless_same(&mut self, rel: &str, bytes: &[u8], mode: u32) -> Result<()> {
        let p = self.dir.join(rel);
        let same = fs::symlink_metadata(&p)
            .is_ok_and(|m| m.is_file() && m.len() == bytes.len() as u64)
            && fs::read(&p).is_ok_and(|b| b == bytes);
        if !same {
            self.write(rel, bytes, mode)?;
        }
        Ok(())
    }

    pub fn symlink(&mut self, rel: &str, target: &Path) -> Result<PathBuf> {
        let p = self.dir.join(rel);
        std::os::unix::fs::symlink(target, &p)
            .with_context(|| format!("cannot create symlink {}", p.display()))?;
        self.created.push(p.clone());
        Ok(p)
    }

    pub fn commit(mut self) {
        self.committed = true;
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        if self.committed {
            return;
        }
        for p in self.created.iter().rev() {
            let is_dir = fs::symlink_metadata(p).is_ok_and(|m| m.is_dir());
            let _ = if is_dir {
                fs::remove_dir(p)
            } else {
                fs::remove_file(p)
            };
        }
        if self.created_dir {
            let _ = fs::remove_dir(&self.dir);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bundle_others_can_write_or_a_symlink_is_refused() {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let d = tempfile::tempdir().unwrap();
        let b = d.path().join("b");
        std::fs::create_dir(&b).unwrap();
        std::fs::set_permissions(&b, std::fs::Permissions::from_mode(0o777)).unwrap();
        let e = format!("{:#}", Writer::open(&b).err().unwrap());
        assert!(e.contains("writable by group or others"), "{e}");
        std::os::unix::fs::symlink(&b, d.path().join("l")).unwrap();
        let e = format!("{:#}", Writer::open(&d.path().join("l")).err().unwrap());
        assert!(e.contains("symbolic link"), "{e}");
        let w = Writer::open(&d.path().join("new")).unwrap();
        let m = std::fs::metadata(d.path().join("new")).unwrap();
        assert_eq!(w.dev_ino, (m.dev(), m.ino()));
    }

    #[test]
    fn rollback_removes_only_what_was_created() {
        let d = tempfile::tempdir().unwrap();
        let b = d.path().join("b");
        {
            let mut w = Writer::open(&b).unwrap();
            w.mkdir("etc", 0o755).unwrap();
            w.write("etc/passwd", b"x", 0o644).unwrap();
            w.symlink("rootfs.lower", Path::new("/nowhere")).unwrap();
        }
        assert!(!b.exists());
        std::fs::create_dir(&b).unwrap();
        std::fs::write(b.join("keep"), "k").unwrap();
        {
            let mut w = Writer::open(&b).unwrap();
            w.write("config.json", b"{}", 0o644).unwrap();
        }
        assert!(b.join("keep").exists() && !b.join("config.json").exists());
        {
            let mut w = Writer::open(&b).unwrap();
            w.write("config.json", b"{}", 0o644).unwrap();
            w.commit();
        }
        assert!(Writer::open(&b).is_err());
    }
}
