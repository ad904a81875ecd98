//! The layer applier: tar entries in, a root filesystem out, with OCI whiteout semantics and
//! every path resolved inside the target (see `tree`).
//!
//! Per entry the cost is the creating call plus what metadata needs: a regular file is
//! `openat(O_CREAT|O_EXCL|O_NOFOLLOW)` with its final permission bits, its writes,
//! `futimens` and `close`; owner, special bits and xattrs add a call each only when the entry
//! needs them. The parent fd is reused across consecutive entries. A regular file's writes,
//! metadata and `close` run on the file writer's thread (see `writer`).

pub mod meta;
pub mod path;
pub mod remove;
pub mod tree;
pub mod writer;

use crate::ownership::Ownership;
use anyhow::{Context, Result, anyhow, bail};
use meta::{DirMetas, EntryMeta, MetaWriter, Skipped};
use path::{join, show, split};
use rustix::fs::{AtFlags, FileType, Mode, OFlags};
use rustix::io::Errno;
use std::collections::HashSet;
use std::hash::{BuildHasher, RandomState};
use std::io::Read;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;
use tar::EntryType;

/// Marker that makes a directory opaque (hides everything lower layers put in it).
const OPAQUE: &[u8] = b".wh..wh..opq";
const WHITEOUT_PREFIX: &[u8] = b".wh.";

/// What an unpack did, for messages and tests.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Stats {
    pub entries: u64,
    pub bytes: u64,
    pub skipped: Skipped,
}

pub struct Applier {
    tree: tree::Tree,
    writer: MetaWriter,
    files: writer::FileWriter,
    dirs: DirMetas,
    /// Hashes of every path the current layer wrote (and their ancestors). Whiteouts apply to
    /// lower layers only, whatever their position in the tar, so an opaque marker or `.wh.X`
    /// must spare what this layer itself put there. Hashes with a per-process random key keep
    /// the set small (8 bytes a path) without letting a layer aim for collisions.
    layer_paths: HashSet<u64>,
    hasher: RandomState,
    stats: Stats,
}

impl Applier {
    /// Start applying into the existing directory `root` (normally empty).
    pub fn new(root: &Path, ownership: Ownership) -> Result<Applier> {
        // Permission bits come from the layers, not from the caller's umask.
        rustix::process::umask(Mode::empty());
        // The root is 0755 unless a layer lists `./` with other metadata.
        let mut dirs = DirMetas::default();
        dirs.set_implicit(b"");
        let writer = MetaWriter::new(ownership);
        Ok(Applier {
            tree: tree::Tree::open(root)?,
            files: writer::FileWriter::spawn(writer.clone())?,
            writer,
            dirs,
            layer_paths: HashSet::new(),
            hasher: RandomState::new(),
            stats: Stats::default(),
        })
    }

    /// Apply one uncompressed layer (a tar stream). Stops at the end-of-archive marker; the
    /// caller drains whatever follows.
    pub fn apply_layer<R: Read>(&mut self, reader: R) -> Result<()> {
        self.layer_paths.clear();
        let mut archive = tar::Archive::new(reader);
        for entry in archive.entries().map_err(anyhow::Error::new)? {
            let mut entry = entry
                .map_err(anyhow::Error::new)
                .context("cannot read tar entry")?;
            self.entry(&mut entry)?;
        }
        Ok(())
    }

    /// Wait for the file writer, apply the deferred directory metadata and report what was
    /// done.
    pub fn finish(mut self) -> Result<Stats> {
        let skipped = self.files.finish()?;
        self.stats.skipped.xattrs += skipped.xattrs;
        let dirs = std::mem::take(&mut self.dirs);
        for (path, (m, implicit)) in dirs.drain_deepest_first() {
            meta::apply_dir(
                &self.tree,
                &self.writer,
                &path,
                &m,
                implicit,
                &mut self.stats.skipped,
            )?;
        }
        Ok(self.stats)
    }

    fn hash(&self, path: &[u8]) -> u64 {
        self.hasher.hash_one(path)
    }

