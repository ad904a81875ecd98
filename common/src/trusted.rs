//! Reaching a directory the launcher must trust, without trusting anyone else on the way.
//!
//! A path is walked from `/` one component at a time with
//! `openat(O_PATH|O_NOFOLLOW|O_DIRECTORY|O_CLOEXEC)` and `fstat`, so a symlink is never followed
//! and every check applies to the very directory the next step starts from. Two rules:
//!
//! * **ancestors** (the directories above a trusted tree): owned by the caller or root, and
//!   not writable by group or others unless sticky (`/tmp` is fine: its sticky bit keeps others
//!   from renaming our entries);
//! * **trusted trees** (the cache and every directory below it, the runtime state root, a
//!   bundle): owned by the caller or root, and not writable by group or others at all.
//!
//! Whoever can write a directory on the way can swap what lies below it, so a directory that
//! passes both rules stays what we checked for as long as we use it, by path or by fd.
//!
//! Inside the outer user namespace (made by oci-userns-starter, host uid -> 0) an owner is
//! trusted when it is mapped there: the map holds only the caller's own uid and subordinate
//! IDs. Host root and every other host user are unmapped and all show as the overflow uid
//! (`/proc/sys/kernel/overflowuid`, usually 65534), so they cannot be told apart there: an
//! unmapped owner is accepted for ancestors only (the stages that create or choose a tree do
//! so outside the namespace first, where root and others differ), never for a trusted tree.

use anyhow::{Context, Result, bail};
use rustix::fs::{AtFlags, Mode, OFlags, Stat};
use rustix::io::Errno;
use std::collections::VecDeque;
use std::ffi::{OsStr, OsString};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};
use std::sync::OnceLock;

/// A directory reached and checked by [`open_dir`] or [`TrustedDir::subdir`].
#[derive(Debug)]
pub struct TrustedDir {
    fd: OwnedFd,
    path: PathBuf,
    stat: Stat,
}

/// What a component of a walked path must satisfy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Ancestor,
    Tree,
}

/// Open `path` (absolute or relative to the working directory) as a trusted directory.
pub fn open_dir(path: &Path) -> Result<TrustedDir> {
    walk(path, None)
}

/// Like [`open_dir`], creating each missing component with `mode` (such directories are ours).
pub fn create_dir_all(path: &Path, mode: u32) -> Result<TrustedDir> {
    walk(path, Some(mode))
}

/// [`open_dir`] that answers `None` when `path` (or a directory on the way) does not exist.
pub fn open_dir_if_exists(path: &Path) -> Result<Option<TrustedDir>> {
    match walk(path, None) {
        Ok(d) => Ok(Some(d)),
        Err(e) if is_missing(&e) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Open `path` as a directory that holds trusted trees without being one (the parent of a
/// bundle, say `/tmp`): the ancestor rule applies to it too, so a sticky world-writable
/// directory is accepted.
pub fn open_ancestor(path: &Path) -> Result<TrustedDir> {
    walk_with_role(path, None, Role::Ancestor)
}

/// True when the error of a walk means only that a component does not exist.
pub fn is_missing(e: &anyhow::Error) -> bool {
    e.downcast_ref::<Missing>().is_some()
}

/// The error of a walk that found nothing at a path.
#[derive(Debug)]
struct Missing(PathBuf);

impl std::fmt::Display for Missing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} does not exist", self.0.display())
    }
}

impl std::error::Error for Missing {}

impl TrustedDir {
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `(st_dev, st_ino)`: the identity of the directory we checked.
    pub fn dev_ino(&self) -> (u64, u64) {
        (self.stat.st_dev, self.stat.st_ino)
    }

    /// The uid that owns the directory (as seen in this user namespace).
    pub fn owner(&self) -> u32 {
        self.stat.st_uid
    }

