//! Shared helpers of the oci-userns-starter and oci-runtime-shim tests (the `runtime`,
//! `starter`, `oci_exec` and `launcher_death` modules).
#![allow(dead_code)]

use e2e::{Ctx, Output, Profile, oci_ref};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Quote one word for sh.
pub fn q(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// Make bundle `dir()/name` from the busybox fixture with the real stages (fetch, unpack,
/// mkspec) as the context's user. `mkspec` are extra oci-mkspec options; `cmd` the container
/// command. The rootfs is the read-only cache entry, so the starter's `--overlay` is needed.
pub fn bundle(ctx: &Ctx, name: &str, mkspec: &[&str], cmd: &[&str]) -> PathBuf {
    bundle_of(ctx, "busybox", name, mkspec, cmd)
}

/// [`bundle`] from the fixture image `image`.
pub fn bundle_of(ctx: &Ctx, image: &str, name: &str, mkspec: &[&str], cmd: &[&str]) -> PathBuf {
    let b = ctx.dir().join(name);
    let fetch = ctx.bin("oci-fetch");
    let unpack = ctx.bin("oci-unpack");
    let spec = ctx.bin("oci-mkspec");
    let mut opts: Vec<&str> = mkspec.to_vec();
    // runc cannot take the reverse map inside a single-ID namespace (oci-mkspec refuses it):
    // without subordinate IDs runc runs the fakeroot spec.
    if ctx.profile == Profile::Fakeroot
        || (ctx.profile == Profile::UserNoSubids && ctx.rt == e2e::Rt::Runc)
    {
        opts.push("--fakeroot");
    }
    let script = format!(
        "set -e; {} {} | {} | {} --bundle {} {} -- {} >/dev/null",
        q(&fetch),
        q(&oci_ref(image)),
        q(&unpack),
        q(&spec),
        q(&b.display().to_string()),
        opts.iter().map(|o| q(o)).collect::<Vec<_>>().join(" "),
        cmd.iter().map(|o| q(o)).collect::<Vec<_>>().join(" "),
    );
    ctx.run("sh", &["-c", &script]).assert_success();
    assert!(
        b.join("config.json").is_file(),
        "no config.json in {}",
        b.display()
    );
    b
}

/// `oci-userns-starter --overlay B -- oci-runtime-shim ARGS` (what the front runs).
pub fn chain(ctx: &Ctx, bundle: &std::path::Path, shim_args: &[&str]) -> Output {
    let b = bundle.display().to_string();
    let mut argv = vec!["--overlay", &b, "--", ""];
    let shim = ctx.bin("oci-runtime-shim");
    argv[3] = &shim;
    argv.extend_from_slice(shim_args);
    // The single-ID notice is tested in starter.rs; here stderr must be the shim's alone.
    ctx.cmd(ctx.bin("oci-userns-starter"))
        .args(&argv)
        .env("SINGULARITY_QUIET", "1")
        .run()
}

/// `oci-runtime-shim ARGS` from the host namespaces (later lifecycle operations).
pub fn shim(ctx: &Ctx, args: &[&str]) -> Output {
    ctx.run(ctx.bin("oci-runtime-shim"), args)
}

/// The `status` field of `oci-runtime-shim state ID`.
pub fn status(ctx: &Ctx, id: &str) -> String {
    let out = shim(ctx, &["state", id]);
    out.assert_success();
    out.json()["status"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// Poll `f` until it is true or `limit` passes.
pub fn wait_until(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    f()
}

/// The shim's per-container state directory of `id` for this context.
pub fn state_dir(ctx: &Ctx, id: &str) -> PathBuf {
    ctx.state_root().join("containers").join(id)
}

/// A container id unique to this test process (root's state root is shared by every test).
pub fn unique_id(base: &str) -> String {
    format!("{base}-{}", std::process::id())
}
