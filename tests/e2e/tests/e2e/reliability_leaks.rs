//! Leaks: a soak of 100 mixed launches through `singularity-oci` per profile (root,
//! and the unprivileged user), split over crun and runc: successes, failing commands, commands
//! killed by a signal, bad options, missing images, and SIGTERM sent to the front mid-run.
//! Afterwards nothing may be left: no temporary bundle, no mount (`/proc/self/mountinfo`), no
//! runtime state, no held lock in the cache, no process.
//!
//! The mix is drawn from a seeded RNG (`SIOCI_SEED=N` replays it); `SIOCI_SOAK_LAUNCHES`
//! changes the number of launches per profile (default 100).

use crate::reliability_support as support;

use e2e::{Ctx, Profile, Rt, oci_ref, processes_mentioning};
use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::{Duration, Instant};
use support::*;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Success,
    FailingCommand,
    KilledBySignal,
    BadOption,
    MissingImage,
    SigtermMidRun,
}

const KINDS: [Kind; 6] = [
    Kind::Success,
    Kind::FailingCommand,
    Kind::KilledBySignal,
    Kind::BadOption,
    Kind::MissingImage,
    Kind::SigtermMidRun,
];

fn launches() -> usize {
    std::env::var("SIOCI_SOAK_LAUNCHES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(100)
}

/// Start the front as the context's user in the background (for SIGTERM), the way the harness
/// runs commands: clean environment, setpriv for users, its own process group.
fn spawn_front(ctx: &Ctx, args: &[&str]) -> std::process::Child {
    use std::os::unix::process::CommandExt;
    ctx.command(ctx.bin("singularity-oci"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .expect("cannot start the front")
}

/// One launch of `kind`; panics when the outcome breaks the exit-code contract.
fn launch(ctx: &Ctx, kind: Kind, rng: &mut Rng, i: usize) {
    let img = oci_ref("busybox");
    let what = format!("[{}] launch {i} {kind:?}", ctx.name);
    match kind {
        Kind::Success => {
            let out = ctx.front(&["exec", &img, "true"]);
            if out.code != 0 {
                out.fail(&what);
            }
        }
        Kind::FailingCommand => {
            let code = rng.range(1, 120);
            let out = ctx.front(&["exec", &img, "sh", "-c", &format!("exit {code}")]);
            if out.code != code as i32 {
                out.fail(&format!("{what}: exit code {code} must pass through"));
            }
        }
        Kind::KilledBySignal => {
            let out = ctx.front(&["exec", &img, "sh", "-c", "sh -c 'kill -KILL $$'; exit $?"]);
            if out.code != 137 {
                out.fail(&format!(
                    "{what}: a command killed by SIGKILL must give 137"
                ));
            }
        }
        Kind::BadOption => {
            let out = ctx.front(&["exec", "--no-such-option-xyz", &img, "true"]);
            out.assert_code(255);
        }
        Kind::MissingImage => {
            let missing = format!("oci:{}/no-such-layout:latest", ctx.dir().display());
            let out = ctx.front(&["exec", &missing, "true"]);
            out.assert_code(255);
        }
        Kind::SigtermMidRun => {
            // The container's init handles TERM (a process that is PID 1 of its PID namespace
            // and has no handler never sees a TERM, as in any container runtime).
            let script = format!(
                "trap 'exit 143' TERM; sleep {} & wait",
                sleep_arg(ctx.profile)
            );
            let mut child = spawn_front(ctx, &["exec", &img, "sh", "-c", &script]);
            let delay = Duration::from_millis(rng.range(100, 1500));
            std::thread::sleep(delay);
            // The front, as a batch system would signal it.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let start = Instant::now();
            let status = loop {
                if let Some(st) = child.try_wait().unwrap() {
                    break st;
                }
                if start.elapsed() > Duration::from_secs(20) {
                    unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
                    let _ = child.wait();
                    panic!(
                        "{what}: the front did not stop within 20 s of SIGTERM (sent after {delay:?})"
                    );
                }
                std::thread::sleep(Duration::from_millis(10));
            };
            let mut err = String::new();
            use std::io::Read;
            let _ = child.stderr.take().unwrap().read_to_string(&mut err);
            let code = status.code().unwrap_or(-1);
            // 143 once the container runs (128+SIGTERM passed through); 255 or 143 when the
            // signal arrived during a stage; never a hang, never 0.
            assert!(
                code == 143 || code == 255,
                "{what}: SIGTERM after {delay:?} gave {status:?}\n{err}"
            );
        }
    }
}

/// A sleep length unique to the profile, so the two soaks (run in parallel) can tell their
/// container processes apart.
fn sleep_arg(p: Profile) -> &'static str {
    match p {
        Profile::Root => "31",
        _ => "32",
    }
}

fn locks_held(ctx: &Ctx) -> Vec<String> {
    let locks = cache_root(ctx.cache_dir()).join("locks");
    dir_entries(&locks)
        .into_iter()
        .filter(|l| !lock_is_free(&locks.join(l)))
        .collect()
}

fn soak(profile: Profile) {
    let _failed = RecordOnPanic::new(format!("leaks-{}", profile.name()));
    let mut rng = Rng::from_env(&format!("leaks/{}", profile.name()));
    let ctxs: Vec<Ctx> = Rt::ALL
        .iter()
        .map(|&rt| {
            Ctx::new(
                profile,
                rt,
                &format!("reliability_leaks-soak-{}", profile.name()),
            )
        })
        .collect();
    let mut counts: BTreeMap<Kind, usize> = BTreeMap::new();
    let start = Instant::now();
    for i in 0..launches() {
        let ctx = &ctxs[i % ctxs.len()];
        // Start with a success so the cache is warm and the setup proven.
        let kind = if i < ctxs.len() {
            Kind::Success
        } else {
            KINDS[rng.range(0, KINDS.len() as u64) as usize]
        };
        launch(ctx, kind, &mut rng, i);
        *counts.entry(kind).or_default() += 1;
    }
    eprintln!(
        "leaks/{}: {} launches in {:?}: {counts:?}",
        profile.name(),
        launches(),
        start.elapsed()
    );

    let mut leaks = Vec::new();
    for ctx in &ctxs {
        let needle = ctx.dir().to_string_lossy().into_owned();
        let procs = settle(Duration::from_secs(10), || processes_mentioning(&needle));
        leaks.extend(procs.iter().map(|p| format!("[{}] process: {p}", ctx.name)));
        let mounts = mounts_matching(&needle);
        leaks.extend(mounts.iter().map(|m| format!("[{}] mount: {m}", ctx.name)));
        leaks.extend(
            locks_held(ctx)
                .iter()
                .map(|l| format!("[{}] lock held: {l}", ctx.name)),
        );
        if let Err(e) = std::panic::catch_unwind(|| ctx.assert_no_leftovers()) {
            let msg = e
                .downcast_ref::<String>()
                .cloned()
                .unwrap_or_else(|| "assert_no_leftovers failed".into());
            leaks.push(msg);
        }
    }
    // Container processes do not mention the test's directory: find them by their argument.
    let sleepers = processes_mentioning(&format!("sleep {}", sleep_arg(profile)));
    leaks.extend(sleepers.iter().map(|p| format!("container process: {p}")));
    record_result(
        &format!("leaks-{}", profile.name()),
        serde_json::json!({"cases": launches(), "survived": launches(), "leaks": leaks.len(), "escapes": 0,
                           "mix": counts.iter().map(|(k, v)| (format!("{k:?}"), *v)).collect::<BTreeMap<_, _>>()}),
    );
    assert!(
        leaks.is_empty(),
        "leaks/{}: left behind after the soak:\n  {}",
        profile.name(),
        leaks.join("\n  ")
    );
    eprintln!("leaks/{}: 0 leaks", profile.name());
}

#[test]
fn soak_root() {
    soak(Profile::Root);
}

#[test]
fn soak_user() {
    soak(Profile::User);
}
