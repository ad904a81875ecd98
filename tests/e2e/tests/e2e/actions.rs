//! The OCI cases of SingularityCE's e2e suite (`e2e/actions/oci.go` and the OCI cases of its
//! security, env, docker and config suites), ported to
//! `singularity-oci exec|run|shell`, for root, unprivileged and unprivileged --fakeroot, each with
//! crun and runc. Row names follow Singularity's test names.

use e2e::pty::Pty;
use e2e::*;

const THREE: [Profile; 3] = [Profile::Root, Profile::User, Profile::Fakeroot];

fn bb() -> String {
    oci_ref("busybox")
}

/// The home directory the container user gets.
fn container_home(ctx: &Ctx) -> String {
    match ctx.profile {
        Profile::Fakeroot => "/root".into(),
        _ => ctx.home().display().to_string(),
    }
}

fn exec(ctx: &Ctx, opts: &[&str], cmd: &[&str]) -> Output {
    ctx.front_exec(opts, &bb(), cmd)
}

// ---------------------------------------------------------------------------------------------
// ociExec

#[test]
fn oci_exec_true_false() {
    for ctx in matrix_with(&THREE) {
        for (cmd, code) in [
            ("true", 0),
            ("/bin/true", 0),
            ("false", 1),
            ("/bin/false", 1),
        ] {
            exec(&ctx, &[], &[cmd]).assert_code(code);
        }
        ctx.assert_no_leftovers();
    }
}

#[test]
fn oci_exec_no_command_is_an_error() {
    for ctx in matrix_with(&THREE) {
        ctx.front(&["exec", &bb()])
            .assert_fatal("exec needs a command");
        ctx.assert_no_leftovers();
    }
}

#[test]
fn oci_exec_writable_tmp_and_home() {
    for ctx in matrix_with(&THREE) {
        exec(&ctx, &[], &["touch", "/tmp/test"]).assert_success();
        exec(&ctx, &[], &["touch", "/var/tmp/test"]).assert_success();
        exec(&ctx, &[], &["sh", "-c", "touch $HOME && touch $HOME/file"]).assert_success();
        ctx.assert_no_leftovers();
    }
}

#[test]
fn oci_exec_home_options() {
    for ctx in matrix_with(&THREE) {
        exec(&ctx, &["--home", "/myhomeloc"], &["sh", "-c", "env; mount"])
            .assert_success()
            .assert_stdout_contains("HOME=/myhomeloc")
            .assert_stdout_contains("tmpfs on /myhomeloc");
        let hostdir = ctx.mkdir("myhome");
        ctx.write_file("myhome/canary", "x");
        let spec = format!("{}:/home", hostdir.display());
        exec(&ctx, &["--home", &spec], &["test", "-f", "/home/canary"]).assert_success();
        exec(&ctx, &["--home", "/tmp"], &["true"]).assert_success();
        exec(&ctx, &["--home", "/tmp:/home"], &["true"]).assert_success();
        exec(&ctx, &["--home", "/a:/b:/c"], &["true"]).assert_fatal("incorrect number of elements");
        let home = container_home(&ctx);
        exec(
            &ctx,
            &["--no-home"],
            &["grep", &format!(" {home} "), "/proc/self/mountinfo"],
        )
        .assert_code(1);
        ctx.assert_no_leftovers();
    }
}

#[test]
fn oci_exec_uts_hostname() {
    for ctx in matrix_with(&THREE) {
        exec(&ctx, &["--uts"], &["true"]).assert_success();
        exec(&ctx, &["--hostname", "whats-in-an-oci-name"], &["hostname"])
            .assert_success()
            .assert_stdout_eq("whats-in-an-oci-name");
        ctx.assert_no_leftovers();
    }
}

#[test]
fn oci_exec_workdir() {
    for ctx in matrix_with(&THREE) {
        let w = ctx.mkdir("workdir");
        ctx.mkdir("workdir/tmp");
        ctx.write_file("workdir/tmp/canary", "x");
        let ws = w.display().to_string();
        exec(&ctx, &["--workdir", &ws], &["test", "-f", "/tmp/canary"]).assert_success();
        // The scratch directory is made inside the workdir on the host.
        exec(
            &ctx,
            &["--workdir", &ws, "--scratch", "/myscratch"],
            &["touch", "/myscratch/f"],
        )
        .assert_success();
        assert!(
            w.join("scratch/myscratch/f").is_file(),
            "[{}] scratch file not in the workdir",
            ctx.name
        );
        ctx.assert_no_leftovers();
    }
}

#[test]
fn oci_exec_pwd_cwd() {
    for ctx in matrix_with(&THREE) {
        for flag in ["--pwd", "--cwd"] {
            exec(&ctx, &[flag, "/etc"], &["pwd"])
                .assert_success()
                .assert_stdout_eq("/etc");
        }
        ctx.assert_no_leftovers();
    }
}

