//! The front (`scripts/singularity-oci`), the stage-record schemas, the man pages and
//! the CLI conventions every executable shares.

use e2e::*;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

const STAGES: [&str; 9] = [
    "oci-fetch",
    "oci-unpack",
    "oci-mkspec",
    "oci-userns-starter",
    "oci-runtime-shim",
    "oci-conmon-create",
    "oci-attach",
    "oci-cgroup-fix",
    "oci-instance",
];

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn assert_record(schema: &str, out: &Output) -> Value {
    out.assert_code(0);
    let lines = out.lines();
    assert_eq!(
        lines.len(),
        1,
        "stdout must be exactly one JSON line:\n{}",
        out.stdout
    );
    let v: Value = serde_json::from_str(lines[0]).expect("record is JSON");
    assert_record_valid(schema, &v);
    v
}

#[test]
fn every_record_validates_against_its_schema() {
    for ctx in matrix_with(&[Profile::Root, Profile::User]) {
        let image = assert_record(
            "image-record.schema.json",
            &ctx.run(ctx.bin("oci-fetch"), &[&oci_ref("layered")]),
        );
        let image_file = ctx.write_file("image.json", image.to_string());
        let rootfs = assert_record(
            "rootfs-record.schema.json",
            &ctx.run(
                ctx.bin("oci-unpack"),
                &["--input", image_file.to_str().unwrap()],
            ),
        );
        let rootfs_file = ctx.write_file("rootfs.json", rootfs.to_string());
        let bundle = ctx.dir().join("bundle");
        assert_record(
            "bundle-record.schema.json",
            &ctx.run(
                ctx.bin("oci-mkspec"),
                &[
                    "--input",
                    rootfs_file.to_str().unwrap(),
                    "--bundle",
                    bundle.to_str().unwrap(),
                    "--",
                    "id",
                ],
            ),
        );
        validate_runtime_config(bundle.join("config.json"));
    }
}

#[test]
fn unknown_schema_version_is_refused_by_every_reader() {
    let ctx = Ctx::for_test(Profile::Root, Rt::Crun);
    let image = ctx.run(ctx.bin("oci-fetch"), &[&oci_ref("busybox")]);
    image.assert_code(0);
    let mut v = image.json();
    v["schemaVersion"] = 999.into();
    let f = ctx.write_file("future.json", v.to_string());
    ctx.run(ctx.bin("oci-unpack"), &["--input", f.to_str().unwrap()])
        .assert_code(255)
        .assert_fatal("schemaVersion 999");
    // oci-mkspec reads a rootfs record: an image record is named as the wrong kind.
    let f = ctx.write_file("image.json", image.stdout.clone());
    let b = ctx.dir().join("b");
    ctx.run(
        ctx.bin("oci-mkspec"),
        &[
            "--input",
            f.to_str().unwrap(),
            "--bundle",
            b.to_str().unwrap(),
        ],
    )
    .assert_code(255)
    .assert_fatal("'image' record");
}

#[test]
fn hand_typed_pipeline_then_starter_and_shim() {
    for ctx in matrix() {
        let b = ctx.dir().join("handb");
        let script = format!(
            "set -e; oci-fetch {img} | oci-unpack | oci-mkspec --bundle {b} -- echo piped >/dev/null; \
             oci-userns-starter --overlay {b} -- oci-runtime-shim run --bundle {b}",
            img = oci_ref("busybox"),
            b = b.display()
        );
        ctx.run("/bin/sh", &["-c", &script])
            .assert_code(0)
            .assert_stdout_eq("piped");
        assert!(b.join("config.json").is_file());
    }
}

#[test]
fn dry_run_prints_a_pipeline_that_runs_when_pasted() {
    for ctx in matrix() {
        let out = ctx.front(&[
            "--dry-run",
            "exec",
            "--env",
            "GREETING=it's me",
            &oci_ref("busybox"),
            "sh",
            "-c",
            "echo \"$GREETING\"",
        ]);
        out.assert_code(0);
        assert!(out.stdout.contains("oci-fetch"), "{}", out.stdout);
        assert!(
            out.stdout.contains("oci-runtime-shim run"),
            "{}",
            out.stdout
        );
        // Nothing ran: no bundle was made.
        ctx.assert_no_leftovers();
        let pasted = format!("set -e\n{}", out.stdout);
        ctx.run("/bin/sh", &["-c", &pasted])
            .assert_code(0)
            .assert_stdout_eq("it's me");
        ctx.assert_no_leftovers();
    }
}

