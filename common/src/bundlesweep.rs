//! Bundles whose launcher was killed before oci-runtime-shim took them over.
//!
//! From the moment oci-mkspec creates a bundle until the shim starts (and from then on its
//! watchdog), nobody else removes it: a `kill -9` of the front in that window would leave it in
//! the temporary directory for good. So when the front names itself as the launcher
//! (`_SINGULARITY_OCI_LAUNCHER_PID`, exported by the front), oci-mkspec writes a marker into the
//! bundle: the launcher's pid and start time, and the bundle's own device and inode. Every later
//! oci-mkspec of the same user in the same directory sweeps the bundles whose launcher is gone.
//!
//! A bundle is swept only when everything holds: its name is the front's
//! (`singularity-oci.*`), it is a real directory (never through a symbolic link) owned by the
//! caller and writable by nobody else, it holds the marker (a regular file of the caller's), the
//! launcher named there is gone (pid and start time), and the directory is still the one the
//! marker names (`common::bundleremoval`). A bundle without a marker (typed by hand, another
//! tool's) is never touched.

use crate::process;
use rustix::fs::{AtFlags, Dir, Mode, OFlags};
use std::io::Read;
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// The front exports its own pid here for the chain it starts.
pub const ENV_LAUNCHER_PID: &str = "_SINGULARITY_OCI_LAUNCHER_PID";

/// The marker's name inside the bundle.
pub const MARKER: &str = ".singularity-oci.launcher";

/// The prefix of the bundles the front makes in its temporary directory.
pub const BUNDLE_PREFIX: &str = "singularity-oci.";

/// The marker's contents for a bundle with device and inode `dev_ino`, when a launcher is named
/// in the environment and still runs: `PID START_TICKS DEV INO`.
pub fn marker_text(dev_ino: (u64, u64)) -> Option<String> {
    let pid: i32 = std::env::var(ENV_LAUNCHER_PID).ok()?.parse().ok()?;
    let ticks = process::start_ticks(pid)?;
    Some(format!("{pid} {ticks} {} {}\n", dev_ino.0, dev_ino.1))
}

/// Write the launcher's marker into `dir` (a bundle just made for the launcher named in the
/// environment). Nothing is written when no launcher is named; a marker already there is kept
/// when it names this directory (an earlier stage of the same chain made the bundle).
pub fn mark(dir: &crate::trusted::TrustedDir) -> anyhow::Result<()> {
    use anyhow::Context;
    let Some(text) = marker_text(dir.dev_ino()) else {
        return Ok(());
    };
    let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let path = dir.path().join(MARKER);
    match rustix::fs::openat(dir.fd(), MARKER, flags, Mode::from_raw_mode(0o600)) {
        Ok(fd) => std::io::Write::write_all(&mut std::fs::File::from(fd), text.as_bytes())
            .with_context(|| format!("cannot write {}", path.display())),
        Err(rustix::io::Errno::EXIST) if marker_names(dir) => Ok(()),
        Err(e) => Err(e).with_context(|| format!("cannot create {}", path.display())),
    }
}

/// True when `dir` holds a marker of the caller's that names `dir` itself.
fn marker_names(dir: &crate::trusted::TrustedDir) -> bool {
    let me = rustix::process::geteuid().as_raw();
    read_marker(dir.fd(), me).is_some_and(|(_, _, dev, ino)| (dev, ino) == dir.dev_ino())
}

/// Create the bundle directory `path` (0700) for the launcher named in the environment and mark
/// it at once, for a stage that runs before oci-mkspec (oci-fetch --disable-cache keeps the
/// image in the bundle): from then on a killed launcher leaves a bundle that the next run
/// sweeps. An existing directory is left as it is.
pub fn create_marked_dir(path: &Path) -> anyhow::Result<()> {
    use anyhow::Context;
    let path = crate::fsutil::absolute(path)?;
    let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
        anyhow::bail!("{} cannot be a bundle directory", path.display());
    };
    let parent = crate::trusted::open_ancestor(parent)
        .with_context(|| format!("refusing {}", path.display()))?;
    if let Some(dir) = parent.create_subdir(name, 0o700)? {
        mark(&dir)?;
    }
    Ok(())
}

/// What a marker says: the launcher's pid and start time, the bundle's device and inode.
fn parse_marker(text: &str) -> Option<(i32, u64, u64, u64)> {
    let mut w = text.split_whitespace();
    let v = (
        w.next()?.parse().ok()?,
        w.next()?.parse().ok()?,
        w.next()?.parse().ok()?,
        w.next()?.parse().ok()?,
    );
    w.next().is_none().then_some(v)
}

