//! Shared helpers of the conmon, attach and hardening end-to-end tests.
#![allow(dead_code)]

use e2e::{Ctx, Output, assert_record_valid};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The hostname every test container gets.
pub const HOSTNAME: &str = "sioci-conmon";

/// Build a busybox bundle `dir()/name` owned by the context's user: the rootfs from the host's
/// static busybox, `config.json` from `runc spec` (`--rootless` for users, minus its own user
/// namespace: the outer namespace of `oci-userns-starter` is the container's), running `args`.
pub fn make_bundle(ctx: &Ctx, name: &str, args: &[&str], terminal: bool) -> PathBuf {
    let b = ctx.dir().join(name);
    let script = r#"set -e
mkdir -p "$1/rootfs/bin" "$1/rootfs/etc" "$1/rootfs/tmp" "$1/rootfs/root"
cp /bin/busybox "$1/rootfs/bin/busybox"
for a in $(/bin/busybox --list); do
    [ "$a" = busybox ] || ln -s busybox "$1/rootfs/bin/$a"
done
echo 'root:x:0:0:root:/root:/bin/sh' > "$1/rootfs/etc/passwd"
echo 'root:x:0:' > "$1/rootfs/etc/group"
cd "$1"
runc spec $2
"#;
    let rootless = if ctx.is_root() { "" } else { "--rootless" };
    ctx.run("sh", &["-c", script, "sh", b.to_str().unwrap(), rootless])
        .assert_success();
    let cfg_path = b.join("config.json");
    let mut cfg: Value =
        serde_json::from_str(&std::fs::read_to_string(&cfg_path).unwrap()).unwrap();
    cfg["process"]["args"] = json!(args);
    cfg["process"]["terminal"] = json!(terminal);
    cfg["process"]["env"] = json!(["PATH=/bin", "TERM=xterm", "HOME=/root"]);
    cfg["hostname"] = json!(HOSTNAME);
    if !ctx.is_root() {
        let linux = cfg["linux"].as_object_mut().unwrap();
        linux.remove("uidMappings");
        linux.remove("gidMappings");
        let ns = linux["namespaces"].as_array_mut().unwrap();
        ns.retain(|n| n["type"] != "user");
        // gid 5 (tty) is not mapped in a single-ID outer namespace.
        for m in cfg["mounts"].as_array_mut().unwrap() {
            if m["destination"] == "/dev/pts" {
                m["options"]
                    .as_array_mut()
                    .unwrap()
                    .retain(|o| o != "gid=5");
            }
        }
    }
    std::fs::write(&cfg_path, serde_json::to_vec_pretty(&cfg).unwrap()).unwrap();
    b
}

/// The command line of `oci-conmon-create`: directly as root, inside the outer namespaces
/// (`oci-userns-starter --`) for users.
pub fn create_argv(ctx: &Ctx, bundle: &Path, id: &str, extra: &[&str]) -> Vec<String> {
    let mut argv = Vec::new();
    if !ctx.is_root() {
        argv.push(ctx.bin("oci-userns-starter"));
        argv.push("--".into());
    }
    argv.push(ctx.bin("oci-conmon-create"));
    argv.extend(extra.iter().map(|s| s.to_string()));
    argv.extend([
        "--bundle".into(),
        bundle.display().to_string(),
        id.to_string(),
    ]);
    argv
}

pub fn create(ctx: &Ctx, bundle: &Path, id: &str, extra: &[&str]) -> Output {
    let argv = create_argv(ctx, bundle, id, extra);
    ctx.run(
        &argv[0],
        &argv[1..].iter().map(String::as_str).collect::<Vec<_>>(),
    )
}

/// Create and check the record; returns it.
pub fn create_ok(ctx: &Ctx, bundle: &Path, id: &str, extra: &[&str]) -> Value {
    let out = create(ctx, bundle, id, extra);
    out.assert_success();
    let lines = out.lines();
    assert_eq!(lines.len(), 1, "one JSON line expected: {}", out.stdout);
    let rec: Value = serde_json::from_str(lines[0]).unwrap();
    assert_record_valid("container-record.schema.json", &rec);
    assert_eq!(rec["schemaVersion"], 1);
    assert_eq!(rec["kind"], "container");
    assert_eq!(rec["id"], id);
    assert_eq!(rec["status"], "created");
    assert!(rec["pid"].as_i64().unwrap() > 1, "{rec}");
    assert!(rec["conmonPid"].as_i64().unwrap() > 1, "{rec}");
    // The state directory keeps the same record for later tools.
    let kept = Path::new(rec["stateDir"].as_str().unwrap()).join("conmon.json");
    let kept: Value = serde_json::from_slice(&std::fs::read(&kept).unwrap()).unwrap();
    assert_eq!(kept, rec, "conmon.json differs from the printed record");
    rec
}

/// `oci-runtime-shim ARGS` as the context's user (the shim joins the container's namespaces
/// itself where it must).
pub fn shim(ctx: &Ctx, args: &[&str]) -> Output {
    ctx.run(ctx.bin("oci-runtime-shim"), args)
}

/// The runtime's own status of the container of record `rec` (`created`, `running`,
/// `stopped`), asked of the runtime directly, as the context's user: the ground truth, whatever
/// the tools above it say.
pub fn status(ctx: &Ctx, rec: &Value) -> String {
    let runtime = rec["runtime"].as_str().unwrap();
    let root = rec["runtimeRoot"].as_str().unwrap();
    let id = rec["id"].as_str().unwrap();
    let out = ctx.run(runtime, &["--root", root, "state", id]);
    out.assert_success();
    out.json()["status"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// Poll `status` until it is `want` (containers take a moment to exit after the last input).
pub fn wait_status(ctx: &Ctx, rec: &Value, want: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let s = status(ctx, rec);
        if s == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "[{}] {}: status {s}, expected {want}",
            ctx.name,
            rec["id"]
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// conmon's exit file of a container, once written.
pub fn wait_exit_file(state_dir: &Path) -> String {
    let p = state_dir.join("exit");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(s) = std::fs::read_to_string(&p)
            && !s.is_empty()
        {
            return s;
        }
        assert!(Instant::now() < deadline, "no exit file {}", p.display());
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Delete the container and check that nothing of it remains: state dir, bundle lock, conmon's
/// files in the bundle.
pub fn delete_clean(ctx: &Ctx, id: &str, bundle: &Path, state_dir: &Path) {
    shim(ctx, &["delete", id]).assert_success();
    shim(ctx, &["state", id]).assert_code(255);
    assert!(!state_dir.exists(), "{} left", state_dir.display());
    for f in [".singularity-oci.lock", "attach", "ctl", "winsz"] {
        assert!(
            !bundle.join(f).exists(),
            "[{}] {} left in the bundle",
            ctx.name,
            f
        );
    }
}

pub fn pid_alive(pid: i64) -> bool {
    // SAFETY: signal 0 checks existence only.
    unsafe { libc::kill(pid as i32, 0) == 0 }
}

pub fn path_of(rec: &Value, key: &str) -> PathBuf {
    PathBuf::from(
        rec[key]
            .as_str()
            .unwrap_or_else(|| panic!("{key} missing in {rec}")),
    )
}