/// `--dns`: Singularity's row runs nslookup against the internet; this machine has no network,
/// so the generated resolv.conf is checked instead.
#[test]
fn oci_exec_dns() {
    for ctx in matrix_with(&THREE) {
        exec(
            &ctx,
            &["--dns", "8.8.8.8,8.8.4.4"],
            &["cat", "/etc/resolv.conf"],
        )
        .assert_success()
        .assert_stdout_eq("nameserver 8.8.8.8\nnameserver 8.8.4.4");
        exec(&ctx, &["--dns", "1.1.1.1"], &["cat", "/etc/resolv.conf"])
            .assert_stdout_eq("nameserver 1.1.1.1");
        exec(&ctx, &["--dns", "1.1.1"], &["true"]).assert_fatal("not a valid IP address");
        ctx.assert_no_leftovers();
    }
}

#[test]
fn oci_exec_passwd_keeps_container_root_shell() {
    for ctx in matrix_with(&THREE) {
        let out = exec(&ctx, &["--home", "/tmp"], &["cat", "/etc/passwd"]);
        out.assert_success();
        let root = out
            .lines()
            .into_iter()
            .find(|l| l.starts_with("root:x:0:0:"))
            .map(str::to_string);
        match root {
            Some(l) if l.ends_with(":/bin/sh") => {}
            _ => out.fail("expected a root:x:0:0: line with the container's shell /bin/sh"),
        }
        ctx.assert_no_leftovers();
    }
}

#[test]
fn oci_exec_containlibs() {
    for ctx in matrix_with(&THREE) {
        exec(
            &ctx,
            // The `=` form is one word, whatever value options the front knows.
            &["--containlibs=/etc/hosts"],
            &["ls", "/.singularity.d/libs"],
        )
        .assert_success()
        .assert_stdout_eq("hosts");
        ctx.assert_no_leftovers();
    }
}

#[test]
fn oci_exec_pid_namespace() {
    for ctx in matrix_with(&THREE) {
        // A minimal init is PID 1 by default (SingularityCE's e2e pins the command itself as
        // PID 1, which then ignores Ctrl-C and SIGTERM); --no-init gives that back.
        exec(
            &ctx,
            &[],
            &["sh", "-c", "[ $$ != 1 ] && head -c 22 /proc/1/cmdline"],
        )
        .assert_stdout_eq("/.singularity-oci-init");
        exec(&ctx, &["--no-init"], &["sh", "-c", "echo $$"]).assert_stdout_eq("1");
        let out = exec(&ctx, &["--no-pid"], &["sh", "-c", "echo $$"]);
        out.assert_success();
        if out.stdout.trim() == "1" {
            out.fail("--no-pid: the shell is still PID 1");
        }
        ctx.assert_no_leftovers();
    }
}

#[test]
fn oci_network_none_and_bridge() {
    for ctx in matrix_with(&THREE) {
        exec(&ctx, &["--net", "--network", "none"], &["true"]).assert_success();
        exec(&ctx, &["--net", "--network", "bridge"], &["id"])
            .assert_fatal("Network (except none)");
        ctx.assert_no_leftovers();
    }
}

#[test]
fn oci_unsupported_options_one_error() {
    for ctx in matrix_with(&THREE) {
        // --no-init is supported here (it turns the init off), unlike in SingularityCE.
        exec(&ctx, &["--boot", "--no-init", "--security", "x"], &["true"])
            .assert_fatal("not supported by OCI launcher: SecurityOpts,Boot");
        ctx.assert_no_leftovers();
    }
}

// ---------------------------------------------------------------------------------------------
// ociRun, ociShell (under a terminal)

fn front_argv<'a>(ctx: &Ctx, a: &[&'a str]) -> Vec<&'a str> {
    let mut v = a.to_vec();
    if ctx.profile == Profile::Fakeroot {
        v.insert(1, "--fakeroot");
    }
    v
}

#[test]
fn oci_run() {
    for ctx in matrix_with(&THREE) {
        let image = bb();
        let front = ctx.bin("singularity-oci");
        let mut t = Pty::spawn(&ctx, &front, &front_argv(&ctx, &["run", &image]));
        t.send("echo in-$((6*7))\r");
        t.expect("in-42");
        t.send("exit\r");
        assert_eq!(t.wait(), 0, "[{}] {}", ctx.name, t.transcript());
        ctx.front(&["run", &image, "true"]).assert_code(0);
        ctx.front(&["run", &image, "false"]).assert_code(1);
        ctx.front(&["run", &oci_ref("entrypoint")])
            .assert_stdout_eq("EP CMD");
        ctx.front(&["run", &oci_ref("entrypoint"), "A"])
            .assert_stdout_eq("EP A");
        ctx.front(&["exec", &oci_ref("entrypoint"), "echo", "P"])
            .assert_stdout_eq("P");
        ctx.assert_no_leftovers();
    }
}

#[test]
fn oci_shell() {
    for ctx in matrix_with(&THREE) {
        let image = bb();
        let front = ctx.bin("singularity-oci");
        let mut t = Pty::spawn(&ctx, &front, &front_argv(&ctx, &["shell", &image]));
        t.expect("Singularity>");
        t.send("cd /\r");
        t.send("exit\r");
        assert_eq!(t.wait(), 0, "[{}] {}", ctx.name, t.transcript());
        let mut t = Pty::spawn(&ctx, &front, &front_argv(&ctx, &["shell", &image]));
        t.expect("Singularity>");
        t.send("_a_fake_command\r");
        t.send("exit\r");
        assert_eq!(t.wait(), 127, "[{}] {}", ctx.name, t.transcript());
        ctx.assert_no_leftovers();
    }
}

