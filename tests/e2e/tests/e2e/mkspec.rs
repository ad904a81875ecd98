//! oci-mkspec as a stage: the hand-typed pipeline, the bundle it writes (and only there), the
//! bundle record, schema validity, cleanup on error, and hostile image symlinks.

use e2e::*;
use serde_json::Value;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

const THREE: [Profile; 3] = [Profile::Root, Profile::User, Profile::Fakeroot];

fn fakeroot_flag(ctx: &Ctx) -> &'static str {
    if ctx.profile == Profile::Fakeroot {
        "--fakeroot"
    } else {
        ""
    }
}

/// `oci-fetch | oci-unpack > rootfs.json` in the test directory.
fn rootfs_record(ctx: &Ctx, image: &str) -> std::path::PathBuf {
    ctx.run(
        "sh",
        &[
            "-c",
            &format!("oci-fetch {image} | oci-unpack > rootfs.json"),
        ],
    )
    .assert_success();
    ctx.dir().join("rootfs.json")
}

#[test]
fn hand_typed_pipeline() {
    for ctx in matrix_with(&THREE) {
        let b = ctx.dir().join("B");
        let script = format!(
            "oci-fetch {} | oci-unpack | oci-mkspec {} --bundle {} -- echo hi > bundle.json",
            oci_ref("busybox"),
            fakeroot_flag(&ctx),
            b.display()
        );
        ctx.run("sh", &["-c", &script])
            .assert_success()
            .assert_stderr_empty();
        let rec: Value =
            serde_json::from_slice(&std::fs::read(ctx.dir().join("bundle.json")).unwrap()).unwrap();
        assert_eq!(rec["kind"], "bundle");
        assert_eq!(rec["schemaVersion"], 1);
        assert_eq!(rec["args"], serde_json::json!(["echo", "hi"]));
        assert_eq!(rec["innerUserns"], ctx.profile == Profile::User);
        let want_uid = if ctx.profile == Profile::User {
            ctx.uid()
        } else {
            0
        };
        assert_eq!(rec["uid"], want_uid);
        validate_runtime_config(b.join("config.json"));
        let cfg: Value =
            serde_json::from_slice(&std::fs::read(b.join("config.json")).unwrap()).unwrap();
        assert_eq!(cfg["root"]["path"], "rootfs");
        // Root's device cgroup denies every device but the runtime's defaults; a user's
        // container has no device cgroup of its own.
        let resources = if ctx.is_root() {
            serde_json::json!({"devices": [{"allow": false, "access": "rwm"}]})
        } else {
            serde_json::json!({})
        };
        assert_eq!(cfg["linux"]["resources"], resources);
        // The rootfs is an empty mount point; rootfs.lower names the read-only cache entry.
        assert_eq!(std::fs::read_dir(b.join("rootfs")).unwrap().count(), 0);
        let lower = std::fs::read_link(b.join("rootfs.lower")).unwrap();
        assert_eq!(rec["rootfsLower"], lower.display().to_string());
        assert!(
            lower.starts_with(ctx.cache_dir()),
            "{} is not in the cache",
            lower.display()
        );
        // Generated files: 0644, and exactly what the record lists.
        let mut listed: Vec<String> = rec["etcFiles"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect();
        listed.sort();
        let mut on_disk: Vec<String> = std::fs::read_dir(b.join("etc"))
            .unwrap()
            .map(|e| e.unwrap().path().display().to_string())
            .collect();
        on_disk.sort();
        assert_eq!(listed, on_disk);
        for f in &on_disk {
            let mode = std::fs::metadata(f).unwrap().permissions().mode() & 0o7777;
            assert_eq!(mode, 0o644, "{f}");
        }
        // Nothing else in the bundle.
        let mut names: Vec<String> = std::fs::read_dir(&b)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["config.json", "etc", "rootfs", "rootfs.lower"]);
        // And the bundle runs.
        let run = format!(
            "oci-userns-starter --overlay {b} {f} -- oci-runtime-shim run --bundle {b}",
            b = b.display(),
            f = fakeroot_flag(&ctx)
        );
        ctx.run("sh", &["-c", &run])
            .assert_success()
            .assert_stdout_eq("hi");
        std::fs::remove_dir_all(&b).unwrap();
        ctx.assert_no_leftovers();
    }
}

