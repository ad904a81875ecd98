//! A foreground container dies with its launcher: `kill -9` of the front or of
//! oci-runtime-shim, at a random moment of the container's life, leaves nothing of the container
//! behind within 5 s (no process, no runtime state, no bundle, no mount).
//!
//! `SIOCI_SEED=N` replays the random delays (the seed is printed).

use crate::reliability_support as reliability;
use crate::runtime_support as support;

use e2e::*;
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

/// The start of both scripts below: the front in the background as the context's user
/// (`$1` the front, `$2` the image, `$3` the tag), then a wait until the container process runs
/// (its command line is exactly the container command: the front's own mentions the tag too).
/// `$f` is the front's pid.
macro_rules! start_front {
    () => {
        r#"
front=$1 image=$2 tag=$3
"$front" exec "$image" sh -c "sleep 600; : $tag" </dev/null >/dev/null 2>&1 &
f=$!
i=0
until pgrep -f -- "^sh -c sleep 600; : $tag\$" >/dev/null; do
    i=$((i + 1)); [ $i -lt 600 ] || { echo "container never started" >&2; exit 3; }
    sleep 0.05
done
"#
    };
}

/// Wait `$5` seconds, then SIGKILL the front or (`$4` = `shim`) its child, the shim.
const SCRIPT: &str = concat!(
    start_front!(),
    r#"
who=$4 delay=$5
sleep "$delay"
if [ "$who" = shim ]; then
    s=$(pgrep -P "$f" -f oci-runtime-shim) || { echo "no shim below the front $f" >&2; exit 4; }
    kill -KILL $s
else
    kill -KILL "$f"
fi
wait "$f" 2>/dev/null
exit 0
"#
);

/// Kill everything that could clean up: the shim's watchdog first, then the front (whose death
/// kills the shim, and the shim's the runtime). The container is left running, orphaned.
const KILL_ALL: &str = concat!(
    start_front!(),
    r#"
s=$(pgrep -P "$f" -f oci-runtime-shim) || { echo "no shim" >&2; exit 4; }
w=$(pgrep -P "$s" -f oci-runtime-shim) || { echo "no watchdog below the shim $s" >&2; exit 5; }
kill -KILL $w
kill -KILL "$f"
wait "$f" 2>/dev/null
exit 0
"#
);

/// What is still there of this context's containers: processes, bundles, state (under
/// `state_root`).
fn remains(ctx: &Ctx, tag: &str, state_root: &std::path::Path) -> Vec<String> {
    let mut v = processes_mentioning(tag);
    v.extend(processes_mentioning(&ctx.tmpdir().display().to_string()));
    let state_root = state_root.to_path_buf();
    for e in std::fs::read_dir(ctx.tmpdir())
        .into_iter()
        .flatten()
        .flatten()
    {
        if e.path() != state_root {
            v.push(format!("in TMPDIR: {}", e.path().display()));
        }
    }
    for e in std::fs::read_dir(state_root.join("containers"))
        .into_iter()
        .flatten()
        .flatten()
    {
        let link = std::fs::read_link(e.path().join("bundle")).unwrap_or_default();
        if link.starts_with(ctx.tmpdir()) {
            v.push(format!("state: {}", e.path().display()));
        }
    }
    v
}

/// [`remains`] once it is empty, or after `limit`.
fn remains_after(
    ctx: &Ctx,
    tag: &str,
    state_root: &std::path::Path,
    limit: Duration,
) -> Vec<String> {
    reliability::settle(limit, || remains(ctx, tag, state_root))
}

#[test]
fn sigkill_of_the_front_or_the_shim_takes_the_container_down() {
    let mut rng = reliability::Rng::from_env("launcher_death");
    let front = prefix().join("bin/singularity-oci").display().to_string();
    for ctx in matrix() {
        for (trial, who) in ["front", "shim", "front", "shim"].iter().enumerate() {
            let tag = format!("sioci-death-{}-{trial}", std::process::id());
            let delay = format!("0.{:03}", rng.range(0, 800));
            ctx.cmd("sh")
                .args(&[
                    "-c",
                    SCRIPT,
                    "sh",
                    &front,
                    &oci_ref("busybox"),
                    &tag,
                    who,
                    &delay,
                ])
                .timeout(Duration::from_secs(60))
                .run()
                .assert_success();
            let killed = Instant::now();
            let left = remains_after(&ctx, &tag, &ctx.state_root(), Duration::from_secs(5));
            assert!(
                left.is_empty(),
                "[{}] kill -9 of the {who} after {delay} s: still there after 5 s:\n  {}",
                ctx.name,
                left.join("\n  ")
            );
            eprintln!(
                "[{}] kill -9 of the {who} after {delay} s: clean after {:?}",
                ctx.name,
                killed.elapsed()
            );
            ctx.assert_no_leftovers();
        }
    }
}