// ---------------------------------------------------------------------------------------------
// ociSTDPIPE (Singularity: OCIUser only; here all three)

#[test]
fn oci_stdpipe() {
    for ctx in matrix_with(&THREE) {
        let image = bb();
        ctx.front_cmd(&["exec", &image, "grep", "hi"])
            .stdin("hi\n")
            .run()
            .assert_code(0);
        ctx.front_cmd(&["exec", &image, "grep", "hi"])
            .stdin("bye\n")
            .run()
            .assert_code(1);
        let want = match ctx.profile {
            Profile::Fakeroot | Profile::Root => "root".to_string(),
            _ => ctx.user().unwrap().to_string(),
        };
        exec(&ctx, &[], &["id", "-un"]).assert_stdout_eq(&want);
        ctx.assert_no_leftovers();
    }
}

// ---------------------------------------------------------------------------------------------
// ociNo-mount

#[test]
fn oci_no_mount() {
    for ctx in matrix_with(&THREE) {
        // Without /proc, crun starts the container and busybox mount fails (its own 1); runc's
        // init needs /proc/self/fd itself, so runc fails before the container starts: a
        // launcher failure.
        let out = exec(&ctx, &["--no-mount", "proc"], &["mount"]);
        match ctx.rt {
            Rt::Crun => {
                out.assert_code(1);
            }
            Rt::Runc => {
                out.assert_launcher_failure("/proc/self/fd");
            }
        }
        let home = container_home(&ctx);
        let cwd = ctx.dir().display().to_string();
        for (what, gone) in [
            ("sys", " on /sys "),
            ("tmp", " on /tmp "),
            ("home", &*format!(" on {home} ")),
            ("cwd", &*format!(" on {cwd} ")),
        ] {
            let out = exec(&ctx, &["--no-mount", what], &["mount"]);
            out.assert_success();
            if out.stdout.contains(gone) {
                out.fail(&format!("--no-mount {what}: '{gone}' is still mounted"));
            }
        }
        exec(&ctx, &["--no-mount", "dev"], &["true"]).assert_fatal("requires /dev to be mounted");
        exec(&ctx, &["--no-mount", "devpts"], &["true"])
            .assert_fatal("requires /dev/pts to be mounted");
        for (nm, gone) in [
            ("/etc/hosts", " on /etc/hosts "),
            ("/etc/localtime", " on /etc/localtime "),
            ("bind-paths", " on /etc/hosts "),
        ] {
            // Without --no-mount the bind path is there (in --no-compat only).
            if nm == "/etc/hosts" {
                exec(&ctx, &["--no-compat"], &["mount"]).assert_stdout_contains(gone);
            }
            let out = exec(&ctx, &["--no-compat", "--no-mount", nm], &["mount"]);
            out.assert_success();
            if out.stdout.contains(gone) {
                out.fail(&format!("--no-mount {nm}: '{gone}' is still mounted"));
            }
        }
        ctx.assert_no_leftovers();
    }
}

// ---------------------------------------------------------------------------------------------
// ociHomeCwdPasswd

#[test]
fn oci_home_cwd_passwd() {
    for ctx in matrix_with(&THREE) {
        let home = container_home(&ctx);
        exec(&ctx, &[], &["pwd"])
            .assert_success()
            .assert_stdout_eq(&home);
        let (name, uid, gid) = match ctx.profile {
            Profile::Fakeroot | Profile::Root => ("root".to_string(), 0, 0),
            _ => (ctx.user().unwrap().to_string(), ctx.uid(), ctx.gid()),
        };
        let out = exec(&ctx, &[], &["grep", &format!("^{name}:"), "/etc/passwd"]);
        out.assert_success();
        let f: Vec<&str> = out.stdout.trim().split(':').collect();
        if f.len() != 7 || f[2] != uid.to_string() || f[3] != gid.to_string() || f[5] != home {
            out.fail(&format!(
                "expected {name}:x:{uid}:{gid}:<gecos>:{home}:<shell>"
            ));
        }
        exec(&ctx, &[], &["grep", &format!(":{gid}:"), "/etc/group"]).assert_success();
        // The generated files are 0644: SingularityCE writes them 0755, but they are data,
        // not programs.
        exec(
            &ctx,
            &[],
            &[
                "stat",
                "-c",
                "%a",
                "/etc/passwd",
                "/etc/group",
                "/etc/resolv.conf",
            ],
        )
        .assert_stdout_eq("644\n644\n644");
        ctx.assert_no_leftovers();
    }
}

// ---------------------------------------------------------------------------------------------
// ociAllowSetuid

