//! Shared helpers of the reliability tests (the `reliability_*` modules, and `launcher_death`).
//!
//! Kept apart from the e2e harness on purpose: these are the fault-injection pieces only the
//! reliability suite needs (a seeded RNG, a generated large image, cache invariant checks and
//! result records; the fault proxy is `e2e::faultproxy`).
#![allow(dead_code)]

use e2e::{sha256_bytes, sha256_file};
use std::fs;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

// ------------------------------------------------------------------------------------------------
// Where things are

pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

/// The installed stages (`$SIOCI_PREFIX/bin`, as the e2e harness runs them).
pub fn bindir() -> PathBuf {
    e2e::prefix().join("bin")
}

/// Path of one stage; fails loudly when it is missing (never skip silently).
pub fn bin(name: &str) -> PathBuf {
    let p = bindir().join(name);
    assert!(
        p.is_file(),
        "{} is missing: scripts/install did not run",
        p.display()
    );
    p
}

pub fn front() -> PathBuf {
    bin("singularity-oci")
}

pub fn require_root() {
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "the reliability tests run as root (CI does); they switch to the test user themselves"
    );
}

// ------------------------------------------------------------------------------------------------
// Scratch directories (removed on drop, unless SIOCI_KEEP is set for a post-mortem)

static SCRATCH_N: AtomicU32 = AtomicU32::new(0);

pub struct Scratch {
    pub path: PathBuf,
}

impl Scratch {
    pub fn new(tag: &str) -> Scratch {
        let n = SCRATCH_N.fetch_add(1, Ordering::SeqCst);
        let path = e2e::workdir().join(format!("reliability-{tag}-{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).unwrap();
        // Reachable by the unprivileged test user (its own subdirectories are made by chown).
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
        Scratch { path }
    }

    pub fn join(&self, p: &str) -> PathBuf {
        self.path.join(p)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if std::env::var_os("SIOCI_KEEP").is_some() {
            eprintln!("keeping {}", self.path.display());
            return;
        }
        let _ = Command::new("rm").arg("-rf").arg(&self.path).status();
    }
}

// ------------------------------------------------------------------------------------------------
// A reproducible RNG (xorshift64*), seeded from SIOCI_SEED or the clock, the seed always printed.

pub struct Rng(u64);

impl Rng {
    pub fn from_env(what: &str) -> Rng {
        let seed = std::env::var("SIOCI_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64
                    ^ u64::from(std::process::id())
            });
        eprintln!("{what}: seed {seed} (reproduce with SIOCI_SEED={seed})");
        Rng::new(seed)
    }

    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in [lo, hi).
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo).max(1)
    }

    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let v = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

// ------------------------------------------------------------------------------------------------
// Processes

pub struct Ran {
    pub status: std::process::ExitStatus,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

impl Ran {
    pub fn code(&self) -> i32 {
        use std::os::unix::process::ExitStatusExt;
        self.status
            .code()
            .unwrap_or_else(|| 128 + self.status.signal().unwrap_or(0))
    }

    pub fn fatal_lines(&self) -> Vec<&str> {
        self.stderr
            .lines()
            .filter(|l| l.starts_with("FATAL: "))
            .collect()
    }

    /// Exit 255 with exactly one `FATAL: prog: ...` line.
    pub fn assert_one_fatal(&self, prog: &str, ctx: &str) {
        assert_eq!(
            self.code(),
            255,
            "{ctx}: expected exit 255\n{}",
            self.describe()
        );
        let f = self.fatal_lines();
        assert_eq!(
            f.len(),
            1,
            "{ctx}: expected one FATAL line\n{}",
            self.describe()
        );
        assert!(
            f[0].starts_with(&format!("FATAL: {prog}: ")),
            "{ctx}: FATAL line should name {prog}\n{}",
            self.describe()
        );
    }

    /// Exit 255 with exactly one `FATAL: ...` line, whichever stage wrote it.
    pub fn assert_one_fatal_any(&self, ctx: &str) {
        assert_eq!(
            self.code(),
            255,
            "{ctx}: expected exit 255\n{}",
            self.describe()
        );
        let f = self.fatal_lines();
        assert_eq!(
            f.len(),
            1,
            "{ctx}: expected one FATAL line\n{}",
            self.describe()
        );
    }

