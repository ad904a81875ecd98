//! Scale-out on Slurm: `srun -n N singularity-oci exec IMG CMD` on a real one-node
//! cluster (munged, slurmctld, slurmd started by `tests/slurm/cluster` with private paths and
//! ports, stopped by PID when the test ends, also when it panics), as the unprivileged test user
//! and as root, with crun and runc.
//!
//! What "fetched once, unpacked once" means is measured, not inferred: the stages run through
//! wrappers (`SINGULARITY_OCI_LIBEXEC`) that trace `oci-fetch` and `oci-unpack` with
//! `strace -ff -e trace=rename*` (one file per thread, so no call is split into
//! "unfinished"/"resumed" halves), and every successful rename into `layout/blobs/` or
//! `rootfs/` of the cache is one blob write or one rootfs build.

use e2e::*;
use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::Duration;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// One cluster at a time in this test binary: the tests take turns.
static CLUSTER_LOCK: Mutex<()> = Mutex::new(());

/// A running one-node cluster; dropping it stops the daemons by PID and removes its directory.
struct Cluster {
    dir: PathBuf,
    conf: String,
    _turn: MutexGuard<'static, ()>,
}

impl Cluster {
    fn start(name: &str) -> Cluster {
        let turn = CLUSTER_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let dir = workdir().join(format!("slurm-{name}-{}", std::process::id()));
        if dir.exists() {
            stop(&dir);
        }
        let script = repo().join("tests/slurm/cluster");
        // The watchdog argument: if this test process dies without unwinding, the daemons
        // still stop.
        let out = std::process::Command::new(&script)
            .arg("start")
            .arg(&dir)
            .arg(std::process::id().to_string())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{} start failed ({}):\n{}{}",
            script.display(),
            out.status,
            stdout,
            String::from_utf8_lossy(&out.stderr)
        );
        let conf = stdout
            .lines()
            .find_map(|l| l.strip_prefix("SLURM_CONF="))
            .expect("cluster start prints SLURM_CONF=")
            .to_string();
        Cluster {
            dir,
            conf,
            _turn: turn,
        }
    }

    /// `srun ARGS` as the context's user, with the context's environment.
    fn srun<'a>(&self, ctx: &'a Ctx, args: &[&str]) -> Cmd<'a> {
        ctx.cmd("srun")
            .env("SLURM_CONF", &self.conf)
            .args(args)
            .timeout(Duration::from_secs(300))
    }
}

fn stop(dir: &Path) {
    let _ = std::process::Command::new(repo().join("tests/slurm/cluster"))
        .arg("stop")
        .arg(dir)
        .status();
}

impl Drop for Cluster {
    fn drop(&mut self) {
        stop(&self.dir);
    }
}

/// The MPI test image (`tests/slurm/mkmpiimage`), built once per test run.
fn mpi_image() -> String {
    static IMG: OnceLock<PathBuf> = OnceLock::new();
    let p = IMG.get_or_init(|| {
        let p = workdir().join("slurm-mpi-image");
        if !p.join("index.json").is_file() {
            let tmp = workdir().join("slurm-mpi-image.tmp");
            let _ = std::fs::remove_dir_all(&tmp);
            let st = std::process::Command::new(repo().join("tests/slurm/mkmpiimage"))
                .arg(&tmp)
                .status()
                .expect("run tests/slurm/mkmpiimage");
            assert!(st.success(), "tests/slurm/mkmpiimage failed");
            std::fs::rename(&tmp, &p).unwrap();
        }
        p
    });
    format!("oci:{}:latest", p.display())
}

/// A private, empty cache for one test (the profile's shared cache may already be warm).
fn cold_cache(ctx: &Ctx) -> PathBuf {
    let c = ctx.mkdir("cold-cache");
    std::fs::set_permissions(&c, std::fs::Permissions::from_mode(0o700)).unwrap();
    c
}

/// A stage directory whose `oci-fetch` and `oci-unpack` record their renames under
/// `dir()/trace/` (strace, renames only) and whose other stages are the installed ones.
fn traced_stages(ctx: &Ctx) -> (PathBuf, PathBuf) {
    let lx = ctx.mkdir("traced-stages");
    let trace = ctx.mkdir("trace");
    let bin = prefix().join("bin");
    for e in std::fs::read_dir(&bin).unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.starts_with("oci-") {
            continue;
        }
        let dst = lx.join(&name);
        if name == "oci-fetch" || name == "oci-unpack" {
            // oci-unpack renames its tree in its main thread, and must not trace its children:
            // for a user with subordinate IDs it starts oci-userns-starter, whose setuid map
            // helpers lose their privilege when traced; the oci-unpack that then builds the
            // tree inside the namespace is this wrapper again (found through
            // SINGULARITY_OCI_LIBEXEC), traced on its own.
            let follow = if name == "oci-fetch" {
                "-ff --seccomp-bpf"
            } else {
                ""
            };
            let script = format!(
                "#!/bin/sh\nexec strace {follow} -qq -e trace=rename,renameat,renameat2 -o '{}/{name}.'$$ '{}' \"$@\"\n",
                trace.display(),
                e.path().display()
            );
            std::fs::write(&dst, script).unwrap();
            std::fs::set_permissions(&dst, std::fs::Permissions::from_mode(0o755)).unwrap();
        } else {
            std::os::unix::fs::symlink(e.path(), &dst).unwrap();
        }
    }
    (lx, trace)
}