#[test]
fn oci_allow_setuid() {
    for ctx in matrix_with(&THREE) {
        let nosuid_mounts = |extra: &[&str]| -> Vec<String> {
            let mut o = vec!["--scratch", "/scratch", "--bind", "/etc:/bind:ro"];
            o.extend_from_slice(extra);
            let out = exec(&ctx, &o, &["grep", "nosuid", "/proc/mounts"]);
            out.assert_success();
            out.lines()
                .iter()
                .map(|l| l.split(' ').nth(1).unwrap_or("").to_string())
                .collect()
        };
        let m = nosuid_mounts(&[]);
        for d in [
            "/dev/shm", "/proc", "/sys", "/tmp", "/var/tmp", "/scratch", "/bind",
        ] {
            assert!(
                m.iter().any(|x| x == d),
                "[{}] {d} is not nosuid: {m:?}",
                ctx.name
            );
        }
        let m = nosuid_mounts(&["--allow-setuid"]);
        for d in ["/scratch", "/bind"] {
            assert!(
                !m.iter().any(|x| x == d),
                "[{}] {d} is still nosuid with --allow-setuid: {m:?}",
                ctx.name
            );
        }
        for d in ["/dev/shm", "/proc", "/sys"] {
            assert!(
                m.iter().any(|x| x == d),
                "[{}] {d} lost nosuid: {m:?}",
                ctx.name
            );
        }
        ctx.assert_no_leftovers();
    }
}

// ---------------------------------------------------------------------------------------------
// ociExitSignals

#[test]
fn oci_exit_signals() {
    for ctx in matrix_with(&THREE) {
        for code in [0, 1, 134] {
            exec(&ctx, &[], &["sh", "-c", &format!("exit {code}")]).assert_code(code);
        }
        exec(&ctx, &["--no-pid"], &["sh", "-c", "kill -KILL $$"]).assert_code(137);
        exec(&ctx, &["--no-pid"], &["sh", "-c", "kill -ABRT $$"]).assert_code(134);
        ctx.assert_no_leftovers();
    }
}

// ---------------------------------------------------------------------------------------------
// security/ociCapabilities

const DEFAULT_CAPS: u64 = 0x20a80425fb;
const CAP_SYS_ADMIN: u64 = 0x200000;

fn own_cap(field: &str) -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    let v = s
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .unwrap()
        .trim_start_matches(':')
        .trim()
        .to_string();
    u64::from_str_radix(&v, 16).unwrap()
}

/// (Inh, Prm, Eff, Amb, Bnd) of the container's shell.
fn masks(ctx: &Ctx, opts: &[&str]) -> [u64; 5] {
    let out = exec(ctx, opts, &["grep", "^Cap", "/proc/self/status"]);
    out.assert_success();
    let get = |f: &str| {
        let l = out
            .lines()
            .into_iter()
            .find(|l| l.starts_with(f))
            .unwrap_or_else(|| out.fail(f));
        u64::from_str_radix(l.split_whitespace().nth(1).unwrap(), 16).unwrap()
    };
    ["CapInh", "CapPrm", "CapEff", "CapAmb", "CapBnd"].map(get)
}

#[test]
fn oci_capabilities() {
    // "Full" is what the creator of the container holds: real root's effective set; inside the
    // outer user namespace, the bounding set (this machine lacks CAP_SYS_RESOURCE even for root).
    let root_full = own_cap("CapEff");
    let user_full = own_cap("CapBnd");
    for ctx in matrix_with(&THREE) {
        let is_root_inside = ctx.profile != Profile::User;
        let full = if ctx.profile == Profile::Root {
            root_full
        } else {
            user_full
        };
        let d = DEFAULT_CAPS;
        let cases: [(&str, &[&str], [u64; 5]); 5] = if is_root_inside {
            [
                ("DefaultRoot", &[], [0, d, d, 0, d]),
                ("NoPrivs", &["--no-privs"], [0; 5]),
                ("KeepPrivsRoot", &["--keep-privs"], [0, full, full, 0, full]),
                (
                    "DropChown",
                    &["--drop-caps", "CAP_CHOWN"],
                    [0, d - 1, d - 1, 0, d - 1],
                ),
                (
                    "AddSysAdminRoot",
                    &["--add-caps", "CAP_SYS_ADMIN"],
                    [
                        0,
                        d | CAP_SYS_ADMIN,
                        d | CAP_SYS_ADMIN,
                        0,
                        d | CAP_SYS_ADMIN,
                    ],
                ),
            ]
        } else {
            let a = CAP_SYS_ADMIN;
            [
                ("DefaultUser", &[], [0, 0, 0, 0, d]),
                ("NoPrivs", &["--no-privs"], [0; 5]),
                ("KeepPrivsUser", &["--keep-privs"], [0, 0, 0, 0, full]),
                (
                    "DropChown",
                    &["--drop-caps", "CAP_CHOWN"],
                    [0, 0, 0, 0, d - 1],
                ),
                (
                    "AddSysAdminUser",
                    &["--add-caps", "CAP_SYS_ADMIN"],
                    [a, a, a, a, d | a],
                ),
            ]
        };
        for (name, opts, want) in cases {
            let got = masks(&ctx, opts);
            assert_eq!(
                got, want,
                "[{}] {name}: (Inh, Prm, Eff, Amb, Bnd) = {got:x?}, want {want:x?}",
                ctx.name
            );
        }
        exec(&ctx, &["--add-caps", "CAP_BOGUS"], &["true"])
            .assert_success()
            .assert_stderr_contains("Ignoring unknown --add-caps: CAP_BOGUS");
        ctx.assert_no_leftovers();
    }
}

// ---------------------------------------------------------------------------------------------
// env/ociSingularityEnv, env/ociEnvOption, env/ociEnvFile, env/issue1528