    /// `rel` below this directory (one or more components, no `..`), each checked as a trusted
    /// tree; missing components are created with `mode` when it is given.
    pub fn subdir(&self, rel: &str, create: Option<u32>) -> Result<TrustedDir> {
        let mut cur: Option<TrustedDir> = None;
        for name in rel.split('/').filter(|c| !c.is_empty() && *c != ".") {
            if name == ".." {
                bail!(
                    "{}: '..' is not allowed here",
                    self.path.join(rel).display()
                );
            }
            let parent = cur.as_ref().unwrap_or(self);
            let next = step(
                parent.fd(),
                &parent.path,
                OsStr::new(name),
                Role::Tree,
                create,
            )?;
            cur = Some(next);
        }
        match cur {
            Some(d) => Ok(d),
            None => self.try_clone(),
        }
    }

    /// Create the directory `name` here with `mode` (`None` when it exists already); the new
    /// directory is ours, but it is checked like any other.
    pub fn create_subdir(&self, name: &OsStr, mode: u32) -> Result<Option<TrustedDir>> {
        let path = self.path.join(name);
        match rustix::fs::mkdirat(self.fd(), name.as_bytes(), Mode::from_raw_mode(mode)) {
            Ok(()) => step(self.fd(), &self.path, name, Role::Tree, None).map(Some),
            Err(Errno::EXIST) => Ok(None),
            Err(e) => Err(e).with_context(|| format!("cannot create {}", path.display())),
        }
    }

    /// Open the existing directory `name` here as a trusted tree.
    pub fn open_subdir(&self, name: &OsStr) -> Result<TrustedDir> {
        step(self.fd(), &self.path, name, Role::Tree, None)
    }

    /// The entries of this directory (without `.` and `..`), sorted bytewise, each with
    /// whether it is a directory (not following a symbolic link).
    pub fn entries(&self) -> Result<Vec<(OsString, bool)>> {
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
        let listing = rustix::fs::openat(self.fd(), ".", flags, Mode::empty())
            .with_context(|| format!("cannot list {}", self.path.display()))?;
        let mut v = Vec::new();
        for ent in rustix::fs::Dir::read_from(&listing)
            .with_context(|| format!("cannot list {}", self.path.display()))?
        {
            let ent = ent.with_context(|| format!("cannot list {}", self.path.display()))?;
            let name = OsStr::from_bytes(ent.file_name().to_bytes()).to_os_string();
            if name == "." || name == ".." {
                continue;
            }
            let is_dir = rustix::fs::statat(self.fd(), name.as_bytes(), AtFlags::SYMLINK_NOFOLLOW)
                .map(|st| rustix::fs::FileType::from_raw_mode(st.st_mode).is_dir())
                .unwrap_or(false);
            v.push((name, is_dir));
        }
        v.sort();
        Ok(v)
    }

    /// The contents of the file `name` in this directory, which must be a regular file owned
    /// by the caller or root, writable by nobody else, and at most `max` bytes. A symbolic
    /// link here is followed: nobody but the caller or root can have made it in a trusted
    /// directory, and what it leads to is checked like the file itself.
    pub fn read_file(&self, name: &OsStr, max: u64) -> Result<Vec<u8>> {
        use std::io::Read;
        let path = self.path.join(name);
        // O_NONBLOCK: opening a FIFO must not hang; it is refused below.
        let flags = OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NONBLOCK;
        let fd = rustix::fs::openat(self.fd(), name.as_bytes(), flags, Mode::empty())
            .with_context(|| format!("cannot open {}", path.display()))?;
        let st =
            rustix::fs::fstat(&fd).with_context(|| format!("cannot stat {}", path.display()))?;
        if !rustix::fs::FileType::from_raw_mode(st.st_mode).is_file() {
            bail!("{} is not a regular file", path.display());
        }
        if !ids().owner_trusted(st.st_uid) {
            bail!(
                "{} is owned by uid {}, not by you (uid {}) or root: refusing to trust it",
                path.display(),
                st.st_uid,
                ids().euid
            );
        }
        if st.st_mode & 0o022 != 0 {
            bail!(
                "{} is writable by group or others (mode {:o}): refusing to trust it",
                path.display(),
                st.st_mode & 0o7777
            );
        }
        if st.st_size as u64 > max {
            bail!(
                "{} is larger than {} bytes: refusing to read it",
                path.display(),
                max
            );
        }
        let mut bytes = Vec::with_capacity(st.st_size as usize);
        // One byte more than allowed tells a file that grew after fstat.
        std::fs::File::from(fd)
            .take(max + 1)
            .read_to_end(&mut bytes)
            .with_context(|| format!("cannot read {}", path.display()))?;
        if bytes.len() as u64 > max {
            bail!(
                "{} is larger than {} bytes: refusing to read it",
                path.display(),
                max
            );
        }
        Ok(bytes)
    }

