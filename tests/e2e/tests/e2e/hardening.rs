//! Hardening of what every run touches: the program lookup on PATH, the descriptors a long-lived
//! monitor inherits, and the supplementary groups of the container process.

use crate::conmon_support;

use e2e::*;
use std::os::unix::fs::{PermissionsExt, chown};
use std::path::Path;

/// Plant executables named like the tools the launcher runs, each leaving a marker file when
/// run, in `dir` (owned by the context's user, as a working directory the caller entered).
fn plant_tools(ctx: &Ctx, dir: &Path, names: &[&str]) -> std::path::PathBuf {
    let marker = dir.join("planted-tool-ran");
    for n in names {
        let p = dir.join(n);
        std::fs::write(
            &p,
            format!("#!/bin/sh\necho \"$0\" >> '{}'\nexit 1\n", marker.display()),
        )
        .unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        chown(&p, Some(ctx.uid()), Some(ctx.gid())).unwrap();
    }
    marker
}

/// An empty or relative PATH entry means the working directory to a shell and to execvp. A
/// `crun`, `runc` or `oci-fetch` planted there must never run, whatever PATH looks like; the
/// real runtime found further along PATH runs the container.
#[test]
fn empty_and_relative_path_entries_never_run_the_working_directory() {
    for ctx in matrix() {
        let cwd = ctx.mkdir("cwd");
        let marker = plant_tools(
            &ctx,
            &cwd,
            &[
                "crun",
                "runc",
                "oci-fetch",
                "oci-runtime-shim",
                "newuidmap",
                "newgidmap",
                "conmon",
            ],
        );
        for path in [
            format!(":{}", ctx.path_env()),
            format!(".:{}", ctx.path_env()),
            format!("{}::", ctx.path_env()),
            format!("./:cwd:{}", ctx.path_env()),
        ] {
            ctx.front_cmd(&["exec", &oci_ref("busybox"), "echo", "real"])
                .env("PATH", &path)
                .cwd(&cwd)
                .run()
                .assert_success()
                .assert_stdout_eq("real\n");
            // A stage named by a bare name goes through the same lookup: with only the working
            // directory offering it, it is not found.
            ctx.cmd(ctx.bin("oci-userns-starter"))
                .args(&["--", "oci-runtime-shim", "--version"])
                .env("PATH", ":.:cwd:/usr/bin:/bin")
                .cwd(&cwd)
                .run()
                .assert_fatal("not found on PATH");
            assert!(
                !marker.exists(),
                "[{}] PATH={path}: a planted tool ran: {}",
                ctx.name,
                std::fs::read_to_string(&marker).unwrap_or_default()
            );
        }
        ctx.assert_no_leftovers();
    }
}

/// conmon outlives its caller: a descriptor the caller had open (a root shell's
/// `exec 7</etc/shadow`) must not stay open in the monitor for the container's life.
#[test]
fn conmon_inherits_no_descriptor_of_its_caller() {
    for ctx in matrix() {
        let secret = ctx.dir().join("secret");
        std::fs::write(&secret, "s3cret\n").unwrap();
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
        chown(&secret, Some(ctx.uid()), Some(ctx.gid())).unwrap();
        let b = conmon_support::make_bundle(&ctx, "b", &["sleep", "30"], false);
        let id = format!("fds-{}", std::process::id());
        let argv = conmon_support::create_argv(&ctx, &b, &id, &[]);
        let mut sh_args = vec![
            "-c".to_string(),
            format!("exec 7<'{s}' 9<'{s}'; exec \"$@\"", s = secret.display()),
            "sh".into(),
        ];
        sh_args.extend(argv);
        let out = ctx.cmd("sh").args(&sh_args).run();
        out.assert_success();
        let rec = out.json();
        let conmon = rec["conmonPid"].as_i64().unwrap();
        let open: Vec<String> = std::fs::read_dir(format!("/proc/{conmon}/fd"))
            .unwrap()
            .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
            .map(|p| p.display().to_string())
            .collect();
        assert!(
            !open.iter().any(|p| p == &secret.display().to_string()),
            "[{}] conmon {conmon} holds the caller's descriptor: {open:?}",
            ctx.name
        );
        let sd = conmon_support::path_of(&rec, "stateDir");
        conmon_support::shim(&ctx, &["kill", "-s", "KILL", &id]);
        conmon_support::wait_exit_file(&sd);
        conmon_support::delete_clean(&ctx, &id, &b, &sd);
    }
}

/// A file that denies one of the caller's supplementary groups (`root:G`, mode 0604): the
/// runtime drops the groups by default (as SingularityCE's does), so "others" applies in the
/// container, as the starter's and oci-mkspec's man pages say; `--no-setgroups` keeps them with
/// crun (its annotation), so the denial holds, and is refused with runc (which calls setgroups
/// in the container's user namespace whatever we do). The extra group is the attacker's primary
/// group, given to the test user for these commands only (`setpriv --groups`).
#[test]
fn no_setgroups_keeps_permissions_that_deny_a_group() {
    for ctx in matrix_with(&[Profile::User]) {
        let group = ctx.attacker().gid();
        let denied = ctx.dir().join("group-denied");
        std::fs::write(&denied, "readable through others\n").unwrap();
        chown(&denied, Some(0), Some(group)).unwrap();
        std::fs::set_permissions(&denied, std::fs::Permissions::from_mode(0o604)).unwrap();
        let path = denied.display().to_string();
        let dir = ctx.dir().display().to_string();
        let with_group = |args: &[&str]| -> std::process::Output {
            ctx.command_in_groups(&[ctx.gid(), group], args[0])
                .args(&args[1..])
                .stdin(std::process::Stdio::null())
                .output()
                .unwrap()
        };
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        let front = ctx.bin("singularity-oci");
        let image = oci_ref("busybox");
        // On the host the group's denial holds.
        assert!(!with_group(&["cat", &path]).status.success());
        let dropped = with_group(&[&front, "exec", "-B", &dir, &image, "cat", &path]);
        assert_eq!(
            text(&dropped.stdout),
            "readable through others\n",
            "[{}] without --no-setgroups the groups are dropped (documented): {}",
            ctx.name,
            text(&dropped.stderr)
        );
        let kept = with_group(&[
            &front,
            "exec",
            "--no-setgroups",
            "-B",
            &dir,
            &image,
            "cat",
            &path,
        ]);
        match ctx.rt {
            Rt::Crun => assert!(
                kept.status.code() == Some(1) && text(&kept.stderr).contains("Permission denied"),
                "[{}] --no-setgroups must keep the denying group: {:?} {} {}",
                ctx.name,
                kept.status,
                text(&kept.stdout),
                text(&kept.stderr)
            ),
            Rt::Runc => assert!(
                kept.status.code() == Some(255)
                    && text(&kept.stderr).contains("does not support --no-setgroups"),
                "[{}] runc cannot keep the groups: {:?} {}",
                ctx.name,
                kept.status,
                text(&kept.stderr)
            ),
        }
        ctx.assert_no_leftovers();
    }
}