/// Successful renames onto `<cache>/.../layout/blobs/<alg>/<hex>` (per target) and onto
/// `<cache>/.../rootfs/<key>` (per target), from the traces.
fn cache_writes(trace: &Path) -> (BTreeMap<String, usize>, BTreeMap<String, usize>) {
    let mut blobs = BTreeMap::new();
    let mut rootfs = BTreeMap::new();
    for e in std::fs::read_dir(trace).unwrap().flatten() {
        let text = std::fs::read_to_string(e.path()).unwrap();
        for line in text.lines() {
            if !line.trim_end().ends_with("= 0") || !line.contains("rename") {
                continue;
            }
            // The last quoted string is the destination.
            let quoted: Vec<&str> = line.split('"').collect();
            if quoted.len() < 5 {
                continue;
            }
            let dst = quoted[quoted.len() - 2];
            let parent = Path::new(dst).parent().unwrap_or(Path::new(""));
            let leaf = Path::new(dst)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            if leaf.starts_with('.') {
                continue;
            }
            if parent.parent().is_some_and(|p| p.ends_with("layout/blobs")) {
                *blobs.entry(leaf).or_insert(0) += 1;
            } else if parent.ends_with("oci-launcher/rootfs") {
                *rootfs.entry(leaf).or_insert(0) += 1;
            }
        }
    }
    (blobs, rootfs)
}

/// The blobs an image layout's `latest` manifest names (manifest, config, layers), by hex.
fn image_blobs(layout: &Path) -> BTreeSet<String> {
    let read = |p: PathBuf| -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap()
    };
    let index = read(layout.join("index.json"));
    let mdesc = &index["manifests"][0];
    let hex = |d: &serde_json::Value| d.as_str().unwrap().split(':').nth(1).unwrap().to_string();
    let mut set = BTreeSet::new();
    let mhex = hex(&mdesc["digest"]);
    let manifest = read(layout.join("blobs/sha256").join(&mhex));
    set.insert(mhex);
    set.insert(hex(&manifest["config"]["digest"]));
    for l in manifest["layers"].as_array().unwrap() {
        set.insert(hex(&l["digest"]));
    }
    set
}

/// `N` tasks of one step on a cold cache: all succeed, each sees its own rank and the step's
/// SLURM_* variables, each has its own bundle and container ID, and the cache got each blob
/// written once and the rootfs built once.
fn cold_step(ctx: &Ctx, cluster: &Cluster, n: usize, image_layout: &Path) {
    let cache = cold_cache(ctx);
    let (stages, trace) = traced_stages(ctx);
    let image = format!("oci:{}:latest", image_layout.display());
    let ntasks = n.to_string();
    let out = cluster
        .srun(
            ctx,
            &[
                "--overcommit",
                "-n",
                &ntasks,
                "singularity-oci",
                "--debug",
                "exec",
                &image,
                "sh",
                "-c",
                "echo task=$SLURM_PROCID of=$SLURM_NTASKS job=$SLURM_JOB_ID step=$SLURM_STEP_ID",
            ],
        )
        .env("SINGULARITY_CACHEDIR", cache.display().to_string())
        .env("SINGULARITY_OCI_LIBEXEC", stages.display().to_string())
        .run();
    out.assert_code(0);

    // Every rank once, with the step's variables.
    let mut ranks = BTreeSet::new();
    let mut jobs = BTreeSet::new();
    for l in out.lines() {
        let f: BTreeMap<&str, &str> = l.split(' ').filter_map(|w| w.split_once('=')).collect();
        let Some(task) = f.get("task") else { continue };
        assert_eq!(f.get("of"), Some(&ntasks.as_str()), "SLURM_NTASKS in: {l}");
        assert!(!f["job"].is_empty() && !f["step"].is_empty(), "{l}");
        assert!(ranks.insert(task.parse::<usize>().unwrap_or_else(|_| out.fail(l))));
        jobs.insert(f["job"].to_string());
    }
    if ranks != (0..n).collect() || jobs.len() != 1 {
        out.fail(&format!(
            "expected ranks 0..{n} of one job, got {ranks:?} in {jobs:?}"
        ));
    }

    // One bundle and one container ID per task.
    let bundles: BTreeSet<&str> = out
        .stderr
        .lines()
        .filter_map(|l| l.strip_prefix("DEBUG: singularity-oci: record from mkspec: "))
        .map(|r| {
            r.split("\"bundle\":\"")
                .nth(1)
                .unwrap()
                .split('"')
                .next()
                .unwrap()
        })
        .collect();
    let ids: BTreeSet<&str> = out
        .stderr
        .lines()
        .filter(|l| l.starts_with("DEBUG: oci-runtime-shim: runtime argv:"))
        .map(|l| {
            l.split("/containers/")
                .nth(1)
                .unwrap()
                .split('/')
                .next()
                .unwrap()
        })
        .collect();
    if bundles.len() != n || ids.len() != n {
        out.fail(&format!(
            "expected {n} bundles and {n} container IDs, got {} and {}",
            bundles.len(),
            ids.len()
        ));
    }
    // One extraction reported: exactly one rootfs record says it was not cached.
    let fresh = out
        .stderr
        .lines()
        .filter(|l| l.starts_with("DEBUG: singularity-oci: record from unpack: "))
        .filter(|l| l.contains("\"cached\":false"))
        .count();
    if fresh != 1 {
        out.fail(&format!("{fresh} tasks extracted the rootfs, expected 1"));
    }

    // And what the traces prove: each blob written once, one rootfs built.
    let (blobs, rootfs) = cache_writes(&trace);
    let expected = image_blobs(image_layout);
    let written: BTreeSet<String> = blobs.keys().cloned().collect();
    assert_eq!(written, expected, "blobs written into the cache");
    assert!(
        blobs.values().all(|&c| c == 1),
        "a blob was written more than once: {blobs:?}"
    );
    assert_eq!(rootfs.len(), 1, "rootfs builds: {rootfs:?}");
    assert!(
        rootfs.values().all(|&c| c == 1),
        "rootfs builds: {rootfs:?}"
    );
    // Nothing half-written stays in the cache.
    let tmp = cache.join("cache/oci-launcher/tmp");
    let left: Vec<_> = std::fs::read_dir(&tmp)
        .map(|rd| rd.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "left in the cache's tmp/: {left:?}");
    ctx.assert_no_leftovers();
}

