//! Instances end to end: `singularity-oci instance start/list/stop` and `exec|run|shell
//! instance://NAME`, with real conmon, crun and runc, as root and as the unprivileged test user.

use e2e::*;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

fn bb() -> String {
    oci_ref("busybox")
}

/// A name of this test and context: root's instances share one state root with every other
/// test that runs at the same time.
fn name(ctx: &Ctx, base: &str) -> String {
    format!("{base}-{}-{}", ctx.profile.name(), ctx.rt.name())
}

/// The instance's entry in `instance list --json`, checked against the schema.
fn listed(ctx: &Ctx, name: &str) -> Option<Value> {
    let out = ctx.front(&["instance", "list", "--json"]);
    out.assert_code(0);
    let rec = out.json();
    assert_record_valid("instances-record.schema.json", &rec);
    rec["instances"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["name"] == name)
        .cloned()
}

fn log_file(i: &Value, key: &str) -> PathBuf {
    PathBuf::from(i[key].as_str().unwrap())
}

/// `/proc/PID/stat` fields 6 (session) and 7 (controlling terminal).
fn session_and_tty(pid: i64) -> (i64, i64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    (f[3].parse().unwrap(), f[4].parse().unwrap())
}

fn alive(pid: i64) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// Wait (up to 10 s) until `f` holds.
fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let end = Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(Instant::now() < end, "timed out waiting: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The log files stay after `stop` (as SingularityCE's); the tests remove theirs.
fn remove_logs(i: &Value) {
    for k in ["logOutPath", "logErrPath"] {
        let _ = std::fs::remove_file(log_file(i, k));
    }
}

/// start returns once the container runs, detached from the front's session and terminal;
/// list shows it (JSON and text); exec/run/shell run in its namespaces and root filesystem
/// (what it wrote to /tmp is there), exit statuses pass through; its output is in the log
/// files; stop removes everything but the logs.
#[test]
fn instance_start_exec_list_stop() {
    for ctx in matrix() {
        let n = name(&ctx, "web");
        let inst = format!("instance://{n}");
        ctx.front(&[
            "instance",
            "start",
            &bb(),
            &n,
            "sh",
            "-c",
            "echo started; echo to-stderr >&2; echo from-start > /tmp/mark; exec sleep 600",
        ])
        .assert_code(0)
        .assert_stderr_contains("started successfully");
        let i = listed(&ctx, &n).unwrap_or_else(|| panic!("[{}] {n} not listed", ctx.name));
        assert_eq!(i["status"], "running", "[{}] {i}", ctx.name);
        assert_eq!(i["image"], bb().as_str());
        let (pid, conmon) = (i["pid"].as_i64().unwrap(), i["conmonPid"].as_i64().unwrap());
        assert!(alive(pid) && alive(conmon), "[{}] {i}", ctx.name);
        // Detached: conmon leads a session of its own, and nothing has a controlling terminal.
        let (sid, tty) = session_and_tty(conmon);
        assert_eq!(
            (sid, tty),
            (conmon, 0),
            "[{}] conmon's session and tty",
            ctx.name
        );
        assert_eq!(session_and_tty(pid).1, 0, "[{}] container tty", ctx.name);
        let text = ctx.front(&["instance", "list"]);
        text.assert_code(0);
        let row = text
            .lines()
            .into_iter()
            .find(|l| l.starts_with(&format!("{n} ")))
            .unwrap_or_else(|| panic!("[{}] no row for {n}:\n{}", ctx.name, text.stdout))
            .to_string();
        assert!(
            row.contains(&pid.to_string()) && row.contains("running"),
            "{row}"
        );
        assert!(row.contains(i["startTime"].as_str().unwrap()), "{row}");

        ctx.front(&["exec", &inst, "cat", "/tmp/mark"])
            .assert_code(0)
            .assert_stdout_eq("from-start");
        ctx.front(&["exec", &inst, "sh", "-c", "echo from-exec > /tmp/second"])
            .assert_code(0);
        ctx.front(&["exec", &inst, "cat", "/tmp/second"])
            .assert_stdout_eq("from-exec");
        ctx.front(&["exec", &inst, "sh", "-c", "exit 7"])
            .assert_code(7);
        // The same process namespace: the instance's sleep is there.
        ctx.front(&["exec", &inst, "ps"])
            .assert_code(0)
            .assert_stdout_contains("sleep 600");
        ctx.front(&[
            "exec",
            "--env",
            "FOO=bar",
            "--pwd",
            "/tmp",
            &inst,
            "sh",
            "-c",
            "echo $FOO $PWD",
        ])
        .assert_stdout_eq("bar /tmp");
        // The user's variables from the environment, --env winning for the same name.
        ctx.front_cmd(&["exec", "--env", "B=opt", &inst, "sh", "-c", "echo $A $B"])
            .env("SINGULARITYENV_A", "env-a")
            .env("SINGULARITYENV_B", "env-b")
            .run()
            .assert_stdout_eq("env-a opt");
        ctx.front(&["exec", &inst, "id", "-u"])
            .assert_stdout_eq(&ctx.uid().to_string());
        // run: the image's CMD replaced by the arguments; shell: a shell reading stdin.
        ctx.front(&["run", &inst, "echo", "via-run"])
            .assert_code(0)
            .assert_stdout_eq("via-run");
        ctx.front_cmd(&["shell", &inst])
            .stdin("cat /tmp/mark\nexit 3\n")
            .run()
            .assert_code(3)
            .assert_stdout_contains("from-start");
        // Options that would change how the container is made cannot apply to it.
        ctx.front(&["exec", "--bind", "/tmp:/mnt", &inst, "true"])
            .assert_fatal("--bind cannot be used with instance://");

        let out = std::fs::read_to_string(log_file(&i, "logOutPath")).unwrap();
        let err = std::fs::read_to_string(log_file(&i, "logErrPath")).unwrap();
        assert_eq!((out.as_str(), err.as_str()), ("started\n", "to-stderr\n"));
        let logs = log_file(&i, "logOutPath");
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
        let user = ctx.user().unwrap_or("root");
        assert_eq!(
            logs.parent().unwrap(),
            ctx.home()
                .join(".singularity/instances/logs")
                .join(host.trim())
                .join(user)
        );

        ctx.front(&["instance", "stop", &n])
            .assert_code(0)
            .assert_stderr_contains(&format!("Stopping {n} instance"));
        assert!(listed(&ctx, &n).is_none());
        eventually("the instance's processes end", || {
            !alive(pid) && !alive(conmon)
        });
        assert!(log_file(&i, "logOutPath").is_file(), "logs are kept");
        ctx.front(&["exec", &inst, "true"])
            .assert_fatal(&format!("no instance named '{n}'"));
        ctx.assert_no_leftovers();
        remove_logs(&i);
    }
}

/// A name in use, a missing instance, an instance whose process has ended, a bad name: one
/// FATAL line and 255 each. An OCI image's instance runs ENTRYPOINT with the arguments in place
/// of CMD, and ends with it; stop then removes what is left.
#[test]
fn instance_errors_and_an_ended_instance() {
    for ctx in matrix() {
        let n = name(&ctx, "ep");
        ctx.front(&["instance", "start", &oci_ref("entrypoint"), &n, "A", "B"])
            .assert_code(0);
        ctx.front(&["instance", "start", &bb(), &n, "sleep", "60"])
            .assert_fatal(&format!("an instance named '{n}' already exists"));
        let mut ended = Value::Null;
        eventually("the entrypoint ends", || {
            ended = listed(&ctx, &n).unwrap();
            ended["status"] == "exited"
        });
        assert_eq!(ended["exitStatus"], 0, "[{}] {ended}", ctx.name);
        assert_eq!(
            std::fs::read_to_string(log_file(&ended, "logOutPath")).unwrap(),
            "EP A B\n"
        );
        ctx.front(&["exec", &format!("instance://{n}"), "true"])
            .assert_fatal("has stopped (exit status 0)");
        ctx.front(&["instance", "stop", &n]).assert_code(0);
        ctx.front(&["instance", "stop", &n])
            .assert_fatal(&format!("no instance named '{n}'"));
        ctx.front(&["run", "instance://no-such-instance"])
            .assert_fatal("no instance named 'no-such-instance'");
        ctx.front(&["instance", "start", &bb(), "../bad", "true"])
            .assert_fatal("is not a valid instance name");
        ctx.front(&["instance", "start", &bb()])
            .assert_fatal("usage:");
        ctx.assert_no_leftovers();
        remove_logs(&ended);
    }
}

/// stop's signal, its timeout before SIGKILL, and --all (in a state root of the test's own,
/// so that root's --all cannot reach other tests' instances).
#[test]
fn instance_stop_signal_timeout_and_all() {
    for ctx in matrix() {
        let root = ctx.dir().join("state");
        let root_s = root.to_str().unwrap();
        let front = |args: &[&str]| {
            ctx.front_cmd(args)
                .env("SINGULARITY_OCI_STATE_ROOT", root_s)
                .run()
        };
        let (a, b) = (name(&ctx, "int"), name(&ctx, "stubborn"));
        front(&[
            "instance",
            "start",
            &bb(),
            &a,
            "sh",
            "-c",
            "trap 'echo got-int; exit 0' INT; while :; do sleep 0.1; done",
        ])
        .assert_code(0);
        front(&[
            "instance",
            "start",
            &bb(),
            &b,
            "sh",
            "-c",
            "trap '' TERM; while :; do sleep 0.1; done",
        ])
        .assert_code(0);
        let list = front(&["instance", "list", "--json", "int-*"]);
        let names: Vec<String> = list.json()["instances"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["name"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(
            names,
            std::slice::from_ref(&a),
            "[{}] the pattern",
            ctx.name
        );
        let all = front(&["instance", "list", "--json"]).json();
        // A pattern, as SingularityCE's stop takes.
        front(&["instance", "stop", "--signal", "INT", "int-*"]).assert_code(0);
        front(&["instance", "stop", "nomatch-*"]).assert_fatal("no instance matches 'nomatch-*'");
        let ia = all["instances"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["name"] == a.as_str())
            .unwrap()
            .clone();
        assert_eq!(
            std::fs::read_to_string(log_file(&ia, "logOutPath")).unwrap(),
            "got-int\n"
        );
        // TERM is ignored: KILL follows after the timeout.
        front(&["instance", "start", &bb(), &a, "sleep", "600"]).assert_code(0);
        let t = Instant::now();
        front(&["instance", "stop", "--all", "--timeout", "1"]).assert_code(0);
        let took = t.elapsed();
        assert!(
            took >= Duration::from_secs(1) && took < Duration::from_secs(8),
            "[{}] stop took {took:?}",
            ctx.name
        );
        let left = front(&["instance", "list", "--json"]).json();
        assert_eq!(left["instances"], serde_json::json!([]), "[{}]", ctx.name);
        assert_eq!(
            std::fs::read_dir(root.join("containers")).unwrap().count(),
            0,
            "[{}] state left",
            ctx.name
        );
        front(&["instance", "stop", "--signal", "NOPE", &a]).assert_fatal("NOPE");
        ctx.assert_no_leftovers();
        for i in all["instances"].as_array().unwrap() {
            remove_logs(i);
        }
    }
}

/// A native image's instance runs /.singularity.d/startscript with the arguments (after the
/// image's environment scripts) and stays up when it returns, as SingularityCE's does; run,
/// exec and test in it use the image's actions. A SIF without a startscript stays up too.
#[test]
fn sif_and_sandbox_instances_run_the_startscript() {
    for ctx in matrix() {
        let sb = crate::sandbox::build_sandbox(&ctx, "sb");
        ctx.write_file(
            "sb/.singularity.d/startscript",
            "#!/bin/sh\necho \"startscript:$SIF_ORDER:$*\"\necho up > /tmp/started\n",
        );
        ctx.run(
            "chmod",
            &[
                "0755",
                sb.join(".singularity.d/startscript").to_str().unwrap(),
            ],
        )
        .assert_code(0);
        let n = name(&ctx, "sb");
        let inst = format!("instance://{n}");
        ctx.front(&["instance", "start", sb.to_str().unwrap(), &n, "a", "b c"])
            .assert_code(0);
        let i = listed(&ctx, &n).unwrap();
        eventually("the startscript ran", || {
            std::fs::read_to_string(log_file(&i, "logOutPath"))
                .is_ok_and(|s| s == "startscript:base:env:a b c\n")
        });
        // Still up after its startscript has returned.
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(listed(&ctx, &n).unwrap()["status"], "running");
        ctx.front(&["exec", &inst, "cat", "/tmp/started"])
            .assert_stdout_eq("up");
        ctx.front(&["run", &inst, "x", "y"])
            .assert_code(0)
            .assert_stdout_eq("runscript:base:env:x y");
        ctx.front(&["exec", &inst, "sh", "-c", "echo $SIF_GREETING"])
            .assert_stdout_eq("hello from the sif");
        ctx.front(&["test", &inst])
            .assert_code(7)
            .assert_stdout_eq("test:hello from the sif");

        let s = name(&ctx, "sif");
        let sif = sif_fixture("busybox");
        ctx.front(&["instance", "start", sif.to_str().unwrap(), &s])
            .assert_code(0);
        std::thread::sleep(Duration::from_millis(300));
        let si = listed(&ctx, &s).unwrap();
        assert_eq!(si["status"], "running", "[{}] {si}", ctx.name);
        ctx.front(&[
            "exec",
            &format!("instance://{s}"),
            "sh",
            "-c",
            "echo $SIF_ORDER",
        ])
        .assert_stdout_eq("base:env");
        ctx.front(&["instance", "stop", &n, &s]).assert_code(0);
        assert!(listed(&ctx, &n).is_none() && listed(&ctx, &s).is_none());
        ctx.assert_no_leftovers();
        remove_logs(&i);
        remove_logs(&si);
    }
}

/// `instance start --app NAME` of a native image runs the SCIF app's startscript, with the
/// app's environment, and stays up; `instance start --fakeroot` of a native SIF runs as root of
/// its user namespace, and so does what runs in it.
#[test]
fn native_instances_of_an_app_and_with_fakeroot() {
    for ctx in matrix() {
        let sb = crate::sandbox::build_sandbox(&ctx, "sb");
        ctx.run(
            "sh",
            &[
                "-c",
                "a=sb/scif/apps/hello && mkdir -p $a/scif/env && \
                 printf '#!/bin/sh\\necho \"appstart:$APPVAR:$SINGULARITY_APPNAME:$*\"\\n' > $a/scif/startscript && \
                 printf 'export APPVAR=appenv\\n' > $a/scif/env/90-environment.sh && chmod 755 $a/scif/startscript",
            ],
        )
        .assert_code(0);
        let n = name(&ctx, "app");
        ctx.front(&[
            "instance",
            "start",
            "--app",
            "hello",
            sb.to_str().unwrap(),
            &n,
            "x",
        ])
        .assert_code(0);
        let i = listed(&ctx, &n).unwrap();
        eventually("the app's startscript ran", || {
            std::fs::read_to_string(log_file(&i, "logOutPath"))
                .is_ok_and(|s| s == "appstart:appenv:hello:x\n")
        });
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(listed(&ctx, &n).unwrap()["status"], "running");
        ctx.front(&["instance", "stop", &n]).assert_code(0);
        remove_logs(&i);

        let f = name(&ctx, "fakeroot");
        let sif = sif_fixture("busybox");
        ctx.front(&["instance", "start", "--fakeroot", sif.to_str().unwrap(), &f])
            .assert_code(0);
        let fi = listed(&ctx, &f).unwrap();
        ctx.front(&[
            "exec",
            &format!("instance://{f}"),
            "sh",
            "-c",
            "echo $(id -u):$SIF_ORDER",
        ])
        .assert_code(0)
        .assert_stdout_eq("0:base:env");
        ctx.front(&["instance", "stop", &f]).assert_code(0);
        assert!(listed(&ctx, &n).is_none() && listed(&ctx, &f).is_none());
        ctx.assert_no_leftovers();
        remove_logs(&fi);
    }
}

/// Another user sees none of an instance, cannot stop it and cannot run in it.
#[test]
fn instances_are_invisible_to_other_users() {
    for ctx in matrix() {
        let n = name(&ctx, "private");
        ctx.front(&["instance", "start", &bb(), &n, "sleep", "600"])
            .assert_code(0);
        let i = listed(&ctx, &n).unwrap();
        let other = ctx.attacker();
        let theirs = other.front(&["instance", "list", "--json"]);
        theirs.assert_code(0);
        assert!(
            !theirs.stdout.contains(&n),
            "[{}] another user lists it: {}",
            ctx.name,
            theirs.stdout
        );
        other
            .front(&["instance", "stop", &n])
            .assert_fatal(&format!("no instance named '{n}'"));
        other
            .front(&["exec", &format!("instance://{n}"), "true"])
            .assert_fatal(&format!("no instance named '{n}'"));
        assert_eq!(listed(&ctx, &n).unwrap()["status"], "running");
        ctx.front(&["instance", "stop", &n]).assert_code(0);
        ctx.assert_no_leftovers();
        other.assert_no_leftovers();
        remove_logs(&i);
    }
}

/// Started from an interactive terminal whose session then ends (its leader killed, the
/// terminal hung up), the instance runs on.
#[test]
fn instance_outlives_its_terminal() {
    for ctx in matrix() {
        let n = name(&ctx, "tty");
        let front = ctx.bin("singularity-oci");
        let script = format!("{front} instance start {} {n} sleep 600 && sleep 600", bb());
        let mut t = e2e::pty::Pty::spawn(&ctx, "/bin/sh", &["-c", &script]);
        t.expect("started successfully");
        drop(t);
        std::thread::sleep(Duration::from_millis(300));
        let i = listed(&ctx, &n).unwrap_or_else(|| panic!("[{}] {n} gone", ctx.name));
        assert_eq!(i["status"], "running", "[{}] {i}", ctx.name);
        ctx.front(&["exec", &format!("instance://{n}"), "true"])
            .assert_code(0);
        ctx.front(&["instance", "stop", &n]).assert_code(0);
        ctx.assert_no_leftovers();
        remove_logs(&i);
    }
}

/// `shell instance://NAME` on a terminal: the shell gets one (SingularityCE's prompt), sees the
/// instance's files, and its exit status is the front's.
#[test]
fn instance_shell_on_a_terminal() {
    for ctx in matrix() {
        let n = name(&ctx, "sh");
        ctx.front(&[
            "instance",
            "start",
            &bb(),
            &n,
            "sh",
            "-c",
            "echo tty-mark > /tmp/mark; exec sleep 600",
        ])
        .assert_code(0);
        let i = listed(&ctx, &n).unwrap();
        let front = ctx.bin("singularity-oci");
        let inst = format!("instance://{n}");
        let mut t = e2e::pty::Pty::spawn(&ctx, &front, &["shell", &inst]);
        t.expect("Singularity>");
        t.send("test -t 0 && cat /tmp/mark\r");
        t.expect("tty-mark");
        t.send("exit 5\r");
        assert_eq!(t.wait(), 5, "[{}] {}", ctx.name, t.transcript());
        ctx.front(&["instance", "stop", &n]).assert_code(0);
        ctx.assert_no_leftovers();
        remove_logs(&i);
    }
}
