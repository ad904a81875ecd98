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
}

impl Writer {
    /// Use `dir` as the bundle, creating it (0700) when missing. An existing bundle must not
    /// already hold a config.json: a second oci-mkspec must not overwrite a bundle in use.
    pub fn open(dir: &Path) -> Result<Writer> {
        let mut created_dir = false;
        match fs::symlink_metadata(dir) {
            Ok(m) if m.is_dir() => {
                if dir.join("config.json").exists() {
                    bail!("{} already holds a config.json", dir.display());
                }
            }
            Ok(_) => bail!("bundle {} exists and is not a directory", dir.display()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                fs::DirBuilder::new()
                    .mode(0o700)
                    .create(dir)
                    .with_context(|| format!("cannot create bundle directory {}", dir.display()))?;
                created_dir = true;
            }
            Err(e) => return Err(e).with_context(|| format!("cannot stat {}", dir.display())),
        }
        Ok(Writer {
            dir: dir.to_path_buf(),
            created: Vec::new(),
            created_dir,
            committed: false,
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
