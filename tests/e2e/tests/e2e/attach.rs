//! oci-attach end to end, driven through a pseudo-terminal the test opens: the `attach` and
//! `run` sequences of SingularityCE's `singularity oci` suite (`e2e/oci/oci.go`), detach and
//! re-attach, resizes, exit statuses.

use crate::conmon_support as support;

use e2e::matrix;
use e2e::pty::Pty;
use std::time::Duration;
use support::*;

/// SingularityCE's `attach` sequence: create -> start -> attach (type `hostname`, read it back, type `exit`) -> exit
/// 0, state `stopped` -> delete. Plus a resize seen by `stty size`, detach with the keys split
/// and joined, re-attach, and the exit status passed through.
#[test]
fn attach_sequence_detach_reattach_resize() {
    for ctx in matrix() {
        let b = make_bundle(&ctx, "b", &["sh"], true);
        let rec = create_ok(&ctx, &b, "a1", &[]);
        assert_eq!(rec["terminal"], true);
        assert_eq!(status(&ctx, &rec), "created");
        shim(&ctx, &["start", "a1"]).assert_success();
        assert_eq!(status(&ctx, &rec), "running");

        let attach = ctx.bin("oci-attach");
        let mut t = Pty::spawn(&ctx, &attach, &["a1"]);
        t.send("hostname\r");
        t.expect(&format!("{HOSTNAME}\r\n"));
        // Our initial size reached the container's terminal...
        t.send("stty size\r");
        t.expect("24 80\r\n");
        // ...and so does a resize (SIGWINCH -> conmon's ctl FIFO).
        t.resize_and_expect_size(50, 120, "stty size\r");
        // Detach keys in the same read as other input: the text before them is delivered.
        t.send("echo before-detach\r\x10\x11");
        assert_eq!(t.wait(), 0, "[{}] detach:\n{}", ctx.name, t.transcript());
        assert!(
            t.transcript().contains("detached from container a1"),
            "[{}] {}",
            ctx.name,
            t.transcript()
        );
        assert_eq!(status(&ctx, &rec), "running");

        // Re-attach: the shell is still there and saw the line typed before the detach.
        let mut t = Pty::spawn(&ctx, &attach, &["a1"]);
        t.send("echo reattached-$((6*7))\r");
        t.expect("reattached-42");
        // Detach keys split across two writes, then a custom sequence.
        t.send("\x10");
        std::thread::sleep(Duration::from_millis(100));
        t.send("\x11");
        assert_eq!(t.wait(), 0);
        let mut t = Pty::spawn(&ctx, &attach, &["--detach-keys", "ctrl-a,x", "a1"]);
        t.send("echo custom-keys\r");
        t.expect("custom-keys\r\n");
        t.send("\x01x");
        assert_eq!(t.wait(), 0);

        // The container's exit status passes through a last attach.
        let mut t = Pty::spawn(&ctx, &attach, &["a1"]);
        t.send("echo last-attach\r");
        t.expect("last-attach\r\n");
        t.send("exit 0\r");
        assert_eq!(t.wait(), 0, "[{}]\n{}", ctx.name, t.transcript());
        wait_status(&ctx, &rec, "stopped");
        let sd = path_of(&rec, "stateDir");
        assert_eq!(wait_exit_file(&sd), "0");

        // Everything shown was logged, in k8s-file format.
        let log = std::fs::read_to_string(path_of(&rec, "logPath")).unwrap();
        for needle in [HOSTNAME, "before-detach", "reattached-42", "50 120"] {
            assert!(
                log.contains(needle),
                "[{}] {needle} not in the log:\n{log}",
                ctx.name
            );
        }
        assert!(log.lines().all(|l| l.contains(" stdout ")), "{log}");

        // Attaching to a container that has exited says so.
        ctx.run(&attach, &["a1"])
            .assert_fatal("has exited (status 0)");
        delete_clean(&ctx, "a1", &b, &sd);
        ctx.run(&attach, &["a1"]).assert_fatal("no container 'a1'");
        ctx.assert_no_leftovers();
    }
}

/// SingularityCE's `run` sequence: attached from the start (attach before `start`), `hostname`, `id -un` -> root,
/// `exit 7` -> the attach exits 7.
#[test]
fn attach_run_sequence_exit_status() {
    for ctx in matrix() {
        let b = make_bundle(&ctx, "b", &["sh"], true);
        let rec = create_ok(&ctx, &b, "r1", &[]);
        let attach = ctx.bin("oci-attach");
        let mut t = Pty::spawn(&ctx, &attach, &["r1"]);
        // Give the attach time to connect before the shell prints its first prompt.
        std::thread::sleep(Duration::from_millis(300));
        shim(&ctx, &["start", "r1"]).assert_success();
        t.expect("# ");
        t.send("hostname; id -un\r");
        t.expect(&format!("{HOSTNAME}\r\nroot\r\n"));
        t.send("exit 7\r");
        assert_eq!(t.wait(), 7, "[{}]\n{}", ctx.name, t.transcript());
        assert_eq!(wait_exit_file(&path_of(&rec, "stateDir")), "7");
        delete_clean(&ctx, "r1", &b, &path_of(&rec, "stateDir"));
        ctx.assert_no_leftovers();
    }
}

/// Without a terminal: stdout and stderr stay separate streams, stdin reaches the container
/// and its end closes the container's stdin.
#[test]
fn attach_pipes_demultiplexed() {
    for ctx in matrix() {
        let b = make_bundle(
            &ctx,
            "b",
            &[
                "sh",
                "-c",
                "read line; echo got:$line; echo to-stderr >&2; exit 5",
            ],
            false,
        );
        let rec = create_ok(&ctx, &b, "p1", &[]);
        shim(&ctx, &["start", "p1"]).assert_success();
        let out = ctx
            .cmd(ctx.bin("oci-attach"))
            .arg("p1")
            .stdin("hello-stdin\n")
            .timeout(Duration::from_secs(60))
            .run();
        out.assert_code(5);
        assert_eq!(out.stdout, "got:hello-stdin\n", "{}", out.stderr);
        assert_eq!(out.stderr, "to-stderr\n");
        delete_clean(&ctx, "p1", &b, &path_of(&rec, "stateDir"));
        ctx.assert_no_leftovers();
    }
}
