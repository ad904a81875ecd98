//! oci-runtime-shim with real crun and runc, as root and unprivileged: every operation, the
//! SingularityCE `basic` lifecycle (`e2e/oci/oci.go`), exit statuses and signal deaths passed
//! through as SingularityCE does (128+N for signal N), signal forwarding,
//! the bundle lock, bad input, and 100 mixed runs that must leave nothing behind.

use crate::runtime_support as support;

use e2e::{Ctx, Profile, matrix, matrix_with, processes_mentioning};
use std::time::Duration;
use support::*;

#[test]
fn run_passes_exit_status_and_signal_deaths_through() {
    for ctx in matrix_with(&[Profile::Root, Profile::User, Profile::UserNoSubids]) {
        // Exit 0/1/134 pass straight through; with --no-pid, kill -KILL $$ gives 137 and
        // kill -ABRT $$ gives 134 (128 + the signal, as a shell reports it).
        for (script, code) in [
            ("exit 0", 0),
            ("exit 1", 1),
            ("exit 134", 134),
            ("kill -KILL $$", 137),
            ("kill -ABRT $$", 134),
        ] {
            let name = format!("b{code}-{}", script.len());
            let b = bundle(&ctx, &name, &["--no-pid"], &["sh", "-c", script]);
            let out = chain(&ctx, &b, &["run", "--bundle", &b.display().to_string()]);
            if out.code != code {
                out.fail(&format!("[{}] '{script}' should give {code}", ctx.name));
            }
            std::fs::remove_dir_all(&b).unwrap();
        }
        ctx.assert_no_leftovers();
    }
}

#[test]
fn run_forwards_term_int_and_usr1_to_the_container() {
    for ctx in matrix() {
        for sig in ["TERM", "INT", "USR1"] {
            let b = bundle(
                &ctx,
                &format!("b-{sig}"),
                &[],
                &[
                    "sh",
                    "-c",
                    &format!(
                        "trap 'echo got {sig}; exit 3' {sig}; echo ready; while :; do sleep 0.05; done"
                    ),
                ],
            );
            let out_file = ctx.dir().join(format!("out-{sig}"));
            // The chain runs in the background of a shell that signals the starter's pid once the
            // container is ready: no resident starter, so the signal reaches the shim directly.
            let script = format!(
                "{st} --overlay {b} -- {sh} run --bundle {b} > {o} 2>&1 & p=$!
                 i=0; until grep -q ready {o}; do i=$((i+1)); [ $i -lt 400 ] || exit 99; sleep 0.05; done
                 kill -{sig} $p; wait $p; echo rc=$?; cat {o}",
                st = q(&ctx.bin("oci-userns-starter")),
                sh = q(&ctx.bin("oci-runtime-shim")),
                b = q(&b.display().to_string()),
                o = q(&out_file.display().to_string()),
            );
            let out = ctx.run("sh", &["-c", &script]);
            out.assert_success();
            out.assert_stdout_contains("rc=3");
            out.assert_stdout_contains(&format!("got {sig}"));
        }
        ctx.assert_no_leftovers();
    }
}