const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

fn env_of(ctx: &Ctx, opts: &[&str], env: &[(&str, &str)], var: &str) -> Output {
    let image = bb();
    let script = format!("echo \"${{{var}}}\"");
    let mut a = vec!["exec"];
    a.extend_from_slice(opts);
    a.push(&image);
    // /bin/sh: some rows set a PATH in which `sh` cannot be found.
    a.extend_from_slice(&["/bin/sh", "-c", &script]);
    let mut c = ctx.front_cmd(&a);
    for (k, v) in env {
        c = c.env(*k, *v);
    }
    let out = c.run();
    out.assert_success();
    out
}

#[test]
fn oci_singularity_env() {
    for ctx in matrix_with(&THREE) {
        env_of(&ctx, &[], &[], "PATH").assert_stdout_eq(DEFAULT_PATH);
        env_of(&ctx, &[], &[("SINGULARITYENV_APPEND_PATH", "/foo")], "PATH")
            .assert_stdout_eq(&format!("{DEFAULT_PATH}:/foo"));
        env_of(
            &ctx,
            &[],
            &[("SINGULARITYENV_PREPEND_PATH", "/foo")],
            "PATH",
        )
        .assert_stdout_eq(&format!("/foo:{DEFAULT_PATH}"));
        env_of(
            &ctx,
            &[],
            &[("SINGULARITYENV_PATH", "/usr/bin:/bin,")],
            "PATH",
        )
        .assert_stdout_eq("/usr/bin:/bin,");
        // Beyond Singularity: APPTAINERENV_ is honoured, and SINGULARITYENV_ wins over it.
        env_of(&ctx, &[], &[("APPTAINERENV_FOO", "apptainer")], "FOO")
            .assert_stdout_eq("apptainer");
        env_of(
            &ctx,
            &[],
            &[
                ("APPTAINERENV_FOO", "apptainer"),
                ("SINGULARITYENV_FOO", "singularity"),
            ],
            "FOO",
        )
        .assert_stdout_eq("singularity");
        ctx.assert_no_leftovers();
    }
}

#[test]
fn oci_env_option() {
    for ctx in matrix_with(&THREE) {
        env_of(&ctx, &["--env", "PATH=/"], &[], "PATH").assert_stdout_eq("/");
        env_of(&ctx, &["--env", "APPEND_PATH=/foo"], &[], "PATH")
            .assert_stdout_eq(&format!("{DEFAULT_PATH}:/foo"));
        env_of(&ctx, &["--env", "PREPEND_PATH=/foo"], &[], "PATH")
            .assert_stdout_eq(&format!("/foo:{DEFAULT_PATH}"));
        // --env beats SINGULARITYENV_; a plain host variable is not passed.
        env_of(
            &ctx,
            &["--env", "FOO=opt"],
            &[("SINGULARITYENV_FOO", "env")],
            "FOO",
        )
        .assert_stdout_eq("opt");
        env_of(&ctx, &[], &[("FOO", "host")], "FOO").assert_stdout_eq("");
        env_of(&ctx, &["--env", "FOO="], &[], "FOO").assert_stdout_eq("");
        env_of(&ctx, &["--env", "FOO=a\nb"], &[], "FOO").assert_stdout_eq("a\nb");
        env_of(&ctx, &["--env", "FOO=a\\nb"], &[], "FOO").assert_stdout_eq("a\\nb");
        env_of(&ctx, &["--env", "BASH_FUNC_ml%%=x"], &[], "FOO").assert_stdout_eq("");
        env_of(&ctx, &[], &[], "LD_LIBRARY_PATH").assert_stdout_eq("/.singularity.d/libs");
        env_of(
            &ctx,
            &["--env", "LD_LIBRARY_PATH=/foo"],
            &[],
            "LD_LIBRARY_PATH",
        )
        .assert_stdout_eq("/foo:/.singularity.d/libs");
        env_of(
            &ctx,
            &["--env", "LD_LIBRARY_PATH=/foo,"],
            &[],
            "LD_LIBRARY_PATH",
        )
        .assert_stdout_eq("/foo,:/.singularity.d/libs");
        env_of(&ctx, &[], &[], "SINGULARITY_NAME").assert_stdout_eq(&bb());
        // SINGULARITY_CONTAINER is the image, as in SingularityCE's native mode (its OCI mode
        // names the temporary bundle, which means nothing to the container).
        env_of(&ctx, &[], &[], "SINGULARITY_CONTAINER").assert_stdout_eq(&bb());
        ctx.assert_no_leftovers();
    }
}

