//! oci-conmon-create end to end: real conmon, crun and runc, as root and unprivileged.

use crate::conmon_support as support;

use e2e::matrix;
use std::time::Duration;
use support::*;

/// create -> created -> start -> exit status, logs in k8s-file format, conmon's FIFOs cleaned by
/// the exit command, state `stopped` -> delete leaves nothing.
#[test]
fn conmon_lifecycle_logs_and_exit_status() {
    for ctx in matrix() {
        let b = make_bundle(
            &ctx,
            "b",
            &["sh", "-c", "echo out-line; echo err-line >&2; exit 3"],
            false,
        );
        let rec = create_ok(&ctx, &b, "c1", &[]);
        let sd = path_of(&rec, "stateDir");
        assert_eq!(path_of(&rec, "bundle"), b);
        assert_eq!(path_of(&rec, "logPath"), sd.join("container.log"));
        assert_eq!(path_of(&rec, "attachSocket"), b.join("attach"));
        assert_eq!(rec["terminal"], false);
        assert_eq!(
            rec["runtime"].as_str().unwrap().rsplit('/').next(),
            Some(ctx.rt.name())
        );
        for f in ["conmon.pid", "container.pid", "bundle"] {
            assert!(
                sd.join(f).symlink_metadata().is_ok(),
                "[{}] no {f}",
                ctx.name
            );
        }
        assert!(b.join("attach").exists() && b.join(".singularity-oci.lock").exists());
        assert!(pid_alive(rec["conmonPid"].as_i64().unwrap()));
        assert_eq!(status(&ctx, &rec), "created");

        shim(&ctx, &["start", "c1"]).assert_success();
        assert_eq!(wait_exit_file(&sd), "3", "[{}]", ctx.name);
        wait_status(&ctx, &rec, "stopped");
        let log = std::fs::read_to_string(path_of(&rec, "logPath")).unwrap();
        assert!(
            log.contains(" stdout F out-line\n"),
            "[{}] log:\n{log}",
            ctx.name
        );
        assert!(
            log.contains(" stderr F err-line\n"),
            "[{}] log:\n{log}",
            ctx.name
        );
        // The exit command removed conmon's FIFOs; conmon itself removed the socket.
        for f in ["ctl", "winsz", "attach"] {
            assert!(!b.join(f).exists(), "[{}] {f} left after exit", ctx.name);
        }
        delete_clean(&ctx, "c1", &b, &sd);
        ctx.assert_no_leftovers();
    }
}

/// --log-path and --pid-file are honoured (SingularityCE ignores them).
#[test]
fn conmon_log_path_and_pid_file() {
    for ctx in matrix() {
        let b = make_bundle(&ctx, "b", &["sh", "-c", "echo to-custom-log"], false);
        let log = ctx.dir().join("custom.log");
        let pidf = ctx.dir().join("ctr.pid");
        let rec = create_ok(
            &ctx,
            &b,
            "c2",
            &[
                "--log-path",
                log.to_str().unwrap(),
                "--pid-file",
                pidf.to_str().unwrap(),
            ],
        );
        assert_eq!(path_of(&rec, "logPath"), log);
        assert_eq!(
            std::fs::read_to_string(&pidf).unwrap(),
            rec["pid"].to_string()
        );
        shim(&ctx, &["start", "c2"]).assert_success();
        assert_eq!(wait_exit_file(&path_of(&rec, "stateDir")), "0");
        let text = std::fs::read_to_string(&log).unwrap();
        assert!(text.contains("stdout F to-custom-log"), "{text}");
        delete_clean(&ctx, "c2", &b, &path_of(&rec, "stateDir"));
        ctx.assert_no_leftovers();
    }
}

/// The container outlives the shell that created it, and later invocations manage it.
#[test]
fn conmon_container_outlives_creating_shell() {
    for ctx in matrix() {
        let b = make_bundle(&ctx, "b", &["sleep", "300"], false);
        let argv = create_argv(&ctx, &b, "c3", &[]);
        let quoted: Vec<String> = argv.iter().map(|a| format!("'{a}'")).collect();
        // The shell exits right after the create; its session and process group go with it.
        let out = ctx.run("sh", &["-c", &format!("{} > rec.json", quoted.join(" "))]);
        out.assert_success();
        let rec: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(ctx.dir().join("rec.json")).unwrap())
                .unwrap();
        std::fs::remove_file(ctx.dir().join("rec.json")).unwrap();
        shim(&ctx, &["start", "c3"]).assert_success();
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(status(&ctx, &rec), "running", "[{}]", ctx.name);
        assert!(pid_alive(rec["pid"].as_i64().unwrap()));
        assert!(pid_alive(rec["conmonPid"].as_i64().unwrap()));
        shim(&ctx, &["kill", "-s", "KILL", "c3"]).assert_success();
        let sd = path_of(&rec, "stateDir");
        assert_eq!(wait_exit_file(&sd), "137", "[{}]", ctx.name);
        wait_status(&ctx, &rec, "stopped");
        delete_clean(&ctx, "c3", &b, &sd);
        ctx.assert_no_leftovers();
    }
}

