//! Sandbox directories (a tree with `/.singularity.d`) run in place, read-only below the
//! overlay, with Singularity's action semantics; the user's variables win over the image's
//! env scripts (for native SIFs too); sandboxes another user could swap are refused.

use e2e::*;
use std::path::{Path, PathBuf};

/// Where the root filesystem partition of the busybox SIF starts (siftool's own answer).
fn partition_offset(sif: &Path) -> String {
    let o = std::process::Command::new("siftool")
        .args(["info", "1"])
        .arg(sif)
        .output()
        .expect("siftool is installed (scripts/setup)");
    assert!(o.status.success(), "siftool info: {o:?}");
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("Offset:")
                .map(|v| v.trim().to_string())
        })
        .expect("siftool info prints the offset")
}

/// A sandbox built by the context's user as people build one without Singularity:
/// `unsquashfs -d` of the busybox SIF's partition, then (as `unsquashfs` keeps the squashfs
/// root's mode 0777) the top made 0755. Its files belong to that user.
pub(crate) fn build_sandbox(ctx: &Ctx, name: &str) -> PathBuf {
    let sif = sif_fixture("busybox");
    let dest = ctx.dir().join(name);
    ctx.run(
        "unsquashfs",
        &[
            "-quiet",
            "-no-progress",
            "-o",
            &partition_offset(&sif),
            "-d",
            dest.to_str().unwrap(),
            sif.to_str().unwrap(),
        ],
    )
    .assert_code(0);
    ctx.run("chmod", &["0755", dest.to_str().unwrap()])
        .assert_code(0);
    dest
}

#[test]
fn sandbox_runs_in_place_with_singularity_semantics() {
    for ctx in matrix_with(&[Profile::Root, Profile::User, Profile::Fakeroot]) {
        let sb = build_sandbox(&ctx, "sb");
        let img = sb.to_str().unwrap();
        // The record names the transport and the directory; nothing goes into the cache.
        let cache = ctx.mkdir("cache");
        let image = ctx
            .cmd(ctx.bin("oci-fetch"))
            .arg(img)
            .env("SINGULARITY_CACHEDIR", cache.to_str().unwrap())
            .run();
        image.assert_code(0);
        let rec = image.json();
        assert_record_valid("image-record.schema.json", &rec);
        assert_eq!(rec["transport"], "sandbox");
        assert_eq!(rec["layers"].as_array().unwrap().len(), 0);
        assert_eq!(rec["sandbox"]["path"], img);
        let rootfs = ctx
            .cmd(ctx.bin("oci-unpack"))
            .env("SINGULARITY_CACHEDIR", cache.to_str().unwrap())
            .stdin(image.stdout.clone())
            .run();
        rootfs.assert_code(0);
        let r = rootfs.json();
        assert_record_valid("rootfs-record.schema.json", &r);
        assert_eq!(r["rootfs"], img);
        assert_eq!(
            (r["readOnly"].as_bool(), r["cached"].as_bool()),
            (Some(true), Some(false))
        );
        assert_eq!(
            std::fs::read_dir(&cache).unwrap().count(),
            0,
            "the cache was touched"
        );

        // Singularity's actions.
        ctx.front(&["exec", img, "/bin/sh", "-c", "echo $SIF_ORDER"])
            .assert_code(0)
            .assert_stdout_eq("base:env");
        ctx.front(&["run", img, "a", "b c"])
            .assert_code(0)
            .assert_stdout_eq("runscript:base:env:a b c");
        ctx.front(&["test", img])
            .assert_code(7)
            .assert_stdout_eq("test:hello from the sif");
        // The tree is the overlay's lower layer: writes land in the tmpfs, never in the sandbox.
        ctx.front(&[
            "exec",
            "--writable-tmpfs",
            img,
            "/bin/sh",
            "-c",
            "echo w > /bin/new && cat /bin/new",
        ])
        .assert_code(0)
        .assert_stdout_eq("w");
        assert!(!sb.join("bin/new").exists(), "a write reached the sandbox");
        // The files the user unpacked are the user's in the container (root's under --fakeroot).
        let owner = if ctx.profile == Profile::Fakeroot {
            0
        } else {
            ctx.uid()
        };
        ctx.front(&["exec", img, "/bin/stat", "-c", "%u", "/bin/busybox"])
            .assert_code(0)
            .assert_stdout_eq(&owner.to_string());
        // The usual options.
        ctx.mkdir("bound");
        ctx.write_file("bound/file", "bound\n");
        let bind = format!("{}:/mnt", ctx.dir().join("bound").display());
        ctx.front_cmd(&[
            "exec",
            "--cleanenv",
            "-B",
            &bind,
            img,
            "/bin/sh",
            "-c",
            "cat /mnt/file; echo ${HOSTVAR:-unset}",
        ])
        .env("HOSTVAR", "leaked")
        .run()
        .assert_code(0)
        .assert_stdout_eq("bound\nunset");
        ctx.assert_no_leftovers();
    }
}