    fn try_clone(&self) -> Result<TrustedDir> {
        Ok(TrustedDir {
            fd: self.fd.try_clone()?,
            path: self.path.clone(),
            stat: self.stat,
        })
    }
}

/// Symlinks followed in one walk at most (the kernel's own limit).
const MAX_LINKS: usize = 40;

fn walk(path: &Path, create: Option<u32>) -> Result<TrustedDir> {
    walk_with_role(path, create, Role::Tree)
}

fn walk_with_role(path: &Path, create: Option<u32>, last_role: Role) -> Result<TrustedDir> {
    let abs = crate::fsutil::absolute(path)?;
    let mut todo: VecDeque<OsString> = components(&abs);
    let mut stack: Vec<TrustedDir> = vec![open_root()?];
    let mut links = 0;
    while let Some(name) = todo.pop_front() {
        if name == ".." {
            if stack.len() > 1 {
                stack.pop();
            }
            continue;
        }
        let role = if todo.is_empty() {
            last_role
        } else {
            Role::Ancestor
        };
        let top = stack.last().expect("the root stays on the stack");
        match step(top.fd(), &top.path, &name, role, create) {
            Ok(d) => stack.push(d),
            Err(e) => {
                // A symlink above the trusted tree (say /home -> /export/home) is followed when
                // the caller or root made it in a directory we trust: nobody else could have.
                let Some(target) = trusted_link(top, &name, role)? else {
                    return Err(e);
                };
                links += 1;
                if links > MAX_LINKS {
                    bail!("{}: too many levels of symbolic links", abs.display());
                }
                if target.is_absolute() {
                    stack.truncate(1);
                }
                for c in components(&target).into_iter().rev() {
                    todo.push_front(c);
                }
            }
        }
    }
    let top = stack.pop().expect("the root stays on the stack");
    // `..` may have ended the walk on a directory checked only as an ancestor.
    check(&top.path, &top.stat, last_role)?;
    Ok(top)
}

/// The normal and `..` components of a path, in order.
fn components(p: &Path) -> VecDeque<OsString> {
    p.components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_os_string()),
            Component::ParentDir => Some(OsString::from("..")),
            _ => None,
        })
        .collect()
}