#[test]
fn oci_env_file() {
    for ctx in matrix_with(&THREE) {
        let f1 = ctx.write_file("env1", "PATH=/from-file\nHELLO=$YOU\nexport A=file1\n");
        let f2 = ctx.write_file("env2", "A=file2\nAPPEND_PATH=/app\nPREPEND_PATH=/pre\n");
        let (f1, f2) = (f1.display().to_string(), f2.display().to_string());
        env_of(&ctx, &["--env-file", &f1], &[], "PATH").assert_stdout_eq("/from-file");
        env_of(
            &ctx,
            &["--env-file", &f1, "--env", "PATH=/opt"],
            &[],
            "PATH",
        )
        .assert_stdout_eq("/opt");
        env_of(&ctx, &["--env-file", &f1, "--env-file", &f2], &[], "A").assert_stdout_eq("file2");
        env_of(&ctx, &["--env-file", &f2], &[], "PATH")
            .assert_stdout_eq(&format!("/pre:{DEFAULT_PATH}:/app"));
        env_of(&ctx, &["--env-file", &f1], &[("YOU", "me")], "HELLO").assert_stdout_eq("me");
        env_of(&ctx, &["--env-file", &f1], &[], "HELLO").assert_stdout_eq("");
        let bad = ctx.write_file("bad", "A=$(id -u)\n").display().to_string();
        exec(&ctx, &["--env-file", &bad], &["true"]).assert_fatal("command substitution");
        ctx.assert_no_leftovers();
    }
}

#[test]
fn issue_1528_term() {
    for ctx in matrix_with(&THREE) {
        env_of(&ctx, &[], &[("TERM", "xterm")], "TERM").assert_stdout_eq("xterm");
        env_of(
            &ctx,
            &[],
            &[("TERM", "xterm"), ("SINGULARITYENV_TERM", "vt100")],
            "TERM",
        )
        .assert_stdout_eq("vt100");
        ctx.assert_no_leftovers();
    }
}

// ---------------------------------------------------------------------------------------------
// docker/USERWORKDIR with the `user` fixture (USER testuser = 2000:2000, WORKDIR /home/testuser)

#[test]
fn user_workdir() {
    for ctx in matrix_with(&THREE) {
        let image = oci_ref("user");
        let fake = ctx.profile == Profile::Fakeroot;
        let want_id = if fake {
            "uid=0(root) gid=0(root)"
        } else {
            "uid=2000(testuser) gid=2000(testuser)"
        };
        let out = ctx.front(&["run", &image, "id"]);
        out.assert_success();
        if !out.stdout.starts_with(want_id) {
            out.fail(&format!("expected id to start with {want_id}"));
        }
        ctx.front(&["exec", "--home", "/tmp", &image, "true"])
            .assert_fatal("custom --home");
        let home = if fake { "/root" } else { "/home/testuser" };
        ctx.front(&["exec", &image, "sh", "-c", "echo $HOME"])
            .assert_stdout_eq(home);
        ctx.front(&["exec", &image, "pwd"])
            .assert_stdout_eq("/home/testuser");
        ctx.front(&["exec", "--no-compat", &image, "pwd"])
            .assert_stdout_eq(&ctx.dir().display().to_string());
        // Singularity's row: /home/testuser is owned by testuser (2000:2000). That holds when
        // oci-unpack keeps owners; a `flatten` unpack (unprivileged) gives every file to the
        // caller, which the container sees as its own uid (the host uid, or 0 with --fakeroot).
        let rec = ctx.run("sh", &["-c", &format!("oci-fetch {image} | oci-unpack")]);
        rec.assert_success();
        let owner = match rec.json()["ownership"].as_str() {
            Some("keep") => "2000:2000".to_string(),
            Some("flatten") if fake => "0:0".to_string(),
            Some("flatten") => format!("{}:{}", ctx.uid(), ctx.gid()),
            other => rec.fail(&format!("unexpected ownership {other:?}")),
        };
        ctx.front(&["exec", &image, "stat", "-c", "%u:%g", "/home/testuser"])
            .assert_stdout_eq(&owner);
        if owner == "2000:2000" && !fake {
            // The image USER writes its own home.
            ctx.front(&["exec", &image, "touch", "/home/testuser/new"])
                .assert_success();
        }
        ctx.assert_no_leftovers();
    }
}

// ---------------------------------------------------------------------------------------------
// issue1950 with the `vartmp-link` fixture (/var/tmp -> /tmp)

#[test]
fn issue_1950_var_tmp_link() {
    for ctx in matrix_with(&THREE) {
        let image = oci_ref("vartmp-link");
        // A canary in the host's /var/tmp, made by the test's user.
        let canary = format!("sioci-1950-{}", ctx.name);
        let host_canary = std::path::Path::new("/var/tmp").join(&canary);
        ctx.run(
            "sh",
            &["-c", &format!("echo x > {}", host_canary.display())],
        )
        .assert_success();
        let in_var_tmp = format!("/var/tmp/{canary}");
        ctx.front(&["exec", "--no-compat", &image, "cat", &in_var_tmp])
            .assert_code(1);
        ctx.front(&[
            "exec",
            "-B",
            "/tmp",
            "-B",
            "/var/tmp",
            &image,
            "cat",
            &in_var_tmp,
        ])
        .assert_success()
        .assert_stderr_contains("lands under /tmp");
        let w = ctx.mkdir("w");
        ctx.mkdir("w/tmp");
        ctx.mkdir("w/var_tmp");
        ctx.write_file("w/tmp/tmp-canary", "t");
        ctx.write_file("w/var_tmp/var-canary", "v");
        let ws = w.display().to_string();
        ctx.front(&[
            "exec",
            "--workdir",
            &ws,
            &image,
            "cat",
            "/var/tmp/var-canary",
        ])
        .assert_code(1);
        ctx.front(&[
            "exec",
            "--workdir",
            &ws,
            &image,
            "cat",
            "/var/tmp/tmp-canary",
        ])
        .assert_success();
        ctx.front(&["exec", "--workdir", &ws, &image, "cat", "/tmp/tmp-canary"])
            .assert_success();
        std::fs::remove_file(&host_canary).unwrap();
        ctx.assert_no_leftovers();
    }
}