/// The user's variables win over the image's env scripts, for sandboxes and native SIFs alike:
/// `SINGULARITYENV_X`, `--env-file` and `--env` (which wins over both), also in `run`, and
/// PATH pieces are applied to the PATH the scripts built.
#[test]
fn the_users_variables_win_over_the_image_env_scripts() {
    for ctx in matrix() {
        let sb = build_sandbox(&ctx, "sb");
        let sif = sif_fixture("busybox");
        let envfile = ctx.write_file("env-file", "SIF_ORDER=from-file\n");
        for img in [sb.to_str().unwrap(), sif.to_str().unwrap()] {
            ctx.front_cmd(&[
                "exec",
                img,
                "/bin/sh",
                "-c",
                "echo \"$SIF_GREETING|$SIF_ORDER\"",
            ])
            .env("SINGULARITYENV_SIF_GREETING", "it's mine")
            .run()
            .assert_code(0)
            .assert_stdout_eq("it's mine|base:env");
            ctx.front_cmd(&[
                "exec",
                "--env-file",
                envfile.to_str().unwrap(),
                "--env",
                "SIF_GREETING=cli",
                img,
                "/bin/sh",
                "-c",
                "echo \"$SIF_GREETING|$SIF_ORDER\"",
            ])
            .env("SINGULARITYENV_SIF_GREETING", "env")
            .run()
            .assert_code(0)
            .assert_stdout_eq("cli|from-file");
            ctx.front_cmd(&["run", img])
                .env("SINGULARITYENV_SIF_ORDER", "user")
                .run()
                .assert_code(0)
                .assert_stdout_eq("runscript:user:");
            // Literal by default; evaluated with --no-compat (unless --no-eval), as the
            // double-quoted lines of SingularityCE's 98-singularityenv.sh are.
            for (opts, want) in [
                (&[][..], "$(id -u)".to_string()),
                (&["--no-compat"][..], ctx.uid().to_string()),
                (&["--no-compat", "--no-eval"][..], "$(id -u)".to_string()),
            ] {
                let mut args = vec!["exec"];
                args.extend_from_slice(opts);
                args.extend_from_slice(&[img, "/bin/sh", "-c", "echo \"$WHO\""]);
                ctx.front_cmd(&args)
                    .env("SINGULARITYENV_WHO", "$(id -u)")
                    .run()
                    .assert_code(0)
                    .assert_stdout_eq(&want);
            }
            ctx.front_cmd(&["exec", img, "/bin/sh", "-c", "echo $PATH"])
                .env("SINGULARITYENV_PREPEND_PATH", "/first")
                .env("SINGULARITYENV_APPEND_PATH", "/last")
                .run()
                .assert_code(0)
                .assert_stdout_eq(
                    "/first:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:/last",
                );
        }
        ctx.assert_no_leftovers();
    }
}

/// The host's variables reach a Singularity-built image as SingularityCE's
/// `98-singularityenv.sh` exports them: after the image's env scripts and the user's
/// variables, each only if nothing set it by then. The image's scripts do not see them, an
/// evaluated user value does not either, a variable a script unset comes back, one it set
/// stays; in compat mode the same holds for the few that pass (TERM).
#[test]
fn host_variables_come_after_the_image_env_scripts() {
    for ctx in matrix() {
        let sb = build_sandbox(&ctx, "sb");
        ctx.write_file(
            "sb/.singularity.d/env/50-host.sh",
            "export SEEN=\"${HOSTV:-unset}|${TERM:-unset}\" CGO=0\nunset GONE\n",
        );
        let img = sb.to_str().unwrap();
        let show = "echo \"$HOSTV|$CGO|$SEEN|$GONE|$WHO|$TERM\"";
        ctx.front_cmd(&["exec", "--no-compat", img, "/bin/sh", "-c", show])
            .env("HOSTV", "host")
            .env("CGO", "host")
            .env("GONE", "back")
            .env("TERM", "xterm")
            .env("SINGULARITYENV_WHO", "[$HOSTV]")
            .run()
            .assert_code(0)
            .assert_stdout_eq("host|0|unset|unset|back|[]|xterm");
        ctx.front_cmd(&["exec", img, "/bin/sh", "-c", show])
            .env("HOSTV", "host")
            .env("TERM", "xterm")
            .run()
            .assert_code(0)
            .assert_stdout_eq("|0|unset|unset|||xterm");
        ctx.assert_no_leftovers();
    }
}

