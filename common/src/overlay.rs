//! Persistent overlay directories (`--overlay DIR[:ro]`), laid out as SingularityCE lays them
//! out, so one directory serves both tools.
//!
//! * A **writable** DIR holds the overlay's upper layer in `DIR/upper` and overlayfs' scratch
//!   space in `DIR/work` (both created when missing: `upper` 0755, `work` 0700). At most one.
//! * A **read-only** DIR (`:ro`) adds `DIR/upper` when it exists, else DIR itself, as a lower
//!   layer. Read-only layers stack in the order given: the first one given is the topmost.
//!
//! Every DIR is user input, reached with [`crate::trusted`] (owned by the caller or root,
//! writable by nobody else, no symlink followed in it). Two containers writing through one
//! upper layer corrupt it (overlayfs only warns), so a run holds an exclusive `flock` on the
//! writable DIR's `work` directory and a shared one on each read-only DIR's `work` when it has
//! one it can open: a second writer, or a writer while another container reads the layer, is
//! refused. `work` is the caller's and mode 0700, so no other user can open it to hold the lock.

use crate::trusted::{self, TrustedDir};
use anyhow::{Context, Result, bail};
use rustix::fs::{Mode, OFlags};
use serde::{Deserialize, Serialize};
use std::ffi::OsStr;
use std::fs::File;
use std::os::fd::{AsRawFd, IntoRawFd, OwnedFd};
use std::path::{Path, PathBuf};

/// The bundle file (`B/overlays.json`) that carries the overlay directories from oci-mkspec
/// to oci-userns-starter: a JSON array of [`OverlayDir`].
pub const BUNDLE_FILE: &str = "overlays.json";

/// One `--overlay` item: an absolute directory and whether it is read-only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OverlayDir {
    pub dir: PathBuf,
    pub read_only: bool,
}

/// Parse `--overlay` values (`PATH`, `PATH:ro`, `PATH:rw`), made absolute against the working
/// directory, in the order given. At most one may be writable (SingularityCE's rule and words).
pub fn parse_specs(specs: &[String]) -> Result<Vec<OverlayDir>> {
    let mut out: Vec<OverlayDir> = Vec::new();
    for spec in specs {
        let (path, opt) = match spec.split_once(':') {
            Some((p, o)) => (p, Some(o)),
            None => (spec.as_str(), None),
        };
        let read_only = match opt {
            None | Some("rw") => false,
            Some("ro") => true,
            Some(o) => bail!("--overlay {spec}: unknown option '{o}' (expected ro or rw)"),
        };
        if path.is_empty() {
            bail!("--overlay {spec}: no directory given");
        }
        let dir = crate::fsutil::absolute(Path::new(path))?;
        if !read_only && let Some(w) = out.iter().find(|d| !d.read_only) {
            bail!(
                "you can't specify more than one writable overlay; {} has already been specified as a writable overlay; use '--overlay {}:ro' instead",
                w.dir.display(),
                dir.display()
            );
        }
        out.push(OverlayDir { dir, read_only });
    }
    Ok(out)
}

/// True when one of `dirs` is writable (then the container's root filesystem is writable).
pub fn has_writable(dirs: &[OverlayDir]) -> bool {
    dirs.iter().any(|d| !d.read_only)
}

/// Refuse an overlay directory inside one of `places` (`(path, what it is)`, a missing path
/// skipped): the launcher never writes into the image cache or an image's tree, and overlayfs
/// refuses a layer inside another one.
pub fn refuse_inside(dirs: &[OverlayDir], places: &[(&Path, &str)]) -> Result<()> {
    for d in dirs {
        let Ok(dir) = std::fs::canonicalize(&d.dir) else {
            continue; // open() names a missing directory
        };
        for (place, what) in places {
            if let Ok(place) = std::fs::canonicalize(place)
                && dir.starts_with(&place)
            {
                bail!(
                    "overlay {} is inside {what} ({}): use a directory of its own",
                    d.dir.display(),
                    place.display()
                );
            }
        }
    }
    Ok(())
}

/// The checked layers of a set of overlay directories, with their locks held.
#[derive(Debug)]
pub struct Layers {
    /// `(DIR/upper, DIR/work)` of the writable DIR.
    pub upper_work: Option<(PathBuf, PathBuf)>,
    /// Read-only layers, topmost first.
    pub lowers: Vec<PathBuf>,
    locks: Vec<File>,
}