#[test]
fn error_removes_what_it_created() {
    for ctx in matrix_with(&THREE) {
        let rec = rootfs_record(&ctx, &oci_ref("busybox"));
        let rec = rec.display().to_string();
        // A bundle directory oci-mkspec creates is removed again.
        let b = ctx.dir().join("new-bundle");
        let bs = b.display().to_string();
        ctx.run(
            "oci-mkspec",
            &[
                "--input",
                &rec,
                "--bundle",
                &bs,
                "--bind",
                "/non/existent",
                "--",
                "true",
            ],
        )
        .assert_fatal("cannot stat bind source /non/existent");
        assert!(!b.exists(), "[{}] {} left behind", ctx.name, b.display());
        // An existing bundle directory is kept, but emptied of what oci-mkspec wrote.
        let b = ctx.mkdir("existing");
        let bs = b.display().to_string();
        for bad in [
            &["--bind", "/etc:relative"][..],
            &["--no-mount", "dev"],
            &["--boot", "--nvccli"],
            &["--dns", "x"],
        ] {
            let mut a = vec!["--input", rec.as_str(), "--bundle", bs.as_str()];
            a.extend_from_slice(bad);
            a.extend_from_slice(&["--", "true"]);
            ctx.run("oci-mkspec", &a).assert_code(255);
            assert_eq!(
                std::fs::read_dir(&b).unwrap().count(),
                0,
                "[{}] {bad:?} left files in the bundle",
                ctx.name
            );
        }
        // A bundle already holding a config.json is not overwritten.
        ctx.write_file("existing/config.json", "{}");
        ctx.run(
            "oci-mkspec",
            &["--input", &rec, "--bundle", &bs, "--", "true"],
        )
        .assert_fatal("already holds a config.json");
        assert_eq!(
            std::fs::read_to_string(b.join("config.json")).unwrap(),
            "{}"
        );
        ctx.assert_no_leftovers();
    }
}

#[test]
fn help_and_version() {
    for ctx in matrix_with(&[Profile::User]) {
        let out = ctx.run("oci-mkspec", &["--help"]);
        out.assert_success()
            .assert_stdout_contains("Value options: --bundle");
        ctx.run("oci-mkspec", &["--version"])
            .assert_success()
            .assert_stdout_contains("oci-mkspec ");
        ctx.run("oci-mkspec", &["--bundle", "x", "--bogus"])
            .assert_fatal("unknown option '--bogus'");
        ctx.run("oci-mkspec", &["--bundle", "x"])
            .assert_fatal("'rootfs' record");
    }
}

/// Rewrite the image config inside a rootfs record (to test image facts the fixtures lack).
fn edit_record(path: &Path, f: impl FnOnce(&mut Value)) {
    let mut v: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    f(&mut v["image"]["imageConfig"]);
    std::fs::write(path, serde_json::to_vec(&v).unwrap()).unwrap();
}

fn run_bundle(ctx: &Ctx, rec: &Path, opts: &[&str], cmd: &str) -> Output {
    let b = ctx.dir().join("B");
    let _ = std::fs::remove_dir_all(&b);
    let q = |s: &str| format!("'{}'", s.replace('\'', r"'\''"));
    let opts: Vec<String> = opts.iter().map(|o| q(o)).collect();
    let script = format!(
        "oci-mkspec --input {rec} --bundle {b} {f} {opts} -- sh -c {cmd} > /dev/null && oci-userns-starter --overlay {b} {f} -- oci-runtime-shim run --bundle {b}; rc=$?; rm -rf {b}; exit $rc",
        rec = rec.display(),
        b = b.display(),
        f = fakeroot_flag(ctx),
        opts = opts.join(" "),
        cmd = q(cmd),
    );
    ctx.run("sh", &["-c", &script])
}