/// A sandbox that someone else could swap while it runs is refused before anything is made:
/// one owned by another user (for root too), one writable by others, one below a directory
/// others can write, `/`, and a directory without `/.singularity.d`.
#[test]
fn sandboxes_others_could_swap_are_refused() {
    for ctx in matrix_with(&[Profile::Root, Profile::User])
        .into_iter()
        .filter(|c| c.rt == Rt::Crun)
    {
        let attacker = ctx.attacker();
        let theirs = build_sandbox(&attacker, "theirs");
        let open = build_sandbox(&ctx, "open");
        ctx.run("chmod", &["0775", open.to_str().unwrap()])
            .assert_code(0);
        let shared = ctx.mkdir("shared");
        ctx.run("chmod", &["0777", shared.to_str().unwrap()])
            .assert_code(0);
        let below = build_sandbox(&ctx, "shared/sb");
        let plain = ctx.mkdir("plain");
        let cases: [(&Path, &str); 5] = [
            (&theirs, "not by you"),
            (&open, "writable by group or others"),
            (&below, "writable by group or others"),
            (Path::new("/"), "not a sandbox image"),
            (&plain, "not a sandbox image"),
        ];
        for (dir, needle) in cases {
            ctx.front(&["exec", dir.to_str().unwrap(), "/bin/true"])
                .assert_fatal(needle);
            ctx.assert_no_leftovers();
        }
        // A sandbox swapped between oci-fetch and oci-unpack is refused by oci-unpack.
        let sb = build_sandbox(&ctx, "swapped");
        let image = ctx.run(ctx.bin("oci-fetch"), &[sb.to_str().unwrap()]);
        image.assert_code(0);
        ctx.run(
            "mv",
            &[
                sb.to_str().unwrap(),
                ctx.dir().join("old").to_str().unwrap(),
            ],
        )
        .assert_code(0);
        build_sandbox(&ctx, "swapped");
        ctx.cmd(ctx.bin("oci-unpack"))
            .stdin(image.stdout.clone())
            .run()
            .assert_fatal("replaced");
    }
}