impl Layers {
    /// Keep the locks for as long as the program this process execs, and its children, run:
    /// the descriptors lose close-on-exec (a runtime closes them before the container's own
    /// process starts).
    pub fn hold_across_exec(self) -> Result<()> {
        for f in self.locks {
            let fd: OwnedFd = f.into();
            rustix::io::fcntl_setfd(&fd, rustix::io::FdFlags::empty())
                .context("cannot keep the overlay lock open")?;
            let _ = fd.into_raw_fd();
        }
        Ok(())
    }

    /// The raw descriptors of the locks (for tests and diagnostics).
    pub fn lock_fds(&self) -> Vec<i32> {
        self.locks.iter().map(AsRawFd::as_raw_fd).collect()
    }
}

/// Check every directory, create a writable DIR's `upper` and `work` when missing, and take
/// the locks (see the module documentation). One error names the directory and the reason.
pub fn open(dirs: &[OverlayDir]) -> Result<Layers> {
    let mut layers = Layers {
        upper_work: None,
        lowers: Vec::new(),
        locks: Vec::new(),
    };
    // The directories given and the layers used: the same one twice is refused before
    // anything is made in it.
    let mut seen: Vec<((u64, u64), PathBuf)> = Vec::new();
    let duplicate = |seen: &[((u64, u64), PathBuf)], id: (u64, u64), dir: &Path| -> Result<()> {
        match seen.iter().find(|(s, _)| *s == id) {
            Some((_, first)) => bail!(
                "duplicate overlays detected: {} and {} are the same directory",
                first.display(),
                dir.display()
            ),
            None => Ok(()),
        }
    };
    for item in dirs {
        let top = open_top(&item.dir)?;
        duplicate(&seen, top.dev_ino(), &item.dir)?;
        seen.push((top.dev_ino(), item.dir.clone()));
        let layer = if item.read_only {
            let layer = match top.open_subdir(OsStr::new("upper")) {
                Ok(u) => u,
                Err(e) if trusted::is_missing(&e) => top.subdir("", None)?,
                Err(e) => return Err(e).with_context(|| refusing(&item.dir)),
            };
            check_fs(&layer, false)?;
            if let Some(lock) = try_lock_work(&top, false)? {
                layers.locks.push(lock);
            }
            layers.lowers.push(layer.path().to_path_buf());
            layer
        } else {
            let me = rustix::process::geteuid().as_raw();
            let upper = own_subdir(&top, "upper", 0o755, me)?;
            let work = own_subdir(&top, "work", 0o700, me)?;
            if upper.dev_ino().0 != work.dev_ino().0 {
                bail!(
                    "{} and {} are on different filesystems: overlayfs needs its upper and work directories on one",
                    upper.path().display(),
                    work.path().display()
                );
            }
            check_fs(&upper, true)?;
            match lock(&work, true)? {
                Some(l) => layers.locks.push(l),
                None => bail!(
                    "overlay {} is in use by another container: a writable overlay serves one container at a time",
                    item.dir.display()
                ),
            }
            layers.upper_work = Some((upper.path().to_path_buf(), work.path().to_path_buf()));
            upper
        };
        check_option_safe(layer.path())?;
        if layer.dev_ino() != top.dev_ino() {
            duplicate(&seen, layer.dev_ino(), &item.dir)?;
            seen.push((layer.dev_ino(), item.dir.clone()));
        }
    }
    if let Some((_, work)) = &layers.upper_work {
        check_option_safe(work)?;
    }
    Ok(layers)
}

fn refusing(dir: &Path) -> String {
    format!("refusing overlay {}", dir.display())
}

/// The DIR itself: it must exist and be a directory (overlay images are not supported), and
/// pass the trusted walk.
fn open_top(dir: &Path) -> Result<TrustedDir> {
    match std::fs::symlink_metadata(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            bail!("specified overlay {} does not exist", dir.display())
        }
        Ok(m) if m.is_file() => bail!(
            "overlay {} is a file: overlay images (ext3, squashfs) are not supported, since mounting one needs FUSE or a loop device; use a directory",
            dir.display()
        ),
        _ => {}
    }
    trusted::open_dir(dir).with_context(|| refusing(dir))
}

/// `name` in a writable DIR, created with `mode` when missing; it must be the caller's (the
/// overlay is mounted with the caller's credentials, which must write there).
fn own_subdir(top: &TrustedDir, name: &str, mode: u32, me: u32) -> Result<TrustedDir> {
    top.create_subdir(OsStr::new(name), mode)
        .with_context(|| refusing(top.path()))?;
    let d = top
        .open_subdir(OsStr::new(name))
        .with_context(|| refusing(top.path()))?;
    if d.owner() != me {
        bail!(
            "refusing overlay {}: {} is owned by uid {}, not by you (uid {me}): a writable overlay's upper and work directories must be yours",
            top.path().display(),
            d.path().display(),
            d.owner()
        );
    }
    Ok(d)
}

