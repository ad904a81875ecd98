//! The on-disk cache shared by `oci-fetch` and `oci-unpack`.
//!
//! ```text
//! CACHE = ${SINGULARITY_CACHEDIR:-$HOME/.singularity}/cache/oci-launcher     (mode 0700)
//!   layout/            one OCI image layout: oci-layout, index.json, blobs/sha256/<hex>
//!   refs/<sha256 of reference>.json   reference -> manifest digest index (docker:// only)
//!   rootfs/<key>/      complete root filesystems, renamed into place, then read-only
//!   tmp/               partial downloads and unpacks (removed or reused after a crash)
//!   locks/             flock(2) files; a lock is held while a blob or rootfs is produced
//! ```
//!
//! Everything is written to a temporary name in the same filesystem and renamed into place only
//! once complete and verified, so a reader never sees a half-written entry.

use crate::digest::Digest;
use crate::fsutil::LockFile;
use crate::trusted;
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};

/// Directory name of our cache below Singularity's cache root.
const SUBDIR: &str = "oci-launcher";

/// The files of an empty OCI layout: the marker and an index without manifests.
const LAYOUT_FILES: [(&str, &[u8]); 2] = [
    ("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#),
    (
        "index.json",
        br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}"#,
    ),
];

#[derive(Debug, Clone)]
pub struct Cache {
    root: PathBuf,
}

/// Singularity's cache root: `$SINGULARITY_CACHEDIR/cache`, else `$HOME/.singularity/cache`.
pub fn default_root() -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os("SINGULARITY_CACHEDIR").filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(dir).join("cache").join(SUBDIR));
    }
    let home = crate::identity::home_dir()?;
    Ok(home.join(".singularity").join("cache").join(SUBDIR))
}

/// `SINGULARITY_DISABLE_CACHE` is set to a true value (`1`, `true`, `yes`, `on`, any case, as
/// the front reads it): nothing may be read from or written to the cache.
pub fn disabled_by_env() -> bool {
    std::env::var("SINGULARITY_DISABLE_CACHE")
        .is_ok_and(|v| matches!(v.to_ascii_lowercase().as_str(), "1" | "true" | "yes" | "on"))
}

impl Cache {
    /// Open (creating if needed) the cache at its default place.
    pub fn open_default() -> Result<Cache> {
        Cache::open(&default_root()?)
    }

    /// Open (creating if needed) a cache rooted at `root`. All directories are created 0700.
    /// The root, every directory above it and every directory of the layout is reached without
    /// following a symlink and must belong to the caller or root and be writable by nobody else
    /// ([`crate::trusted`]): a cache someone else could write is refused, nothing is written.
    pub fn open(root: &Path) -> Result<Cache> {
        let root = crate::fsutil::absolute(root)?;
        let untrusted = || format!("cannot use the cache {}", root.display());
        let top = trusted::create_dir_all(&root, 0o700).with_context(untrusted)?;
        for sub in ["layout/blobs/sha256", "refs", "rootfs", "tmp", "locks"] {
            top.subdir(sub, Some(0o700)).with_context(untrusted)?;
        }
        let tmp = root.join("tmp");
        // Debris of writers killed mid-write: all their temporaries live in tmp/.
        crate::fsutil::sweep_dead_temps(&tmp);
        // These two make `layout/` a valid OCI layout for other tools; nothing of ours reads
        // them. They are written without an fsync, because one that a crash left missing or
        // empty is written again here (its size differs): a fresh cache's first fetch does not
        // wait for the disk twice before its first request. A symbolic link is replaced.
        for (name, bytes) in LAYOUT_FILES {
            let path = root.join("layout").join(name);
            let intact = std::fs::symlink_metadata(&path)
                .is_ok_and(|m| m.is_file() && m.len() == bytes.len() as u64);
            if !intact {
                crate::fsutil::atomic_write_in_unsynced(&tmp, &path, bytes, 0o600)?;
            }
        }
        Ok(Cache { root })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The OCI layout that holds every cached blob.
    pub fn layout(&self) -> PathBuf {
        self.root.join("layout")
    }

    /// Where the blob with this digest lives (whether or not it is present yet).
    pub fn blob_path(&self, d: &Digest) -> PathBuf {
        blob_path_in(&self.layout(), d)
    }

    pub fn refs_dir(&self) -> PathBuf {
        self.root.join("refs")
    }

    pub fn rootfs_dir(&self) -> PathBuf {
        self.root.join("rootfs")
    }

    pub fn tmp_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }

    /// Write a small cache entry atomically, its temporary kept in `tmp/` (see
    /// [`crate::fsutil::atomic_write_in`]).
    pub fn write_entry(&self, target: &Path, bytes: &[u8], mode: u32) -> Result<()> {
        crate::fsutil::atomic_write_in(&self.tmp_dir(), target, bytes, mode)
    }

    /// Write a cache entry that is only a hint (`refs/`): atomically, without the fsync. Its
    /// readers parse and check it and do without it, so after a crash it may be lost or empty,
    /// and it names nothing that is not durable already (it is written after the blobs).
    pub fn write_hint(&self, target: &Path, bytes: &[u8], mode: u32) -> Result<()> {
        crate::fsutil::atomic_write_in_unsynced(&self.tmp_dir(), target, bytes, mode)
    }

    /// Take the exclusive lock called `name` (for example `blob-<hex>` or `rootfs-<key>`).
    pub fn lock(&self, name: &str) -> Result<LockFile> {
        LockFile::exclusive(&self.root.join("locks").join(format!("{name}.lock")))
    }
}

/// The directory `rel` below the cache at `root` when it exists and the whole way to it is
/// trusted (the check of [`Cache::open`]), without creating anything: the warm path's lookup.
/// `Ok(None)` when it is missing; an error when something on the way is not trustworthy.
pub fn lookup_dir(root: &Path, rel: &str) -> Result<Option<PathBuf>> {
    let untrusted = || format!("cannot use the cache {}", root.display());
    let Some(top) = trusted::open_dir_if_exists(root).with_context(untrusted)? else {
        return Ok(None);
    };
    match top.subdir(rel, None) {
        Ok(d) => Ok(Some(d.path().to_path_buf())),
        Err(e) if trusted::is_missing(&e) => Ok(None),
        Err(e) => Err(e.context(untrusted())),
    }
}

/// `<layout>/blobs/<alg>/<hex>`.
pub fn blob_path_in(layout: &Path, d: &Digest) -> PathBuf {
    layout.join("blobs").join(d.algorithm()).join(d.hex())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_creates_layout() {
        let d = tempfile::tempdir().unwrap();
        let c = Cache::open(&d.path().join("c")).unwrap();
        assert!(c.layout().join("oci-layout").is_file());
        assert!(c.layout().join("blobs/sha256").is_dir());
        let dg = Digest::of_bytes(b"x");
        assert!(c.blob_path(&dg).starts_with(c.layout()));
        // idempotent
        Cache::open(c.root()).unwrap();
        // A layout file a crash left empty, or a link put in its place, is written again.
        let index = c.layout().join("index.json");
        let want = std::fs::read(&index).unwrap();
        std::fs::write(&index, b"").unwrap();
        let marker = c.layout().join("oci-layout");
        std::fs::remove_file(&marker).unwrap();
        std::os::unix::fs::symlink("/etc/hostname", &marker).unwrap();
        Cache::open(c.root()).unwrap();
        assert_eq!(std::fs::read(&index).unwrap(), want);
        assert!(std::fs::symlink_metadata(&marker).unwrap().is_file());
        assert_eq!(
            std::fs::read(&marker).unwrap(),
            br#"{"imageLayoutVersion":"1.0.0"}"#
        );
    }

    #[test]
    fn a_cache_others_can_write_is_refused_and_left_alone() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("c");
        std::fs::create_dir_all(root.join("rootfs/k/rootfs")).unwrap();
        std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o777)).unwrap();
        let e = format!("{:#}", Cache::open(&root).unwrap_err());
        assert!(e.contains("writable by group or others"), "{e}");
        assert!(!root.join("locks").exists());
        assert!(lookup_dir(&root, "rootfs/k").is_err());
        std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o700)).unwrap();
        assert!(lookup_dir(&root, "rootfs/k").unwrap().is_some());
        assert!(lookup_dir(&root, "rootfs/missing").unwrap().is_none());
        std::os::unix::fs::symlink("/", root.join("rootfs/evil")).unwrap();
        assert!(lookup_dir(&root, "rootfs/evil").is_err());
    }
}
