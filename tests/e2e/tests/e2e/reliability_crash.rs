//! Crash consistency: SIGKILL `oci-fetch` and `oci-unpack` at random points and prove the cache
//! stays sound, so the next run can trust whatever it finds there.
//!
//! After every kill: only verified blobs in `CACHE/layout/blobs/sha256` (each re-hashed), only
//! complete rootfs trees in `CACHE/rootfs`, no lock in `CACHE/locks` still held, `CACHE/tmp`
//! bounded. After the successful rerun that follows: `CACHE/tmp` is empty and no `.tmp-*` file
//! is left anywhere in the cache (a partial blob in `tmp/` is *reused* by the rerun as the start of
//! a resume, which is why it may exist between a kill and the rerun).
//!
//! Kill points are drawn from a seeded RNG; the seed is printed, and `SIOCI_SEED=N` replays a run.
//! `SIOCI_CRASH_TRIALS` changes the number of trials (default 20, the minimum).

use crate::reliability_support as support;

use e2e::faultproxy::FaultProxy;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};
use support::*;

fn trials() -> usize {
    std::env::var("SIOCI_CRASH_TRIALS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20)
}

/// Invariants that must hold at any moment, in particular straight after a SIGKILL.
fn assert_cache_sound(cache: &Path, img: &BigImage, ctx: &str) {
    assert_blobs_verified(cache, ctx);
    assert_no_lock_held(cache, ctx);
    for name in ["layout/index.json", "layout/oci-layout"] {
        if let Ok(b) = std::fs::read(cache.join(name)) {
            serde_json::from_slice::<serde_json::Value>(&b)
                .unwrap_or_else(|e| panic!("{ctx}: {name} is not valid JSON: {e}"));
        }
    }
    for r in dir_entries(&cache.join("refs")) {
        if r.starts_with(".tmp-") {
            continue;
        }
        let b = std::fs::read(cache.join("refs").join(&r)).unwrap();
        serde_json::from_slice::<serde_json::Value>(&b)
            .unwrap_or_else(|e| panic!("{ctx}: refs/{r} is half-written: {e}"));
    }
    // Complete rootfs trees only: every entry in rootfs/ holds every file of the image. A tree
    // being built lives under a temporary name (oci-unpack builds `rootfs/.tmp-<key>-<pid>-…`
    // and renames it in one step, removing such leftovers under the entry's lock): that is not
    // an entry, may be partial after a kill, and must be gone after the next successful run.
    let mut building = 0;
    for key in dir_entries(&cache.join("rootfs")) {
        if key.starts_with(".tmp-") {
            building += usage_and_temps(&cache.join("rootfs").join(&key)).0;
            continue;
        }
        let tree = cache.join("rootfs").join(&key).join("rootfs");
        assert!(tree.is_dir(), "{ctx}: rootfs/{key} has no rootfs/ tree");
        let got = regular_files(&tree);
        for f in &img.files {
            assert!(
                got.binary_search(f).is_ok(),
                "{ctx}: rootfs/{key} is incomplete: {} (size {}) missing or short",
                f.0,
                f.1
            );
        }
    }
    // tmp/ bounded: a partial blob or a partial tree, never more than about one image's worth.
    let tmp_bytes = usage_and_temps(&cache.join("tmp")).0 + building;
    let unpacked: u64 = img.files.iter().map(|f| f.1).sum();
    let bound = 2 * (img.layer_size + unpacked) + (4 << 20);
    assert!(
        tmp_bytes <= bound,
        "{ctx}: CACHE/tmp holds {tmp_bytes} bytes (bound {bound})"
    );
}

/// After a successful run nothing temporary may remain.
fn assert_no_temporaries(cache: &Path, ctx: &str) {
    let tmp = dir_entries(&cache.join("tmp"));
    assert!(
        tmp.is_empty(),
        "{ctx}: CACHE/tmp not cleaned after a successful rerun: {tmp:?}"
    );
    let (_, temps) = usage_and_temps(cache);
    assert!(temps.is_empty(), "{ctx}: .tmp-* files left: {temps:?}");
}

struct KillStats {
    kills: usize,
    mid_work: usize,
}

impl KillStats {
    /// Print and record the result of a crash test, after checking that most kills really
    /// interrupted work (an image too small to prove anything fails the test).
    fn report(&self, what: &str, result_name: &str) {
        eprintln!(
            "crash/{what}: {} trials, {} kills, {} landed mid-work, all invariants held",
            trials(),
            self.kills,
            self.mid_work
        );
        assert!(
            self.mid_work * 3 >= self.kills * 2,
            "fewer than two thirds of the kills landed mid-work ({} of {}): the image is too small to prove anything",
            self.mid_work,
            self.kills
        );
        record_result(
            result_name,
            serde_json::json!({"cases": self.kills, "survived": self.kills, "mid_work": self.mid_work,
                               "trials": trials(), "escapes": 0, "leaks": 0}),
        );
    }
}

/// Start `cmd`, SIGKILL it after `delay` (if still running); report whether it was mid-work.
fn kill_after(mut cmd: Command, delay: Duration, dir: &Path) -> bool {
    let mut child = spawn_logged(&mut cmd, &dir.join("killed.out"), &dir.join("killed.err"));
    let start = Instant::now();
    while start.elapsed() < delay {
        if child.try_wait().unwrap().is_some() {
            return false;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let running = child.try_wait().unwrap().is_none();
    // The stage only, as a user's `kill -9` would: helpers it may have forked are its business
    // (an inherited lock fd in a surviving child would show up as a held lock below).
    unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
    child.wait().unwrap();
    running
}

fn fetch_cmd(cachedir: &Path, reference: &str) -> Command {
    let mut c = Command::new(bin("oci-fetch"));
    c.arg("--quiet")
        .arg("--no-https")
        .arg(reference)
        .env("SINGULARITY_CACHEDIR", cachedir);
    c
}

fn unpack_cmd(cachedir: &Path, image_record: &Path) -> Command {
    let mut c = Command::new(bin("oci-unpack"));
    c.arg("--input")
        .arg(image_record)
        .env("SINGULARITY_CACHEDIR", cachedir);
    c
}

fn record_kind(stdout: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("stage printed no JSON record ({e}): {stdout}"));
    v["kind"].as_str().unwrap_or("").to_string()
}

#[test]
fn sigkill_oci_fetch_at_random_points() {
    require_root();
    let _failed = RecordOnPanic::new("crash-oci-fetch");
    let s = Scratch::new("crash-fetch");
    let mut rng = Rng::from_env("crash/oci-fetch");
    // 12 MiB of incompressible data plus 400 small files: a fetch takes ~1.5 s through the
    // trickling proxy below, so kills land inside blobs, between blobs and around the renames.
    let img = make_big_image(&s.join("img"), 7, 12, 1 << 20, 400);
    let reg = e2e::registry::Registry::plain(&s.join("registry"));
    reg.push(
        &format!("oci:{}:latest", img.layout.display()),
        "crash/big:latest",
        false,
    );
    let proxy = FaultProxy::start(&s.join("proxy"), &reg.addr);
    proxy.set_rules(serde_json::json!([
        {"match": "/blobs/", "method": "GET", "fault": "trickle", "chunk": 262144, "interval": 0.03}
    ]));
    let reference = format!("docker://127.0.0.1:{}/crash/big:latest", proxy.port);

    // Calibrate: how long a full cold fetch takes here.
    let cal = s.join("calibrate");
    let r = run_limited(&mut fetch_cmd(&cal, &reference), Duration::from_secs(120));
    assert!(r.status.success(), "cold fetch\n{}", r.describe());
    assert_eq!(record_kind(&r.stdout), "image");
    let mut full = r.elapsed;
    eprintln!("crash/oci-fetch: a cold fetch takes {full:?}");

    let mut stats = KillStats {
        kills: 0,
        mid_work: 0,
    };
    for trial in 0..trials() {
        let cachedir = s.join(&format!("cache-{trial}"));
        let cache = cache_root(&cachedir);
        // 1 to 3 kills in a row on the same cache before the rerun: resuming a resumed partial.
        let kills = rng.range(1, 4);
        for k in 0..kills {
            let delay = Duration::from_micros(rng.range(0, full.as_micros() as u64));
            let ctx = format!("fetch trial {trial} kill {k} at {delay:?}");
            let mid = kill_after(fetch_cmd(&cachedir, &reference), delay, &s.path);
            stats.kills += 1;
            stats.mid_work += usize::from(mid);
            assert_cache_sound(&cache, &img, &ctx);
        }
        let ctx = format!("fetch trial {trial} rerun");
        let r = run_limited(
            &mut fetch_cmd(&cachedir, &reference),
            Duration::from_secs(120),
        );
        assert!(
            r.status.success(),
            "{ctx}: the next run must succeed\n{}",
            r.describe()
        );
        // Kill points scale with how long a full run takes now (the machine's load varies).
        full = (full + r.elapsed) / 2;
        assert_eq!(record_kind(&r.stdout), "image", "{ctx}");
        assert_cache_sound(&cache, &img, &ctx);
        assert!(
            cache
                .join("layout/blobs/sha256")
                .join(&img.layer_digest)
                .is_file(),
            "{ctx}: the layer blob is not in the cache after a successful fetch"
        );
        assert_no_temporaries(&cache, &ctx);
        let _ = std::fs::remove_dir_all(&cachedir);
    }
    stats.report("oci-fetch", "crash-oci-fetch");
}

#[test]
fn sigkill_oci_unpack_at_random_points() {
    require_root();
    let _failed = RecordOnPanic::new("crash-oci-unpack");
    let s = Scratch::new("crash-unpack");
    let mut rng = Rng::from_env("crash/oci-unpack");
    // Unpack time goes into entries and bytes: 8 MiB in 8 files plus 3000 small files.
    let img = make_big_image(&s.join("img"), 11, 8, 1 << 20, 3000);
    let cachedir = s.join("cachedir");
    let cache = cache_root(&cachedir);
    let reference = format!("oci:{}:latest", img.layout.display());
    let r = run_limited(
        Command::new(bin("oci-fetch"))
            .arg("--quiet")
            .arg(&reference)
            .env("SINGULARITY_CACHEDIR", &cachedir),
        Duration::from_secs(120),
    );
    assert!(r.status.success(), "fetch\n{}", r.describe());
    let image_record = s.join("image.json");
    std::fs::write(&image_record, &r.stdout).unwrap();

    let clear_rootfs = || {
        for key in dir_entries(&cache.join("rootfs")) {
            let st = Command::new("rm")
                .arg("-rf")
                .arg(cache.join("rootfs").join(key))
                .status()
                .unwrap();
            assert!(st.success());
        }
    };

    let r = run_limited(
        &mut unpack_cmd(&cachedir, &image_record),
        Duration::from_secs(300),
    );
    assert!(r.status.success(), "cold unpack\n{}", r.describe());
    assert_eq!(record_kind(&r.stdout), "rootfs");
    let mut full = r.elapsed;
    eprintln!("crash/oci-unpack: a cold unpack takes {full:?}");
    assert_cache_sound(&cache, &img, "calibration");
    clear_rootfs();

    let mut stats = KillStats {
        kills: 0,
        mid_work: 0,
    };
    for trial in 0..trials() {
        let kills = rng.range(1, 4);
        for k in 0..kills {
            let delay = Duration::from_micros(rng.range(0, full.as_micros() as u64));
            let ctx = format!("unpack trial {trial} kill {k} at {delay:?}");
            let mid = kill_after(unpack_cmd(&cachedir, &image_record), delay, &s.path);
            stats.kills += 1;
            stats.mid_work += usize::from(mid);
            assert_cache_sound(&cache, &img, &ctx);
        }
        let ctx = format!("unpack trial {trial} rerun");
        let r = run_limited(
            &mut unpack_cmd(&cachedir, &image_record),
            Duration::from_secs(300),
        );
        assert!(
            r.status.success(),
            "{ctx}: the next run must succeed\n{}",
            r.describe()
        );
        // Kill points scale with how long a full run takes now (the machine's load varies).
        full = (full + r.elapsed) / 2;
        assert_eq!(record_kind(&r.stdout), "rootfs", "{ctx}");
        let rec: serde_json::Value = serde_json::from_str(r.stdout.trim()).unwrap();
        let tree = Path::new(rec["rootfs"].as_str().unwrap());
        assert_eq!(
            regular_files(tree),
            img.files,
            "{ctx}: the rootfs is not exactly the image"
        );
        assert_cache_sound(&cache, &img, &ctx);
        assert_no_temporaries(&cache, &ctx);
        clear_rootfs();
    }
    stats.report("oci-unpack", "crash-oci-unpack");
}

/// The first milliseconds of a run on an empty cache: `Cache::open` writes `layout/oci-layout`
/// and `layout/index.json`, and the fetch writes the manifest and config blobs, each through a
/// `.tmp-<pid>-…` sibling that is renamed into place. The uniform kill points above land here
/// rarely, so this test aims at it: kills after 0–4 ms of an `oci:` fetch into a fresh cache.
/// Every temporary left by a killed process must be gone after the next successful run.
#[test]
fn sigkill_oci_fetch_during_cache_setup() {
    require_root();
    let _failed = RecordOnPanic::new("crash-cache-setup");
    let s = Scratch::new("crash-setup");
    let mut rng = Rng::from_env("crash/cache-setup");
    let reference = e2e::oci_ref("busybox");
    let mut left = Vec::new();
    let mut mid = 0;
    for trial in 0..trials() {
        let cachedir = s.join(&format!("cache-{trial}"));
        let cache = cache_root(&cachedir);
        let delay = Duration::from_micros(rng.range(0, 4000));
        let mut cmd = Command::new(bin("oci-fetch"));
        cmd.arg("--quiet")
            .arg(&reference)
            .env("SINGULARITY_CACHEDIR", &cachedir);
        mid += usize::from(kill_after(cmd, delay, &s.path));
        assert_no_lock_held(&cache, &format!("setup trial {trial}"));
        let r = run_limited(
            Command::new(bin("oci-fetch"))
                .arg("--quiet")
                .arg(&reference)
                .env("SINGULARITY_CACHEDIR", &cachedir),
            Duration::from_secs(60),
        );
        let ctx = format!("setup trial {trial}, killed at {delay:?}");
        assert!(
            r.status.success(),
            "{ctx}: the next run must succeed\n{}",
            r.describe()
        );
        let (_, temps) = usage_and_temps(&cache);
        left.extend(temps.into_iter().map(|t| format!("{ctx}: {t}")));
        let _ = std::fs::remove_dir_all(&cachedir);
    }
    eprintln!(
        "crash/cache-setup: {} kills, {mid} mid-work, {} temporaries left after the rerun",
        trials(),
        left.len()
    );
    record_result(
        "crash-cache-setup",
        serde_json::json!({"cases": trials(), "survived": trials() - left.len().min(trials()),
                           "escapes": 0, "leaks": left.len()}),
    );
    assert!(
        left.is_empty(),
        "temporary files of killed runs are never removed (a fresh cache is set up and small blobs \
         are written through .tmp-<pid>-… siblings; nothing sweeps those of dead processes):\n  {}",
        left.join("\n  ")
    );
}