#[test]
fn debug_shows_each_stage_and_record() {
    let ctx = Ctx::for_test(Profile::User, Rt::Crun);
    let out = ctx.front(&["--debug", "exec", &oci_ref("busybox"), "true"]);
    out.assert_code(0);
    for stage in [
        "stage fetch:",
        "stage unpack:",
        "stage mkspec:",
        "record from fetch:",
        "record from mkspec:",
    ] {
        out.assert_stderr_contains(stage);
    }
    ctx.assert_no_leftovers();
}

#[test]
fn a_failure_names_the_stage() {
    let ctx = Ctx::for_test(Profile::User, Rt::Crun);
    let missing = format!("oci:{}/no-such-layout:latest", ctx.dir().display());
    let out = ctx.front(&["exec", &missing, "true"]);
    out.assert_code(255).assert_fatal("oci-fetch");
    assert_eq!(
        out.stderr
            .lines()
            .filter(|l| l.starts_with("FATAL:"))
            .count(),
        1,
        "{}",
        out.stderr
    );
    ctx.assert_no_leftovers();
}

#[test]
fn front_runs_under_dash_and_is_shellcheck_clean() {
    let front = repo().join("scripts/singularity-oci");
    let sc = Command::new("shellcheck")
        .args(["-s", "sh"])
        .arg(&front)
        .output()
        .expect("shellcheck is installed");
    assert!(
        sc.status.success(),
        "shellcheck:\n{}",
        String::from_utf8_lossy(&sc.stdout)
    );
    let ctx = Ctx::for_test(Profile::Root, Rt::Crun);
    let installed = ctx.bin("singularity-oci");
    ctx.run("dash", &[&installed, "version"])
        .assert_code(0)
        .assert_stdout_contains("singularity-oci ");
    ctx.run(
        "dash",
        &[&installed, "exec", &oci_ref("busybox"), "echo", "dash"],
    )
    .assert_code(0)
    .assert_stdout_eq("dash");
    ctx.run("dash", &[&installed, "help"])
        .assert_code(0)
        .assert_stdout_contains("Usage:");
    ctx.run("dash", &[&installed, "frobnicate"])
        .assert_code(255)
        .assert_fatal("unknown command");
}

#[test]
fn stdin_reaches_the_container() {
    for ctx in matrix() {
        ctx.front_cmd(&["exec", &oci_ref("busybox"), "grep", "hi"])
            .stdin("hi\n")
            .run()
            .assert_code(0);
        ctx.front_cmd(&["exec", &oci_ref("busybox"), "grep", "hi"])
            .stdin("bye\n")
            .run()
            .assert_code(1);
    }
}

#[test]
fn pull_and_inspect_print_records() {
    let ctx = Ctx::for_test(Profile::User, Rt::Crun);
    let pulled = assert_record(
        "rootfs-record.schema.json",
        &ctx.front(&["pull", &oci_ref("busybox")]),
    );
    assert!(
        Path::new(pulled["rootfs"].as_str().unwrap())
            .join("bin/busybox")
            .exists()
    );
    assert_record(
        "image-record.schema.json",
        &ctx.front(&["inspect", &oci_ref("busybox")]),
    );
    ctx.assert_no_leftovers();
}

