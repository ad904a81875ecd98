//! Interactive use through a real pseudo-terminal: the container's window size and resizes,
//! redirected streams that stay byte-exact, Ctrl-C and SIGTERM through the init, and the
//! terminal's settings restored afterwards. Root and the unprivileged test user, crun and runc.

use e2e::pty::Pty;
use e2e::{Ctx, matrix, oci_ref};
use std::time::Duration;

fn front(ctx: &Ctx) -> String {
    ctx.bin("singularity-oci")
}

/// The front under `sh -c SCRIPT` on the test's terminal ("$F" is the front, "$I" the image),
/// so a script can redirect some of the front's streams and leave the others on the terminal.
fn on_terminal(ctx: &Ctx, script: &str) -> Pty {
    let f = front(ctx);
    let img = oci_ref("busybox");
    Pty::spawn_env(
        ctx,
        "/bin/sh",
        &["-c", script],
        &[("F", f.as_str()), ("I", img.as_str())],
    )
}

/// `stty size` sees the caller's 24x80 at the start, and every resize while the container runs;
/// the caller's terminal settings are back afterwards (raw mode undone).
#[test]
fn window_size_at_start_and_after_resizes() {
    for ctx in matrix() {
        let mut t = on_terminal(
            &ctx,
            r#"stty -g >before; "$F" exec "$I" sh -c 'stty size; read x; stty size; read x; stty size'; rc=$?; stty -g >after; echo "status=$rc"; cmp before after && echo settings-restored"#,
        );
        t.expect("24 80\r\n");
        t.resize_and_expect_size(50, 120, "\r");
        t.resize_and_expect_size(30, 100, "\r");
        t.expect("status=0");
        t.expect("settings-restored");
        assert_eq!(t.wait(), 0, "[{}]\n{}", ctx.name, t.transcript());
        ctx.assert_no_leftovers();
    }
}

/// A resize delivers SIGWINCH inside the container (full-screen programs redraw on it).
#[test]
fn resize_sends_sigwinch_to_the_container() {
    for ctx in matrix() {
        let mut t = on_terminal(
            &ctx,
            r#""$F" exec "$I" sh -c 'trap "echo got-winch; stty size; exit 0" WINCH; echo ready; sleep 30 & wait'"#,
        );
        t.expect("ready");
        std::thread::sleep(Duration::from_millis(200));
        t.resize(40, 90);
        t.expect("got-winch");
        t.expect("40 90");
        assert_eq!(t.wait(), 0, "[{}]\n{}", ctx.name, t.transcript());
        ctx.assert_no_leftovers();
    }
}

/// Interactive typing reaches the container's terminal and its echo comes back; the exit
/// status passes through.
#[test]
fn shell_on_a_terminal_and_exit_status() {
    for ctx in matrix() {
        let f = front(&ctx);
        let img = oci_ref("busybox");
        let mut t = Pty::spawn(&ctx, &f, &["shell", &img]);
        t.send("tty; echo typed-$((6*7))\r");
        t.expect("/dev/pts/");
        t.expect("typed-42");
        t.send("exit 3\r");
        assert_eq!(t.wait(), 3, "[{}]\n{}", ctx.name, t.transcript());
        ctx.assert_no_leftovers();
    }
}