/// env/ociEnvOption and env/ociNoCompatHost rows that need an image variable (CGO_ENABLED=0).
#[test]
fn image_env_is_not_overridden_by_the_host() {
    for ctx in matrix_with(&THREE) {
        let rec = rootfs_record(&ctx, &oci_ref("busybox"));
        edit_record(&rec, |c| {
            c["config"]["Env"]
                .as_array_mut()
                .unwrap()
                .push("CGO_ENABLED=0".into());
        });
        let get = |opts: &[&str], env: &[(&str, &str)]| {
            let b = ctx.dir().join("B");
            let _ = std::fs::remove_dir_all(&b);
            let mut c = ctx.cmd("oci-mkspec").args(&[
                "--input",
                &rec.display().to_string(),
                "--bundle",
                &b.display().to_string(),
            ]);
            if ctx.profile == Profile::Fakeroot {
                c = c.arg("--fakeroot");
            }
            let c = opts.iter().fold(c, |c, o| c.arg(o)).args(&["--", "true"]);
            let c = env.iter().fold(c, |c, (k, v)| c.env(k, v));
            c.run().assert_success();
            let cfg: Value =
                serde_json::from_slice(&std::fs::read(b.join("config.json")).unwrap()).unwrap();
            let env: Vec<String> = cfg["process"]["env"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_str().unwrap().to_string())
                .collect();
            std::fs::remove_dir_all(&b).unwrap();
            env.into_iter()
                .find_map(|e| e.strip_prefix("CGO_ENABLED=").map(str::to_string))
        };
        assert_eq!(get(&[], &[("CGO_ENABLED", "1")]).as_deref(), Some("0"));
        assert_eq!(
            get(&["--no-compat"], &[("CGO_ENABLED", "1")]).as_deref(),
            Some("0")
        );
        assert_eq!(get(&["--env", "CGO_ENABLED=2"], &[]).as_deref(), Some("2"));
        assert_eq!(
            get(&[], &[("SINGULARITYENV_CGO_ENABLED", "3")]).as_deref(),
            Some("3")
        );
        // And in a running container.
        run_bundle(&ctx, &rec, &[], "echo $CGO_ENABLED")
            .assert_success()
            .assert_stdout_eq("0");
        ctx.assert_no_leftovers();
    }
}

/// env/ociNoCompatHost: host variables pass in --no-compat (not the launcher's own), --cleanenv
/// hides them again.
#[test]
fn no_compat_host_env() {
    for ctx in matrix_with(&THREE) {
        let image = oci_ref("busybox");
        let run = |opts: &[&str], env: &[(&str, &str)]| {
            let mut a = vec!["exec"];
            a.extend_from_slice(opts);
            a.extend_from_slice(&[
                &image,
                "sh",
                "-c",
                "echo \"$WHO/$SINGULARITY_BIND/$_CONTAINERS_ROOTLESS_UID\"",
            ]);
            let c = env.iter().fold(ctx.front_cmd(&a), |c, (k, v)| c.env(k, v));
            let out = c.run();
            out.assert_success();
            out.stdout.trim().to_string()
        };
        assert_eq!(run(&["--no-compat"], &[("WHO", "ME")]), "ME//");
        assert_eq!(
            run(
                &["--no-compat"],
                &[("WHO", "ME"), ("SINGULARITYENV_WHO", "YOU")]
            ),
            "YOU//"
        );
        assert_eq!(run(&["--no-compat", "--cleanenv"], &[("WHO", "ME")]), "//");
        assert_eq!(run(&[], &[("WHO", "ME")]), "//");
        ctx.assert_no_leftovers();
    }
}

