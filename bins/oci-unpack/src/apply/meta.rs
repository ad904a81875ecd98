//! Entry metadata: reading it from tar headers (with PAX overrides) and applying it.
//!
//! Directory metadata is deferred: every directory is created owner-writable and its recorded
//! mode, owner, xattrs and mtime are applied once, after the *last* layer, deepest first. That
//! way a `0555` directory never blocks later writes into it, and no later creation bumps a
//! directory's mtime after it was set.

use crate::ownership::{Ownership, ROOTLESS_XATTR, rootless_payload};
use anyhow::{Context, Result};
use rustix::fs::{Mode, OFlags, Timespec, Timestamps, XattrFlags};
use rustix::io::Errno;
use std::collections::BTreeMap;
use std::io::Read;
use std::os::fd::{AsFd, BorrowedFd};

/// What a header says about an entry, PAX records applied.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EntryMeta {
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: (i64, u32),
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

impl EntryMeta {
    pub fn read<R: Read>(entry: &mut tar::Entry<'_, R>) -> Result<EntryMeta> {
        let h = entry.header();
        let old = h.as_old();
        let mut m = EntryMeta {
            mode: numeric(h.mode().map(u64::from), &old.mode).context("bad mode field")? as u32
                & 0o7777,
            uid: numeric(h.uid(), &old.uid).context("bad uid field")? as u32,
            gid: numeric(h.gid(), &old.gid).context("bad gid field")? as u32,
            mtime: (
                numeric(h.mtime(), &old.mtime).context("bad mtime field")? as i64,
                0,
            ),
            xattrs: Vec::new(),
        };
        if let Some(pax) = entry.pax_extensions().context("bad PAX header")? {
            for rec in pax {
                let rec = rec.context("bad PAX record")?;
                let (k, v) = (rec.key_bytes(), rec.value_bytes());
                match k {
                    b"uid" => m.uid = parse_num(v).context("bad PAX uid")?,
                    b"gid" => m.gid = parse_num(v).context("bad PAX gid")?,
                    b"mtime" => m.mtime = parse_time(v).context("bad PAX mtime")?,
                    _ => {
                        if let Some(name) = k.strip_prefix(b"SCHILY.xattr.") {
                            m.xattrs.push((name.to_vec(), v.to_vec()));
                        }
                    }
                }
            }
        }
        Ok(m)
    }

    pub fn times(&self) -> Timestamps {
        let t = Timespec {
            tv_sec: self.mtime.0,
            tv_nsec: self.mtime.1 as _,
        };
        // atime follows mtime: tar carries no reliable atime, and a deterministic tree is
        // worth more than an invented one.
        Timestamps {
            last_access: t,
            last_modification: t,
        }
    }
}

/// A header number; a field left blank (all NUL or spaces, as some writers do for hardlinks
/// and symlinks) reads as 0 instead of failing the whole unpack.
fn numeric(parsed: std::io::Result<u64>, raw: &[u8]) -> std::io::Result<u64> {
    match parsed {
        Err(_) if raw.iter().all(|&b| b == 0 || b == b' ') => Ok(0),
        r => r,
    }
}

fn parse_num(v: &[u8]) -> Option<u32> {
    std::str::from_utf8(v).ok()?.trim().parse().ok()
}

/// PAX times are decimal seconds with an optional fraction (`1700000000.123`).
fn parse_time(v: &[u8]) -> Option<(i64, u32)> {
    let s = std::str::from_utf8(v).ok()?.trim();
    let (secs, frac) = s.split_once('.').unwrap_or((s, ""));
    let secs: i64 = secs.parse().ok()?;
    let mut nanos = 0u32;
    for (i, c) in frac.bytes().take(9).enumerate() {
        if !c.is_ascii_digit() {
            return None;
        }
        nanos += (c - b'0') as u32 * 10u32.pow(8 - i as u32);
    }
    Some((secs, nanos))
}

/// Counters for things we could not apply and only warn about once, at the end.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Skipped {
    pub devices: u64,
    pub xattrs: u64,
    pub unknown_types: u64,
}

/// Applies owners, modes, xattrs and times according to the ownership mode.
#[derive(Clone)]
pub struct MetaWriter {
    pub ownership: Ownership,
    euid: u32,
    egid: u32,
}

impl MetaWriter {
    pub fn new(ownership: Ownership) -> MetaWriter {
        MetaWriter {
            ownership,
            euid: rustix::process::geteuid().as_raw(),
            egid: rustix::process::getegid().as_raw(),
        }
    }

    /// The owner to set, when one must be set (keep mode and not already ours).
    fn chown_to(&self, m: &EntryMeta) -> Option<(u32, u32)> {
        (self.ownership == Ownership::Keep && (m.uid, m.gid) != (self.euid, self.egid))
            .then_some((m.uid, m.gid))
    }

