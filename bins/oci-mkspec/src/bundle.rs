//! Writing the bundle, and removing what we wrote when anything fails.

use anyhow::{Context, Result, bail};
use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Refuse an existing bundle directory that another user owns or that every user can write.
/// (Group write is left to the user's umask: sites with shared groups rely on it.)
fn check_not_shared(dir: &Path, owner: u32, mode: u32, me: u32) -> Result<()> {
    if owner != me && owner != 0 {
        bail!(
            "bundle {} belongs to uid {owner}, not to you: refusing to write a container configuration that another user controls",
            dir.display()
        );
    }
    if mode & 0o002 != 0 {
        bail!(
            "bundle {} is writable by every user (mode {:o}): refusing to write a container configuration there",
            dir.display(),
            mode & 0o7777
        );
    }
    Ok(())
}

/// Everything created in the bundle, removed in reverse order unless `commit` is called.
pub struct Writer {
    pub dir: PathBuf,
    created: Vec<PathBuf>,
    created_dir: bool,
    committed: bool,
}

impl Writer {
    /// Use `dir` as the bundle, creating it (0700) when missing. An existing bundle must not
    /// already hold a config.json: a second oci-mkspec must not overwrite a bundle in use. It
    /// must also belong to the caller (or root) and be writable by nobody else: whoever can write
    /// the bundle can change the container's configuration before it runs, and the front lets
    /// oci-mkspec create its bundles under a random name in a shared temporary directory.
    pub fn open(dir: &Path) -> Result<Writer> {
        let mut created_dir = false;
        match fs::symlink_metadata(dir) {
            Ok(m) if m.is_dir() => {
                use std::os::unix::fs::MetadataExt;
                check_not_shared(dir, m.uid(), m.mode(), nix::unistd::geteuid().as_raw())?;
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
    fn a_bundle_another_user_owns_or_everyone_can_write_is_refused() {
        let d = Path::new("/tmp/b");
        assert!(check_not_shared(d, 1000, 0o40700, 1000).is_ok());
        assert!(check_not_shared(d, 0, 0o40755, 1000).is_ok());
        assert!(check_not_shared(d, 1000, 0o40775, 1000).is_ok());
        let e = check_not_shared(d, 1001, 0o40700, 1000).unwrap_err();
        assert!(e.to_string().contains("belongs to uid 1001"), "{e}");
        let e = check_not_shared(d, 1000, 0o41777, 1000).unwrap_err();
        assert!(e.to_string().contains("writable by every user"), "{e}");
        assert!(check_not_shared(d, 1000, 0o40700, 0).is_err());
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