/// Remove the bundles in `parent` whose launcher is gone. Best effort: a bundle that cannot be
/// read or removed is left for a later run (with a DEBUG line).
pub fn sweep(parent: &Path) {
    let Ok(dir) = crate::trusted::open_ancestor(parent) else {
        return;
    };
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let Ok(listing) = rustix::fs::openat(dir.fd(), ".", flags, Mode::empty()) else {
        return;
    };
    let Ok(entries) = Dir::read_from(listing.as_fd()) else {
        return;
    };
    let me = rustix::process::geteuid().as_raw();
    for ent in entries.flatten() {
        let name = ent.file_name().to_bytes();
        if !name.starts_with(BUNDLE_PREFIX.as_bytes()) {
            continue;
        }
        let Some(dev_ino) = dead_launchers_bundle(dir.fd(), name, me) else {
            continue;
        };
        let path = parent.join(std::ffi::OsStr::from_bytes(name));
        match crate::bundleremoval::remove_bundle(&path, Some(dev_ino)) {
            Ok(()) => crate::cli::debug(format!(
                "removed bundle {} of a killed launcher",
                path.display()
            )),
            Err(e) => crate::cli::debug(format!(
                "cannot remove bundle {} of a killed launcher: {}",
                path.display(),
                crate::cli::format_chain(&e)
            )),
        }
    }
}

/// The device and inode to remove `name` in `parent` by, when it is a bundle of ours whose
/// launcher is gone.
fn dead_launchers_bundle(
    parent: std::os::fd::BorrowedFd<'_>,
    name: &[u8],
    me: u32,
) -> Option<(u64, u64)> {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let bundle = rustix::fs::openat(parent, name, flags, Mode::empty()).ok()?;
    let st = rustix::fs::fstat(&bundle).ok()?;
    if st.st_uid != me || st.st_mode & 0o022 != 0 {
        return None;
    }
    let (pid, ticks, dev, ino) = read_marker(bundle.as_fd(), me)?;
    if process::alive(pid, ticks) || (st.st_dev, st.st_ino) != (dev, ino) {
        return None;
    }
    // Still a directory at that name (not replaced since we opened it).
    let now = rustix::fs::statat(parent, name, AtFlags::SYMLINK_NOFOLLOW).ok()?;
    ((now.st_dev, now.st_ino) == (dev, ino)).then_some((dev, ino))
}

/// The marker in `bundle`, when it is a small regular file of `me`'s in the expected format.
fn read_marker(bundle: std::os::fd::BorrowedFd<'_>, me: u32) -> Option<(i32, u64, u64, u64)> {
    let mflags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK;
    let marker = rustix::fs::openat(bundle, MARKER, mflags, Mode::empty()).ok()?;
    let mst = rustix::fs::fstat(&marker).ok()?;
    let regular = rustix::fs::FileType::from_raw_mode(mst.st_mode).is_file();
    if !regular || mst.st_uid != me || mst.st_size > 256 {
        return None;
    }
    let mut text = String::new();
    std::fs::File::from(marker).read_to_string(&mut text).ok()?;
    parse_marker(&text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    fn bundle(parent: &Path, name: &str, pid: i32, ticks: u64) -> std::path::PathBuf {
        let b = parent.join(name);
        std::fs::create_dir(&b).unwrap();
        std::fs::set_permissions(&b, std::fs::Permissions::from_mode(0o700)).unwrap();
        std::fs::write(b.join("config.json"), "{}").unwrap();
        let m = std::fs::metadata(&b).unwrap();
        std::fs::write(
            b.join(MARKER),
            format!("{pid} {ticks} {} {}\n", m.dev(), m.ino()),
        )
        .unwrap();
        b
    }

    #[test]
    fn only_bundles_of_dead_launchers_go() {
        let t = tempfile::tempdir().unwrap();
        std::fs::set_permissions(t.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        let me = std::process::id() as i32;
        let ticks = process::start_ticks(me).unwrap();
        let live = bundle(t.path(), "singularity-oci.live", me, ticks);
        let dead = bundle(t.path(), "singularity-oci.dead", me, ticks + 1);
        let other_name = bundle(t.path(), "mine", me, ticks + 1);
        let unmarked = t.path().join("singularity-oci.unmarked");
        std::fs::create_dir(&unmarked).unwrap();
        // A marker naming another directory (copied in) does not count.
        let copied = bundle(t.path(), "singularity-oci.copied", me, ticks + 1);
        std::fs::write(copied.join(MARKER), format!("{me} {} 1 2\n", ticks + 1)).unwrap();
        // Another user's bundle stays, whatever its marker says (only root can make one here).
        let foreign = bundle(t.path(), "singularity-oci.foreign", me, ticks + 1);
        let is_root = rustix::process::geteuid().is_root();
        if is_root {
            std::os::unix::fs::chown(&foreign, Some(65534), Some(65534)).unwrap();
        }
        sweep(t.path());
        assert!(live.is_dir() && other_name.is_dir() && unmarked.is_dir() && copied.is_dir());
        assert!(!dead.exists());
        assert_eq!(foreign.is_dir(), is_root);
    }

    #[test]
    fn marker_format() {
        assert_eq!(parse_marker("12 34 5 6\n"), Some((12, 34, 5, 6)));
        assert_eq!(parse_marker("12 34 5"), None);
        assert_eq!(parse_marker("12 34 5 6 7"), None);
    }
}