    /// Owner, special mode bits, xattrs and times of an open regular file or directory.
    /// `force_mode` applies the mode even without special bits (directories start as 0700).
    pub fn apply_fd(
        &self,
        fd: BorrowedFd<'_>,
        m: &EntryMeta,
        force_mode: bool,
        what: &dyn Fn() -> String,
        skipped: &mut Skipped,
    ) -> Result<()> {
        if let Some((u, g)) = self.chown_to(m) {
            rustix::fs::fchown(
                fd,
                Some(rustix::process::Uid::from_raw(u)),
                Some(rustix::process::Gid::from_raw(g)),
            )
            .map_err(|e| chown_error(e, u, g))
            .with_context(what)?;
        }
        // chown clears setuid/setgid, and so does an unprivileged write: set the mode last.
        if force_mode || m.mode & 0o7000 != 0 {
            rustix::fs::fchmod(fd, Mode::from_raw_mode(m.mode))
                .with_context(|| format!("cannot set mode of {}", what()))?;
        }
        self.xattrs_fd(fd, m, skipped).with_context(what)?;
        rustix::fs::futimens(fd, &m.times())
            .with_context(|| format!("cannot set times of {}", what()))?;
        Ok(())
    }

    fn xattrs_fd(&self, fd: BorrowedFd<'_>, m: &EntryMeta, skipped: &mut Skipped) -> Result<()> {
        for (k, v) in &m.xattrs {
            if self.ownership == Ownership::Flatten && k.as_slice() == ROOTLESS_XATTR.as_bytes() {
                continue;
            }
            match rustix::fs::fsetxattr(fd, k.as_slice(), v, XattrFlags::empty()) {
                Ok(()) => {}
                // Not allowed here (security.* unprivileged, trusted.*), or not supported by
                // the filesystem: counted and reported once.
                Err(Errno::PERM) | Err(Errno::NOTSUP) | Err(Errno::ACCESS) => skipped.xattrs += 1,
                Err(e) => {
                    return Err(e).with_context(|| {
                        format!("cannot set xattr {}", String::from_utf8_lossy(k))
                    });
                }
            }
        }
        if self.ownership == Ownership::Flatten
            && let Some(p) = rootless_payload(m.uid, m.gid)
        {
            match rustix::fs::fsetxattr(fd, ROOTLESS_XATTR, &p, XattrFlags::empty()) {
                Ok(()) => {}
                Err(Errno::NOTSUP) => skipped.xattrs += 1,
                Err(e) => return Err(e).context("cannot set user.rootlesscontainers"),
            }
        }
        Ok(())
    }

    /// Owner and times of something that cannot be opened for writing (symlink, FIFO, device),
    /// by name relative to its parent, never following the final component.
    pub fn apply_at(
        &self,
        parent: BorrowedFd<'_>,
        name: &[u8],
        m: &EntryMeta,
        is_symlink: bool,
        what: &dyn Fn() -> String,
        skipped: &mut Skipped,
    ) -> Result<()> {
        use rustix::fs::AtFlags;
        if let Some((u, g)) = self.chown_to(m) {
            rustix::fs::chownat(
                parent,
                name,
                Some(rustix::process::Uid::from_raw(u)),
                Some(rustix::process::Gid::from_raw(g)),
                AtFlags::SYMLINK_NOFOLLOW,
            )
            .map_err(|e| chown_error(e, u, g))
            .with_context(what)?;
        }
        if !is_symlink && !m.xattrs.is_empty() {
            // FIFOs and device nodes are never opened (opening a device can have effects: a
            // watchdog starts counting). Their xattrs go through our own parent fd's
            // /proc/self/fd entry with lsetxattr, which does not follow the final component.
            // user.rootlesscontainers is not recorded here: the kernel refuses user.* xattrs
            // on anything but regular files and directories.
            use std::os::fd::AsRawFd;
            use std::os::unix::ffi::OsStrExt;
            let mut p = format!("/proc/self/fd/{}/", parent.as_raw_fd()).into_bytes();
            p.extend_from_slice(name);
            let p = std::ffi::OsStr::from_bytes(&p);
            for (k, v) in &m.xattrs {
                match rustix::fs::lsetxattr(p, k.as_slice(), v, XattrFlags::empty()) {
                    Ok(()) => {}
                    Err(_) => skipped.xattrs += 1,
                }
            }
        }
        rustix::fs::utimensat(parent, name, &m.times(), AtFlags::SYMLINK_NOFOLLOW)
            .with_context(|| format!("cannot set times of {}", what()))?;
        Ok(())
    }
}

