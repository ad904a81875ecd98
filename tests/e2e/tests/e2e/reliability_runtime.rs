//! Runtime faults: each one fails fast with one clear `FATAL:` line and exit 255, and
//! leaves no bundle, mount, runtime state or stray process behind.
//!
//! Faults are made without touching the host for anyone else: a missing runtime is an
//! environment variable, a missing conmon is a PATH without it, an unwritable state dir is a
//! read-only tmpfs below the test's directory, and a broken newuidmap or a malformed
//! /etc/subuid is a bind mount inside a private mount namespace (`unshare -m`) that only the
//! command under test sees. The real files are never edited.

use crate::reliability_support as support;

use e2e::{Ctx, Profile, matrix, matrix_with, oci_ref, processes_mentioning, require_tool};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use support::*;

/// "Fails fast": a launcher error on a warm cache must not take longer than this.
const FAST: Duration = Duration::from_secs(15);

/// Warm the profile's cache (and prove the setup works) with one successful run.
fn warm(ctx: &Ctx) {
    ctx.front(&["exec", &oci_ref("busybox"), "true"])
        .assert_code(0);
}

fn assert_fast_fatal(out: &e2e::Output, needles: &[&str], ctx: &Ctx, what: &str) {
    out.assert_code(255);
    let fatal: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| l.starts_with("FATAL: "))
        .collect();
    if fatal.len() != 1 {
        out.fail(&format!(
            "[{}] {what}: expected exactly one FATAL line",
            ctx.name
        ));
    }
    // Match the message only, not the `FATAL: prog:` prefix (a stage may be named after the
    // very thing that is missing, like oci-conmon-create).
    let line = fatal_message(fatal[0]).to_lowercase();
    if !needles.iter().any(|n| line.contains(&n.to_lowercase())) {
        out.fail(&format!(
            "[{}] {what}: the FATAL line should name the cause ({needles:?})",
            ctx.name
        ));
    }
    if out.elapsed > FAST {
        out.fail(&format!(
            "[{}] {what}: took {:?}, not fast",
            ctx.name, out.elapsed
        ));
    }
    eprintln!("[{}] {what}: {:?}: {}", ctx.name, out.elapsed, fatal[0]);
}

/// `FATAL: prog: message` -> `message`.
fn fatal_message(line: &str) -> &str {
    line.splitn(3, ": ").nth(2).unwrap_or(line)
}

/// No process mentions the test's directory (bundles, state, conmon, starters, containers).
fn assert_no_strays(ctx: &Ctx, what: &str) {
    let needle = ctx.dir().to_string_lossy().into_owned();
    let left = settle(Duration::from_secs(5), || processes_mentioning(&needle));
    assert!(
        left.is_empty(),
        "[{}] {what}: stray processes: {left:?}",
        ctx.name
    );
}

static CASES: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

/// Count one fault that failed cleanly, and write the summary record of this test binary.
fn count_case(what: &str) {
    let mut c = CASES.lock().unwrap();
    c.push(what.to_string());
    record_result(
        "runtime-faults",
        serde_json::json!({"cases": c.len(), "survived": c.len(), "escapes": 0, "leaks": 0}),
    );
}

fn assert_clean(ctx: &Ctx, what: &str) {
    ctx.assert_no_leftovers();
    assert_no_strays(ctx, what);
    let mounts = mounts_matching(&ctx.dir().to_string_lossy());
    assert!(
        mounts.is_empty(),
        "[{}] {what}: mounts left: {mounts:?}",
        ctx.name
    );
    count_case(what);
}

#[test]
fn runtime_binary_missing() {
    for ctx in matrix() {
        warm(&ctx);
        let out = ctx
            .front_cmd(&["exec", &oci_ref("busybox"), "true"])
            .env("SINGULARITY_OCI_RUNTIME", "/nonexistent/crun")
            .timeout(FAST * 2)
            .run();
        assert_fast_fatal(
            &out,
            &["/nonexistent/crun", "runtime"],
            &ctx,
            "runtime missing",
        );
        assert_clean(&ctx, "runtime missing");
    }
}

/// fetch, unpack and mkspec into `ctx.dir()/NAME` (a bundle for `oci create`).
fn make_bundle(ctx: &Ctx, name: &str) -> PathBuf {
    let img = ctx.run(ctx.bin("oci-fetch"), &["--quiet", &oci_ref("busybox")]);
    img.assert_code(0);
    let img_file = ctx.write_file(&format!("{name}.image.json"), &img.stdout);
    let rootfs = ctx.run(
        ctx.bin("oci-unpack"),
        &["--input", img_file.to_str().unwrap()],
    );
    rootfs.assert_code(0);
    let rootfs_file = ctx.write_file(&format!("{name}.rootfs.json"), &rootfs.stdout);
    let bundle = ctx.dir().join(name);
    ctx.run(
        ctx.bin("oci-mkspec"),
        &[
            "--input",
            rootfs_file.to_str().unwrap(),
            "--bundle",
            bundle.to_str().unwrap(),
            "--",
            "sleep",
            "30",
        ],
    )
    .assert_code(0);
    bundle
}

