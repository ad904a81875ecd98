//! What the cache holds, as a record (`oci-fetch --list-cache`): blobs, remembered references,
//! unpacked root filesystems, with their disk usage.
//!
//! Every directory is reached through the trusted walk of the cache and read through
//! descriptors without following a symbolic link. Sizes are allocated blocks, a file with
//! several links counted once, as `du` counts them. A tree with the image's owners kept belongs
//! to the user's subordinate IDs: an unprivileged caller lists it from inside its user namespace
//! (the front goes through oci-userns-starter then), or its size counts only what it can read.

use crate::record::{CacheRecord, CacheReference, CacheRootfs, CacheUsage};
use anyhow::{Context, Result};
use rustix::fs::{AtFlags, Dir, FileType, Mode, OFlags};
use std::collections::HashSet;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;

/// Bound on recursion (deeper than any tree oci-unpack builds).
const MAX_DEPTH: usize = 512;

/// The record of the cache at `root`, which must exist.
pub fn list(root: &Path) -> Result<CacheRecord> {
    let top = crate::trusted::open_dir(root)
        .with_context(|| format!("cannot use the cache {}", root.display()))?;
    let mut rec = CacheRecord::new(top.path().to_path_buf());
    let mut seen = HashSet::new();
    if let Ok(blobs) = top.subdir("layout/blobs/sha256", None) {
        let d = reopen(blobs.fd())?;
        usage(d.as_fd(), &mut rec.blobs, &mut seen, 0);
    }
    if let Ok(refs) = top.subdir("refs", None) {
        let d = reopen(refs.fd())?;
        for name in names(d.as_fd())? {
            if name.ends_with(".json")
                && let Some(r) = read_ref(d.as_fd(), &name)
            {
                rec.references.push(r);
            }
        }
        rec.references.sort_by(|a, b| a.reference.cmp(&b.reference));
    }
    if let Ok(trees) = top.subdir("rootfs", None) {
        let d = reopen(trees.fd())?;
        for name in names(d.as_fd())? {
            // `<manifest hex>-<ownership>`; temporaries start with a dot.
            let Some((hex, ownership)) = name.rsplit_once('-') else {
                continue;
            };
            if name.starts_with('.') || hex.len() != 64 {
                continue;
            }
            let mut u = CacheUsage::default();
            if let Ok(e) = open_nofollow_dir(d.as_fd(), &name) {
                usage(e.as_fd(), &mut u, &mut seen, 0);
            }
            rec.rootfs.push(CacheRootfs {
                manifest: format!("sha256:{hex}"),
                ownership: ownership.to_string(),
                bytes: u.bytes,
            });
        }
        rec.rootfs
            .sort_by(|a, b| (&a.manifest, &a.ownership).cmp(&(&b.manifest, &b.ownership)));
    }
    Ok(rec)
}

/// A readable descriptor of a directory held as `O_PATH`.
fn reopen(d: BorrowedFd<'_>) -> Result<OwnedFd> {
    open_nofollow_dir(d, ".").context("cannot read a cache directory")
}

fn open_nofollow_dir(d: BorrowedFd<'_>, name: &str) -> rustix::io::Result<OwnedFd> {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    rustix::fs::openat(d, name, flags, Mode::empty())
}

fn names(d: BorrowedFd<'_>) -> Result<Vec<String>> {
    let mut v = Vec::new();
    for ent in Dir::read_from(d)? {
        let ent = ent?;
        let n = ent.file_name().to_string_lossy().into_owned();
        if n != "." && n != ".." {
            v.push(n);
        }
    }
    v.sort();
    Ok(v)
}

/// One `refs/*.json` entry, a regular file read without following a link.
fn read_ref(d: BorrowedFd<'_>, name: &str) -> Option<CacheReference> {
    use std::io::Read;
    let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK;
    let f = rustix::fs::openat(d, name, flags, Mode::empty()).ok()?;
    let st = rustix::fs::fstat(&f).ok()?;
    if !FileType::from_raw_mode(st.st_mode).is_file() || st.st_size > 64 * 1024 {
        return None;
    }
    let mut text = String::new();
    std::fs::File::from(f).read_to_string(&mut text).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    Some(CacheReference {
        reference: v["reference"].as_str()?.to_string(),
        digest: v["digest"].as_str()?.to_string(),
    })
}

/// Add the entries below `d` to `u` (count of files, allocated bytes of everything).
fn usage(d: BorrowedFd<'_>, u: &mut CacheUsage, seen: &mut HashSet<(u64, u64)>, depth: usize) {
    let Ok(entries) = Dir::read_from(d) else {
        return;
    };
    for ent in entries.flatten() {
        let name = ent.file_name().to_bytes();
        if name == b"." || name == b".." {
            continue;
        }
        let Ok(st) = rustix::fs::statat(d, ent.file_name(), AtFlags::SYMLINK_NOFOLLOW) else {
            continue;
        };
        if st.st_nlink > 1 && !seen.insert((st.st_dev, st.st_ino)) {
            continue;
        }
        u.bytes += st.st_blocks as u64 * 512;
        let kind = FileType::from_raw_mode(st.st_mode);
        if kind.is_dir() {
            if depth < MAX_DEPTH {
                let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
                if let Ok(sub) = rustix::fs::openat(d, ent.file_name(), flags, Mode::empty()) {
                    usage(sub.as_fd(), u, seen, depth + 1);
                }
            }
        } else {
            u.count += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_blobs_references_and_trees_without_following_links() {
        let t = tempfile::tempdir().unwrap();
        let c = crate::cache::Cache::open(&t.path().join("c")).unwrap();
        let hex = "a".repeat(64);
        std::fs::write(c.layout().join("blobs/sha256").join(&hex), vec![0u8; 10000]).unwrap();
        std::fs::write(
            c.refs_dir().join("x.json"),
            format!(r#"{{"reference":"docker.io/library/a:1","digest":"sha256:{hex}"}}"#),
        )
        .unwrap();
        let tree = c.rootfs_dir().join(format!("{hex}-keep/rootfs"));
        std::fs::create_dir_all(&tree).unwrap();
        std::fs::write(tree.join("f"), vec![1u8; 5000]).unwrap();
        std::os::unix::fs::symlink("/usr", tree.join("link")).unwrap();
        std::fs::create_dir(c.rootfs_dir().join(".tmp-x")).unwrap();
        let r = list(c.root()).unwrap();
        assert_eq!(r.blobs.count, 1);
        assert!(r.blobs.bytes >= 10000);
        assert_eq!(r.references.len(), 1);
        assert_eq!(r.references[0].reference, "docker.io/library/a:1");
        assert_eq!(r.rootfs.len(), 1);
        assert_eq!(r.rootfs[0].ownership, "keep");
        assert!(r.rootfs[0].bytes >= 5000 && r.rootfs[0].bytes < 1 << 20);
    }
}
