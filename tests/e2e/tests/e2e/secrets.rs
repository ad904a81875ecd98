//! A registry password never reaches another user: not on any command line of the chain
//! (`ps`, `/proc/PID/cmdline` are world-readable), not in `--debug` or `--dry-run` output.
//!
//! The victim (root, or the test user; crun and runc) pulls from a real `docker-registry` with
//! TLS and htpasswd auth while the attacker (`sioci-attacker`) reads the command line and, where
//! the kernel lets it, the environment of every process on the host in a tight loop.

use e2e::registry::{PASSWORD, Registry, USER};
use e2e::*;
use serde_json::Value;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The attacker's scanner: argv[1] is the password in hex (so the scanner's own command line
/// does not contain it), argv[2] a file whose appearance stops it, argv[3] the report (JSON).
const WATCHER: &str = r#"
import json, os, sys
secret = bytes.fromhex(sys.argv[1])
stop, report = sys.argv[2], sys.argv[3]
me = str(os.getpid())
rounds, fetch_seen, hits = 0, 0, []
while not os.path.exists(stop):
    rounds += 1
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or pid == me:
            continue
        for what in ("cmdline", "environ"):
            try:
                with open("/proc/%s/%s" % (pid, what), "rb") as f:
                    data = f.read()
            except OSError:
                continue
            if what == "cmdline" and b"/oci-fetch\0" in data:
                fetch_seen += 1
            if secret in data:
                argv = [a.decode(errors="replace") for a in data.split(b"\0")]
                hits.append({"pid": pid, "what": what, "argv": argv if what == "cmdline" else []})
with open(report, "w") as f:
    json.dump({"rounds": rounds, "fetch_seen": fetch_seen, "hits": hits}, f)
"#;

fn hex(s: &str) -> String {
    s.bytes().map(|b| format!("{b:02x}")).collect()
}

/// A fresh private cache, so every pull really talks to the registry.
fn fresh_cache(ctx: &Ctx, name: &str) -> PathBuf {
    let p = ctx.mkdir(name);
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o700)).unwrap();
    p
}

/// The front with `args`, on a fresh cache `name` (a cold pull), as the context's user.
fn front_cold(ctx: &Ctx, name: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
    let cache = fresh_cache(ctx, name);
    let mut cmd = ctx
        .front_cmd(args)
        .env("SINGULARITY_CACHEDIR", cache.display().to_string());
    for (k, v) in env {
        cmd = cmd.env(k, v);
    }
    cmd.run()
}

fn assert_no_secret(ctx: &Ctx, what: &str, text: &str) {
    let basic = {
        use std::io::Write;
        let mut c = std::process::Command::new("base64")
            .arg("-w0")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        c.stdin
            .take()
            .unwrap()
            .write_all(format!("{USER}:{PASSWORD}").as_bytes())
            .unwrap();
        String::from_utf8(c.wait_with_output().unwrap().stdout).unwrap()
    };
    assert!(
        !text.contains(PASSWORD) && !text.contains(&basic),
        "[{}] the password is in the {what}:\n{text}",
        ctx.name
    );
}