    pub fn describe(&self) -> String {
        format!(
            "status {:?} after {:?}\n--- stdout\n{}\n--- stderr\n{}",
            self.status, self.elapsed, self.stdout, self.stderr
        )
    }
}

/// Run to completion, killing the process group after `limit` (so a hang is a failure, not a
/// stuck CI job).
pub fn run_limited(cmd: &mut Command, limit: Duration) -> Ran {
    use std::os::unix::process::CommandExt;
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let start = Instant::now();
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let pid = child.id() as i32;
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let t_out = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = out.read_to_end(&mut s);
        s
    });
    let t_err = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = err.read_to_end(&mut s);
        s
    });
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if start.elapsed() > limit {
            unsafe { libc::kill(-pid, libc::SIGKILL) };
            let st = child.wait().unwrap();
            let so = String::from_utf8_lossy(&t_out.join().unwrap()).into_owned();
            let se = String::from_utf8_lossy(&t_err.join().unwrap()).into_owned();
            panic!(
                "{cmd:?} did not finish within {limit:?} (killed, {st:?})\n--- stdout\n{so}\n--- stderr\n{se}"
            );
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let elapsed = start.elapsed();
    Ran {
        status,
        stdout: String::from_utf8_lossy(&t_out.join().unwrap()).into_owned(),
        stderr: String::from_utf8_lossy(&t_err.join().unwrap()).into_owned(),
        elapsed,
    }
}