/// stdin a terminal, stdout and stderr redirected: no terminal for the container, so `o` and
/// `e` get exactly what was written, with no carriage return, NUL or mixing.
#[test]
fn redirected_streams_stay_separate_and_byte_exact() {
    for ctx in matrix() {
        let mut t = on_terminal(
            &ctx,
            r#""$F" exec "$I" sh -c 'echo out; echo err >&2; [ -t 1 ] || echo stdout-not-tty' >o 2>e; echo "status=$?"; od -c o | head -3; echo ===; cat e; echo done"#,
        );
        t.expect("status=0");
        assert_eq!(t.wait(), 0, "[{}]\n{}", ctx.name, t.transcript());
        let o = std::fs::read(ctx.dir().join("o")).unwrap();
        let e = std::fs::read(ctx.dir().join("e")).unwrap();
        assert_eq!(
            String::from_utf8_lossy(&o),
            "out\nstdout-not-tty\n",
            "[{}]",
            ctx.name
        );
        assert_eq!(String::from_utf8_lossy(&e), "err\n", "[{}]", ctx.name);
        // --terminal forces one even so (its output then comes through the terminal relay).
        let out = ctx
            .front_cmd(&[
                "exec",
                "--terminal",
                &oci_ref("busybox"),
                "sh",
                "-c",
                "[ -t 1 ] && echo has-tty",
            ])
            .run();
        out.assert_code(0);
        assert_eq!(out.stdout, "has-tty\r\n", "[{}]", ctx.name);
        ctx.assert_no_leftovers();
    }
}

/// Ctrl-C at the terminal stops a plain `sleep` (PID 1 would ignore it without the init) with
/// status 130.
#[test]
fn ctrl_c_stops_a_plain_command() {
    for ctx in matrix() {
        let f = front(&ctx);
        let img = oci_ref("busybox");
        let mut t = Pty::spawn(
            &ctx,
            &f,
            &["exec", &img, "sh", "-c", "echo started; exec sleep 1000"],
        );
        t.expect("started");
        std::thread::sleep(Duration::from_millis(200));
        t.send("\x03");
        assert_eq!(
            t.wait_within(Duration::from_secs(20)),
            130,
            "[{}]\n{}",
            ctx.name,
            t.transcript()
        );
        ctx.assert_no_leftovers();
    }
}

/// SIGTERM and SIGINT to the front stop a plain command without a terminal: 143 and 130. The
/// init is PID 1 and reaps orphans; with --no-init the command is PID 1 itself. (A shell starts
/// `cmd &` with SIGINT ignored, which no program can undo for itself: `env --default-signal`
/// gives the front a SIGINT it can act on, as an interactive shell's job would have.)
#[test]
fn sigterm_and_sigint_to_the_front() {
    for ctx in matrix() {
        for (sig, code) in [("TERM", 143), ("INT", 130)] {
            let out = ctx
                .cmd("/bin/sh")
                .args(&[
                    "-c",
                    &format!(
                        r#"env --default-signal=INT "$0" exec "$1" sh -c 'echo started; exec sleep 1000' >out & p=$!; until grep -q started out 2>/dev/null; do sleep 0.1; done; kill -{sig} $p; wait $p"#
                    ),
                    &front(&ctx),
                    &oci_ref("busybox"),
                ])
                .cwd(ctx.dir())
                .timeout(Duration::from_secs(30))
                .run();
            out.assert_code(code);
        }
        ctx.front(&[
            "exec",
            &oci_ref("busybox"),
            "sh",
            "-c",
            "echo $$; cat /proc/1/cmdline | tr '\\0' ' '",
        ])
        .assert_code(0)
        .assert_stdout_contains("init -- sh -c");
        let out = ctx.front(&[
            "exec",
            "--no-init",
            &oci_ref("busybox"),
            "sh",
            "-c",
            "echo $$",
        ]);
        out.assert_code(0).assert_stdout_eq("1");
        // Zombies are reaped: an orphan that exits is gone.
        ctx.front(&[
            "exec",
            &oci_ref("busybox"),
            "sh",
            "-c",
            "(sleep 0.2 &) ; sleep 1; ps -o stat | grep -c Z || true",
        ])
        .assert_code(0)
        .assert_stdout_eq("0");
        ctx.assert_no_leftovers();
    }
}