#[test]
fn every_executable_has_help_version_and_a_clean_man_page() {
    let ctx = Ctx::for_test(Profile::User, Rt::Crun);
    for exe in STAGES.iter().chain(["singularity-oci"].iter()) {
        let help = ctx.run(ctx.bin(exe), &["--help"]);
        help.assert_code(0);
        assert!(
            help.stdout.contains("Usage"),
            "{exe} --help has no usage line:\n{}",
            help.stdout
        );
        ctx.run(ctx.bin(exe), &["--version"])
            .assert_code(0)
            .assert_stdout_contains("0.1.0");
        let page = repo().join("man").join(format!("{exe}.1"));
        assert!(page.is_file(), "missing man page {}", page.display());
        let out = Command::new("groff")
            .args(["-man", "-Tutf8", "-ww", "-z"])
            .arg(&page)
            .output()
            .expect("groff is installed");
        let warnings = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && warnings.trim().is_empty(),
            "{exe}.1 warnings:\n{warnings}"
        );
        let text = std::fs::read_to_string(&page).unwrap();
        for section in [
            "SYNOPSIS",
            "EXIT STATUS",
            "ENVIRONMENT",
            "FILES",
            "EXAMPLES",
            "DIFFERENCES FROM SINGULARITYCE",
        ] {
            assert!(
                text.contains(&format!(".SH {section}"))
                    || text.contains(&format!(".SH \"{section}\"")),
                "{exe}.1 lacks {section}"
            );
        }
    }
}

#[test]
fn unknown_option_of_a_stage_is_fatal_255() {
    let ctx = Ctx::for_test(Profile::User, Rt::Crun);
    for exe in STAGES {
        let out = ctx.run(ctx.bin(exe), &["--no-such-option-xyz"]);
        out.assert_code(255);
        assert_eq!(
            out.stderr
                .lines()
                .filter(|l| l.starts_with("FATAL:"))
                .count(),
            1,
            "{exe}: {}",
            out.stderr
        );
    }
}

#[test]
fn cache_list_and_clean() {
    let ctx = Ctx::for_test(Profile::User, Rt::Crun);
    // A private cache, so cleaning it cannot disturb other tests.
    let cache = ctx.mkdir("own-cache");
    let env = ("SINGULARITY_CACHEDIR", cache.to_str().unwrap());
    let pulled = ctx
        .front_cmd(&["pull", &oci_ref("busybox")])
        .env(env.0, env.1)
        .run();
    pulled.assert_code(0);
    let rootfs = pulled.json()["rootfs"].as_str().unwrap().to_string();
    assert!(rootfs.starts_with(cache.to_str().unwrap()), "{rootfs}");
    let key = Path::new(&rootfs)
        .parent()
        .unwrap()
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    // The plumbing: one cache record.
    let rec = assert_record(
        "cache-record.schema.json",
        &ctx.cmd(ctx.bin("oci-fetch"))
            .arg("--list-cache")
            .env(env.0, env.1)
            .run(),
    );
    let manifest = format!("sha256:{}", key.rsplit_once('-').unwrap().0);
    assert!(
        rec["rootfs"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["manifest"] == manifest.as_str()),
        "{rec}"
    );
    // Its rendering: every heading on its own line, one item per line below it.
    let list = ctx.front_cmd(&["cache", "list"]).env(env.0, env.1).run();
    list.assert_code(0);
    let lines: Vec<&str> = list.stdout.lines().collect();
    assert_eq!(
        lines[0],
        format!("cache: {}/cache/oci-launcher", cache.display()),
        "{}",
        list.stdout
    );
    assert!(lines[1].starts_with("blobs: ") && lines[1].ends_with(|c: char| c.is_alphabetic()));
    assert_eq!(lines[2], "references:", "{}", list.stdout);
    let trees = lines
        .iter()
        .position(|l| l.starts_with("root filesystems"))
        .unwrap_or_else(|| list.fail("no root filesystems heading"));
    assert!(
        lines[3..trees]
            .iter()
            .all(|l| l.starts_with("  ") && l.contains(" -> sha256:"))
    );
    let tree = lines[trees + 1..]
        .iter()
        .find(|l| l.contains(&key))
        .unwrap_or_else(|| list.fail("the tree is not listed"));
    assert_eq!(tree.split_whitespace().count(), 2, "{tree}");
    ctx.front_cmd(&["cache", "clean"])
        .env(env.0, env.1)
        .run()
        .assert_fatal("--force");
    assert!(
        Path::new(&rootfs).exists(),
        "clean without --force removed the cache"
    );
    ctx.front_cmd(&["cache", "clean", "--force"])
        .env(env.0, env.1)
        .run()
        .assert_code(0);
    assert!(!cache.join("cache/oci-launcher").exists());
    ctx.front_cmd(&["cache", "list"])
        .env(env.0, env.1)
        .run()
        .assert_code(0)
        .assert_stdout_contains("no cache");
}