/// A shared lock on a read-only DIR's `work` when it has one we can open: a writer of the same
/// layer is then refused. Another user's `work` (mode 0700) cannot be locked, nor written by us.
fn try_lock_work(top: &TrustedDir, exclusive: bool) -> Result<Option<File>> {
    let work = match top.open_subdir(OsStr::new("work")) {
        Ok(w) => w,
        Err(_) => return Ok(None),
    };
    match lock(&work, exclusive) {
        Ok(Some(l)) => Ok(Some(l)),
        Ok(None) => bail!(
            "overlay {} is in use by another container that writes to it: it cannot be a read-only layer meanwhile",
            top.path().display()
        ),
        Err(_) => Ok(None),
    }
}

/// How long a lock held by someone else is waited for before the directory counts as in use:
/// a run that has just ended can leave a process holding the descriptor for a moment (the
/// shim's watchdog exits just after the shim), and back-to-back runs must not fail on it.
const LOCK_GRACE: std::time::Duration = std::time::Duration::from_secs(1);

/// `flock` the directory, waiting at most [`LOCK_GRACE`]; `None` when another process holds a
/// conflicting lock all that time.
fn lock(dir: &TrustedDir, exclusive: bool) -> Result<Option<File>> {
    let fd = rustix::fs::openat(
        dir.fd(),
        ".",
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .with_context(|| format!("cannot open {}", dir.path().display()))?;
    let f = File::from(fd);
    let start = std::time::Instant::now();
    loop {
        let r = if exclusive {
            f.try_lock()
        } else {
            f.try_lock_shared()
        };
        match r {
            Ok(()) => return Ok(Some(f)),
            Err(std::fs::TryLockError::WouldBlock) if start.elapsed() < LOCK_GRACE => {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            Err(std::fs::TryLockError::WouldBlock) => return Ok(None),
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(e).with_context(|| format!("cannot lock {}", dir.path().display()));
            }
        }
    }
}

/// Filesystems overlayfs cannot use (the same list as SingularityCE's): `(magic, name, also
/// unusable as a lower layer)`.
const UNSUITABLE_FS: &[(i64, &str, bool)] = &[
    (0x6969, "NFS", false),
    (0x6573_5546, "FUSE", false),
    (0xF15F, "eCryptfs", true),
    (0x0BD0_0BD0, "Lustre", true),
    (0x4750_4653, "GPFS", true),
    (0xAAD7_AAEA, "PanFS", true),
];

fn check_fs(d: &TrustedDir, upper: bool) -> Result<()> {
    let st = rustix::fs::fstatfs(d.fd())
        .with_context(|| format!("cannot read the filesystem of {}", d.path().display()))?;
    #[allow(clippy::unnecessary_cast)]
    let magic = st.f_type as i64;
    if let Some((_, name, _)) = UNSUITABLE_FS
        .iter()
        .find(|(m, _, lower_too)| *m == magic && (upper || *lower_too))
    {
        bail!(
            "{} is on a {name} filesystem, which overlayfs cannot use as an {} layer",
            d.path().display(),
            if upper { "upper" } else { "lower" }
        );
    }
    Ok(())
}

/// overlayfs' legacy mount data has no quoting: refuse a path it cannot carry.
pub fn check_option_safe(p: &Path) -> Result<()> {
    let s = p
        .to_str()
        .with_context(|| format!("{} is not UTF-8", p.display()))?;
    if s.contains([',', ':', '\\', '\n']) {
        bail!(
            "path {s} contains ',', ':' or '\\', which overlayfs mount options cannot carry: move it"
        );
    }
    Ok(())
}

/// Read the overlay directories a bundle carries (none when it has no [`BUNDLE_FILE`]).
pub fn read_bundle_file(bundle: &Path) -> Result<Vec<OverlayDir>> {
    let p = bundle.join(BUNDLE_FILE);
    match std::fs::read(&p) {
        Ok(bytes) => {
            serde_json::from_slice(&bytes).with_context(|| format!("cannot parse {}", p.display()))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", p.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn specs(v: &[&str]) -> Result<Vec<OverlayDir>> {
        parse_specs(&v.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn specs_keep_their_order_and_allow_one_writable() {
        let d = specs(&["/a:ro", "/b", "/c:ro"]).unwrap();
        assert_eq!(
            d.iter()
                .map(|d| (d.dir.to_str().unwrap(), d.read_only))
                .collect::<Vec<_>>(),
            [("/a", true), ("/b", false), ("/c", true)]
        );
        assert!(has_writable(&d));
        let e = specs(&["/a", "/b:rw"]).unwrap_err().to_string();
        assert!(
            e.contains("more than one writable overlay") && e.contains("/b:ro"),
            "{e}"
        );
        assert!(specs(&["/a:bogus"]).is_err());
        assert!(specs(&[":ro"]).is_err());
        assert!(!specs(&["rel:ro"]).unwrap()[0].dir.is_relative());
    }

    #[test]
    fn a_dir_inside_the_cache_or_the_image_is_refused() {
        let t = tempfile::tempdir().unwrap();
        let cache = t.path().join("cache");
        std::fs::create_dir_all(cache.join("rootfs/x")).unwrap();
        let inside = [OverlayDir {
            dir: cache.join("rootfs/x"),
            read_only: false,
        }];
        let places = [
            (cache.as_path(), "the image cache"),
            (Path::new("/nonexistent"), "the image"),
        ];
        let e = refuse_inside(&inside, &places).unwrap_err().to_string();
        assert!(e.contains("inside the image cache"), "{e}");
        let beside = [OverlayDir {
            dir: t.path().to_path_buf(),
            read_only: false,
        }];
        refuse_inside(&beside, &places).unwrap();
    }

    #[test]
    fn writable_dir_gets_upper_and_work_and_one_holder() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("ov");
        std::fs::create_dir(&dir).unwrap();
        let item = [OverlayDir {
            dir: dir.clone(),
            read_only: false,
        }];
        let first = open(&item).unwrap();
        let (u, w) = first.upper_work.clone().unwrap();
        assert_eq!((u, w.clone()), (dir.join("upper"), dir.join("work")));
        let mode = std::fs::metadata(&w).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        let e = format!("{:#}", open(&item).unwrap_err());
        assert!(e.contains("in use by another container"), "{e}");
        let ro = [OverlayDir {
            dir: dir.clone(),
            read_only: true,
        }];
        let e = format!("{:#}", open(&ro).unwrap_err());
        assert!(e.contains("in use by another container"), "{e}");
        drop(first);
        // Read-only users share: two at once, and they use DIR/upper.
        let a = open(&ro).unwrap();
        let b = open(&ro).unwrap();
        assert_eq!(a.lowers, [dir.join("upper")]);
        assert!(open(&item).is_err(), "a writer while the layer is read");
        drop((a, b));
        // A holder that lets go within the grace (a run that has just ended) is waited for.
        let held = open(&item).unwrap();
        let t = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(200));
            drop(held);
        });
        assert!(open(&item).is_ok());
        t.join().unwrap();
    }

    #[test]
    fn files_missing_dirs_duplicates_and_open_dirs_are_refused() {
        let t = tempfile::tempdir().unwrap();
        let f = t.path().join("img");
        std::fs::write(&f, "x").unwrap();
        let one = |p: &Path, ro| {
            format!(
                "{:#}",
                open(&[OverlayDir {
                    dir: p.to_path_buf(),
                    read_only: ro
                }])
                .unwrap_err()
            )
        };
        assert!(one(&f, true).contains("overlay images"));
        assert!(one(&t.path().join("none"), true).contains("does not exist"));
        let open_dir = t.path().join("open");
        std::fs::create_dir(&open_dir).unwrap();
        std::fs::set_permissions(&open_dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        assert!(one(&open_dir, true).contains("writable by group or others"));
        let link = t.path().join("link");
        std::os::unix::fs::symlink(t.path(), &link).unwrap();
        assert!(one(&link, true).contains("symbolic link"));
        let a = t.path().join("a");
        std::fs::create_dir(&a).unwrap();
        let dup = [
            OverlayDir {
                dir: a.clone(),
                read_only: true,
            },
            OverlayDir {
                dir: t.path().join("./a"),
                read_only: true,
            },
        ];
        let e = format!("{:#}", open(&dup).unwrap_err());
        assert!(e.contains("duplicate overlays"), "{e}");
        // Read-only and writable at once, or a directory and its own upper/.
        std::fs::create_dir(a.join("upper")).unwrap();
        for (second, ro) in [(a.clone(), false), (a.join("upper"), true)] {
            let both = [
                OverlayDir {
                    dir: a.clone(),
                    read_only: true,
                },
                OverlayDir {
                    dir: second,
                    read_only: ro,
                },
            ];
            let e = format!("{:#}", open(&both).unwrap_err());
            assert!(e.contains("duplicate overlays"), "{e}");
        }
        assert!(!a.join("work").exists(), "nothing made for a refused set");
    }
}
