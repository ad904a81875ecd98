//! oci-userns-starter: the outer namespaces, the overlay, and the chain-loading contract (no
//! resident parent: exit status and signals belong to PROG).

use crate::runtime_support as support;

use e2e::{Ctx, Profile, Rt};
use support::*;

fn starter(ctx: &Ctx, args: &[&str]) -> e2e::Output {
    ctx.run(ctx.bin("oci-userns-starter"), args)
}

const SHOW: &str = "cat /proc/self/uid_map /proc/self/gid_map /proc/self/setgroups; id -u; id -g; echo \"env=${_CONTAINERS_ROOTLESS_UID:-}:${_CONTAINERS_ROOTLESS_GID:-}\"; readlink /proc/self/ns/mnt; readlink /proc/$PPID/ns/mnt 2>/dev/null || echo unreadable";

fn words(s: &str) -> Vec<Vec<String>> {
    s.lines()
        .map(|l| l.split_whitespace().map(str::to_string).collect())
        .collect()
}

#[test]
fn root_gets_a_private_mount_namespace_only() {
    let ctx = Ctx::for_test(Profile::Root, Rt::Crun);
    let out = starter(&ctx, &["--", "sh", "-c", SHOW]);
    out.assert_success().assert_stderr_empty();
    let l = words(&out.stdout);
    assert_eq!(l[0], ["0", "0", "4294967295"], "{}", out.stdout);
    assert_eq!(l[l.len() - 3], ["env=:"], "root gets no rootless markers");
    assert_ne!(l[l.len() - 2], l[l.len() - 1], "a new mount namespace");
}

#[test]
fn user_with_subids_maps_host_id_and_range() {
    let ctx = Ctx::for_test(Profile::User, Rt::Crun);
    let user = ctx.user().unwrap().to_string();
    let (us, uc) = e2e::subuid_range(&user).expect("test user has a subuid range");
    let (gs, gc) = e2e::subgid_range(&user).expect("test user has a subgid range");
    let out = starter(&ctx, &["--", "sh", "-c", SHOW]);
    out.assert_success().assert_stderr_empty();
    let l = words(&out.stdout);
    let s = |v: &[u32]| v.iter().map(u32::to_string).collect::<Vec<_>>();
    assert_eq!(l[0], s(&[0, ctx.uid(), 1]), "{}", out.stdout);
    assert_eq!(l[1], s(&[1, us, uc]), "{}", out.stdout);
    assert_eq!(l[2], s(&[0, ctx.gid(), 1]), "{}", out.stdout);
    assert_eq!(l[3], s(&[1, gs, gc]), "{}", out.stdout);
    // newgidmap leaves setgroups allowed (the runtime may set the container's groups).
    assert_eq!(l[4], ["allow"]);
    assert_eq!((l[5][0].as_str(), l[6][0].as_str()), ("0", "0"));
    assert_eq!(l[7], [format!("env={}:{}", ctx.uid(), ctx.gid())]);
}

#[test]
fn user_without_subids_gets_the_single_id_map_with_a_notice() {
    let ctx = Ctx::for_test(Profile::UserNoSubids, Rt::Crun);
    let out = starter(&ctx, &["--", "sh", "-c", SHOW]);
    out.assert_success();
    let l = words(&out.stdout);
    assert_eq!(l[0], ["0".to_string(), ctx.uid().to_string(), "1".into()]);
    assert_eq!(l[1], ["0".to_string(), ctx.gid().to_string(), "1".into()]);
    assert_eq!(
        l[2],
        ["deny"],
        "the kernel needs setgroups=deny for our own gid_map"
    );
    let notice: Vec<&str> = out.stderr.lines().collect();
    assert_eq!(notice.len(), 1, "one notice line: {}", out.stderr);
    assert!(notice[0].contains("single-ID"), "{}", out.stderr);
    // Forcing it works for users with ranges too.
    let ctx = Ctx::for_test(Profile::User, Rt::Runc);
    let out = ctx
        .cmd(ctx.bin("oci-userns-starter"))
        .args(&["--", "cat", "/proc/self/uid_map"])
        .env("SINGULARITY_OCI_SINGLE_ID", "1")
        .run();
    out.assert_success();
    assert_eq!(out.lines().len(), 1, "{}", out.stdout);
}