/// The warm path starts the stages and the runtime, and nothing else: no mktemp, rm, dirname,
/// sed or cat, whose forks and execs each cost about a millisecond on every container start.
/// Traced as root (strace would strip newuidmap's setuid bit for the test users).
#[test]
fn a_warm_exec_starts_only_the_stages_and_the_runtime() {
    for rt in [Rt::Crun, Rt::Runc] {
        let ctx = Ctx::for_test(Profile::Root, rt);
        ctx.front(&["exec", &oci_ref("busybox"), "true"])
            .assert_code(0);
        let trace = ctx.dir().join("exec.trace");
        let front = prefix().join("bin/singularity-oci");
        ctx.run(
            "strace",
            &[
                "-f",
                "-qq",
                "-e",
                "trace=execve",
                "-e",
                "signal=none",
                "-o",
                trace.to_str().unwrap(),
                front.to_str().unwrap(),
                "exec",
                &oci_ref("busybox"),
                "true",
            ],
        )
        .assert_code(0);
        let text = std::fs::read_to_string(&trace).unwrap();
        // `PID execve("/path", [...], ...) = 0`: the programs that really started.
        let started: Vec<String> = text
            .lines()
            .filter(|l| l.contains("execve(\"") && l.trim_end().ends_with("= 0"))
            .filter_map(|l| l.split('"').nth(1))
            .map(|p| p.rsplit('/').next().unwrap_or(p).to_string())
            .collect();
        let runtime = rt.name();
        for s in started.iter() {
            // The runtime re-executes itself from a sealed copy (crun: /proc/self/fd/N or
            // /dev/fd/N; runc: /proc/self/exe `init`).
            let expected = [
                "singularity-oci",
                "oci-fetch",
                "oci-unpack",
                "oci-mkspec",
                "oci-userns-starter",
                "oci-runtime-shim",
                runtime,
                "exe",
                // The container's init (PID 1 of its PID namespace), then the command.
                ".singularity-oci-init",
                "true",
            ]
            .contains(&s.as_str())
                || s.chars().all(|c| c.is_ascii_digit());
            assert!(expected, "[{runtime}] unexpected process {s}: {started:?}");
        }
        for stage in [
            "oci-fetch",
            "oci-unpack",
            "oci-mkspec",
            "oci-userns-starter",
            "oci-runtime-shim",
        ] {
            assert_eq!(
                started.iter().filter(|s| *s == stage).count(),
                1,
                "[{runtime}] {stage}: {started:?}"
            );
        }
        ctx.assert_no_leftovers();
    }
}

/// The shim removes the front's bundle (`run --remove-bundle`) after detaching the overlay, so
/// what the container deleted is gone from the overlay only: the cached rootfs stays whole.
#[test]
fn the_bundle_goes_with_the_run_and_the_cached_rootfs_stays_whole() {
    for ctx in matrix() {
        let rec = ctx.front(&["pull", &oci_ref("busybox")]);
        rec.assert_code(0);
        let rootfs = PathBuf::from(rec.json()["rootfs"].as_str().unwrap());
        assert!(rootfs.join("bin/busybox").is_file());
        ctx.front(&[
            "exec",
            &oci_ref("busybox"),
            "sh",
            "-c",
            "rm -f /bin/busybox; echo gone",
        ])
        .assert_code(0)
        .assert_stdout_eq("gone");
        assert!(
            rootfs.join("bin/busybox").is_file(),
            "[{}] the container's delete reached the cache",
            ctx.name
        );
        ctx.front(&["exec", &oci_ref("busybox"), "true"])
            .assert_code(0);
        ctx.assert_no_leftovers();
    }
}

/// The words of `NAME='...'` in the installed front.
fn front_list(script: &str, name: &str) -> Vec<String> {
    let prefix = format!("{name}='");
    let line = script
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("the front has no {name}"));
    line.trim_end_matches('\'')
        .split_whitespace()
        .map(String::from)
        .collect()
}