/// SingularityCE's e2e `basic` sequence, with every operation in its own invocation and the
/// later ones run from the host namespaces (the shim joins the container's user namespace).
#[test]
fn basic_lifecycle_sequence() {
    for ctx in matrix_with(&[Profile::Root, Profile::User, Profile::UserNoSubids]) {
        let b = bundle(
            &ctx,
            "b",
            &["--hostname", "singularity"],
            &["sh", "-c", "echo started; while :; do sleep 1; done"],
        );
        let bs = b.display().to_string();
        let id = &unique_id("basic");
        let id = id.as_str();
        chain(&ctx, &b, &["create", "--bundle", &bs, id]).assert_success();
        assert_eq!(status(&ctx, id), "created");
        let sd = state_dir(&ctx, id);
        assert_eq!(std::fs::read_link(sd.join("bundle")).unwrap(), b);
        assert!(sd.join("container.pid").is_file());
        assert!(
            b.join(".singularity-oci.lock").is_file(),
            "create takes the bundle lock"
        );

        shim(&ctx, &["start", id]).assert_success();
        assert_eq!(status(&ctx, id), "running");
        assert!(wait_until(Duration::from_secs(5), || {
            std::fs::read_to_string(sd.join("container.log")).is_ok_and(|s| s.contains("started"))
        }));

        if ctx.is_root() {
            shim(&ctx, &["pause", id]).assert_success();
            assert_eq!(status(&ctx, id), "paused");
            shim(&ctx, &["resume", id]).assert_success();
            assert_eq!(status(&ctx, id), "running");
        } else {
            // No cgroup freezer for rootless containers on this host (no delegation): a clear
            // FATAL, and the container keeps running.
            shim(&ctx, &["pause", id]).assert_fatal("freezer");
            assert_eq!(status(&ctx, id), "running");
            shim(&ctx, &["resume", id]).assert_fatal("freezer");
        }
        shim(&ctx, &["start", id]).assert_fatal("start failed");

        // crun too, in a single-ID container: the shim hands crun the container's own user.
        shim(&ctx, &["exec", id, "hostname"])
            .assert_success()
            .assert_stdout_eq("singularity");
        // exec exit codes pass through (SingularityCE maps them to 255).
        shim(&ctx, &["exec", id, "sh", "-c", "exit 7"]).assert_code(7);
        shim(
            &ctx,
            &[
                "exec",
                "--env",
                "A=b c",
                "--cwd",
                "/tmp",
                id,
                "sh",
                "-c",
                "echo \"$A\"; pwd",
            ],
        )
        .assert_success()
        .assert_stdout_eq("b c\n/tmp");
        // A second create on the locked bundle is refused, with no side effects.
        chain(&ctx, &b, &["create", "--bundle", &bs, "other"])
            .assert_fatal(&format!("locked by container '{id}'"));
        assert!(!state_dir(&ctx, "other").exists());

        shim(&ctx, &["kill", id, "KILL"]).assert_success();
        assert!(
            wait_until(Duration::from_secs(10), || status(&ctx, id) == "stopped"),
            "[{}] not stopped after kill",
            ctx.name
        );
        shim(&ctx, &["delete", id]).assert_success();
        assert!(!sd.exists(), "delete removes the state dir");
        assert!(
            !b.join(".singularity-oci.lock").exists(),
            "delete releases the lock"
        );
        shim(&ctx, &["state", id]).assert_fatal("no such container");
        shim(&ctx, &["kill", id]).assert_fatal("no such container");
        shim(&ctx, &["start", id]).assert_fatal("no such container");
        std::fs::remove_dir_all(&b).unwrap();
        ctx.assert_no_leftovers();
    }
}

#[test]
fn list_kill_signal_forms_and_delete_force() {
    for ctx in matrix() {
        let b = bundle(
            &ctx,
            "b",
            &[],
            &[
                "sh",
                "-c",
                "trap 'echo got HUP' HUP; echo ready; while :; do sleep 0.1; done",
            ],
        );
        let bs = b.display().to_string();
        let lk = unique_id("lk");
        let lk = lk.as_str();
        chain(&ctx, &b, &["create", "--bundle", &bs, lk]).assert_success();
        shim(&ctx, &["start", lk]).assert_success();
        let l = shim(&ctx, &["list"]);
        l.assert_success().assert_stdout_contains(lk);
        // OWNER is whoever created the container on the host (crun alone recorded root, its
        // uid inside the user namespace).
        let owner = ctx.user().unwrap_or("root");
        let row = l.stdout.lines().find(|r| r.starts_with(lk)).unwrap();
        assert!(
            l.stdout.starts_with("ID ") && row.split_whitespace().last() == Some(owner),
            "[{}] list:\n{}",
            ctx.name,
            l.stdout
        );
        let log = state_dir(&ctx, lk).join("container.log");
        let hups = || {
            std::fs::read_to_string(&log)
                .unwrap_or_default()
                .matches("got HUP")
                .count()
        };
        // The trap must be set before the first HUP (PID 1 ignores signals it has no handler
        // for), and they go one at a time: pending standard signals coalesce.
        assert!(wait_until(Duration::from_secs(10), || {
            std::fs::read_to_string(&log).is_ok_and(|s| s.contains("ready"))
        }));
        let forms: [&[&str]; 3] = [
            &["kill", "-s", "HUP", lk],
            &["kill", lk, "SIGHUP"],
            &["kill", lk, "1"],
        ];
        for (n, form) in forms.iter().enumerate() {
            shim(&ctx, form).assert_success();
            assert!(
                wait_until(Duration::from_secs(5), || hups() == n + 1),
                "[{}] {form:?} delivered",
                ctx.name
            );
        }
        shim(&ctx, &["kill", "-s", "NOPE", lk]).assert_fatal("invalid signal 'NOPE'");
        // delete of a running container needs --force.
        shim(&ctx, &["delete", lk]).assert_fatal("delete failed");
        shim(&ctx, &["delete", "--force", lk]).assert_success();
        std::fs::remove_dir_all(&b).unwrap();
        ctx.assert_no_leftovers();
    }
}