/// A rootfs whose /etc/passwd is a symlink to an absolute path: it must resolve inside the
/// rootfs, never to the host's file.
#[test]
fn hostile_passwd_symlink_stays_in_the_rootfs() {
    for ctx in matrix_with(&[Profile::Root, Profile::User]) {
        let rec = rootfs_record(&ctx, &oci_ref("busybox"));
        // A private copy of the tree with etc/passwd -> /etc/os-release (which the image lacks).
        let tree = ctx.dir().join("tree");
        let v: Value = serde_json::from_slice(&std::fs::read(&rec).unwrap()).unwrap();
        let src = v["rootfs"].as_str().unwrap().to_string();
        ctx.run("cp", &["-a", &src, &tree.display().to_string()])
            .assert_success();
        ctx.run(
            "sh",
            &[
                "-c",
                &format!(
                    "rm {t}/etc/passwd && ln -s /etc/os-release {t}/etc/passwd",
                    t = tree.display()
                ),
            ],
        )
        .assert_success();
        let mut v = v;
        v["rootfs"] = tree.display().to_string().into();
        std::fs::write(&rec, serde_json::to_vec(&v).unwrap()).unwrap();
        let b = ctx.dir().join("B");
        let out = ctx.run(
            "oci-mkspec",
            &[
                "--input",
                &rec.display().to_string(),
                "--bundle",
                &b.display().to_string(),
                "--",
                "true",
            ],
        );
        out.assert_success()
            .assert_stderr_contains("the image has no /etc/passwd");
        assert!(!b.join("etc/passwd").exists());
        let cfg = std::fs::read_to_string(b.join("config.json")).unwrap();
        assert!(
            !cfg.contains("PRETTY_NAME"),
            "host file content leaked into the bundle"
        );
        std::fs::remove_dir_all(&b).unwrap();
        ctx.run("rm", &["-rf", &tree.display().to_string()])
            .assert_success();
        ctx.assert_no_leftovers();
    }
}

/// Every config.json the front writes validates (a run with many options, --dry-run free).
#[test]
fn flag_heavy_config_validates_and_runs() {
    for ctx in matrix_with(&THREE) {
        let rec = rootfs_record(&ctx, &oci_ref("busybox"));
        let b = ctx.dir().join("B");
        let bs = b.display().to_string();
        let recs = rec.display().to_string();
        let scratch = ctx.mkdir("data").display().to_string();
        let bind = format!("{scratch}:/data:ro");
        let mut a = vec![
            "--input",
            &recs,
            "--bundle",
            &bs,
            "--bind",
            &bind,
            "--mount",
            "type=bind,src=/etc,dst=/hostetc,ro",
            "--scratch",
            "/s1,/s2",
            "--hostname",
            "h",
            "--dns",
            "9.9.9.9",
            "--net",
            "--network",
            "none",
            "--no-pid",
            "--add-caps",
            "net_admin",
            "--drop-caps",
            "chown",
            "--env",
            "A=1,B=2",
            "--writable-tmpfs",
            "--tmpfs-size",
            "16",
            "--allow-setuid",
            "--cwd",
            "/data",
        ];
        if ctx.profile == Profile::Fakeroot {
            a.push("--fakeroot");
        }
        a.extend_from_slice(&[
            "--",
            "sh",
            "-c",
            "df -m /tmp | tail -1; hostname; test -d /hostetc && test -d /s2 && echo $A$B",
        ]);
        ctx.run("oci-mkspec", &a).assert_success();
        validate_runtime_config(b.join("config.json"));
        let run = format!(
            "oci-userns-starter --overlay {bs} {f} -- oci-runtime-shim run --bundle {bs}",
            f = fakeroot_flag(&ctx)
        );
        let out = ctx.run("sh", &["-c", &run]);
        out.assert_success();
        let lines = out.lines();
        if lines.len() != 3
            || lines[0].split_whitespace().nth(1) != Some("16")
            || lines[1] != "h"
            || lines[2] != "12"
        {
            out.fail("expected a 16 MiB /tmp, hostname h and A=1 B=2");
        }
        std::fs::remove_dir_all(&b).unwrap();
        ctx.assert_no_leftovers();
    }
}