fn open_root() -> Result<TrustedDir> {
    let fd = rustix::fs::open(
        "/",
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .context("cannot open /")?;
    let stat = rustix::fs::fstat(&fd).context("cannot stat /")?;
    check(Path::new("/"), &stat, Role::Ancestor)?;
    Ok(TrustedDir {
        fd,
        path: PathBuf::from("/"),
        stat,
    })
}

/// The target of `name` in `dir` when it is a symlink we may follow: an ancestor (never part
/// of a trusted tree), owned by the caller or root.
fn trusted_link(dir: &TrustedDir, name: &OsStr, role: Role) -> Result<Option<PathBuf>> {
    if role != Role::Ancestor {
        return Ok(None);
    }
    let Ok(st) = rustix::fs::statat(dir.fd(), name.as_bytes(), AtFlags::SYMLINK_NOFOLLOW) else {
        return Ok(None);
    };
    if !rustix::fs::FileType::from_raw_mode(st.st_mode).is_symlink()
        || !ids().owner_trusted(st.st_uid)
    {
        return Ok(None);
    }
    let target = rustix::fs::readlinkat(dir.fd(), name.as_bytes(), Vec::new())
        .with_context(|| format!("cannot read the link {}", dir.path.join(name).display()))?;
    Ok(Some(PathBuf::from(OsStr::from_bytes(target.as_bytes()))))
}

/// Open `name` in `dir` without following a symlink, creating it when asked, and check it.
fn step(
    dir: BorrowedFd<'_>,
    dir_path: &Path,
    name: &OsStr,
    role: Role,
    create: Option<u32>,
) -> Result<TrustedDir> {
    let path = dir_path.join(name);
    let flags = OFlags::PATH | OFlags::NOFOLLOW | OFlags::DIRECTORY | OFlags::CLOEXEC;
    let fd = match rustix::fs::openat(dir, name.as_bytes(), flags, Mode::empty()) {
        Ok(fd) => fd,
        Err(Errno::NOENT) => match create {
            None => return Err(Missing(path).into()),
            Some(mode) => {
                match rustix::fs::mkdirat(dir, name.as_bytes(), Mode::from_raw_mode(mode)) {
                    Ok(()) | Err(Errno::EXIST) => {}
                    Err(e) => {
                        return Err(e).with_context(|| format!("cannot create {}", path.display()));
                    }
                }
                rustix::fs::openat(dir, name.as_bytes(), flags, Mode::empty())
                    .map_err(|e| not_a_dir(dir, name, &path, e))?
            }
        },
        Err(e) => return Err(not_a_dir(dir, name, &path, e)),
    };
    let stat = rustix::fs::fstat(&fd).with_context(|| format!("cannot stat {}", path.display()))?;
    check(&path, &stat, role)?;
    Ok(TrustedDir { fd, path, stat })
}

/// Explain a failed `openat(O_NOFOLLOW|O_DIRECTORY)`.
fn not_a_dir(dir: BorrowedFd<'_>, name: &OsStr, path: &Path, e: Errno) -> anyhow::Error {
    if e == Errno::NOTDIR || e == Errno::LOOP {
        let what = match rustix::fs::statat(dir, name.as_bytes(), AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) if rustix::fs::FileType::from_raw_mode(st.st_mode).is_symlink() => {
                "is a symbolic link (never followed here)"
            }
            _ => "is not a directory",
        };
        return anyhow::anyhow!("{} {what}", path.display());
    }
    anyhow::Error::new(std::io::Error::from(e)).context(format!("cannot open {}", path.display()))
}

fn check(path: &Path, st: &Stat, role: Role) -> Result<()> {
    let ids = ids();
    let mode = st.st_mode;
    let unmapped = ids.unmapped(st.st_uid);
    let owner_ok = ids.owner_trusted(st.st_uid) || (unmapped && role == Role::Ancestor);
    if !owner_ok {
        if unmapped {
            bail!(
                "{} is owned by a user outside this user namespace (root or another user), not by you: refusing to trust it",
                path.display()
            );
        }
        bail!(
            "{} is owned by uid {}, not by you (uid {}) or root: refusing to trust it",
            path.display(),
            st.st_uid,
            ids.euid
        );
    }
    let writable_by_others = mode & 0o022 != 0;
    let sticky = mode & libc::S_ISVTX != 0;
    if writable_by_others && !(role == Role::Ancestor && sticky) {
        bail!(
            "{} is writable by group or others (mode {:o}): refusing to trust it",
            path.display(),
            mode & 0o7777
        );
    }
    Ok(())
}

/// The caller's view of user IDs, read once per process.
struct Ids {
    euid: u32,
    /// `(inside, count)` of each line of `/proc/self/uid_map`, when not the initial namespace.
    userns_map: Option<Vec<(u32, u32)>>,
    overflow: u32,
}

impl Ids {
    fn unmapped(&self, uid: u32) -> bool {
        self.userns_map.is_some() && uid == self.overflow
    }

    fn owner_trusted(&self, uid: u32) -> bool {
        match &self.userns_map {
            None => uid == self.euid || uid == 0,
            // Mapped IDs are the caller's own uid and subordinate IDs.
            Some(map) => {
                uid != self.overflow
                    && map
                        .iter()
                        .any(|&(first, count)| uid >= first && uid - first < count)
            }
        }
    }
}

fn ids() -> &'static Ids {
    static IDS: OnceLock<Ids> = OnceLock::new();
    IDS.get_or_init(|| {
        let map = std::fs::read_to_string("/proc/self/uid_map").unwrap_or_default();
        let overflow = std::fs::read_to_string("/proc/sys/kernel/overflowuid")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(65534);
        Ids {
            euid: rustix::process::geteuid().as_raw(),
            userns_map: parse_uid_map(&map),
            overflow,
        }
    })
}