#[test]
fn srun_cold_cache_fetches_once_unpacks_once() {
    let cluster = Cluster::start("cold");
    for ctx in [
        Ctx::for_test(Profile::User, Rt::Crun),
        Ctx::for_test(Profile::User, Rt::Runc),
        Ctx::for_test(Profile::Root, Rt::Crun),
    ] {
        cold_step(&ctx, &cluster, 8, &fixture("layered"));
    }
}

#[test]
fn srun_stress_32_tasks_one_cold_cache() {
    let cluster = Cluster::start("stress");
    let ctx = Ctx::for_test(Profile::User, Rt::Crun);
    cold_step(&ctx, &cluster, 32, &fixture("layered"));
}

#[test]
fn srun_exit_codes_reach_srun() {
    let cluster = Cluster::start("exit");
    for ctx in [
        Ctx::for_test(Profile::User, Rt::Crun),
        Ctx::for_test(Profile::User, Rt::Runc),
    ] {
        let img = oci_ref("busybox");
        cluster
            .srun(
                &ctx,
                &[
                    "-n",
                    "1",
                    "singularity-oci",
                    "exec",
                    &img,
                    "sh",
                    "-c",
                    "exit 7",
                ],
            )
            .run()
            .assert_code(7);
        // srun reports the highest status of its tasks: task 1 exits 4, task 0 exits 3.
        cluster
            .srun(
                &ctx,
                &[
                    "-n",
                    "2",
                    "singularity-oci",
                    "exec",
                    &img,
                    "sh",
                    "-c",
                    "exit $((SLURM_PROCID + 3))",
                ],
            )
            .run()
            .assert_code(4);
        cluster
            .srun(&ctx, &["-n", "2", "singularity-oci", "exec", &img, "true"])
            .run()
            .assert_code(0);
        ctx.assert_no_leftovers();
    }
}

/// `srun --mpi=pmix -n 4` of the MPI image: four ranks that really talk (an Allreduce).
fn mpi_step(cluster: &Cluster, ctxs: &[Ctx]) {
    let img = mpi_image();
    for ctx in ctxs {
        let out = cluster
            .srun(
                ctx,
                &[
                    "--mpi=pmix",
                    "--overcommit",
                    "-n",
                    "4",
                    "singularity-oci",
                    "exec",
                    &img,
                    "/mpi_hello",
                ],
            )
            .run();
        out.assert_code(0);
        let ranks: BTreeSet<String> = out
            .lines()
            .iter()
            .filter(|l| l.starts_with("rank ") && l.contains(" of 4 on "))
            .map(|l| l.split(' ').nth(1).unwrap().to_string())
            .collect();
        if ranks.len() != 4 || !out.stdout.contains("MPI ranks: 4\n") {
            out.fail("expected ranks 0..3 of 4 and an Allreduce over 4 ranks");
        }
        ctx.assert_no_leftovers();
    }
}

#[test]
fn srun_mpi_pmix_4_ranks() {
    let cluster = Cluster::start("mpi");
    mpi_step(
        &cluster,
        &[
            Ctx::for_test(Profile::User, Rt::Crun),
            Ctx::for_test(Profile::User, Rt::Runc),
            Ctx::for_test(Profile::Root, Rt::Crun),
            Ctx::for_test(Profile::Root, Rt::Runc),
        ],
    );
}