/// The words of a stage's `--help` line starting with `prefix`, minus the stage-only ones.
fn help_list(ctx: &Ctx, stage: &str, prefix: &str, stage_only: &[&str]) -> Vec<String> {
    let out = ctx.run(ctx.bin(stage), &["--help"]);
    out.assert_code(0);
    out.stdout
        .lines()
        .find_map(|l| l.strip_prefix(prefix))
        .unwrap_or_else(|| panic!("{stage} --help has no '{prefix}' line"))
        .split_whitespace()
        .filter(|w| !stage_only.contains(w))
        .map(String::from)
        .collect()
}

/// The front's routing lists are the stages' own (their --help lines, which each stage's unit
/// test checks against its parser), minus the options only the front's chain gives a stage.
#[test]
fn the_fronts_option_lists_are_the_stages() {
    let ctx = Ctx::for_test(Profile::Root, Rt::Crun);
    let script = std::fs::read_to_string(prefix().join("bin/singularity-oci")).unwrap();
    // The chain's own wiring (bundle, input, action), the image file options of pull/build
    // (--save-archive, --save-oci-sif, --force), --tmpdir (--disable-cache's layout),
    // --inspect-json and --list-cache (inspect and cache list use them), the front's own
    // --creds and -q.
    let fetch_only = [
        "--tmpdir",
        "--save-archive",
        "--save-oci-sif",
        "--force",
        "--inspect-json",
        "--list-cache",
        "--creds",
        "--quiet",
        "-q",
    ];
    let mkspec_only = ["--bundle", "--input", "--action"];
    for (var, stage, prefix, only) in [
        (
            "FETCH_VALUE_OPTIONS",
            "oci-fetch",
            "Value options: ",
            &fetch_only[..],
        ),
        (
            "FETCH_FLAG_OPTIONS",
            "oci-fetch",
            "Flag options: ",
            &fetch_only[..],
        ),
        (
            "MKSPEC_VALUE_OPTIONS",
            "oci-mkspec",
            "Value options: ",
            &mkspec_only[..],
        ),
        (
            "MKSPEC_FLAG_OPTIONS",
            "oci-mkspec",
            "Flag options: ",
            &mkspec_only[..],
        ),
    ] {
        let mut front = front_list(&script, var);
        let mut stage_list = help_list(&ctx, stage, prefix, only);
        front.sort();
        stage_list.sort();
        assert_eq!(
            front, stage_list,
            "the front's {var} differs from `{stage} --help`'s {prefix:?} line"
        );
    }
}

/// A mistyped option is named (not blamed on the image), and every option works as
/// `--opt=value` as well as `--opt value`, flags as `--flag=true|false`.
#[test]
fn unknown_options_are_named_and_both_value_forms_work() {
    for ctx in matrix() {
        let img = oci_ref("busybox");
        ctx.front(&["exec", "--bindd", "/tmp", &img, "true"])
            .assert_fatal("unknown option '--bindd'");
        ctx.front(&["exec", "--bindd=/tmp", &img, "true"])
            .assert_fatal("unknown option '--bindd'");
        ctx.front(&["exec", "--offline=maybe", &img, "true"])
            .assert_fatal("--offline takes true or false");
        ctx.front(&["pull", "--bogus", &img])
            .assert_fatal("unknown option '--bogus'");
        for args in [
            &[
                "--tls-verify",
                "false",
                "--jobs",
                "2",
                "--offline",
                "--env",
                "A=1",
            ][..],
            &[
                "--tls-verify=false",
                "--jobs=2",
                "--offline=true",
                "--env=A=1",
            ][..],
            &[
                "--offline=false",
                "--cleanenv=true",
                "--no-init=false",
                "--env=A=1",
            ][..],
        ] {
            let mut argv = vec!["exec"];
            argv.extend_from_slice(args);
            argv.extend_from_slice(&[&img, "sh", "-c", "echo A=$A pid1=$(cat /proc/1/comm)"]);
            let out = ctx.front(&argv);
            out.assert_code(0);
            assert!(
                out.stdout.contains("A=1"),
                "[{}] {args:?}: {}",
                ctx.name,
                out.stdout
            );
        }
        // --no-init=true reaches oci-mkspec as --no-init: the command is PID 1.
        ctx.front(&["exec", "--no-init=true", &img, "sh", "-c", "echo $$"])
            .assert_code(0)
            .assert_stdout_eq("1");
        // fetch options of pull, both forms.
        for args in [
            &["--jobs", "2"][..],
            &["--jobs=2", "--tls-verify=false"][..],
        ] {
            let mut argv = vec!["pull"];
            argv.extend_from_slice(args);
            argv.push(&img);
            ctx.front(&argv).assert_code(0);
        }
        ctx.assert_no_leftovers();
    }
}