/// `None` for the initial user namespace (`0 0 4294967295`), else the inside ranges.
fn parse_uid_map(text: &str) -> Option<Vec<(u32, u32)>> {
    let ranges: Vec<(u32, u32, u32)> = text
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace().map(|x| x.parse::<u32>().ok());
            Some((f.next()??, f.next()??, f.next()??))
        })
        .collect();
    if ranges.is_empty() || ranges == [(0, 0, u32::MAX)] {
        return None;
    }
    Some(ranges.into_iter().map(|(i, _, c)| (i, c)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{PermissionsExt, symlink};

    fn chmod(p: &Path, mode: u32) {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn uid_maps() {
        assert_eq!(parse_uid_map("         0          0 4294967295\n"), None);
        assert_eq!(
            parse_uid_map("0 1000 1\n1 100000 65536\n"),
            Some(vec![(0, 1), (1, 65536)])
        );
    }

    #[test]
    fn owner_rules_inside_and_outside_a_user_namespace() {
        let outside = Ids {
            euid: 1000,
            userns_map: None,
            overflow: 65534,
        };
        assert!(outside.owner_trusted(1000) && outside.owner_trusted(0));
        assert!(!outside.owner_trusted(1001) && !outside.unmapped(65534));
        let inside = Ids {
            euid: 0,
            userns_map: Some(vec![(0, 1), (1, 65536)]),
            overflow: 65534,
        };
        assert!(inside.owner_trusted(0) && inside.owner_trusted(1000));
        // 65534 is mapped here, but an unmapped owner looks the same: never trusted.
        assert!(!inside.owner_trusted(65534) && inside.unmapped(65534));
        let single = Ids {
            euid: 0,
            userns_map: Some(vec![(0, 1)]),
            overflow: 65534,
        };
        assert!(!single.owner_trusted(1));
    }

    #[test]
    fn creates_and_reopens_a_private_tree() {
        let t = tempfile::tempdir().unwrap();
        chmod(t.path(), 0o700);
        let p = t.path().join("a/b/c");
        let d = create_dir_all(&p, 0o700).unwrap();
        assert_eq!(d.path(), p);
        let again = open_dir(&p).unwrap();
        assert_eq!(again.dev_ino(), d.dev_ino());
        let sub = again.subdir("x/y", Some(0o700)).unwrap();
        assert!(p.join("x/y").is_dir());
        assert!(again.subdir("x/../y", None).is_err());
        drop(sub);
        assert!(
            open_dir_if_exists(&t.path().join("nope/x"))
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn refuses_symlinks_and_writable_directories() {
        let t = tempfile::tempdir().unwrap();
        chmod(t.path(), 0o700);
        let real = t.path().join("real");
        std::fs::create_dir(&real).unwrap();
        chmod(&real, 0o700);
        let link = t.path().join("link");
        symlink(&real, &link).unwrap();
        let e = open_dir(&link).unwrap_err().to_string();
        assert!(e.contains("symbolic link"), "{e}");
        let e = open_dir(&link.join("x")).unwrap_err();
        assert!(is_missing(&e), "{e}");
        chmod(&real, 0o777);
        let e = open_dir(&real).unwrap_err().to_string();
        assert!(e.contains("writable by group or others"), "{e}");
        // A sticky world-writable directory is fine above a tree, never as the tree itself.
        chmod(&real, 0o1777);
        assert!(open_dir(&real).is_err());
        let inner = real.join("mine");
        std::fs::create_dir(&inner).unwrap();
        chmod(&inner, 0o700);
        open_dir(&inner).unwrap();
        chmod(&real, 0o777);
        assert!(open_dir(&inner).is_err());
        chmod(&real, 0o700);
        // A link above the tree, made by us in a directory we trust, is followed; one inside
        // the tree is not.
        let tree = real.join("tree");
        std::fs::create_dir(&tree).unwrap();
        chmod(&tree, 0o700);
        assert_eq!(open_dir(&link.join("tree")).unwrap().path(), tree);
        assert!(open_dir(&link).is_err());
        let file = real.join("f");
        std::fs::write(&file, "x").unwrap();
        let e = open_dir(&file).unwrap_err().to_string();
        assert!(e.contains("not a directory"), "{e}");
    }
}