#[test]
fn conmon_missing() {
    // oci-conmon-create looks for conmon on PATH and then in the standard directories, so a
    // PATH without it is not enough: inside a private mount namespace a non-executable empty
    // file is bound over /usr/bin/conmon, which is what "not installed" looks like to it.
    let conmon = require_tool("conmon");
    assert_eq!(
        conmon,
        Path::new("/usr/bin/conmon"),
        "conmon is expected in /usr/bin"
    );
    for ctx in matrix() {
        let bundle = make_bundle(&ctx, "b");
        let fake = ctx.write_file("conmon.absent", "");
        let id = format!("rel-noconmon-{}-{}", ctx.profile.name(), ctx.rt.name());
        let front = e2e::prefix().join("bin/singularity-oci");
        let r = run_in_private_ns(
            &ctx,
            &format!("mount --bind {} /usr/bin/conmon", fake.display()),
            &[
                front.to_str().unwrap(),
                "oci",
                "create",
                "-b",
                bundle.to_str().unwrap(),
                &id,
            ],
            FAST * 2,
        );
        assert_ran_fatal(&r, &["conmon"], &ctx, "conmon missing");
        // Nothing of conmon's may be left in the user's bundle, and no container state.
        for f in ["attach", "ctl", "winsz"] {
            assert!(
                !bundle.join(f).exists(),
                "[{}] conmon file {f} left in the bundle",
                ctx.name
            );
        }
        let st = ctx.state_root().join("containers").join(&id);
        assert!(
            !st.exists(),
            "[{}] state dir left: {}",
            ctx.name,
            st.display()
        );
        let state = ctx.front(&["oci", "state", &id]);
        assert_ne!(
            state.code, 0,
            "[{}] the container must not exist after a failed create",
            ctx.name
        );
        assert_clean(&ctx, "conmon missing");
    }
}

/// A read-only tmpfs below the test's directory, unmounted on drop.
struct RoMount(PathBuf);

impl RoMount {
    fn new(at: PathBuf) -> RoMount {
        std::fs::create_dir_all(&at).unwrap();
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "ro,size=1m,mode=0755", "sioci-ro"])
            .arg(&at)
            .status()
            .unwrap();
        assert!(st.success(), "mount a read-only tmpfs at {}", at.display());
        RoMount(at)
    }
}

impl Drop for RoMount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn state_dir_not_writable() {
    for ctx in matrix() {
        warm(&ctx);
        let state = {
            let _ro = RoMount::new(ctx.dir().join("ro-state"));
            let state = ctx.dir().join("ro-state/state");
            let out = ctx
                .front_cmd(&["exec", &oci_ref("busybox"), "true"])
                .env("SINGULARITY_OCI_STATE_ROOT", state.to_str().unwrap())
                .timeout(FAST * 2)
                .run();
            assert_fast_fatal(
                &out,
                &["state", "read-only", "ro-state", "permission"],
                &ctx,
                "state dir not writable",
            );
            state
        };
        assert!(!state.exists());
        assert_clean(&ctx, "state dir not writable");
    }
}

/// Run `argv` as the context's user inside a private mount namespace prepared (as root) by
/// `setup`, a shell snippet. The bind mounts of `setup` are visible to that command only.
fn run_in_private_ns(ctx: &Ctx, setup: &str, argv: &[&str], limit: Duration) -> Ran {
    let script = format!(
        "set -e; {setup}; exec {} \"$@\"",
        ctx.setpriv_words().join(" ")
    );
    let mut c = Command::new(require_tool("unshare"));
    c.args([
        "-m",
        "--propagation",
        "private",
        "--",
        "/bin/sh",
        "-c",
        &script,
        "sh",
    ])
    .args(argv)
    .env_clear()
    .envs(ctx.base_env())
    .current_dir(ctx.dir());
    run_limited(&mut c, limit)
}

fn assert_ran_fatal(r: &Ran, needles: &[&str], ctx: &Ctx, what: &str) {
    r.assert_one_fatal_any(&format!("[{}] {what}", ctx.name));
    let line = fatal_message(r.fatal_lines()[0]).to_lowercase();
    assert!(
        needles.iter().any(|n| line.contains(&n.to_lowercase())),
        "[{}] {what}: the FATAL line should name the cause ({needles:?})\n{}",
        ctx.name,
        r.describe()
    );
    assert!(
        r.elapsed <= FAST,
        "[{}] {what}: took {:?}",
        ctx.name,
        r.elapsed
    );
    eprintln!(
        "[{}] {what}: {:?}: {}",
        ctx.name,
        r.elapsed,
        r.fatal_lines()[0]
    );
}