    /// Remember that this layer wrote `path` (and so, implicitly, its ancestors).
    fn mark_written(&mut self, path: &[u8]) {
        let mut p = path;
        loop {
            if !self.layer_paths.insert(self.hash(p)) || p.is_empty() {
                // An ancestor already present means all of its ancestors are too.
                break;
            }
            p = split(p).0;
        }
    }

    fn written(&self, path: &[u8]) -> bool {
        self.layer_paths.contains(&self.hash(path))
    }

    fn entry<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>) -> Result<()> {
        let kind = entry.header().entry_type();
        if matches!(
            kind,
            EntryType::XGlobalHeader | EntryType::XHeader | EntryType::GNULongName
        ) {
            return Ok(());
        }
        let raw = entry.path_bytes().into_owned();
        let path = path::normalise(&raw).map_err(|e| {
            anyhow!(
                "refusing entry '{}': {e}",
                String::from_utf8_lossy(&raw).escape_debug()
            )
        })?;
        self.stats.entries += 1;
        let (parent, name) = split(&path);
        if name.starts_with(WHITEOUT_PREFIX) {
            return self.whiteout(parent, name);
        }
        let meta =
            EntryMeta::read(entry).with_context(|| format!("bad header for {}", show(&path)))?;
        if path.is_empty() {
            // The root directory itself (`./`): only its metadata can change.
            if kind != EntryType::Directory {
                bail!(
                    "refusing entry '{}': the root can only be a directory",
                    show(&path)
                );
            }
            self.dirs.set(b"", meta);
            return Ok(());
        }
        self.mark_written(&path);
        let dirs = &mut self.dirs;
        let pfd = self
            .tree
            .dir(parent, &mut |p| dirs.set_implicit(p))
            .with_context(|| format!("cannot place {}", show(&path)))?;
        let pfd = pfd.as_fd();
        let r = match kind {
            EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
                self.file(pfd, &path, name, meta, entry)
            }
            EntryType::Directory => self.directory(pfd, &path, name, meta),
            EntryType::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| anyhow!("symlink {} has no target", show(&path)))?
                    .into_owned();
                self.symlink(pfd, &path, name, &target, &meta)
            }
            EntryType::Link => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| anyhow!("hardlink {} has no target", show(&path)))?
                    .into_owned();
                self.hardlink(pfd, &path, name, &target)
            }
            EntryType::Char | EntryType::Block | EntryType::Fifo => {
                self.special(pfd, &path, name, kind, &meta, entry)
            }
            _ => {
                self.stats.skipped.unknown_types += 1;
                Ok(())
            }
        };
        r.map_err(|e| {
            if self.files.broken() {
                // The writer's own error names the earlier file it failed on.
                e
            } else {
                e.context(format!("cannot unpack {}", show(&path)))
            }
        })
    }

    /// Make room for `name`: remove whatever is there (a whole tree if a directory).
    fn clear(&mut self, parent: BorrowedFd<'_>, path: &[u8], name: &[u8]) -> Result<()> {
        self.tree.invalidate();
        self.dirs.remove_tree(path);
        remove::remove_all(parent, name).with_context(|| format!("cannot replace {}", show(path)))
    }

    /// Run `create`; if the name is taken, clear it and try once more.
    fn create_at<T>(
        &mut self,
        parent: BorrowedFd<'_>,
        path: &[u8],
        name: &[u8],
        mut create: impl FnMut() -> Result<T, Errno>,
    ) -> Result<T> {
        match create() {
            Err(Errno::EXIST) => {
                self.clear(parent, path, name)?;
                Ok(create()?)
            }
            r => Ok(r?),
        }
    }

    fn file<R: Read>(
        &mut self,
        parent: BorrowedFd<'_>,
        path: &[u8],
        name: &[u8],
        m: EntryMeta,
        entry: &mut tar::Entry<'_, R>,
    ) -> Result<()> {
        let flags =
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        // Created with its final permission bits: the fd we hold can write whatever they say.
        let mode = Mode::from_raw_mode(m.mode & 0o777);
        let fd: OwnedFd = self.create_at(parent, path, name, || {
            rustix::fs::openat(parent, name, flags, mode)
        })?;
        let expected = entry.size();
        let written = self
            .files
            .file(std::fs::File::from(fd), path, m, expected, entry)?;
        if written != expected {
            bail!("layer ends inside this file ({written} of {expected} bytes): truncated tar");
        }
        self.stats.bytes += written;
        Ok(())
    }

    fn directory(
        &mut self,
        parent: BorrowedFd<'_>,
        path: &[u8],
        name: &[u8],
        m: EntryMeta,
    ) -> Result<()> {
        let mode = Mode::from_raw_mode(tree::WORK_DIR_MODE);
        match rustix::fs::mkdirat(parent, name, mode) {
            Ok(()) => {}
            Err(Errno::EXIST) => {
                // Directory over directory keeps the contents; anything else is replaced.
                let st = rustix::fs::statat(parent, name, AtFlags::SYMLINK_NOFOLLOW)?;
                if FileType::from_raw_mode(st.st_mode) != FileType::Directory {
                    self.clear(parent, path, name)?;
                    rustix::fs::mkdirat(parent, name, mode)?;
                }
            }
            Err(e) => return Err(e.into()),
        }
        self.dirs.set(path, m);
        Ok(())
    }

    fn symlink(
        &mut self,
        parent: BorrowedFd<'_>,
        path: &[u8],
        name: &[u8],
        target: &[u8],
        m: &EntryMeta,
    ) -> Result<()> {
        if target.is_empty() || target.len() > path::MAX_PATH || target.contains(&0) {
            bail!("refusing symlink with an empty, NUL-containing or over-long target");
        }
        // The target is stored verbatim: it is only ever followed by openat2 IN_ROOT here, and
        // by the container inside its own root later.
        self.create_at(parent, path, name, || {
            rustix::fs::symlinkat(target, parent, name)
        })?;
        let what = || format!("symlink {}", show(path));
        self.writer
            .apply_at(parent, name, m, true, &what, &mut self.stats.skipped)
    }

    fn hardlink(
        &mut self,
        parent: BorrowedFd<'_>,
        path: &[u8],
        name: &[u8],
        target: &[u8],
    ) -> Result<()> {
        let target = path::normalise(target).map_err(|e| {
            anyhow!(
                "refusing hardlink to '{}': {e}",
                String::from_utf8_lossy(target).escape_debug()
            )
        })?;
        if target == path {
            return Ok(());
        }
        if target.is_empty() {
            bail!("refusing hardlink to the root directory");
        }
        let (tparent, tname) = split(&target);
        // The source's parent is resolved inside the root like every other path, and linkat
        // without AT_SYMLINK_FOLLOW links a symlink itself, never what it points to.
        let tfd = self
            .tree
            .resolve(tparent, OFlags::PATH)
            .map_err(|e| anyhow!("hardlink target {} not found: {e}", show(&target)))?;
        let link = || rustix::fs::linkat(&tfd, tname, parent, name, AtFlags::empty());
        match link() {
            Err(Errno::EXIST) => {
                // Do not remove the name if it *is* the target (same inode via another path).
                let a = rustix::fs::statat(&tfd, tname, AtFlags::SYMLINK_NOFOLLOW);
                let b = rustix::fs::statat(parent, name, AtFlags::SYMLINK_NOFOLLOW);
                if let (Ok(a), Ok(b)) = (a, b)
                    && (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)
                {
                    return Ok(());
                }
                self.clear(parent, path, name)?;
                link().map_err(|e| link_error(e, &target))
            }
            r => r.map_err(|e| link_error(e, &target)),
        }
    }

    fn special<R: Read>(
        &mut self,
        parent: BorrowedFd<'_>,
        path: &[u8],
        name: &[u8],
        kind: EntryType,
        m: &EntryMeta,
        entry: &mut tar::Entry<'_, R>,
    ) -> Result<()> {
        let (ft, dev) = match kind {
            EntryType::Fifo => (FileType::Fifo, 0),
            k => {
                let h = entry.header();
                let major = h.device_major().ok().flatten().unwrap_or(0);
                let minor = h.device_minor().ok().flatten().unwrap_or(0);
                let ft = if k == EntryType::Char {
                    FileType::CharacterDevice
                } else {
                    FileType::BlockDevice
                };
                (ft, rustix::fs::makedev(major, minor))
            }
        };
        let mode = Mode::from_raw_mode(m.mode & 0o777);
        let r = self.create_at(parent, path, name, || {
            rustix::fs::mknodat(parent, name, ft, mode, dev)
        });
        match r {
            Ok(()) => {}
            // Device nodes need CAP_MKNOD in the initial namespace: unprivileged, they are
            // skipped and counted (one warning at the end). The container gets /dev from the
            // runtime anyway.
            Err(e) if ft != FileType::Fifo && is_perm(&e) => {
                self.stats.skipped.devices += 1;
                return Ok(());
            }
            Err(e) => return Err(e),
        }
        let what = || format!("special file {}", show(path));
        self.writer
            .apply_at(parent, name, m, false, &what, &mut self.stats.skipped)?;
        if m.mode & 0o7000 != 0 {
            rustix::fs::chmodat(parent, name, Mode::from_raw_mode(m.mode), AtFlags::empty())?;
        }
        Ok(())
    }

    /// `.wh.NAME` removes NAME from lower layers; `.wh..wh..opq` empties the directory of
    /// everything lower layers put there.
    fn whiteout(&mut self, parent: &[u8], name: &[u8]) -> Result<()> {
        if name == OPAQUE {
            return self.opaque(parent);
        }
        let victim = &name[WHITEOUT_PREFIX.len()..];
        if victim.is_empty()
            || victim == b"."
            || victim == b".."
            || victim.starts_with(WHITEOUT_PREFIX)
        {
            bail!(
                "refusing whiteout '{}' in {}: it names no removable entry",
                String::from_utf8_lossy(name).escape_debug(),
                show(parent)
            );
        }
        let target = join(parent, victim);
        if self.written(&target) {
            // Whiteouts never hide what their own layer wrote.
            return Ok(());
        }
        let Some(pfd) = self.tree.existing_dir(parent)? else {
            return Ok(());
        };
        self.clear(pfd.as_fd(), &target, victim)
    }

    fn opaque(&mut self, dir: &[u8]) -> Result<()> {
        // The marker is the layer saying "this directory exists here and is opaque": make sure
        // it does, the way a layer's implicit parent would be made.
        self.mark_written(dir);
        let dirs = &mut self.dirs;
        let pfd = self
            .tree
            .dir(dir, &mut |p| dirs.set_implicit(p))
            .with_context(|| format!("cannot place opaque directory {}", show(dir)))?;
        let fd = rustix::fs::openat(
            &*pfd,
            ".",
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .with_context(|| format!("cannot open opaque directory {}", show(dir)))?;
        let mut doomed = Vec::new();
        for ent in rustix::fs::Dir::read_from(&fd)? {
            let ent = ent?;
            let n = ent.file_name().to_bytes();
            if n == b"." || n == b".." {
                continue;
            }
            if !self.written(&join(dir, n)) {
                doomed.push(n.to_vec());
            }
        }
        for n in doomed {
            let p = join(dir, &n);
            self.clear(fd.as_fd(), &p, &n)?;
        }
        Ok(())
    }
}

fn is_perm(e: &anyhow::Error) -> bool {
    matches!(
        e.downcast_ref::<Errno>(),
        Some(&Errno::PERM) | Some(&Errno::ACCESS)
    ) || e
        .downcast_ref::<std::io::Error>()
        .is_some_and(|e| e.kind() == std::io::ErrorKind::PermissionDenied)
}

fn link_error(e: Errno, target: &[u8]) -> anyhow::Error {
    match e {
        Errno::NOENT => anyhow!("hardlink target {} does not exist", show(target)),
        Errno::PERM => anyhow!("hardlink target {} is a directory", show(target)),
        e => anyhow::Error::new(std::io::Error::from(e))
            .context(format!("cannot link to {}", show(target))),
    }
}

#[cfg(test)]
mod tests;