/// Lose the runtime's state of the running container (`$4`: the state root), as a runtime
/// killed after letting the container go but before writing that state leaves it (crun's `run`
/// writes it only after its last sync), then SIGKILL the front.
const LOSE_STATE_THEN_KILL: &str = concat!(
    start_front!(),
    r#"
state=$4
n=0
# Only this context's container (its bundle is in this TMPDIR): root's state root is shared
# with the other tests running meanwhile.
for d in "$state"/containers/*/; do
    id=$(basename "$d")
    case $(readlink "${d}bundle") in "$TMPDIR"/*) ;; *) continue ;; esac
    if [ -d "$state/$id" ]; then rm -rf "$state/$id"; n=$((n + 1)); fi
done
[ $n -eq 1 ] || { echo "expected the runtime state of one container, found $n" >&2; exit 4; }
kill -KILL "$f"
wait "$f" 2>/dev/null
exit 0
"#
);

/// A container its runtime lost (no state, so `delete --force` finds nothing) still dies with
/// its launcher: the watchdog kills every process whose root is this run's own root file
/// system (oci-runtime-shim `escapees.rs`).
#[test]
fn a_container_its_runtime_lost_still_dies_with_the_launcher() {
    let front = prefix().join("bin/singularity-oci").display().to_string();
    for ctx in matrix() {
        let tag = format!("sioci-lost-{}", std::process::id());
        let state = ctx.state_root().display().to_string();
        ctx.cmd("sh")
            .args(&[
                "-c",
                LOSE_STATE_THEN_KILL,
                "sh",
                &front,
                &oci_ref("busybox"),
                &tag,
                &state,
            ])
            .timeout(Duration::from_secs(60))
            .run()
            .assert_success();
        let left = remains_after(&ctx, &tag, &ctx.state_root(), Duration::from_secs(5));
        assert!(
            left.is_empty(),
            "[{}] a container whose runtime state was lost: still there after 5 s:\n  {}",
            ctx.name,
            left.join("\n  ")
        );
        ctx.assert_no_leftovers();
    }
}

/// When the watchdog is killed too, the next run of the same user sweeps the container whose
/// launcher processes are all dead: the container, its state and its bundle go.
#[test]
fn the_next_run_sweeps_a_container_whose_launcher_and_watchdog_were_killed() {
    let front = prefix().join("bin/singularity-oci").display().to_string();
    for ctx in matrix() {
        let tag = format!("sioci-orphan-{}", std::process::id());
        // A state root of this test alone: root's shared one is swept by every other root run
        // on the host, which would leave this test nothing to prove.
        let root = ctx.mkdir("state");
        std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o700)).unwrap();
        let root_s = root.display().to_string();
        ctx.cmd("sh")
            .args(&["-c", KILL_ALL, "sh", &front, &oci_ref("busybox"), &tag])
            .env("SINGULARITY_OCI_STATE_ROOT", &root_s)
            .timeout(Duration::from_secs(60))
            .run()
            .assert_success();
        std::thread::sleep(Duration::from_millis(300));
        assert!(
            !remains(&ctx, &tag, &root).is_empty(),
            "[{}] nothing was left to sweep: the test proves nothing",
            ctx.name
        );
        ctx.front_cmd(&["exec", &oci_ref("busybox"), "true"])
            .env("SINGULARITY_OCI_STATE_ROOT", &root_s)
            .run()
            .assert_success();
        let left = remains_after(&ctx, &tag, &root, Duration::from_secs(5));
        assert!(
            left.is_empty(),
            "[{}] the next run did not sweep:\n  {}",
            ctx.name,
            left.join("\n  ")
        );
        ctx.assert_no_leftovers();
    }
}

/// A shim whose launcher died before the shim could ask to die with it (re-parented, maybe to a
/// subreaper) refuses to start the container: the front names itself in
/// `_SINGULARITY_OCI_LAUNCHER_PID`, and a parent that is not that process means it is gone.
#[test]
fn a_shim_whose_launcher_is_already_gone_starts_nothing() {
    for ctx in matrix() {
        // The chain the front runs, with a throwaway bundle, and the launcher it names (if any).
        let run = |launcher: Option<&str>| {
            let b = support::bundle(&ctx, "b", &[], &["true"]);
            let bs = b.display().to_string();
            let shim = ctx.bin("oci-runtime-shim");
            let mut cmd = ctx.cmd(ctx.bin("oci-userns-starter")).args(&[
                "--overlay",
                &bs,
                "--",
                &shim,
                "run",
                "--remove-bundle",
                "--bundle",
                &bs,
            ]);
            if let Some(l) = launcher {
                cmd = cmd.env("_SINGULARITY_OCI_LAUNCHER_PID", l);
            }
            let out = cmd.run();
            assert!(!b.exists(), "[{}] the throwaway bundle was left", ctx.name);
            out
        };
        run(Some("1")).assert_fatal("is gone");
        // The same chain typed by hand (no launcher named) runs.
        run(None).assert_success();
        ctx.assert_no_leftovers();
    }
}

/// Kill the front (kill -9) while the bundle exists but before the shim has taken it over
/// (as soon as the launcher marker appears: oci-mkspec's, or with `--disable-cache` ($5)
/// oci-fetch's, which makes the bundle to fetch into), or at a random moment of its start: the
/// next run of the same user in the same TMPDIR sweeps the bundle, so within 5 s of it nothing
/// is left. A bundle whose launcher still lives is never swept (the checks run while the
/// next run's own launcher is alive, and the concurrent trial below keeps its bundle).
const KILL_BEFORE_SHIM: &str = r#"
front=$1 image=$2 tag=$3 delay=$4 opts=$5
"$front" exec $opts "$image" sh -c "sleep 600; : $tag" </dev/null >/dev/null 2>&1 &
f=$!
if [ "$delay" = marker ]; then
    i=0
    until ls "$TMPDIR"/singularity-oci.*/.singularity-oci.launcher >/dev/null 2>&1; do
        i=$((i + 1)); [ $i -lt 3000 ] || { echo "no bundle marker appeared" >&2; exit 3; }
        sleep 0.01
    done
else
    sleep "$delay"
fi
kill -KILL "$f"
wait "$f" 2>/dev/null
exit 0
"#;

#[test]
fn the_next_run_sweeps_a_bundle_whose_front_was_killed_before_the_shim() {
    let mut rng = reliability::Rng::from_env("launcher_death_before_shim");
    let front = prefix().join("bin/singularity-oci").display().to_string();
    for ctx in matrix() {
        // A warm cache, so that the random moments fall into fetch, unpack, mkspec and the start.
        ctx.front(&["exec", &oci_ref("busybox"), "true"])
            .assert_success();
        // Trials 4 and 5 keep nothing in the cache: the bundle is made first and holds the
        // fetched image, so the kill falls into the fetch.
        for trial in 0..6 {
            let tag = format!("sioci-preshim-{}-{trial}", std::process::id());
            let delay = if trial % 4 < 2 {
                "marker".to_string()
            } else {
                format!("0.{:03}", rng.range(0, 400))
            };
            let opts = if trial >= 4 { "--disable-cache" } else { "" };
            ctx.cmd("sh")
                .args(&[
                    "-c",
                    KILL_BEFORE_SHIM,
                    "sh",
                    &front,
                    &oci_ref("busybox"),
                    &tag,
                    &delay,
                    opts,
                ])
                .timeout(Duration::from_secs(60))
                .run()
                .assert_success();
            let killed = Instant::now();
            // Give a shim that did start the moment its watchdog needs, then run again.
            std::thread::sleep(Duration::from_millis(300));
            let before = remains(&ctx, &tag, &ctx.state_root());
            ctx.front(&["exec", &oci_ref("busybox"), "true"])
                .assert_success();
            let limit = Duration::from_secs(5).saturating_sub(killed.elapsed());
            let left = remains_after(&ctx, &tag, &ctx.state_root(), limit);
            assert!(
                left.is_empty(),
                "[{}] kill -9 of the front ({delay} {opts}): still there 5 s later:\n  {}",
                ctx.name,
                left.join("\n  ")
            );
            eprintln!(
                "[{}] kill -9 of the front ({delay}): {} left before the next run, clean after {:?}",
                ctx.name,
                before.len(),
                killed.elapsed()
            );
            ctx.assert_no_leftovers();
        }
        // A live launcher's bundle is not swept by a run beside it.
        let out = ctx
            .cmd("sh")
            .args(&[
                "-c",
                r#""$0" exec "$1" sh -c 'sleep 3; echo survived' & p=$!; sleep 1; "$0" exec "$1" true; wait $p"#,
                &front,
                &oci_ref("busybox"),
            ])
            .timeout(Duration::from_secs(60))
            .run();
        out.assert_success().assert_stdout_contains("survived");
        ctx.assert_no_leftovers();
    }
}