fn chown_error(e: Errno, u: u32, g: u32) -> anyhow::Error {
    if e == Errno::INVAL {
        anyhow::anyhow!(
            "owner {u}:{g} is not mapped in this user namespace (use --ownership flatten, or add subordinate IDs)"
        )
    } else {
        anyhow::Error::new(std::io::Error::from(e)).context(format!("cannot chown to {u}:{g}"))
    }
}

/// Directory metadata recorded during the unpack and applied at the end.
#[derive(Default)]
pub struct DirMetas {
    /// path -> (metadata, implicit: created as a missing parent, not named by any layer)
    map: BTreeMap<Vec<u8>, (EntryMeta, bool)>,
}

impl DirMetas {
    pub fn set(&mut self, path: &[u8], m: EntryMeta) {
        self.map.insert(path.to_vec(), (m, false));
    }

    /// Implicitly created directory (a parent the layer did not list): 0755, root-owned,
    /// mtime left as the filesystem sets it unless a later entry names it.
    pub fn set_implicit(&mut self, path: &[u8]) {
        self.map.entry(path.to_vec()).or_insert((
            EntryMeta {
                mode: 0o755,
                ..Default::default()
            },
            true,
        ));
    }

    /// Forget `path` and everything below it (it was removed or replaced).
    pub fn remove_tree(&mut self, path: &[u8]) {
        if path.is_empty() {
            self.map.clear();
            return;
        }
        self.map.remove(path);
        let mut lo = path.to_vec();
        lo.push(b'/');
        let mut hi = path.to_vec();
        hi.push(b'/' + 1);
        let doomed: Vec<Vec<u8>> = self.map.range(lo..hi).map(|(k, _)| k.clone()).collect();
        for k in doomed {
            self.map.remove(&k);
        }
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Deepest first: in byte order a directory sorts before everything below it, so the
    /// reverse order finishes children before their parents.
    pub fn drain_deepest_first(self) -> impl Iterator<Item = (Vec<u8>, (EntryMeta, bool))> {
        self.map.into_iter().rev()
    }
}

/// Apply one deferred directory's metadata. The directory is reopened by name with
/// `O_NOFOLLOW|O_DIRECTORY` inside its in-root parent, so a path that now names a symlink or
/// a file (replaced after it was recorded) is skipped rather than followed.
pub fn apply_dir(
    tree: &super::tree::Tree,
    w: &MetaWriter,
    path: &[u8],
    m: &EntryMeta,
    implicit: bool,
    skipped: &mut Skipped,
) -> Result<()> {
    let fd = if path.is_empty() {
        tree.resolve(b"", OFlags::RDONLY)
    } else {
        let (parent, name) = super::path::split(path);
        match tree.resolve(parent, OFlags::PATH) {
            Ok(p) => rustix::fs::openat(
                &p,
                name,
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            ),
            Err(e) => Err(e),
        }
    };
    let fd = match fd {
        Ok(fd) => fd,
        Err(Errno::NOENT) | Err(Errno::NOTDIR) | Err(Errno::LOOP) => return Ok(()),
        Err(e) => {
            return Err(e)
                .with_context(|| format!("cannot open directory {}", super::path::show(path)));
        }
    };
    let what = || format!("directory {}", super::path::show(path));
    if implicit {
        // A parent no layer listed: mode (and owner) only, its mtime is whatever the
        // filesystem set.
        if let Some((u, g)) = w.chown_to(m) {
            rustix::fs::fchown(
                &fd,
                Some(rustix::process::Uid::from_raw(u)),
                Some(rustix::process::Gid::from_raw(g)),
            )
            .map_err(|e| chown_error(e, u, g))
            .with_context(what)?;
        }
        rustix::fs::fchmod(&fd, Mode::from_raw_mode(m.mode)).with_context(what)?;
        return Ok(());
    }
    w.apply_fd(fd.as_fd(), m, true, &what, skipped)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pax_times() {
        assert_eq!(parse_time(b"1700000000"), Some((1700000000, 0)));
        assert_eq!(parse_time(b"1700000000.5"), Some((1700000000, 500_000_000)));
        assert_eq!(parse_time(b"12.000000001"), Some((12, 1)));
        assert_eq!(parse_time(b"x"), None);
    }

    #[test]
    fn dir_metas_forget_subtrees_and_order_deepest_first() {
        let mut d = DirMetas::default();
        for p in [&b"a"[..], b"a/b", b"a/b/c", b"a-c", b"ab", b""] {
            d.set(p, EntryMeta::default());
        }
        d.remove_tree(b"a/b");
        let order: Vec<Vec<u8>> = d.drain_deepest_first().map(|(k, _)| k).collect();
        assert_eq!(
            order,
            vec![b"ab".to_vec(), b"a-c".to_vec(), b"a".to_vec(), b"".to_vec()]
        );
    }
}