/// The directory the bundle of a run was made in, from `--debug`'s mkspec record.
fn bundle_parent_of(out: &Output) -> PathBuf {
    let line = out
        .stderr
        .lines()
        .find_map(|l| l.split_once("record from mkspec: ").map(|(_, r)| r))
        .unwrap_or_else(|| out.fail("no mkspec record in --debug output"));
    let rec: Value = serde_json::from_str(line).unwrap();
    Path::new(rec["bundle"].as_str().unwrap())
        .parent()
        .unwrap()
        .to_path_buf()
}

/// A foreground run's bundle goes in `$XDG_RUNTIME_DIR` when the user has one (a tmpfs where
/// a logged-in user has it, as SingularityCE 4 builds bundles on a session tmpfs); a
/// `--disable-cache` run's (it holds the whole image) stays in the temporary directory, and so
/// does every bundle when the variable names nothing of the user's; one named through a
/// symbolic link or that others can write is refused. Nothing is left in either.
#[test]
fn a_run_makes_its_bundle_in_the_runtime_directory() {
    for ctx in matrix_with(&[Profile::Root, Profile::User]) {
        // As logind makes it: the user's, 0700 (for runc's init, root of the inner namespace,
        // the bundle is then reachable only because the directory's owner and group are both
        // mapped there).
        let xdg = ctx.mkdir("xdg");
        std::fs::set_permissions(&xdg, std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .unwrap();
        let xdg_s = xdg.to_str().unwrap();
        let image = oci_ref("busybox");
        let run = |opts: &[&str], runtime_dir: &str| {
            let mut args = vec!["--debug", "exec"];
            args.extend_from_slice(opts);
            args.extend_from_slice(&[&image, "true"]);
            let out = ctx
                .front_cmd(&args)
                .env("XDG_RUNTIME_DIR", runtime_dir)
                .run();
            out.assert_code(0);
            bundle_parent_of(&out)
        };
        assert_eq!(run(&[], xdg_s), xdg, "[{}] default run", ctx.name);
        assert_eq!(
            run(&["--disable-cache"], xdg_s),
            ctx.tmpdir(),
            "[{}] --disable-cache",
            ctx.name
        );
        assert_eq!(
            run(&[], "/nonexistent-runtime-dir"),
            ctx.tmpdir(),
            "[{}] a runtime directory that does not exist",
            ctx.name
        );
        let link = ctx.dir().join("xdg-link");
        std::os::unix::fs::symlink(&xdg, &link).unwrap();
        // A runtime directory named through a symbolic link is never followed: the bundle goes
        // to the temporary directory; a user's state root (which root's is not) refuses it.
        if ctx.is_root() {
            assert_eq!(
                run(&[], link.to_str().unwrap()),
                ctx.tmpdir(),
                "[{}] a runtime directory named through a symbolic link",
                ctx.name
            );
        } else {
            ctx.front_cmd(&["exec", &image, "true"])
                .env("XDG_RUNTIME_DIR", link.to_str().unwrap())
                .run()
                .assert_fatal("symbolic link");
        }
        // A runtime directory others can write is refused, as a temporary directory would be.
        let open_dir = ctx.mkdir("xdg-open");
        std::fs::set_permissions(
            &open_dir,
            std::os::unix::fs::PermissionsExt::from_mode(0o777),
        )
        .unwrap();
        ctx.front_cmd(&["exec", &image, "true"])
            .env("XDG_RUNTIME_DIR", open_dir.to_str().unwrap())
            .run()
            .assert_fatal("writable by group or others");
        assert_eq!(std::fs::read_dir(&open_dir).unwrap().count(), 0);
        let left: Vec<_> = std::fs::read_dir(&xdg)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .filter(|n| n.to_string_lossy().starts_with("singularity-oci."))
            .collect();
        assert!(
            left.is_empty(),
            "[{}] bundles left in {xdg_s}: {left:?}",
            ctx.name
        );
        ctx.assert_no_leftovers();
    }
}