/// Bad input: one FATAL line, exit 255, nothing left (state dir, bundle lock, conmon files,
/// runtime state).
#[test]
fn conmon_failures_leave_nothing() {
    for ctx in matrix() {
        // The runtime's own words for a command that does not exist.
        let b = make_bundle(&ctx, "b", &["/no/such/program"], false);
        let out = create(&ctx, &b, "bad1", &[]);
        out.assert_fatal("no/such/program");
        assert!(out.stdout.is_empty());
        let names: Vec<_> = std::fs::read_dir(&b)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        let mut names = names;
        names.sort();
        assert_eq!(names, ["config.json", "rootfs"], "[{}]", ctx.name);
        shim(&ctx, &["state", "bad1"]).assert_code(255);

        // A runtime that never answers: the timeout, then a full teardown (conmon killed, the
        // runtime's child with it).
        let hang = ctx.write_file("hang-runtime", "#!/bin/sh\nexec sleep 1000\n");
        std::fs::set_permissions(&hang, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let out = create(
            &ctx,
            &b,
            "slow",
            &["--runtime", hang.to_str().unwrap(), "--timeout", "1"],
        );
        out.assert_fatal("container creation timeout");
        assert!(!b.join(".singularity-oci.lock").exists() && !b.join("attach").exists());

        // Usage errors.
        create(&ctx, &ctx.dir().join("missing"), "bad2", &[]).assert_fatal("not found");
        create(&ctx, &b, "../x", &[]).assert_fatal("invalid container id");
        create(&ctx, &b, "bad3", &["--log-format", "json"]).assert_fatal("k8s-file");
        create(&ctx, &b, "bad4", &["--log-path", "/tmp/a:b"]).assert_fatal("':'");

        // A locked bundle and a used id are refused without touching the first container.
        let ok = make_bundle(&ctx, "ok", &["sleep", "300"], false);
        let rec = create_ok(&ctx, &ok, "first", &[]);
        create(&ctx, &ok, "second", &[]).assert_fatal("locked by container 'first'");
        let other = make_bundle(&ctx, "other", &["true"], false);
        create(&ctx, &other, "first", &[]).assert_fatal("already exists");
        assert_eq!(status(&ctx, &rec), "created");
        assert!(!other.join(".singularity-oci.lock").exists());
        // (Not `delete --force` of the created container: oci-runtime-shim removes the state
        // directory without waiting for conmon, which is still writing the exit file there.)
        shim(&ctx, &["kill", "-s", "KILL", "first"]).assert_success();
        assert_eq!(wait_exit_file(&path_of(&rec, "stateDir")), "137");
        wait_status(&ctx, &rec, "stopped");
        delete_clean(&ctx, "first", &ok, &path_of(&rec, "stateDir"));
        ctx.assert_no_leftovers();
    }
}

/// Unprivileged without the outer namespaces: a clear refusal naming the way to run it.
#[test]
fn conmon_unprivileged_needs_the_starter() {
    for ctx in e2e::matrix_with(&[e2e::Profile::User]) {
        let b = make_bundle(&ctx, "b", &["true"], false);
        ctx.run(
            ctx.bin("oci-conmon-create"),
            &["--bundle", b.to_str().unwrap(), "c"],
        )
        .assert_fatal("oci-userns-starter");
        ctx.assert_no_leftovers();
    }
}

/// The real chain: a bundle made by the stages over the read-only rootfs cache, its overlay
/// mounted by `oci-userns-starter --overlay` in a mount namespace that only conmon keeps alive
/// after the starter's process is gone. The container writes into the overlay, a later `exec`
/// sees it, the host sees no mount, and nothing stays mounted after the delete.
#[test]
fn conmon_stage_bundle_on_overlay() {
    for ctx in matrix() {
        let b = ctx.dir().join("sb");
        let chain = format!(
            "{} {} | {} | {} --bundle {} -- sh -c 'echo written > /marker; echo started; sleep 300' >/dev/null",
            ctx.bin("oci-fetch"),
            e2e::oci_ref("busybox"),
            ctx.bin("oci-unpack"),
            ctx.bin("oci-mkspec"),
            b.display()
        );
        ctx.run("sh", &["-c", &chain]).assert_success();
        assert!(
            b.join("rootfs.lower").exists(),
            "[{}] not an overlay bundle",
            ctx.name
        );
        let out = ctx.run(
            ctx.bin("oci-userns-starter"),
            &[
                "--overlay",
                b.to_str().unwrap(),
                "--",
                &ctx.bin("oci-conmon-create"),
                "--bundle",
                b.to_str().unwrap(),
                "ov",
            ],
        );
        out.assert_success();
        let rec: serde_json::Value = serde_json::from_str(out.stdout.trim()).unwrap();
        shim(&ctx, &["start", "ov"]).assert_success();
        let sd = path_of(&rec, "stateDir");
        let log = path_of(&rec, "logPath");
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while !std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("started")
        {
            assert!(
                std::time::Instant::now() < deadline,
                "[{}] no output",
                ctx.name
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        shim(&ctx, &["exec", "ov", "cat", "/marker"])
            .assert_success()
            .assert_stdout_eq("written");
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        assert!(
            !mounts.contains(b.to_str().unwrap()),
            "[{}] the overlay is visible on the host",
            ctx.name
        );
        shim(&ctx, &["kill", "-s", "KILL", "ov"]).assert_success();
        assert_eq!(wait_exit_file(&sd), "137");
        wait_status(&ctx, &rec, "stopped");
        delete_clean(&ctx, "ov", &b, &sd);
        ctx.assert_no_leftovers();
    }
}
