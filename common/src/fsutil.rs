//! Small filesystem helpers: private directories, atomic writes, file locks.

use anyhow::{Context, Result, bail};
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Create `dir` (and parents) with mode 0700 if missing. The whole path is reached without
/// following a symlink and checked by [`crate::trusted`]; the directory itself must belong to
/// the caller (a directory root made for us would not be ours to write) and be writable by
/// nobody else.
pub fn private_dir(dir: &Path) -> Result<()> {
    let d = crate::trusted::create_dir_all(dir, 0o700)?;
    let me = nix::unistd::geteuid().as_raw();
    if d.owner() != me {
        bail!(
            "{} is owned by uid {}, not by the caller (uid {me})",
            dir.display(),
            d.owner()
        );
    }
    Ok(())
}

/// A unique temporary name beside `target`, in the same directory (so a rename is atomic).
pub fn temp_sibling(target: &Path) -> PathBuf {
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let parent = target.parent().unwrap_or(Path::new("."));
    parent.join(format!(
        ".tmp-{}-{}-{}",
        std::process::id(),
        unique_suffix(),
        name
    ))
}

/// A short random-ish suffix for temporary names (pid + time + counter; no RNG needed).
pub fn unique_suffix() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    format!("{:x}{:x}", nanos, COUNTER.fetch_add(1, Ordering::Relaxed))
}

/// Write `bytes` to `target` atomically: temporary file, fsync, rename.
pub fn atomic_write(target: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    write_then_rename(&temp_sibling(target), target, bytes, mode, true)
}

/// Like [`atomic_write`], with the temporary file in `tmp_dir` (same filesystem as `target`).
/// Caches use this so that a process killed mid-write leaves its debris in one place that
/// [`sweep_dead_temps`] cleans, never among the entries.
pub fn atomic_write_in(tmp_dir: &Path, target: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    write_then_rename(&temp_in(tmp_dir, target), target, bytes, mode, true)
}

/// Like [`atomic_write_in`] without the fsync, for an entry that may be lost in a crash: after
/// one it may be missing, empty or stale, so its readers must check it and do without it, or
/// its writer must check it and write it again. While the system runs, readers see it whole or
/// not at all (the rename).
pub fn atomic_write_in_unsynced(
    tmp_dir: &Path,
    target: &Path,
    bytes: &[u8],
    mode: u32,
) -> Result<()> {
    write_then_rename(&temp_in(tmp_dir, target), target, bytes, mode, false)
}

/// A unique temporary name in `tmp_dir` for `target`, marked with our pid for
/// [`sweep_dead_temps`].
fn temp_in(tmp_dir: &Path, target: &Path) -> PathBuf {
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    tmp_dir.join(format!(
        ".tmp-{}-{}-{}",
        std::process::id(),
        unique_suffix(),
        name
    ))
}

/// Remove `.tmp-<pid>-*` files in `dir` whose writer process is gone. A live pid (possibly
/// reused) keeps its file; it is removed by a later sweep.
pub fn sweep_dead_temps(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(".tmp-")) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<i32>().ok()) else {
            continue;
        };
        if !process_alive(pid) {
            let _ = fs::remove_file(e.path());
        }
    }
}

/// True when `pid` names a running process. A zombie counts as dead: a killed writer may stay
/// unreaped for seconds (orphans are reaped late on some hosts) and will never finish its file.
fn process_alive(pid: i32) -> bool {
    if pid <= 0 {
        return false;
    }
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // "PID (COMM) STATE ...": COMM may contain spaces and parentheses; split at the last ')'.
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, t)| t.split_whitespace().next());
    !matches!(state, Some("Z" | "X" | "x") | None)
}