/// A private unpack (`oci-unpack --bundle B`): the rootfs is B/rootfs itself, writable, with no
/// overlay and no rootfs.lower.
#[test]
fn private_unpack_bundle() {
    for ctx in matrix_with(&THREE) {
        let b = ctx.dir().join("UB");
        let f = fakeroot_flag(&ctx);
        let script = format!(
            "oci-fetch {img} | oci-unpack --bundle {b} | oci-mkspec --bundle {b} {f} -- sh -c 'touch /written && id -u' > rec.json && oci-userns-starter {f} -- oci-runtime-shim run --bundle {b}",
            img = oci_ref("busybox"),
            b = b.display(),
        );
        let want = if ctx.profile == Profile::User {
            ctx.uid()
        } else {
            0
        };
        ctx.run("sh", &["-c", &script])
            .assert_success()
            .assert_stdout_eq(&want.to_string());
        let rec: Value =
            serde_json::from_slice(&std::fs::read(ctx.dir().join("rec.json")).unwrap()).unwrap();
        assert!(rec.get("rootfsLower").is_none(), "{rec}");
        assert!(!b.join("rootfs.lower").exists());
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(b.join("rootfs/written")).unwrap();
        assert_eq!(
            m.uid(),
            ctx.uid(),
            "[{}] the file written into the private rootfs",
            ctx.name
        );
        ctx.run("rm", &["-rf", &b.display().to_string()])
            .assert_success();
        // A writable record whose rootfs is not DIR/rootfs is refused.
        let rec = rootfs_record(&ctx, &oci_ref("busybox"));
        let mut v: Value = serde_json::from_slice(&std::fs::read(&rec).unwrap()).unwrap();
        v["readOnly"] = false.into();
        std::fs::write(&rec, serde_json::to_vec(&v).unwrap()).unwrap();
        let b2 = ctx.dir().join("B2");
        ctx.run(
            "oci-mkspec",
            &[
                "--input",
                &rec.display().to_string(),
                "--bundle",
                &b2.display().to_string(),
                "--",
                "true",
            ],
        )
        .assert_fatal("unpack with --bundle");
        assert!(!b2.exists());
        ctx.assert_no_leftovers();
    }
}

/// An existing bundle directory that another user owns, or that every user can write, is
/// refused: its owner could change config.json between oci-mkspec and the run. (The front
/// relies on this: it names its bundles at random and lets oci-mkspec create them.)
#[test]
fn a_bundle_another_user_controls_is_refused() {
    let ctx = Ctx::for_test(Profile::User, Rt::Crun);
    let other = Ctx::for_test(Profile::UserNoSubids, Rt::Crun);
    let rec = rootfs_record(&ctx, &oci_ref("busybox"));
    let foreign = ctx.dir().join("foreign");
    std::fs::create_dir(&foreign).unwrap();
    std::os::unix::fs::chown(&foreign, Some(other.uid()), Some(other.gid())).unwrap();
    std::fs::set_permissions(&foreign, std::fs::Permissions::from_mode(0o777)).unwrap();
    let open = ctx.mkdir("open");
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
    for (b, why) in [
        (&foreign, "is owned by uid"),
        (&open, "is writable by group or others"),
    ] {
        ctx.run(
            "oci-mkspec",
            &[
                "--input",
                rec.to_str().unwrap(),
                "--bundle",
                b.to_str().unwrap(),
                "--",
                "true",
            ],
        )
        .assert_code(255)
        .assert_fatal(why);
        assert_eq!(
            std::fs::read_dir(b).unwrap().count(),
            0,
            "{} was written",
            b.display()
        );
    }
}