#[test]
fn update_reads_a_file_or_stdin() {
    // Root only: the resources live in cgroups, which rootless containers do not get here.
    for ctx in matrix_with(&[Profile::Root]) {
        let b = bundle(
            &ctx,
            "b",
            &["--pids-limit", "500"],
            &["sh", "-c", "while :; do sleep 1; done"],
        );
        let bs = b.display().to_string();
        let upd = unique_id("upd");
        let upd = upd.as_str();
        chain(&ctx, &b, &["create", "--bundle", &bs, upd]).assert_success();
        shim(&ctx, &["start", upd]).assert_success();
        let pid: u32 = std::fs::read_to_string(state_dir(&ctx, upd).join("container.pid"))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let pids_max = || {
            let cg = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
            let path = cg
                .lines()
                .find_map(|l| l.split_once(":pids:").map(|(_, p)| p.to_string()))
                .expect("pids cgroup");
            std::fs::read_to_string(format!("/sys/fs/cgroup/pids{path}/pids.max"))
                .unwrap()
                .trim()
                .to_string()
        };
        assert_eq!(pids_max(), "500");
        shim_stdin(
            &ctx,
            &["update", "-f", "-", upd],
            r#"{"pids":{"limit":123}}"#,
        )
        .assert_success();
        assert_eq!(pids_max(), "123", "[{}] update -f - reads stdin", ctx.name);
        let f = ctx.write_file("res.json", r#"{"pids":{"limit":77}}"#);
        shim(&ctx, &["update", "-f", &f.display().to_string(), upd]).assert_success();
        assert_eq!(pids_max(), "77");
        shim(&ctx, &["update", "-f", "/nonexistent.json", upd]).assert_fatal("/nonexistent.json");
        shim(&ctx, &["delete", "-f", upd]).assert_success();
        std::fs::remove_dir_all(&b).unwrap();
        ctx.assert_no_leftovers();
    }
}

fn shim_stdin(ctx: &Ctx, args: &[&str], input: &str) -> e2e::Output {
    ctx.cmd(ctx.bin("oci-runtime-shim"))
        .args(args)
        .stdin(input)
        .run()
}

#[test]
fn exec_with_a_terminal() {
    for ctx in matrix() {
        let b = bundle(&ctx, "b", &[], &["sh", "-c", "while :; do sleep 1; done"]);
        let bs = b.display().to_string();
        let tty = unique_id("tty");
        let tty = tty.as_str();
        chain(&ctx, &b, &["create", "--bundle", &bs, tty]).assert_success();
        shim(&ctx, &["start", tty]).assert_success();
        // script(1) gives the shim a pty, so `exec -t` can hand one to the command.
        let cmd = format!(
            "{} exec -t {tty} sh -c 'test -t 0 && tty && exit 5'",
            q(&ctx.bin("oci-runtime-shim")),
        );
        let out = ctx.run("script", &["-qec", &cmd, "/dev/null"]);
        out.assert_code(5).assert_stdout_contains("/dev/pts/");
        shim(&ctx, &["delete", "--force", tty]).assert_success();
        std::fs::remove_dir_all(&b).unwrap();
        ctx.assert_no_leftovers();
    }
}

#[test]
fn bad_input_is_fatal_255_without_side_effects() {
    for ctx in matrix_with(&[Profile::Root, Profile::User]) {
        let b = bundle(&ctx, "b", &[], &["sh", "-c", "while :; do sleep 1; done"]);
        let bs = b.display().to_string();
        shim(&ctx, &["state", "nosuch"]).assert_fatal("no such container 'nosuch'");
        shim(&ctx, &["exec", "nosuch", "true"]).assert_fatal("no such container 'nosuch'");
        shim(&ctx, &["delete", "nosuch"]).assert_fatal("no such container 'nosuch'");
        shim(&ctx, &["state", "../x"]).assert_fatal("invalid container id");
        shim(&ctx, &["frob"]).assert_fatal("unknown operation");
        chain(&ctx, &b, &["run", "--bundle", "/nonexistent/b"]).assert_fatal("/nonexistent/b");
        let empty = ctx.mkdir("empty");
        chain(
            &ctx,
            &b,
            &["create", "--bundle", &empty.display().to_string(), "c"],
        )
        .assert_fatal("no config.json");
        ctx.cmd(ctx.bin("oci-runtime-shim"))
            .args(&["run", "--bundle", &bs])
            .env("SINGULARITY_OCI_RUNTIME", "/nonexistent/crun")
            .run()
            .assert_fatal("install the 'crun' package");
        ctx.cmd(ctx.bin("oci-runtime-shim"))
            .args(&["--runtime", "runc-missing", "run", "--bundle", &bs])
            .run()
            .assert_fatal("runc-missing");
        // A held lock: FATAL, and the holder is untouched.
        chain(&ctx, &b, &["create", "--bundle", &bs, "holder"]).assert_success();
        chain(&ctx, &b, &["create", "--bundle", &bs, "second"]).assert_fatal("locked");
        assert_eq!(status(&ctx, "holder"), "created");
        // The same id twice is refused too.
        chain(&ctx, &b, &["create", "--bundle", &bs, "holder"]).assert_fatal("already exists");
        shim(&ctx, &["delete", "holder"]).assert_success();
        assert!(!ctx.state_root().join("containers").join("second").exists());
        std::fs::remove_dir_all(&b).unwrap();
        std::fs::remove_dir_all(&empty).unwrap();
        ctx.assert_no_leftovers();
    }
}

#[test]
fn stale_lock_is_reported_and_taken_over() {
    for ctx in matrix_with(&[Profile::Root, Profile::User]) {
        let b = bundle(&ctx, "b", &[], &["sh", "-c", "while :; do sleep 1; done"]);
        let bs = b.display().to_string();
        chain(&ctx, &b, &["create", "--bundle", &bs, "gone"]).assert_success();
        // The container disappears behind the shim's back: killed and deleted by the runtime
        // itself, so the marker in the bundle and the shim's state dir stay.
        let root = ctx.state_root().display().to_string();
        let rt = ctx.rt.name();
        let script = format!(
            "{st} -- sh -c '{rt} --root {root} kill gone KILL; sleep 0.3; {rt} --root {root} delete --force gone'",
            st = q(&ctx.bin("oci-userns-starter"))
        );
        ctx.run("sh", &["-c", &script]).assert_success();
        assert!(b.join(".singularity-oci.lock").exists());
        let out = chain(&ctx, &b, &["create", "--bundle", &bs, "fresh"]);
        out.assert_success().assert_stderr_contains("stale lock");
        // The leftover state of the vanished container is cleaned by delete, with a warning.
        shim(&ctx, &["delete", "gone"])
            .assert_success()
            .assert_stderr_contains("no longer knows");
        shim(&ctx, &["delete", "fresh"]).assert_success();
        std::fs::remove_dir_all(&b).unwrap();
        ctx.assert_no_leftovers();
    }
}

#[test]
fn debug_prints_the_runtime_argv() {
    for ctx in matrix() {
        let b = bundle(&ctx, "b", &[], &["true"]);
        let bs = b.display().to_string();
        let out = chain(&ctx, &b, &["--debug", "run", "--bundle", &bs, "dbg"]);
        out.assert_success();
        out.assert_stderr_contains("runtime argv: ");
        out.assert_stderr_contains(&format!("run --bundle {bs} --pid-file "));
        assert!(out.stderr.contains(ctx.rt.name()), "{}", out.stderr);
        std::fs::remove_dir_all(&b).unwrap();
        ctx.assert_no_leftovers();
    }
}

/// 100 mixed runs (successes, failures, signal deaths and launcher errors) across the matrix
/// leave no runtime state, mount or process behind.
#[test]
fn hundred_mixed_runs_leave_nothing_behind() {
    let ctxs = matrix();
    let mut done = 0;
    let mut made = Vec::new();
    for ctx in &ctxs {
        let ok = bundle(ctx, "ok", &[], &["true"]);
        let fail = bundle(ctx, "fail", &[], &["sh", "-c", "exit 3"]);
        let sig = bundle(ctx, "sig", &["--no-pid"], &["sh", "-c", "kill -KILL $$"]);
        let nocmd = bundle(ctx, "nocmd", &[], &["/nonexistent-command"]);
        made.push((ctx, ok, fail, sig, nocmd));
    }
    'outer: loop {
        for (ctx, ok, fail, sig, nocmd) in &made {
            let kind = done % 5;
            let out = match kind {
                0 => chain(ctx, ok, &["run", "--bundle", &ok.display().to_string()]),
                1 => chain(ctx, fail, &["run", "--bundle", &fail.display().to_string()]),
                2 => chain(ctx, sig, &["run", "--bundle", &sig.display().to_string()]),
                3 => chain(
                    ctx,
                    nocmd,
                    &["run", "--bundle", &nocmd.display().to_string()],
                ),
                _ => chain(ctx, ok, &["run", "--bundle", "/nonexistent/bundle"]),
            };
            let want = [0, 3, 137, -1, 255][kind];
            if want >= 0 && out.code != want {
                out.fail(&format!("[{}] run kind {kind}", ctx.name));
            }
            if kind == 3 && (out.code == 0 || out.code == 255) {
                out.fail("a missing container command is the runtime's error (non-zero, not 255)");
            }
            done += 1;
            if done == 100 {
                break 'outer;
            }
        }
    }
    for (ctx, ..) in &made {
        ctx.assert_no_leftovers();
        let root = state_dir(ctx, "x").parent().unwrap().to_path_buf();
        let left: Vec<_> = std::fs::read_dir(&root)
            .map(|rd| rd.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        let mine: Vec<_> = left
            .iter()
            .filter(|p| {
                std::fs::read_link(p.join("bundle")).is_ok_and(|b| b.starts_with(ctx.dir()))
            })
            .collect();
        assert!(mine.is_empty(), "[{}] state dirs left: {mine:?}", ctx.name);
        let strays = processes_mentioning(&ctx.dir().display().to_string());
        assert!(
            strays.is_empty(),
            "[{}] processes left: {strays:?}",
            ctx.name
        );
    }
}

/// A runtime killed in the middle of `run` cannot clean up: the shim deletes the container
/// (`delete --force`) and exits 128+9.
#[test]
fn runtime_killed_mid_run_leaves_nothing() {
    for ctx in matrix() {
        // $0 of the container's shell: a name to look for among the host's processes.
        let marker = format!("killed-mid-run-{}", unique_id(ctx.rt.name()));
        let b = bundle(
            &ctx,
            "b",
            &[],
            &[
                "sh",
                "-c",
                "echo ready; while :; do sleep 0.1; done",
                &marker,
            ],
        );
        let o = ctx.dir().join("out");
        let script = format!(
            "{st} --overlay {b} -- {sh} run --bundle {b} > {o} 2>&1 & p=$!
             i=0; until grep -q ready {o}; do i=$((i+1)); [ $i -lt 400 ] || exit 99; sleep 0.05; done
             kill -KILL $(pgrep -P $p); wait $p; echo rc=$?",
            st = q(&ctx.bin("oci-userns-starter")),
            sh = q(&ctx.bin("oci-runtime-shim")),
            b = q(&b.display().to_string()),
            o = q(&o.display().to_string()),
        );
        let out = ctx.run("sh", &["-c", &script]);
        out.assert_success().assert_stdout_contains("rc=137");
        let strays = processes_mentioning(&marker);
        assert!(strays.is_empty(), "[{}] {strays:?}", ctx.name);
        std::fs::remove_dir_all(&b).unwrap();
        ctx.assert_no_leftovers();
    }
}

/// In the mount namespace the shim makes for the runtime, the runtime's binary is bound
/// read-only onto itself, so crun skips copying itself into a sealed memfd before every start
/// (its CVE-2019-5736 guard counts a read-only mount as safe). A wrapper named after the runtime
/// says whether it can write itself, then runs the real one. Unprivileged only: host root gets
/// that namespace only where crun needs the hybrid-cgroup fix (unit-tested in
/// `lifecycle::ops::create`).
#[test]
fn the_runtime_finds_its_binary_read_only() {
    use std::os::unix::fs::PermissionsExt;
    for ctx in matrix_with(&[Profile::User, Profile::UserNoSubids]) {
        if ctx.profile == Profile::UserNoSubids && ctx.rt == e2e::Rt::Runc {
            continue; // runc needs subordinate IDs (refused by oci-mkspec, tested elsewhere)
        }
        let rt = ctx.rt.name();
        let wrapper = ctx.write_file(
            &format!("{rt}-wrapper"),
            format!(
                "#!/bin/sh\nif [ -w \"$0\" ]; then w=writable; else w=read-only; fi\necho \"runtime binary: $w\" >&2\nexec {rt} \"$@\"\n"
            ),
        );
        std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
        let out = ctx
            .front_cmd(&["exec", &e2e::oci_ref("busybox"), "true"])
            .env("SINGULARITY_OCI_RUNTIME", wrapper.to_str().unwrap())
            .run();
        out.assert_code(0);
        if !out.stderr.contains("runtime binary: read-only")
            || out.stderr.contains("runtime binary: writable")
        {
            out.fail(&format!(
                "[{}] the runtime should find its binary read-only",
                ctx.name
            ));
        }
        ctx.assert_no_leftovers();
    }
}