/// The runtime fails before the container's process starts (a bind onto a file): a launcher
/// failure, exit 255 with one FATAL line in the runtime's own words, with and without a
/// terminal; the container's own status 1 still passes through as 1.
#[test]
fn runtime_failure_before_start_is_a_launcher_failure() {
    for ctx in matrix() {
        let file = ctx.write_file("not-a-dir", "x");
        let bind = format!("{}:/tmp", file.display());
        let img = oci_ref("busybox");
        let out = ctx.front(&["exec", "--bind", &bind, &img, "true"]);
        out.assert_code(255);
        let fatal: Vec<&str> = out.stderr.lines().filter(|l| l.contains("FATAL")).collect();
        assert_eq!(fatal.len(), 1, "[{}] stderr:\n{}", ctx.name, out.stderr);
        assert!(
            fatal[0].starts_with("FATAL: ") && fatal[0].to_lowercase().contains("not a directory"),
            "[{}] stderr:\n{}",
            ctx.name,
            out.stderr
        );
        assert!(
            out.stderr.trim_end().ends_with(fatal[0]),
            "[{}] the FATAL line comes last:\n{}",
            ctx.name,
            out.stderr
        );
        ctx.front(&["exec", &img, "sh", "-c", "exit 1"])
            .assert_code(1);
        ctx.front(&["exec", "--no-init", &img, "sh", "-c", "exit 1"])
            .assert_code(1);

        let f = front(&ctx);
        let mut t = Pty::spawn(&ctx, &f, &["exec", "--bind", &bind, &img, "true"]);
        assert_eq!(t.wait(), 255, "[{}]\n{}", ctx.name, t.transcript());
        let text = t.transcript();
        let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(lines.len(), 1, "[{}]\n{text}", ctx.name);
        assert!(
            lines[0].starts_with("FATAL: ") && lines[0].to_lowercase().contains("not a directory"),
            "[{}]\n{text}",
            ctx.name
        );
        ctx.assert_no_leftovers();
    }
}

/// A cold unpack on a terminal draws one bar per layer (bytes of its compressed blob) and a
/// total; the same for a native SIF's partition; with --quiet, or with stderr not a terminal,
/// nothing is drawn.
#[test]
fn cold_unpack_progress_on_a_terminal_only() {
    for ctx in matrix() {
        let sif = e2e::sif_fixture("busybox").display().to_string();
        for (n, (image, bar)) in [(oci_ref("layered"), "layer 1/"), (sif, "partition 1/1")]
            .into_iter()
            .enumerate()
        {
            let cold = |tag: &str| ctx.mkdir(&format!("cache-{n}-{tag}")).display().to_string();
            let f = front(&ctx);
            let (c1, c2, c3) = (cold("tty"), cold("quiet"), cold("redirected"));
            let mut t = Pty::spawn_env(
                &ctx,
                "/bin/sh",
                &[
                    "-c",
                    r#"SINGULARITY_CACHEDIR="$C1" "$F" pull "$I" >/dev/null && echo first-done;
                       SINGULARITY_CACHEDIR="$C2" "$F" --quiet pull "$I" >/dev/null && echo second-done;
                       SINGULARITY_CACHEDIR="$C3" "$F" pull "$I" >/dev/null 2>err && echo third-done; cat err; echo end"#,
                ],
                &[
                    ("F", f.as_str()),
                    ("I", image.as_str()),
                    ("C1", c1.as_str()),
                    ("C2", c2.as_str()),
                    ("C3", c3.as_str()),
                ],
            );
            let first = t.expect("first-done");
            assert!(
                first.contains(bar) && first.contains("total") && first.contains(" done"),
                "[{}] {image}: no progress on the terminal:\n{first}",
                ctx.name
            );
            let second = t.expect("second-done");
            let rest = t.expect("end");
            assert_eq!(t.wait(), 0, "[{}]\n{}", ctx.name, t.transcript());
            for quiet in [&second, &rest] {
                assert!(
                    !quiet.contains(bar) && !quiet.contains("total"),
                    "[{}] {image}: progress with --quiet or a redirected stderr:\n{quiet}",
                    ctx.name
                );
            }
        }
        ctx.assert_no_leftovers();
    }
}
