//! The rootfs cache: `CACHE/rootfs/<manifest-hex>-<ownership>/rootfs`.
//!
//! An entry is built in `CACHE/rootfs/.tmp-<key>-<pid>-<unique>/rootfs` and the `.tmp-…`
//! directory is renamed to `<key>` in one step, so a reader sees a complete tree or none. The
//! tree is made durable before that rename (one `syncfs`, see [`make_durable`]), so a crash or
//! power failure leaves the entry either absent or whole, never a published tree of empty
//! files. The build runs under `Cache::lock("rootfs-<key>")` and re-checks for the entry after
//! taking it, so concurrent unpacks of one image build it once and the rest reuse it. Because
//! the lock is held for the whole build, any `.tmp-<key>-…` directory seen under the lock is a
//! leftover of a crashed run and is removed.

use crate::ownership::Ownership;
use crate::unpack::TempTree;
use anyhow::{Context, Result};
use common::cache::Cache;
use common::digest::Digest;
use std::path::{Path, PathBuf};

/// Cache key of an image's tree: manifest digest hex plus ownership mode.
pub fn key(manifest: &Digest, ownership: Ownership) -> String {
    format!("{}-{}", manifest.hex(), ownership.as_str())
}

/// `CACHE/rootfs/<key>/rootfs` under a cache root.
pub fn entry_rootfs(cache_root: &Path, key: &str) -> PathBuf {
    cache_root.join("rootfs").join(key).join("rootfs")
}

/// The cached tree if present, nothing created (the warm path). The cache and the entry
/// `rootfs/<key>` are reached without following symlinks and must be trusted
/// ([`common::cache::lookup_dir`]); the tree inside the entry is the image's own content, so
/// only its top must be a real directory. An untrusted cache is an error, not a miss.
pub fn lookup(cache_root: &Path, key: &str) -> Result<Option<PathBuf>> {
    let Some(entry) = common::cache::lookup_dir(cache_root, &format!("rootfs/{key}"))? else {
        return Ok(None);
    };
    let p = entry.join("rootfs");
    Ok(std::fs::symlink_metadata(&p)
        .is_ok_and(|m| m.is_dir())
        .then_some(p))
}

/// Return the cached tree for `key`, building it with `build(root)` if it is missing.
/// The bool is true when the tree was already there.
pub fn get_or_build(
    cache: &Cache,
    key: &str,
    build: impl FnOnce(&Path) -> Result<()>,
) -> Result<(PathBuf, bool)> {
    let _lock = cache.lock(&format!("rootfs-{key}"))?;
    if let Some(p) = lookup(cache.root(), key)? {
        return Ok((p, true));
    }
    let dir = cache.rootfs_dir();
    remove_leftovers(&dir, key);
    let final_dir = dir.join(key);
    if final_dir.exists() {
        // An entry without its rootfs is not one we made whole: replace it.
        crate::apply::remove::remove_tree(&final_dir)
            .with_context(|| format!("cannot remove broken cache entry {}", final_dir.display()))?;
    }
    let tmp = TempTree::create(dir.join(format!(
        ".tmp-{key}-{}-{}",
        std::process::id(),
        common::fsutil::unique_suffix()
    )))?;
    let root = tmp.path().join("rootfs");
    std::fs::create_dir(&root).with_context(|| format!("cannot create {}", root.display()))?;
    // The entry's own directory, not the tree's root, whose mode the image sets (0000 in a
    // hostile one) and which an unprivileged caller then could not open.
    let early = EarlyWriteback::start(tmp.path())?;
    let built = build(&root);
    early.stop();
    built?;
    make_durable(tmp.path())?;
    std::fs::rename(tmp.path(), &final_dir)
        .with_context(|| format!("cannot rename the new tree to {}", final_dir.display()))?;
    tmp.disarm();
    Ok((final_dir.join("rootfs"), false))
}

/// Write the finished tree to disk before it is published: the rename that publishes it may
/// reach the disk before the files' data (ext4's delayed allocation keeps data in memory for
/// up to 30 s), and an entry is reused for as long as it exists.
///
/// One `syncfs(2)` of the cache's filesystem after the whole tree is written, not an fsync per
/// file or directory: the applier never waits for the disk while it extracts (as unsquashfs,
/// tar and umoci never do), and the single wait lets the kernel write the tree in one sweep.
/// Its cost is the writeback of what is still dirty on that filesystem (ours, and whatever
/// other processes wrote), paid once per cold unpack. The rename itself needs no sync: if it
/// is lost, the next run finds no entry, removes the `.tmp-` leftover and builds again.
pub fn make_durable(dir: &Path) -> Result<()> {
    let fd = open_dir(dir)?;
    rustix::fs::syncfs(&fd)
        .with_context(|| format!("cannot write {} to disk (syncfs)", dir.display()))
}

/// Writes the tree back while it is being built, so the final [`make_durable`] waits only for
/// what was written last: a thread that calls `syncfs` every `EARLY_WRITEBACK_EVERY` until the
/// build ends. The kernel's flusher does the writing, beside the unpack's threads; without it
/// the whole tree would be written back only in the final wait.
struct EarlyWriteback {
    stop: std::sync::mpsc::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

const EARLY_WRITEBACK_EVERY: std::time::Duration = std::time::Duration::from_millis(300);

impl EarlyWriteback {
    fn start(dir: &Path) -> Result<EarlyWriteback> {
        let fd = open_dir(dir)?;
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("early-writeback".into())
            .spawn(move || {
                while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
                    stopped.recv_timeout(EARLY_WRITEBACK_EVERY)
                {
                    // Best effort: the final sync reports what fails.
                    let _ = rustix::fs::syncfs(&fd);
                }
            })
            .context("cannot start the writeback thread")?;
        Ok(EarlyWriteback { stop, thread })
    }

    fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.thread.join();
    }
}

fn open_dir(dir: &Path) -> Result<rustix::fd::OwnedFd> {
    use rustix::fs::{Mode, OFlags};
    rustix::fs::open(
        dir,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .with_context(|| format!("cannot open {}", dir.display()))
}

fn remove_leftovers(dir: &Path, key: &str) {
    let prefix = format!(".tmp-{key}-");
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        if e.file_name().to_string_lossy().starts_with(&prefix) {
            common::cli::debug(format!("removing leftover {}", e.path().display()));
            let _ = crate::apply::remove::remove_tree(&e.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_once_and_cleans_failures() {
        let d = tempfile::tempdir().unwrap();
        // Other tests of this binary change the umask: the cache's parent must be private.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        let cache = Cache::open(&d.path().join("c")).unwrap();
        let k = "abc-keep";
        let e = get_or_build(&cache, k, |root| {
            std::fs::write(root.join("half"), b"x").unwrap();
            anyhow::bail!("boom")
        })
        .unwrap_err();
        assert_eq!(e.to_string(), "boom");
        assert_eq!(std::fs::read_dir(cache.rootfs_dir()).unwrap().count(), 0);
        let (p, cached) = get_or_build(&cache, k, |root| {
            std::fs::write(root.join("f"), b"x").unwrap();
            Ok(())
        })
        .unwrap();
        assert!(!cached);
        assert!(p.join("f").is_file());
        let (p2, cached) = get_or_build(&cache, k, |_| panic!("rebuilt")).unwrap();
        assert!(cached);
        assert_eq!(p, p2);
        assert_eq!(lookup(cache.root(), k).unwrap(), Some(p));
    }
}
