//! The target tree: a root directory fd, and parent directories resolved *inside* it.
//!
//! Every parent is opened with `openat2(root, path, O_PATH|O_DIRECTORY,
//! RESOLVE_IN_ROOT|RESOLVE_NO_MAGICLINKS)`, so symlinks met on the way (`lib -> /usr/lib`,
//! `evil -> ../../../etc`) are resolved as if `root` were `/`. Nothing a layer names can reach
//! outside the target, however the links are arranged. Final components are never followed: the
//! callers create them with `O_EXCL|O_NOFOLLOW`, `mkdirat`, `symlinkat`, `linkat(.., 0)`.
//!
//! The parent of the previous entry is kept open: tar streams list siblings together, so most
//! entries cost no path resolution at all. Any removal drops the cached fd, because a removed
//! directory's fd would still accept creations that then vanish with it.

use super::path::{self, show};
use anyhow::{Context, Result, bail};
use rustix::fs::{Mode, OFlags, ResolveFlags};
use rustix::io::Errno;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;
use std::rc::Rc;

/// Mode of directories while the unpack runs: owner-writable, whatever the layer says, so a
/// `0555` directory never blocks the entries (or layers) that follow. Final modes are applied at
/// the end (see `meta::DirMetas`).
pub const WORK_DIR_MODE: u32 = 0o700;

pub struct Tree {
    root: OwnedFd,
    cached: Option<(Vec<u8>, Rc<OwnedFd>)>,
}

const RESOLVE: ResolveFlags = ResolveFlags::IN_ROOT.union(ResolveFlags::NO_MAGICLINKS);

impl Tree {
    pub fn open(root: &Path) -> Result<Tree> {
        let root = rustix::fs::open(
            root,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC | OFlags::NOFOLLOW,
            Mode::empty(),
        )
        .with_context(|| format!("cannot open target directory {}", root.display()))?;
        Ok(Tree { root, cached: None })
    }

    pub fn root(&self) -> BorrowedFd<'_> {
        self.root.as_fd()
    }

    /// Forget the cached parent (after anything was removed).
    pub fn invalidate(&mut self) {
        self.cached = None;
    }

    /// Resolve a directory inside the root. `rel` is a normalised path ("" is the root).
    pub fn resolve(&self, rel: &[u8], flags: OFlags) -> Result<OwnedFd, Errno> {
        let p: &[u8] = if rel.is_empty() { b"." } else { rel };
        loop {
            match rustix::fs::openat2(
                &self.root,
                p,
                flags | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
                RESOLVE,
            ) {
                // EAGAIN: a concurrent rename raced the `..` check; nobody else writes in our
                // private tree, but retrying is what openat2(2) asks for.
                Err(Errno::AGAIN) | Err(Errno::INTR) => continue,
                other => return other,
            }
        }
    }

    /// The parent directory `rel` as an `O_PATH` fd, or `None` when it does not exist.
    pub fn existing_dir(&mut self, rel: &[u8]) -> Result<Option<Rc<OwnedFd>>> {
        if let Some((p, fd)) = &self.cached
            && p == rel
        {
            return Ok(Some(fd.clone()));
        }
        match self.resolve(rel, OFlags::PATH) {
            Ok(fd) => {
                let fd = Rc::new(fd);
                self.cached = Some((rel.to_vec(), fd.clone()));
                Ok(Some(fd))
            }
            Err(Errno::NOENT) | Err(Errno::NOTDIR) => Ok(None),
            Err(e) => Err(e).with_context(|| format!("cannot open directory {}", show(rel))),
        }
    }

    /// The parent directory `rel`, creating missing components (mode [`WORK_DIR_MODE`]).
    /// `created` is told each directory made here, so its final metadata can be recorded.
    pub fn dir(&mut self, rel: &[u8], created: &mut dyn FnMut(&[u8])) -> Result<Rc<OwnedFd>> {
        if let Some(fd) = self.existing_dir(rel)? {
            return Ok(fd);
        }
        // Slow path: walk from the root, creating what is missing. Each step resolves the whole
        // prefix again from the root so symlinks keep their in-root meaning.
        let mut cur = self
            .resolve(b"", OFlags::PATH)
            .context("cannot open the target root")?;
        let mut end = 0;
        while end < rel.len() {
            let next = rel[end..]
                .iter()
                .position(|&b| b == b'/')
                .map_or(rel.len(), |i| end + i);
            let prefix = &rel[..next];
            let (_, name) = path::split(prefix);
            cur = match self.resolve(prefix, OFlags::PATH) {
                Ok(fd) => fd,
                Err(Errno::NOENT) => {
                    match rustix::fs::mkdirat(&cur, name, Mode::from_raw_mode(WORK_DIR_MODE)) {
                        Ok(()) => created(prefix),
                        Err(Errno::EXIST) => {}
                        Err(e) => {
                            return Err(e).with_context(|| {
                                format!("cannot create directory {}", show(prefix))
                            });
                        }
                    }
                    match self.resolve(prefix, OFlags::PATH) {
                        Ok(fd) => fd,
                        Err(Errno::NOENT) => bail!(
                            "{} is a symlink that leads nowhere, so entries cannot be placed below it",
                            show(prefix)
                        ),
                        Err(e) => {
                            return Err(e).with_context(|| {
                                format!("cannot open directory {}", show(prefix))
                            });
                        }
                    }
                }
                Err(Errno::NOTDIR) => bail!(
                    "{} is not a directory, so entries cannot be placed below it",
                    show(prefix)
                ),
                Err(e) => {
                    return Err(e)
                        .with_context(|| format!("cannot open directory {}", show(prefix)));
                }
            };
            end = next + 1;
        }
        let fd = Rc::new(cur);
        self.cached = Some((rel.to_vec(), fd.clone()));
        Ok(fd)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn absolute_symlinks_resolve_inside_the_root() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("root");
        std::fs::create_dir_all(root.join("usr/lib")).unwrap();
        symlink("/usr/lib", root.join("lib")).unwrap();
        symlink("../../../../../../../tmp", root.join("escape")).unwrap();
        let mut tree = Tree::open(&root).unwrap();
        let mut made = vec![];
        let fd = tree.dir(b"lib/x", &mut |p| made.push(p.to_vec())).unwrap();
        rustix::fs::mkdirat(&*fd, "y", Mode::from_raw_mode(0o755)).unwrap();
        assert!(root.join("usr/lib/x/y").is_dir());
        assert_eq!(made, vec![b"lib/x".to_vec()]);
        // `escape` climbs no higher than the root: it is root/tmp. While that does not exist the
        // link leads nowhere and nothing is placed below it; once it does, entries land there.
        let e = tree.dir(b"escape/inner", &mut |_| {}).unwrap_err();
        assert!(e.to_string().contains("leads nowhere"), "{e}");
        std::fs::create_dir(root.join("tmp")).unwrap();
        tree.dir(b"escape/inner", &mut |_| {}).unwrap();
        assert!(root.join("tmp/inner").is_dir());
        assert!(!t.path().join("tmp").exists());
    }

    #[test]
    fn file_in_the_way_is_an_error() {
        let t = tempfile::tempdir().unwrap();
        std::fs::write(t.path().join("f"), b"").unwrap();
        let mut tree = Tree::open(t.path()).unwrap();
        let e = tree.dir(b"f/x", &mut |_| {}).unwrap_err();
        assert!(e.to_string().contains("not a directory"), "{e}");
        assert!(tree.existing_dir(b"f").unwrap().is_none());
    }
}