#[test]
fn the_registry_password_is_never_visible_to_another_user() {
    let dir = workdir().join("secrets-registry");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let reg = Registry::tls_auth(&dir.join("reg"));
    reg.push(&oci_ref("busybox"), "sioci/busybox:latest", false);
    let ca = reg.ca_dir().display().to_string();
    let image = reg.docker_ref("sioci/busybox:latest");
    let creds = format!("{USER}:{PASSWORD}");

    for ctx in matrix() {
        let attacker = ctx.attacker();
        let stop = attacker.dir().join("stop");
        let report = attacker.dir().join("report.json");
        let watcher = {
            let attacker = attacker.clone();
            let (stop, report) = (stop.clone(), report.clone());
            std::thread::spawn(move || {
                attacker
                    .cmd("python3")
                    .args(&[
                        "-c",
                        WATCHER,
                        &hex(PASSWORD),
                        stop.to_str().unwrap(),
                        report.to_str().unwrap(),
                    ])
                    .timeout(Duration::from_secs(600))
                    .run()
                    .assert_success();
            })
        };
        std::thread::sleep(Duration::from_millis(300));

        // 1. The password in the environment (SingularityCE's variables), with --debug.
        let out = front_cold(
            &ctx,
            "cache-env",
            &["--debug", "exec", "--cert-dir", &ca, &image, "echo", "ok"],
            &[
                ("SINGULARITY_DOCKER_USERNAME", USER),
                ("SINGULARITY_DOCKER_PASSWORD", PASSWORD),
            ],
        );
        out.assert_success().assert_stdout_eq("ok\n");
        assert!(
            out.stderr.contains("DEBUG: "),
            "[{}] no debug output",
            ctx.name
        );
        assert_no_secret(&ctx, "--debug output", &out.stderr);

        // 2. --creds on the front's command line, with --debug: oci-fetch gets it in its
        //    environment, never on its command line.
        let exec_args = [
            "--debug",
            "exec",
            "--creds",
            &creds,
            "--cert-dir",
            &ca,
            &image,
            "echo",
            "ok",
        ];
        let out = front_cold(&ctx, "cache-creds", &exec_args, &[]);
        out.assert_success().assert_stdout_eq("ok\n");
        assert_no_secret(&ctx, "--debug output", &out.stderr);

        // 3. pull and inspect route --creds the same way.
        let pull_args = [
            "--debug",
            "pull",
            "--creds",
            &creds,
            "--cert-dir",
            &ca,
            &image,
        ];
        let out = front_cold(&ctx, "cache-pull", &pull_args, &[]);
        out.assert_success();
        assert_no_secret(
            &ctx,
            "pull output",
            &format!("{}{}", out.stdout, out.stderr),
        );
        let inspect_args = ["inspect", "--creds", &creds, "--cert-dir", &ca, &image];
        let out = front_cold(&ctx, "cache-inspect", &inspect_args, &[]);
        out.assert_success();
        assert_no_secret(
            &ctx,
            "inspect output",
            &format!("{}{}", out.stdout, out.stderr),
        );

        // 4. --dry-run prints a chain to paste: the password stays out of it.
        let out = ctx.front(&[
            "--dry-run",
            "exec",
            "--creds",
            &creds,
            "--cert-dir",
            &ca,
            &image,
            "true",
        ]);
        out.assert_success();
        assert_no_secret(&ctx, "--dry-run output", &out.stdout);
        assert!(
            out.stdout
                .contains("SINGULARITY_DOCKER_PASSWORD=\"$SINGULARITY_DOCKER_PASSWORD\""),
            "[{}] {}",
            ctx.name,
            out.stdout
        );

        std::fs::write(&stop, "").unwrap();
        watcher.join().unwrap();
        let r: Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
        assert!(
            r["fetch_seen"].as_u64().unwrap() > 0,
            "[{}] the attacker never saw an oci-fetch process, so the scan proves nothing: {r}",
            ctx.name
        );
        // The only process allowed to show it is the front itself, run with --creds on its
        // own command line by the victim (and the shell's forks of it): nothing the launcher
        // started. The front's man page says so and recommends the environment instead.
        for h in r["hits"].as_array().unwrap() {
            let argv: Vec<&str> = h["argv"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| a.as_str().unwrap())
                .collect();
            // (as the harness starts it for the test user: `setpriv ... -- FRONT ...` first)
            let is_front = h["what"] == "cmdline"
                && argv
                    .iter()
                    .take(7)
                    .any(|a| Path::new(a).file_name() == Some("singularity-oci".as_ref()))
                && argv.contains(&"--creds");
            assert!(
                is_front,
                "[{}] the attacker read the password from process {}: {h}",
                ctx.name, h["pid"]
            );
        }
        ctx.assert_no_leftovers();
    }
}