/// A sandbox that root made (a site's shared image directory) runs for a user: the runtime
/// creates the mount points the tree lacks (the user's home, a bind's destination) in
/// directories the user cannot write, which the starter prepares in the overlay's upper layer.
#[test]
fn a_sandbox_root_made_runs_for_users() {
    // runc has no unprivileged default without subordinate IDs (one FATAL, tested elsewhere).
    let runnable = |c: &Ctx| !(c.profile == Profile::UserNoSubids && c.rt == Rt::Runc);
    for ctx in matrix_with(&[Profile::User, Profile::UserNoSubids])
        .into_iter()
        .filter(runnable)
    {
        let sif = sif_fixture("busybox");
        let sb = ctx.dir().join("root-made");
        let made = std::process::Command::new("unsquashfs")
            .args([
                "-quiet",
                "-no-progress",
                "-o",
                &partition_offset(&sif),
                "-d",
            ])
            .arg(&sb)
            .arg(&sif)
            .status()
            .expect("unsquashfs runs");
        assert!(made.success());
        std::fs::set_permissions(&sb, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        let data = ctx.mkdir("data");
        ctx.write_file("data/in", "from the host\n");
        let bind = format!("{}:/etc/extra/data", data.display());
        let out = ctx.front(&[
            "exec",
            "--bind",
            &bind,
            sb.to_str().unwrap(),
            "sh",
            "-c",
            "echo written > \"$HOME/f\" && cat \"$HOME/f\" /etc/extra/data/in && stat -c %U /bin/busybox",
        ]);
        out.assert_success()
            .assert_stdout_contains("written\nfrom the host\n");
        // The image's own files keep their owner (root is outside the user's namespace).
        let owner = out.stdout.lines().last().unwrap_or_default().to_string();
        let user = ctx.profile.user_name().unwrap_or_default();
        assert!(owner != user, "[{}] busybox shows as {owner}", ctx.name);
        ctx.assert_no_leftovers();
    }
}

/// `inspect` reads SingularityCE's metadata from `/.singularity.d` (and `/scif/apps`) of a
/// native SIF and of a sandbox, in SingularityCE's text and JSON forms; a link in the image
/// that points out of it is resolved inside the tree.
#[test]
fn inspect_shows_singularity_metadata() {
    for ctx in matrix_with(&[Profile::Root, Profile::User])
        .into_iter()
        .filter(|c| c.rt == Rt::Crun)
    {
        let sb = build_sandbox(&ctx, "sb");
        // A SCIF app, and a help text that is a link out of the tree.
        ctx.run(
            "sh",
            &[
                "-c",
                "mkdir -p sb/scif/apps/hello/scif && printf '#!/bin/sh\\necho hello\\n' > sb/scif/apps/hello/scif/runscript && ln -s /../../../../../etc/hostname sb/.singularity.d/runscript.help",
            ],
        )
        .assert_code(0);
        let sif = sif_fixture("busybox");
        let labels_json = "{\n\t\"data\": {\n\t\t\"attributes\": {\n\t\t\t\"labels\": {\n\t\t\t\t\"maintainer\": \"singularity-oci tests\",\n\t\t\t\t\"org.label-schema.schema-version\": \"1.0\"\n\t\t\t}\n\t\t}\n\t},\n\t\"type\": \"container\"\n}";
        for img in [sif.to_str().unwrap(), sb.to_str().unwrap()] {
            ctx.front(&["inspect", "--json", img])
                .assert_code(0)
                .assert_stdout_eq(labels_json);
            ctx.front(&["inspect", "-l", img])
                .assert_code(0)
                .assert_stdout_eq(
                    "maintainer: singularity-oci tests\norg.label-schema.schema-version: 1.0",
                );
            ctx.front(&["inspect", "-r", "-t", "-e", img])
                .assert_code(0)
                .assert_stdout_eq(concat!(
                    "#!/bin/sh\necho \"runscript:$SIF_ORDER:$*\"\n",
                    "#!/bin/sh\necho \"test:$SIF_GREETING\"\nexit 7\n",
                    "=== /.singularity.d/env/90-environment.sh ===\n",
                    "export SIF_ORDER=\"$SIF_ORDER:env\"\nexport SIF_GREETING=\"hello from the sif\"",
                ));
            let all = ctx.front(&["inspect", "--all", img]);
            all.assert_code(0);
            let a = &all.json()["data"]["attributes"];
            assert_eq!(a["test"], "#!/bin/sh\necho \"test:$SIF_GREETING\"\nexit 7");
            assert_eq!(a["labels"]["maintainer"], "singularity-oci tests");
            assert!(a.get("helpfile").is_none(), "read out of the tree: {a}");
        }
        let img = sb.to_str().unwrap();
        ctx.front(&["inspect", "--list-apps", img])
            .assert_code(0)
            .assert_stdout_eq("hello");
        ctx.front(&["inspect", "--app", "hello", "-r", img])
            .assert_code(0)
            .assert_stdout_eq("#!/bin/sh\necho hello");
        let app = ctx.front(&["inspect", "--app", "hello", "-r", "--json", img]);
        app.assert_code(0);
        assert_eq!(
            app.json()["data"]["attributes"]["apps"]["hello"]["runscript"],
            "#!/bin/sh\necho hello"
        );
        // An OCI image has labels only, and nothing is unpacked for them.
        ctx.front(&["inspect", "-r", &oci_ref("busybox")])
            .assert_code(0)
            .assert_stdout_eq("");
        ctx.assert_no_leftovers();
    }
}

/// `--app NAME` runs a SCIF app of a Singularity image (`/scif/apps/NAME`): its environment,
/// its `bin` on PATH, its runscript for `run`; `test` without an app test and an unknown app
/// fail with SingularityCE's messages; the user's variables still win.
#[test]
fn scif_apps_of_a_sandbox() {
    for ctx in matrix() {
        let sb = build_sandbox(&ctx, "sb");
        ctx.run(
            "sh",
            &[
                "-c",
                "a=sb/scif/apps/hello && mkdir -p $a/scif/env $a/bin && \
                 printf '#!/bin/sh\\necho \"app:$APPVAR:$*\"\\n' > $a/scif/runscript && \
                 printf 'export APPVAR=appenv\\n' > $a/scif/env/90-environment.sh && \
                 printf '#!/bin/sh\\necho tool\\n' > $a/bin/hellotool && chmod 755 $a/scif/runscript $a/bin/hellotool && \
                 printf 'export APPVAR=\"${APPVAR:-}:97\"\\n' > sb/.singularity.d/env/97-late.sh",
            ],
        )
        .assert_code(0);
        let img = sb.to_str().unwrap();
        // The app's environment comes where 95-apps.sh would sort: before 97-late.sh.
        ctx.front(&["run", "--app", "hello", img, "x"])
            .assert_code(0)
            .assert_stdout_eq("app:appenv:97:x");
        ctx.front(&[
            "exec",
            "--app",
            "hello",
            img,
            "/bin/sh",
            "-c",
            "echo $SINGULARITY_APPNAME:$SCIF_APPROOT; hellotool",
        ])
        .assert_code(0)
        .assert_stdout_eq("hello:/scif/apps/hello\ntool");
        ctx.front_cmd(&["run", "--app", "hello", img])
            .env("SINGULARITYENV_APPVAR", "user")
            .run()
            .assert_code(0)
            .assert_stdout_eq("app:user:");
        ctx.front(&["test", "--app", "hello", img])
            .assert_code(1)
            .assert_stderr_contains("No tests for contained app: hello");
        ctx.front(&["run", "--app", "nope", img])
            .assert_code(1)
            .assert_stderr_contains("Could not locate the container application: nope");
        ctx.assert_no_leftovers();
    }
}