fn write_then_rename(
    tmp: &Path,
    target: &Path,
    bytes: &[u8],
    mode: u32,
    durable: bool,
) -> Result<()> {
    let tmp = tmp.to_path_buf();
    let result = (|| -> Result<()> {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)
            .with_context(|| format!("cannot create {}", tmp.display()))?;
        f.write_all(bytes)?;
        if durable {
            f.sync_all()?;
        }
        fs::rename(&tmp, target)
            .with_context(|| format!("cannot rename into {}", target.display()))?;
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// An exclusive advisory lock (flock) held until dropped.
pub struct LockFile {
    file: File,
    path: PathBuf,
}

impl LockFile {
    /// Block until the lock at `path` is ours. The file is created if needed and never removed
    /// (removing a lock file races with other waiters).
    pub fn exclusive(path: &Path) -> Result<LockFile> {
        let file = open_lock(path)?;
        file.lock()
            .with_context(|| format!("cannot lock {}", path.display()))?;
        Ok(LockFile {
            file,
            path: path.to_path_buf(),
        })
    }

    /// Take a shared lock, blocking while an exclusive holder works.
    pub fn shared(path: &Path) -> Result<LockFile> {
        let file = open_lock(path)?;
        file.lock_shared()
            .with_context(|| format!("cannot lock {}", path.display()))?;
        Ok(LockFile {
            file,
            path: path.to_path_buf(),
        })
    }

    /// Try to take the lock without waiting; `None` when another process holds it.
    pub fn try_exclusive(path: &Path) -> Result<Option<LockFile>> {
        let file = open_lock(path)?;
        match file.try_lock() {
            Ok(()) => Ok(Some(LockFile {
                file,
                path: path.to_path_buf(),
            })),
            Err(std::fs::TryLockError::WouldBlock) => Ok(None),
            Err(std::fs::TryLockError::Error(e)) => {
                Err(e).with_context(|| format!("cannot lock {}", path.display()))
            }
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn file(&self) -> &File {
        &self.file
    }
}

/// Open (creating 0600) a lock file without following a symlink, and refuse one that is not
/// a regular file of the caller's (or root's): whoever owns a lock file can hold it forever.
fn open_lock(path: &Path) -> Result<File> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW | libc::O_NOCTTY)
        .open(path)
        .with_context(|| format!("cannot open lock file {}", path.display()))?;
    let m = file
        .metadata()
        .with_context(|| format!("cannot stat lock file {}", path.display()))?;
    let me = nix::unistd::geteuid().as_raw();
    if !m.is_file() {
        bail!("lock file {} is not a regular file", path.display());
    }
    if m.uid() != me && m.uid() != 0 {
        bail!(
            "lock file {} is owned by uid {}, not by you (uid {me}) or root",
            path.display(),
            m.uid()
        );
    }
    Ok(file)
}

/// Make `p` absolute against the current directory, without resolving symlinks.
pub fn absolute(p: &Path) -> Result<PathBuf> {
    std::path::absolute(p).with_context(|| format!("cannot make {} absolute", p.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn atomic_write_replaces_and_leaves_no_temp() {
        let d = tempfile::tempdir().unwrap();
        let t = d.path().join("f");
        atomic_write(&t, b"one", 0o644).unwrap();
        atomic_write(&t, b"two", 0o644).unwrap();
        assert_eq!(fs::read(&t).unwrap(), b"two");
        assert_eq!(fs::read_dir(d.path()).unwrap().count(), 1);
    }

    #[test]
    fn dead_writers_temps_are_swept() {
        let d = tempfile::tempdir().unwrap();
        let t = d.path().join("f");
        atomic_write_in(d.path(), &t, b"x", 0o644).unwrap();
        // pid 0 is never a writer, i.e. always dead; our own pid is alive.
        fs::write(d.path().join(".tmp-0-abc-f"), b"debris").unwrap();
        let mine = d.path().join(format!(".tmp-{}-abc-g", std::process::id()));
        fs::write(&mine, b"in progress").unwrap();
        sweep_dead_temps(d.path());
        assert!(!d.path().join(".tmp-0-abc-f").exists());
        assert!(mine.exists());
        assert_eq!(fs::read(&t).unwrap(), b"x");
    }

    #[test]
    fn private_dir_is_0700() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("a/b");
        private_dir(&p).unwrap();
        assert_eq!(fs::metadata(&p).unwrap().mode() & 0o777, 0o700);
        fs::set_permissions(&p, fs::Permissions::from_mode(0o777)).unwrap();
        assert!(private_dir(&p).is_err());
    }

    #[test]
    fn a_symlinked_lock_file_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let target = d.path().join("elsewhere");
        std::os::unix::fs::symlink(&target, d.path().join("l")).unwrap();
        assert!(LockFile::exclusive(&d.path().join("l")).is_err());
        assert!(!target.exists());
    }

    #[test]
    fn try_lock_sees_holder() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("l");
        let _held = LockFile::exclusive(&p).unwrap();
        assert!(LockFile::try_exclusive(&p).unwrap().is_none());
    }
}
