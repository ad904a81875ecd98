//! Mount points in an image tree the caller cannot write.
//!
//! The runtime creates every mount destination the rootfs lacks (the user's home, the working
//! directory, `/etc/resolv.conf`, ...) in the overlay it is given. When the directory it has to
//! create one in belongs to an ID outside the user namespace (a sandbox directory that root or
//! another user made: in the namespace its owner is the overflow ID), even the namespace's root
//! may not write there, and overlayfs cannot copy that directory up either: the run fails with
//! `mkdir /home/USER: Permission denied`. So before the overlay is mounted, the chain of such
//! directories is made in the upper layer (with the image's modes, owned by the caller): the
//! merged directory then is the upper one, and the runtime can create its mount point in it, as
//! it does in a tree it owns. Nothing is made when the tree is writable (root, cache entries,
//! the user's own sandbox).

use anyhow::{Context, Result};
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};

/// Every absolute path the runtime may have to create in the rootfs: the mount destinations
/// and the working directory of `config.json` (none while the bundle has no `config.json`: the
/// starter also runs a program of the caller's over a bare overlay).
pub fn destinations(config: &Path) -> Result<Vec<PathBuf>> {
    let text = match std::fs::read(config) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", config.display())),
    };
    let spec: serde_json::Value = serde_json::from_slice(&text)
        .with_context(|| format!("{} is not JSON", config.display()))?;
    let mut out: Vec<PathBuf> = spec["mounts"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| m["destination"].as_str())
        .map(PathBuf::from)
        .collect();
    if let Some(cwd) = spec["process"]["cwd"].as_str() {
        out.push(PathBuf::from(cwd));
    }
    out.retain(|p| p.is_absolute());
    Ok(out)
}

/// Make, in `upper`, the directories of `base` in which the runtime would have to create a
/// missing part of `dest` and cannot (see the module's comment).
pub fn prepare(base: &Path, upper: &Path, dest: &Path) -> Result<()> {
    match unwritable_parent(base, dest, &|p| writable(p)) {
        Some(parent) => make_chain(base, upper, &parent),
        None => Ok(()),
    }
}

/// `upper/REL` and each directory above it, with the modes of `base/REL`'s. The upper layer may
/// be a persistent overlay directory that a container wrote before: it is walked with directory
/// descriptors, never through a symbolic link, and the walk stops (leaving the rest to the
/// runtime) at anything that is not a directory there.
fn make_chain(base: &Path, upper: &Path, parent: &Path) -> Result<()> {
    use rustix::fs::{Mode, OFlags};
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let mut dir = rustix::fs::open(upper, flags, Mode::empty())
        .with_context(|| format!("cannot open {}", upper.display()))?;
    let mut rel = PathBuf::new();
    for c in parent.components() {
        rel.push(c);
        let name = c.as_os_str();
        let mode = Mode::from_raw_mode(std::fs::symlink_metadata(base.join(&rel))?.mode() & 0o7777);
        let made = match rustix::fs::mkdirat(&dir, name, mode) {
            Ok(()) => true,
            // Already there (an earlier run's persistent upper layer, or a whiteout): as it is.
            Err(rustix::io::Errno::EXIST) => false,
            Err(e) => {
                let path = upper.join(&rel);
                return Err(e).with_context(|| format!("cannot create {}", path.display()));
            }
        };
        dir = match rustix::fs::openat(&dir, name, flags, Mode::empty()) {
            Ok(d) => d,
            Err(_) => return Ok(()),
        };
        if made {
            // The umask must not narrow the image's mode.
            rustix::fs::fchmod(&dir, mode)?;
        }
    }
    Ok(())
}