/// Start `cmd` in its own process group with output to files (for kill tests).
pub fn spawn_logged(cmd: &mut Command, out: &Path, err: &Path) -> Child {
    use std::os::unix::process::CommandExt;
    cmd.stdin(Stdio::null())
        .stdout(fs::File::create(out).unwrap())
        .stderr(fs::File::create(err).unwrap())
        .process_group(0)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

pub fn sh(script: &str) -> Output {
    Command::new("sh").arg("-c").arg(script).output().unwrap()
}

// ------------------------------------------------------------------------------------------------
// A generated image large enough that a kill lands mid-work

pub struct BigImage {
    pub layout: PathBuf,
    /// Every regular file of the layer: (path relative to the rootfs, size).
    pub files: Vec<(String, u64)>,
    pub layer_digest: String,
    pub layer_size: u64,
    pub manifest_digest: String,
}

fn write_blob(layout: &Path, bytes: &[u8]) -> String {
    let hex = sha256_bytes(bytes);
    fs::write(layout.join("blobs/sha256").join(&hex), bytes).unwrap();
    hex
}

/// One gzip layer of `big` incompressible files of `big_size` bytes plus `small` small files
/// spread over directories (the small ones make unpack spend its time on many entries).
pub fn make_big_image(
    dir: &Path,
    seed: u64,
    big: usize,
    big_size: usize,
    small: usize,
) -> BigImage {
    let mut rng = Rng::new(seed);
    let tree = dir.join("tree");
    let mut files = Vec::new();
    let mut buf = vec![0u8; big_size];
    for i in 0..big {
        let rel = format!("data/big-{i:03}.bin");
        fs::create_dir_all(tree.join("data")).unwrap();
        rng.fill(&mut buf);
        fs::write(tree.join(&rel), &buf).unwrap();
        files.push((rel, big_size as u64));
    }
    for i in 0..small {
        let rel = format!("many/d{:02}/f{i:05}.txt", i % 50);
        fs::create_dir_all(tree.join(format!("many/d{:02}", i % 50))).unwrap();
        let len = (rng.next_u64() % 2000) as usize;
        let mut b = vec![0u8; len];
        rng.fill(&mut b);
        fs::write(tree.join(&rel), &b).unwrap();
        files.push((rel, len as u64));
    }
    files.sort();
    layout_from_tree(dir, files)
}

/// A layer holding `size` zero bytes in one file: tiny compressed, large unpacked (disk-full
/// tests: the blobs fit a small filesystem, the rootfs does not).
pub fn make_zero_image(dir: &Path, size: usize) -> BigImage {
    let tree = dir.join("tree");
    fs::create_dir_all(tree.join("data")).unwrap();
    fs::write(tree.join("data/zeros"), vec![0u8; size]).unwrap();
    layout_from_tree(dir, vec![("data/zeros".to_string(), size as u64)])
}

/// Turn `dir/tree` into a one-layer gzip OCI layout at `dir/layout` (tag `latest`).
fn layout_from_tree(dir: &Path, files: Vec<(String, u64)>) -> BigImage {
    let tree = dir.join("tree");
    let layout = dir.join("layout");
    fs::create_dir_all(layout.join("blobs/sha256")).unwrap();
    let tar = dir.join("layer.tar");
    let st = Command::new("tar")
        .args([
            "--sort=name",
            "--owner=0",
            "--group=0",
            "--numeric-owner",
            "--mtime=@1767225600",
        ])
        .arg("-C")
        .arg(&tree)
        .arg("-cf")
        .arg(&tar)
        .arg(".")
        .status()
        .unwrap();
    assert!(st.success(), "tar");
    let diff_id = sha256_file(&tar);
    let st = Command::new("gzip")
        .args(["-n", "-1", "-f"])
        .arg(&tar)
        .status()
        .unwrap();
    assert!(st.success(), "gzip");
    let gz = fs::read(dir.join("layer.tar.gz")).unwrap();
    let layer_digest = write_blob(&layout, &gz);
    let layer_size = gz.len() as u64;
    let config = serde_json::json!({
        "created": "2026-01-01T00:00:00Z",
        "architecture": host_arch(),
        "os": "linux",
        "config": {"Env": ["PATH=/usr/bin:/bin"], "Cmd": ["/bin/sh"]},
        "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{diff_id}")]},
    });
    let config = serde_json::to_vec(&config).unwrap();
    let config_digest = write_blob(&layout, &config);
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": format!("sha256:{config_digest}"), "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": format!("sha256:{layer_digest}"), "size": layer_size}],
    });
    let manifest = serde_json::to_vec(&manifest).unwrap();
    let manifest_digest = write_blob(&layout, &manifest);
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
                       "digest": format!("sha256:{manifest_digest}"), "size": manifest.len(),
                       "annotations": {"org.opencontainers.image.ref.name": "latest"}}],
    });
    fs::write(
        layout.join("index.json"),
        serde_json::to_vec(&index).unwrap(),
    )
    .unwrap();
    fs::write(
        layout.join("oci-layout"),
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .unwrap();
    let _ = fs::remove_dir_all(&tree);
    let _ = fs::remove_file(dir.join("layer.tar.gz"));
    make_world_readable(&layout);
    BigImage {
        layout,
        files,
        layer_digest,
        layer_size,
        manifest_digest,
    }
}

pub fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

pub fn make_world_readable(p: &Path) {
    let _ = Command::new("chmod").arg("-R").arg("a+rX").arg(p).status();
}

// ------------------------------------------------------------------------------------------------
// Cache invariants

pub fn cache_root(cachedir: &Path) -> PathBuf {
    cachedir.join("cache/oci-launcher")
}

/// Every blob in the layout is complete and verified: its sha256 is its name. Temporary
/// siblings (`.tmp-*`, written then renamed by `common::fsutil::atomic_write`) are not blobs:
/// they may exist after a kill and are checked by the callers' "no temporaries after the next
/// successful run" rule instead.
pub fn assert_blobs_verified(cache: &Path, ctx: &str) -> usize {
    let dir = cache.join("layout/blobs/sha256");
    let mut n = 0;
    if let Ok(rd) = fs::read_dir(&dir) {
        for e in rd {
            let e = e.unwrap();
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with(".tmp-") {
                continue;
            }
            let got = sha256_file(&e.path());
            let size = e.metadata().map(|m| m.len()).unwrap_or(0);
            assert_eq!(
                got,
                name,
                "{ctx}: unverified blob in the cache: {} ({size} bytes)",
                e.path().display()
            );
            n += 1;
        }
    }
    n
}

/// Returns true when nobody holds a lock on `path`.
pub fn lock_is_free(path: &Path) -> bool {
    let f = fs::OpenOptions::new().read(true).open(path).unwrap();
    let r = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if r == 0 {
        unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_UN) };
        true
    } else {
        false
    }
}