// ---------------------------------------------------------------------------------------------
// cgroups/actionFlags, cgroups/actionApply: real root only on this hybrid v1 host (no systemd
// delegation); unprivileged, a limit is a clear error and no limit is no error.

fn cgroup_file(ctx: &Ctx, opts: &[&str], controller: &str, file: &str) -> String {
    let script = format!(
        "p=$(grep -E '^[0-9]+:([^:]*,)?{controller}(,[^:]*)?:' /proc/self/cgroup | cut -d: -f3); cat /sys/fs/cgroup/{controller}$p/{file}"
    );
    let mut o = vec!["--bind", "/sys/fs/cgroup"];
    o.extend_from_slice(opts);
    let out = exec(ctx, &o, &["sh", "-c", &script]);
    out.assert_success();
    out.stdout.trim().to_string()
}

#[test]
fn cgroup_flags_root() {
    for ctx in matrix_with(&[Profile::Root]) {
        let cases: &[(&[&str], &str, &str, &str)] = &[
            (
                &["--memory", "500M"],
                "memory",
                "memory.limit_in_bytes",
                "524288000",
            ),
            (
                &["--memory-reservation", "500M"],
                "memory",
                "memory.soft_limit_in_bytes",
                "524288000",
            ),
            (&["--pids-limit", "123"], "pids", "pids.max", "123"),
            (&["--cpus", "0.5"], "cpu", "cpu.cfs_quota_us", "50000"),
            (&["--cpu-shares", "123"], "cpu", "cpu.shares", "123"),
            (&["--cpuset-cpus", "0"], "cpuset", "cpuset.cpus", "0"),
            (&["--cpuset-mems", "0"], "cpuset", "cpuset.mems", "0"),
        ];
        for (opts, controller, file, want) in cases {
            let got = cgroup_file(&ctx, opts, controller, file);
            assert_eq!(&got, want, "[{}] {opts:?}: {controller}/{file}", ctx.name);
        }
        assert_eq!(
            cgroup_file(
                &ctx,
                &["--memory-swap", "500M", "--memory", "250M"],
                "memory",
                "memory.memsw.limit_in_bytes"
            ),
            "524288000",
            "[{}] --memory-swap",
            ctx.name
        );
        let oom = cgroup_file(
            &ctx,
            &["--oom-kill-disable"],
            "memory",
            "memory.oom_control",
        );
        assert!(
            oom.contains("oom_kill_disable 1"),
            "[{}] --oom-kill-disable: {oom}",
            ctx.name
        );
        // --blkio-weight: this kernel has BFQ, so only blkio.bfq.weight exists. runc 1.1 writes
        // it; crun 1.8.1 writes blkio.weight and fails before the container starts (a launcher
        // failure: FATAL, 255).
        match ctx.rt {
            Rt::Runc => assert_eq!(
                cgroup_file(&ctx, &["--blkio-weight", "50"], "blkio", "blkio.bfq.weight"),
                "50"
            ),
            Rt::Crun => {
                exec(&ctx, &["--blkio-weight", "50"], &["true"])
                    .assert_launcher_failure("blkio.weight");
            }
        }
        // A memory limit the container exceeds: the kernel kills it (SIGKILL, 137; SingularityCE
        // reports crun's 1 here, the shim passes 128+signal through).
        exec(
            &ctx,
            &["--memory", "20M"],
            &[
                "sh",
                "-c",
                "x=$(head -c 60000000 /dev/zero | tr '\\0' a); echo ${#x}",
            ],
        )
        .assert_code(137);
        let toml = ctx
            .write_file("limits.toml", "[pids]\nlimit = 77\n")
            .display()
            .to_string();
        assert_eq!(
            cgroup_file(&ctx, &["--apply-cgroups", &toml], "pids", "pids.max"),
            "77"
        );
        exec(&ctx, &["--apply-cgroups", "/nonexistent.toml"], &["true"])
            .assert_fatal("No such file or directory");
        let bad = ctx.write_file("bad.toml", "[pids\n").display().to_string();
        exec(&ctx, &["--apply-cgroups", &bad], &["true"]).assert_fatal("toml: expected");
        exec(
            &ctx,
            &["--apply-cgroups", &toml, "--pids-limit", "5"],
            &["true"],
        )
        .assert_fatal("cannot apply a cgroups TOML file while using limit flags");
        exec(&ctx, &["--cpus", "100"], &["true"]).assert_fatal("cpus value must be in range");
        ctx.assert_no_leftovers();
    }
}

#[test]
fn cgroup_flags_unprivileged() {
    for ctx in matrix_with(&[Profile::User, Profile::Fakeroot]) {
        exec(&ctx, &[], &["true"])
            .assert_success()
            .assert_stderr_empty();
        exec(&ctx, &["--cpus", "1"], &["true"]).assert_fatal("does not support cgroup management");
        exec(&ctx, &["--memory", "500M"], &["true"])
            .assert_fatal("does not support cgroup management");
        ctx.assert_no_leftovers();
    }
}