/// The directory of `base` (relative to it) in which a missing component of `dest` would have to
/// be created, when `is_writable` says it cannot be. `None` when `dest` exists, when the walk
/// meets a file or a symbolic link (the runtime's own business: nothing is followed here), or
/// when the directory is writable or is the tree's top (the upper layer's root, ours).
fn unwritable_parent(
    base: &Path,
    dest: &Path,
    is_writable: &dyn Fn(&Path) -> bool,
) -> Option<PathBuf> {
    let mut rel = PathBuf::new();
    for c in dest.components() {
        let Component::Normal(name) = c else {
            continue;
        };
        let next = rel.join(name);
        match std::fs::symlink_metadata(base.join(&next)) {
            Ok(m) if m.is_dir() => rel = next,
            Ok(_) => return None,
            Err(_) => {
                let top = rel.as_os_str().is_empty();
                return (!top && !is_writable(&base.join(&rel))).then_some(rel);
            }
        }
    }
    None
}

fn writable(dir: &Path) -> bool {
    nix::unistd::access(dir, nix::unistd::AccessFlags::W_OK).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn tree() -> tempfile::TempDir {
        let t = tempfile::tempdir().unwrap();
        for d in ["home", "etc", "opt/app"] {
            std::fs::create_dir_all(t.path().join(d)).unwrap();
        }
        std::fs::write(t.path().join("etc/hosts"), "").unwrap();
        std::os::unix::fs::symlink("/elsewhere", t.path().join("link")).unwrap();
        t
    }

    #[test]
    fn the_directory_to_create_in_is_named_only_when_it_is_not_writable() {
        let t = tree();
        let never = |_: &Path| false;
        let always = |_: &Path| true;
        let at = |d: &str, w: &dyn Fn(&Path) -> bool| unwritable_parent(t.path(), Path::new(d), w);
        assert_eq!(at("/home/user", &never), Some(PathBuf::from("home")));
        assert_eq!(at("/opt/app/a/b", &never), Some(PathBuf::from("opt/app")));
        assert_eq!(at("/home/user", &always), None);
        // Existing destinations, files, links and the top need nothing.
        assert_eq!(at("/home", &never), None);
        assert_eq!(at("/etc/hosts", &never), None);
        assert_eq!(at("/etc/hosts/x", &never), None);
        assert_eq!(at("/link/x", &never), None);
        assert_eq!(at("/scratch", &never), None);
    }

    #[test]
    fn the_chain_is_made_in_the_upper_layer_with_the_images_modes() {
        let t = tree();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().mode() & 0o7777;
        std::fs::set_permissions(t.path().join("opt"), std::fs::Permissions::from_mode(0o751))
            .unwrap();
        std::fs::set_permissions(
            t.path().join("opt/app"),
            std::fs::Permissions::from_mode(0o1777),
        )
        .unwrap();
        let upper = tempfile::tempdir().unwrap();
        // A directory the upper layer has already (an earlier run's) is kept as it is.
        std::fs::create_dir(upper.path().join("opt")).unwrap();
        let before = mode(&upper.path().join("opt"));
        make_chain(t.path(), upper.path(), Path::new("opt/app")).unwrap();
        assert_eq!(mode(&upper.path().join("opt")), before);
        assert_eq!(mode(&upper.path().join("opt/app")), 0o1777);
        make_chain(t.path(), upper.path(), Path::new("opt/app")).unwrap();
    }

    #[test]
    fn a_link_in_the_upper_layer_is_not_followed() {
        let t = tree();
        let upper = tempfile::tempdir().unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(elsewhere.path(), upper.path().join("opt")).unwrap();
        make_chain(t.path(), upper.path(), Path::new("opt/app")).unwrap();
        assert!(!elsewhere.path().join("app").exists());
    }

    #[test]
    fn destinations_are_the_mounts_and_the_working_directory() {
        let d = tempfile::tempdir().unwrap();
        let c = d.path().join("config.json");
        assert!(destinations(&c).unwrap().is_empty());
        std::fs::write(
            &c,
            r#"{"process":{"cwd":"/home/u"},"mounts":[{"destination":"/proc"},{"destination":"rel"},{"destination":"/etc/resolv.conf"}]}"#,
        )
        .unwrap();
        let got = destinations(&c).unwrap();
        assert_eq!(
            got,
            ["/proc", "/etc/resolv.conf", "/home/u"].map(PathBuf::from)
        );
    }
}