#[test]
fn no_resident_parent_exit_status_and_signals_belong_to_prog() {
    for p in [Profile::Root, Profile::User, Profile::UserNoSubids] {
        let ctx = Ctx::for_test(p, Rt::Crun);
        starter(&ctx, &["--", "sh", "-c", "exit 42"]).assert_code(42);
        starter(&ctx, &["--", "sh", "-c", "kill -TERM $$"]).assert_code(143);
        // The starter's pid is PROG's pid: it replaced itself.
        let st = ctx.bin("oci-userns-starter");
        let out = ctx.run(
            "sh",
            &[
                "-c",
                &format!("{} -- sh -c 'echo $$' & echo $!; wait", q(&st)),
            ],
        );
        out.assert_success();
        let l = out.lines();
        let mut l = l.clone();
        l.sort();
        assert_eq!(l.len(), 2, "{}", out.stdout);
        assert_eq!(
            l[0], l[1],
            "[{}] PROG must run as the starter's pid",
            ctx.name
        );
    }
}

#[test]
fn overlay_is_writable_keeps_the_lower_and_leaves_no_mount() {
    for p in [Profile::Root, Profile::User, Profile::UserNoSubids] {
        let ctx = Ctx::for_test(p, Rt::Crun);
        let lower = ctx.mkdir("lower/d");
        ctx.write_file("lower/d/f", "lower\n");
        let b = ctx.mkdir("b/rootfs");
        let b = b.parent().unwrap().to_path_buf();
        std::os::unix::fs::symlink(ctx.dir().join("lower"), b.join("rootfs.lower")).unwrap();
        std::os::unix::fs::lchown(b.join("rootfs.lower"), Some(ctx.uid()), Some(ctx.gid()))
            .unwrap();
        let r = b.join("rootfs").display().to_string();
        let script = format!(
            "cat {r}/d/f && rm -rf {r}/d && mkdir {r}/d && echo new > {r}/d/g && ls {r}/d && grep ' {r} ' /proc/self/mountinfo | grep -c ' - overlay '"
        );
        let bs = b.display().to_string();
        let out = starter(
            &ctx,
            &[
                "--overlay",
                &bs,
                "--tmpfs-size",
                "8",
                "--",
                "sh",
                "-c",
                &script,
            ],
        );
        out.assert_success();
        assert_eq!(out.lines(), ["lower", "g", "1"], "[{}]", ctx.name);
        assert_eq!(std::fs::read_to_string(lower.join("f")).unwrap(), "lower\n");
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        assert!(!mounts.contains(&bs), "[{}] mount left behind", ctx.name);
        ctx.assert_no_leftovers();
    }
}

#[test]
fn bad_input_is_one_fatal_line() {
    let ctx = Ctx::for_test(Profile::User, Rt::Crun);
    starter(&ctx, &[]).assert_fatal("no program");
    starter(&ctx, &["--bogus", "--", "true"]).assert_fatal("--bogus");
    starter(&ctx, &["--overlay", "/nonexistent/b", "--", "true"]).assert_fatal("/nonexistent/b");
    starter(&ctx, &["--", "/nonexistent/prog"]).assert_fatal("/nonexistent/prog");
    starter(&ctx, &["--tmpfs-size", "x", "--", "true"]).assert_fatal("tmpfs-size");
    ctx.assert_no_leftovers();
}

#[test]
fn help_and_version() {
    let ctx = Ctx::for_test(Profile::User, Rt::Crun);
    starter(&ctx, &["--help"])
        .assert_success()
        .assert_stdout_contains("Usage: oci-userns-starter");
    starter(&ctx, &["--version"])
        .assert_success()
        .assert_stdout_contains("oci-userns-starter ");
}