#[test]
fn newuidmap_missing_or_not_setuid() {
    for ctx in matrix_with(&[Profile::User]) {
        warm(&ctx);
        let copy = ctx.dir().join("newuidmap.nosuid");
        std::fs::copy("/usr/bin/newuidmap", &copy).unwrap();
        std::fs::set_permissions(&copy, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let front = e2e::prefix().join("bin/singularity-oci");
        let r = run_in_private_ns(
            &ctx,
            &format!("mount --bind {} /usr/bin/newuidmap", copy.display()),
            &[front.to_str().unwrap(), "exec", &oci_ref("busybox"), "true"],
            FAST * 2,
        );
        assert_ran_fatal(&r, &["newuidmap", "setuid"], &ctx, "newuidmap not setuid");
        assert_clean(&ctx, "newuidmap not setuid");

        // Missing: /dev/null bound over it is not a regular file, which is what an absent
        // helper looks like to the lookup (PATH, then /usr/bin; /bin is the same directory on
        // a merged-/usr system, so a PATH without it cannot hide it).
        let r = run_in_private_ns(
            &ctx,
            "mount --bind /dev/null /usr/bin/newuidmap",
            &[front.to_str().unwrap(), "exec", &oci_ref("busybox"), "true"],
            FAST * 2,
        );
        assert_ran_fatal(&r, &["newuidmap"], &ctx, "newuidmap missing");
        assert_clean(&ctx, "newuidmap missing");
        // The host's newuidmap was never touched.
        let m = std::fs::metadata("/usr/bin/newuidmap").unwrap();
        assert_ne!(
            std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o4000,
            0
        );
    }
}

#[test]
fn malformed_subuid() {
    for ctx in matrix_with(&[Profile::User]) {
        warm(&ctx);
        let user = ctx.user().unwrap().to_string();
        let real = std::fs::read_to_string("/etc/subuid").unwrap();
        for (i, bad) in [
            format!("{user}:100000\n"),
            format!("{user}:not-a-number:65536\n"),
            format!("{user}:100000:65536:extra\n"),
        ]
        .iter()
        .enumerate()
        {
            let fake = ctx.write_file(&format!("subuid.bad{i}"), bad);
            let front = e2e::prefix().join("bin/singularity-oci");
            let r = run_in_private_ns(
                &ctx,
                &format!("mount --bind {} /etc/subuid", fake.display()),
                &[front.to_str().unwrap(), "exec", &oci_ref("busybox"), "true"],
                FAST * 2,
            );
            assert_ran_fatal(
                &r,
                &["/etc/subuid"],
                &ctx,
                &format!("malformed /etc/subuid {bad:?}"),
            );
            assert_clean(&ctx, "malformed /etc/subuid");
        }
        assert_eq!(
            std::fs::read_to_string("/etc/subuid").unwrap(),
            real,
            "/etc/subuid changed"
        );
    }
}

/// A small tmpfs owned by the context's user, unmounted on drop.
struct SmallFs(PathBuf);

impl SmallFs {
    fn new(ctx: &Ctx, at: PathBuf, size: &str) -> SmallFs {
        std::fs::create_dir_all(&at).unwrap();
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "-o"])
            .arg(format!(
                "size={size},mode=0700,uid={},gid={}",
                ctx.uid(),
                ctx.gid()
            ))
            .arg("sioci-small")
            .arg(&at)
            .status()
            .unwrap();
        assert!(st.success(), "mount a small tmpfs at {}", at.display());
        SmallFs(at)
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn disk_full_during_unpack() {
    let s = Scratch::new("diskfull");
    // 24 MiB of zeros: a ~25 KiB blob that fits, a rootfs that does not fit in 8 MiB.
    let img = make_zero_image(&s.join("img"), 24 << 20);
    let reference = format!("oci:{}:latest", img.layout.display());
    for ctx in matrix() {
        let (cache, blobs, rootfs, tmp) = {
            let fs = SmallFs::new(&ctx, ctx.dir().join("smallcache"), "8m");
            let out = ctx
                .front_cmd(&["exec", &reference, "true"])
                .env("SINGULARITY_CACHEDIR", fs.0.to_str().unwrap())
                .timeout(FAST * 4)
                .run();
            out.assert_code(255);
            let fatal: Vec<&str> = out
                .stderr
                .lines()
                .filter(|l| l.starts_with("FATAL: "))
                .collect();
            if fatal.is_empty() || !fatal.iter().any(|l| l.to_lowercase().contains("space")) {
                out.fail(&format!(
                    "[{}] disk full: a FATAL line should say the disk is full",
                    ctx.name
                ));
            }
            if fatal.len() != 1 {
                out.fail(&format!(
                    "[{}] disk full: expected one FATAL line",
                    ctx.name
                ));
            }
            eprintln!("[{}] disk full: {:?}: {}", ctx.name, out.elapsed, fatal[0]);
            let cache = cache_root(&fs.0);
            let blobs = assert_blobs_verified(&cache, &ctx.name);
            assert_no_lock_held(&cache, &ctx.name);
            (
                cache.clone(),
                blobs,
                dir_entries(&cache.join("rootfs")),
                dir_entries(&cache.join("tmp")),
            )
        };
        assert!(
            blobs >= 1,
            "[{}] the verified blobs should have stayed cached",
            ctx.name
        );
        assert!(
            rootfs.is_empty(),
            "[{}] partial rootfs left in {}: {rootfs:?}",
            ctx.name,
            cache.display()
        );
        assert!(
            tmp.is_empty(),
            "[{}] partial unpack left in CACHE/tmp: {tmp:?}",
            ctx.name
        );
        assert_clean(&ctx, "disk full");
    }
}
