//! Persistent overlays (`--overlay DIR[:ro]`): a writable directory keeps the container's
//! changes (whiteouts included) across runs in SingularityCE's `DIR/upper` and `DIR/work`,
//! read-only ones stack in the order given, the image cache is never written, and a directory
//! that cannot be trusted, or is in use, is refused with one FATAL line.

use e2e::tree::{Tree, snapshot};
use e2e::*;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

fn image() -> String {
    oci_ref("busybox")
}

/// The cached rootfs of the busybox image for this context (pulled when missing) and a
/// snapshot of it, to show later that no run wrote into it.
fn cached_tree(ctx: &Ctx) -> (PathBuf, Tree) {
    let rec = ctx.front(&["pull", &image()]);
    rec.assert_success();
    let rootfs = PathBuf::from(rec.json()["rootfs"].as_str().unwrap());
    let tree = snapshot(&rootfs);
    (rootfs, tree)
}

/// Panic unless the tree at `root` is still `before` (contents, owners, modes, times).
fn assert_unchanged(ctx: &Ctx, root: &Path, before: &Tree) {
    assert!(
        snapshot(root) == *before,
        "[{}] a run changed {}",
        ctx.name,
        root.display()
    );
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// `singularity-oci exec OPTS... busybox sh -c SCRIPT`, expected to print `want`.
fn exec_sh(ctx: &Ctx, opts: &[&str], script: &str, want: &str) {
    let img = image();
    let mut args = vec!["exec"];
    args.extend(opts);
    args.extend([img.as_str(), "sh", "-c", script]);
    ctx.front(&args).assert_success().assert_stdout_eq(want);
}

/// Run 1 writes a file and a directory, deletes an image file and replaces an image
/// directory; run 2, with the same DIR, sees exactly that; a run without it sees the image.
fn persists_in(ctx: &Ctx, dir: &Path) {
    let ov = ["--overlay", s(dir)];
    exec_sh(
        ctx,
        &ov,
        "echo one > /persist && mkdir /data && echo two > /data/f && rm /bin/ls && \
         rm -r /usr/sbin && mkdir /usr/sbin && echo x > /usr/sbin/new && echo done",
        "done",
    );
    exec_sh(
        ctx,
        &ov,
        "cat /persist /data/f; test -e /bin/ls || echo ls-gone; ls /usr/sbin",
        "one\ntwo\nls-gone\nnew",
    );
    // The default stays the ephemeral tmpfs: without the DIR the image is whole.
    exec_sh(
        ctx,
        &[],
        "test -e /persist || echo no-persist; test -e /bin/ls && echo ls-here",
        "no-persist\nls-here",
    );
    // SingularityCE's layout, with the user's files owned by the user on the host.
    let upper = dir.join("upper");
    let m = std::fs::metadata(upper.join("persist")).unwrap();
    assert_eq!(
        (m.uid(), m.gid()),
        (ctx.uid(), ctx.gid()),
        "[{}] owner of a file the container's user wrote",
        ctx.name
    );
    let wh = std::fs::symlink_metadata(upper.join("bin/ls")).unwrap();
    assert!(
        wh.file_type().is_char_device() && wh.rdev() == 0,
        "[{}] the deleted file is an overlayfs whiteout in upper/",
        ctx.name
    );
    let work = std::fs::metadata(dir.join("work")).unwrap();
    assert_eq!(work.permissions().mode() & 0o777, 0o700, "[{}]", ctx.name);
    assert_eq!(work.uid(), ctx.uid(), "[{}]", ctx.name);
}

#[test]
fn a_writable_overlay_persists_across_runs_and_the_cache_stays_whole() {
    let mut ctxs = matrix();
    ctxs.push(Ctx::for_test(Profile::UserNoSubids, Rt::Crun));
    for ctx in ctxs {
        let (rootfs, before) = cached_tree(&ctx);
        // On the test directory's disk (ext4 here) and on a tmpfs.
        persists_in(&ctx, &ctx.mkdir("ov"));
        let shm = PathBuf::from("/dev/shm").join(format!("sioci-{}", ctx.name));
        if shm.exists() {
            std::fs::remove_dir_all(&shm).unwrap();
        }
        ctx.run("mkdir", &["-m", "0755", s(&shm)]).assert_success();
        persists_in(&ctx, &shm);
        std::fs::remove_dir_all(&shm).unwrap();
        assert_unchanged(&ctx, &rootfs, &before);
        ctx.assert_no_leftovers();
    }
}

/// The container's root and other IDs land in DIR as the cached tree's owners do: root (and
/// every ID) as itself for host root; the user's uid for the fakeroot's root, and the user's
/// subordinate IDs for the others.
#[test]
fn files_land_with_the_users_or_subordinate_ids() {
    for ctx in matrix_with(&[Profile::Root, Profile::Fakeroot]) {
        let dir = ctx.mkdir("ov");
        exec_sh(
            &ctx,
            &["--overlay", s(&dir)],
            "touch /by-root /by-two && chown 2:2 /by-two && id -u",
            "0",
        );
        let owner = |f: &str| {
            let m = std::fs::metadata(dir.join("upper").join(f)).unwrap();
            (m.uid(), m.gid())
        };
        let two = match ctx.user() {
            None => (2, 2),
            Some(u) => (
                subuid_range(u).unwrap().0 + 1,
                subgid_range(u).unwrap().0 + 1,
            ),
        };
        assert_eq!(owner("by-root"), (ctx.uid(), ctx.gid()), "[{}]", ctx.name);
        assert_eq!(owner("by-two"), two, "[{}]", ctx.name);
        ctx.assert_no_leftovers();
    }
}

/// Read-only directories stack in the order given, the first on top (DIR/upper when it
/// exists, else DIR), and stay as they were; with none writable a tmpfs takes the writes; a
/// writable one goes on top of them all. Commas separate items, in the option and in
/// `SINGULARITY_OVERLAY` alike.
#[test]
fn read_only_overlays_stack_in_the_order_given() {
    for ctx in matrix() {
        ctx.mkdir("a/upper");
        ctx.write_file("a/upper/f", "from-a\n");
        ctx.mkdir("b");
        ctx.write_file("b/f", "from-b\n");
        ctx.write_file("b/g", "from-b\n");
        let (a, b, w) = (ctx.dir().join("a"), ctx.dir().join("b"), ctx.mkdir("w"));
        let (sa, sb) = (snapshot(&a), snapshot(&b));
        let ro = |p: &Path| format!("{}:ro", p.display());
        exec_sh(
            &ctx,
            &["--overlay", &ro(&a), "-o", &ro(&b)],
            "cat /f /g; echo x > /h && echo wrote",
            "from-a\nfrom-b\nwrote",
        );
        exec_sh(
            &ctx,
            &["--overlay", &format!("{},{}", ro(&b), ro(&a))],
            "cat /f; test -e /h || echo h-gone",
            "from-b\nh-gone",
        );
        let env = format!("{},{},{}", ro(&a), ro(&b), w.display());
        ctx.front_cmd(&[
            "exec",
            &image(),
            "sh",
            "-c",
            "cat /f && echo from-w > /f && cat /f",
        ])
        .env("SINGULARITY_OVERLAY", &env)
        .run()
        .assert_success()
        .assert_stdout_eq("from-a\nfrom-w");
        assert_eq!(
            std::fs::read_to_string(w.join("upper/f")).unwrap(),
            "from-w\n"
        );
        assert_unchanged(&ctx, &a, &sa);
        assert_unchanged(&ctx, &b, &sb);
        ctx.assert_no_leftovers();
    }
}

/// With `--disable-cache` the rootfs is the bundle's own tree: the overlay goes over it.
#[test]
fn a_private_rootfs_gets_the_overlay_too() {
    for ctx in matrix() {
        let dir = ctx.mkdir("ov");
        for (cmd, out) in [("echo kept > /k && echo ok", "ok"), ("cat /k", "kept")] {
            exec_sh(&ctx, &["--disable-cache", "--overlay", s(&dir)], cmd, out);
        }
        ctx.assert_no_leftovers();
    }
}

/// Two containers writing through one upper layer would corrupt it: while one runs, a second
/// writer and a reader of the same DIR are refused; afterwards both work. The lock is not
/// handed to the container (its descriptors are the same as without an overlay).
#[test]
fn a_writable_overlay_serves_one_container_at_a_time() {
    for ctx in matrix() {
        let dir = ctx.mkdir("ov");
        let sync = ctx.mkdir("sync");
        let bind = format!("{}:/sync", sync.display());
        let mut first = ctx
            .command(ctx.bin("singularity-oci"))
            .args([
                "exec",
                "--overlay",
                s(&dir),
                "--bind",
                &bind,
                &image(),
                "sh",
                "-c",
                "touch /sync/started; while [ ! -e /sync/release ]; do sleep 0.1; done",
            ])
            .stdin(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let started = sync.join("started");
        let t0 = std::time::Instant::now();
        while !started.exists() {
            assert!(
                t0.elapsed().as_secs() < 60,
                "[{}] the first run never started",
                ctx.name
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        ctx.front(&["exec", "--overlay", s(&dir), &image(), "true"])
            .assert_fatal("in use by another container");
        ctx.front(&[
            "exec",
            "--overlay",
            &format!("{}:ro", dir.display()),
            &image(),
            "true",
        ])
        .assert_fatal("in use by another container");
        ctx.write_file("sync/release", "");
        assert!(first.wait().unwrap().success(), "[{}]", ctx.name);
        let fds = "ls /proc/self/fd | tr '\\n' ' '";
        let with = ctx.front(&["exec", "--overlay", s(&dir), &image(), "sh", "-c", fds]);
        with.assert_success();
        ctx.front(&["exec", &image(), "sh", "-c", fds])
            .assert_success()
            .assert_stdout_eq(&with.stdout);
        ctx.assert_no_leftovers();
    }
}

/// Input that cannot be used is one FATAL line, before anything is made.
#[test]
fn unusable_overlays_are_refused_with_one_fatal_line() {
    for ctx in matrix_with(&[Profile::Root, Profile::User]) {
        if ctx.rt == Rt::Runc {
            continue; // refused before any runtime runs
        }
        let ok = ctx.mkdir("ok");
        let ok2 = ctx.mkdir("ok2");
        let img = ctx.write_file("overlay.img", "not a directory");
        let open = ctx.mkdir("open");
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
        let link = ctx.dir().join("link");
        std::os::unix::fs::symlink(&ok, &link).unwrap();
        std::os::unix::fs::lchown(&link, Some(ctx.uid()), Some(ctx.gid())).unwrap();
        let foreign = ctx.mkdir("foreign");
        std::os::unix::fs::chown(&foreign, Some(12345), Some(12345)).unwrap();
        let missing = ctx.dir().join("missing");
        let (rootfs, before) = cached_tree(&ctx);
        let entry = rootfs.parent().unwrap();
        let cases: Vec<(Vec<String>, &str)> = vec![
            (
                vec![format!("{}:ro", rootfs.display())],
                "inside the image's root filesystem",
            ),
            (vec![s(entry).into()], "inside the image cache"),
            (vec![s(&missing).into()], "does not exist"),
            (vec![s(&img).into()], "overlay images"),
            (
                vec![s(&ok).into(), s(&ok2).into()],
                "more than one writable overlay",
            ),
            (vec![format!("{}:bogus", ok.display())], "unknown option"),
            (
                vec![
                    format!("{}:ro", ok.display()),
                    format!("{}/.:ro", ok.display()),
                ],
                "duplicate overlays",
            ),
            (vec![s(&open).into()], "writable by group or others"),
            (vec![s(&link).into()], "symbolic link"),
            (vec![format!("{}:ro", foreign.display())], "not by you"),
        ];
        for (items, needle) in cases {
            let mut args = vec!["exec".to_string()];
            for i in &items {
                args.extend(["--overlay".to_string(), i.clone()]);
            }
            args.extend([image(), "true".into()]);
            let argv: Vec<&str> = args.iter().map(String::as_str).collect();
            ctx.front(&argv).assert_fatal(needle);
        }
        for d in [&ok, &ok2, &open, &foreign] {
            assert_eq!(
                std::fs::read_dir(d).unwrap().count(),
                0,
                "[{}] something was made in {}",
                ctx.name,
                d.display()
            );
        }
        assert!(!entry.join("upper").exists(), "[{}]", ctx.name);
        assert_unchanged(&ctx, &rootfs, &before);
        ctx.assert_no_leftovers();
    }
}

/// The stages by hand: oci-mkspec's record names the overlay directories (and validates), the
/// bundle carries them in `overlays.json`, and oci-userns-starter mounts them; a busy DIR is
/// refused by the starter too, when it was taken after oci-mkspec checked it.
#[test]
fn the_stages_carry_the_overlays_in_the_bundle() {
    for ctx in matrix_with(&[Profile::Root, Profile::User]) {
        if ctx.rt == Rt::Runc {
            continue; // the runtime plays no part in what is checked here
        }
        ctx.mkdir("ro");
        ctx.write_file("ro/f", "from-ro\n");
        let (ro, w) = (ctx.dir().join("ro"), ctx.mkdir("w"));
        let mkspec = |bundle: &str| {
            format!(
                "oci-fetch {} | oci-unpack | oci-mkspec --overlay {}:ro -o {} --bundle {bundle} -- cat /f",
                image(),
                ro.display(),
                w.display()
            )
        };
        let out = ctx.run("sh", &["-c", &mkspec("B")]);
        out.assert_success().assert_stderr_empty();
        let rec = out.json();
        assert_record_valid("bundle-record.schema.json", &rec);
        let want = serde_json::json!([
            {"dir": s(&ro), "readOnly": true},
            {"dir": s(&w), "readOnly": false},
        ]);
        assert_eq!(rec["overlays"], want, "[{}]", ctx.name);
        let b = ctx.dir().join("B");
        let file: serde_json::Value =
            serde_json::from_slice(&std::fs::read(b.join("overlays.json")).unwrap()).unwrap();
        assert_eq!(file, want, "[{}]", ctx.name);
        assert!(w.join("upper").is_dir() && w.join("work").is_dir());
        // A second bundle made while nobody uses the DIR, started while the first runs.
        ctx.run("sh", &["-c", &format!("{} > /dev/null", mkspec("C"))])
            .assert_success();
        let run = |bundle: &str| {
            format!(
                "oci-userns-starter --overlay {bundle} -- oci-runtime-shim run --bundle {bundle}"
            )
        };
        ctx.run("sh", &["-c", &run("B")])
            .assert_success()
            .assert_stdout_eq("from-ro");
        // The starter holds the lock for what it execs.
        let hold = "oci-userns-starter --overlay B -- sh -c 'touch held; sleep 2'";
        ctx.run(
            "sh",
            &[
                "-c",
                &format!(
                    "{hold} & until [ -e held ]; do sleep 0.05; done; {}; rc=$?; wait; exit $rc",
                    run("C")
                ),
            ],
        )
        .assert_fatal("in use by another container");
        std::fs::remove_dir_all(&b).unwrap();
        std::fs::remove_dir_all(ctx.dir().join("C")).unwrap();
        ctx.assert_no_leftovers();
    }
}