/// No lock file in `CACHE/locks` is held by anyone.
pub fn assert_no_lock_held(cache: &Path, ctx: &str) {
    if let Ok(rd) = fs::read_dir(cache.join("locks")) {
        for e in rd {
            let p = e.unwrap().path();
            assert!(lock_is_free(&p), "{ctx}: lock still held: {}", p.display());
        }
    }
}

/// Bytes used below `p` (files only), and the relative paths of entries whose name starts with
/// `.tmp-` anywhere below it.
pub fn usage_and_temps(p: &Path) -> (u64, Vec<String>) {
    let mut bytes = 0;
    let mut temps = Vec::new();
    let mut stack = vec![p.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            let ft = e.file_type().unwrap();
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with(".tmp-") {
                temps.push(e.path().strip_prefix(p).unwrap().display().to_string());
            }
            if ft.is_dir() {
                stack.push(e.path());
            } else if ft.is_file() {
                bytes += e.metadata().map(|m| m.len()).unwrap_or(0);
            }
        }
    }
    (bytes, temps)
}

pub fn dir_entries(p: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(p)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// All regular files below `root`, with their sizes, sorted.
pub fn regular_files(root: &Path) -> Vec<(String, u64)> {
    let mut v = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            let ft = e.file_type().unwrap();
            if ft.is_dir() {
                stack.push(e.path());
            } else if ft.is_file() {
                let rel = e.path().strip_prefix(root).unwrap().display().to_string();
                v.push((rel, e.metadata().unwrap().len()));
            }
        }
    }
    v.sort();
    v
}

// ------------------------------------------------------------------------------------------------
// Leaks: mounts (processes: e2e::processes_mentioning)

/// Mount points (field 5 of /proc/self/mountinfo) that contain `needle`.
pub fn mounts_matching(needle: &str) -> Vec<String> {
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter_map(|l| l.split(' ').nth(4).map(str::to_string))
        .filter(|m| m.contains(needle))
        .collect()
}

/// Poll `f` until it returns an empty list or `limit` passes; return the last list.
pub fn settle<T>(limit: Duration, mut f: impl FnMut() -> Vec<T>) -> Vec<T> {
    let start = Instant::now();
    loop {
        let v = f();
        if v.is_empty() || start.elapsed() > limit {
            return v;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

// ------------------------------------------------------------------------------------------------
// Results for the reliability summary (`scripts/fuzz` prints the latest of each)

/// Write `target/reliability/NAME.json` (cases, survived, escapes, leaks, details).
pub fn record_result(name: &str, mut v: serde_json::Value) {
    let dir = workspace().join("target/reliability");
    let _ = fs::create_dir_all(&dir);
    v["name"] = serde_json::json!(name);
    v["when"] = serde_json::json!(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    );
    let _ = fs::write(
        dir.join(format!("{name}.json")),
        serde_json::to_vec(&v).unwrap(),
    );
}

/// Records the named result as failed when the test panics, so that the summary never shows a
/// stale pass for a test that has since failed. A result the test recorded itself before it
/// panicked is kept, marked as failed.
pub struct RecordOnPanic {
    name: String,
    start: std::time::SystemTime,
}

impl RecordOnPanic {
    pub fn new(name: impl Into<String>) -> RecordOnPanic {
        RecordOnPanic {
            name: name.into(),
            start: std::time::SystemTime::now(),
        }
    }
}

impl Drop for RecordOnPanic {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        // Written by this run of the test (after it started)?
        let path = workspace().join(format!("target/reliability/{}.json", self.name));
        let own = fs::metadata(&path)
            .and_then(|m| m.modified())
            .is_ok_and(|t| t >= self.start);
        let mut v = if own {
            serde_json::from_slice(&fs::read(&path).unwrap())
                .unwrap_or_else(|_| serde_json::json!({}))
        } else {
            serde_json::json!({"cases": 1, "survived": 0, "escapes": 0, "leaks": 0})
        };
        v["failed"] = serde_json::json!(true);
        record_result(&self.name, v);
    }
}