// ---------------------------------------------------------------------------------------------
// ociNo-setgroups (crun only) and the single-ID fallback (beyond Singularity)

#[test]
fn oci_no_setgroups() {
    for ctx in matrix_with(&[Profile::User]) {
        let out = exec(&ctx, &["--no-setgroups"], &["id", "-G"]);
        match ctx.rt {
            Rt::Crun => {
                out.assert_success();
                let first = out.stdout.split_whitespace().next().unwrap_or("");
                if first != ctx.gid().to_string() {
                    out.fail("expected the primary gid first");
                }
            }
            Rt::Runc => {
                out.assert_fatal("does not support --no-setgroups");
            }
        }
        ctx.assert_no_leftovers();
    }
}

/// Without subordinate IDs, crun keeps the caller's identity with a one-ID map. runc requires
/// container uid 0 to be mapped, which a one-ID namespace cannot combine with the caller's uid:
/// a clear error suggesting crun or --fakeroot; --fakeroot works with both.
#[test]
fn single_id_fallback() {
    for ctx in matrix_with(&[Profile::UserNoSubids]) {
        let out = exec(&ctx, &[], &["sh", "-c", "id -u; cat /proc/self/uid_map"]);
        match ctx.rt {
            Rt::Crun => {
                out.assert_success();
                let l = out.lines();
                let map: Vec<&str> = l
                    .get(1)
                    .map(|m| m.split_whitespace().collect())
                    .unwrap_or_default();
                if l.first() != Some(&&*ctx.uid().to_string())
                    || map != [&*ctx.uid().to_string(), "0", "1"]
                {
                    out.fail("expected the caller's uid and the one-entry map 'UID 0 1'");
                }
            }
            Rt::Runc => {
                out.assert_code(255).assert_stderr_contains(
                    "runc cannot run the unprivileged default without subordinate IDs",
                );
            }
        }
        if ctx.rt == Rt::Crun {
            // An image USER cannot be mapped: the container runs as the caller, with a warning.
            ctx.front(&["exec", &oci_ref("user"), "id", "-u"])
                .assert_success()
                .assert_stdout_eq(&ctx.uid().to_string())
                .assert_stderr_contains("cannot be mapped without subordinate IDs");
        }
        ctx.front(&["exec", "--fakeroot", &bb(), "id", "-u"])
            .assert_success()
            .assert_stdout_eq("0");
        ctx.assert_no_leftovers();
    }
}

// ---------------------------------------------------------------------------------------------
// ociIDMaps, ociRelWorkdirScratch, ociBinds (error rows)

#[test]
fn oci_id_maps_files_belong_to_the_caller() {
    for ctx in matrix_with(&THREE) {
        let d = ctx.mkdir("shared");
        let spec = format!("{}:/test", d.display());
        exec(&ctx, &["-B", &spec], &["touch", "/test/file"]).assert_success();
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(d.join("file")).unwrap();
        assert_eq!(
            (m.uid(), m.gid()),
            (ctx.uid(), ctx.gid()),
            "[{}] owner on the host",
            ctx.name
        );
        ctx.assert_no_leftovers();
    }
}

#[test]
fn oci_rel_workdir_scratch() {
    for ctx in matrix_with(&THREE) {
        exec(
            &ctx,
            &["--workdir", "./sub", "--scratch", "/myscratch"],
            &["true"],
        )
        .assert_success();
        assert!(
            ctx.dir().join("sub/scratch/myscratch").is_dir(),
            "[{}] relative workdir",
            ctx.name
        );
        ctx.assert_no_leftovers();
    }
}

#[test]
fn oci_bind_errors() {
    for ctx in matrix_with(&THREE) {
        exec(&ctx, &["--bind", "/non/existent"], &["true"])
            .assert_fatal("cannot stat bind source /non/existent");
        exec(&ctx, &["--bind", "/etc:relative"], &["true"])
            .assert_fatal("must be an absolute path");
        exec(&ctx, &["--bind", "/etc:/x:bogus"], &["true"]).assert_fatal("not a valid bind option");
        exec(
            &ctx,
            &["--mount", "type=bind,source=/etc,destination=/hostetc"],
            &["test", "-f", "/hostetc/hostname"],
        )
        .assert_success();
        exec(
            &ctx,
            &[
                "--mount",
                "source=/etc,destination=/hostetc,bind-propagation=shared",
            ],
            &["true"],
        )
        .assert_fatal("bind-propagation");
        ctx.assert_no_leftovers();
    }
}

/// `--tmpfs-size` sizes the overlay's tmpfs (the starter's), so `--writable-tmpfs` can grow past
/// the 64 MiB default, in both option forms.
#[test]
fn tmpfs_size_reaches_the_overlay() {
    for ctx in matrix() {
        for opt in [&["--tmpfs-size", "200"][..], &["--tmpfs-size=200"][..]] {
            let mut o = opt.to_vec();
            o.push("--writable-tmpfs");
            exec(&ctx, &o, &["sh", "-c", "df -m / | tail -1"])
                .assert_success()
                .assert_stdout_contains(" 200 ");
        }
        ctx.assert_no_leftovers();
    }
}
