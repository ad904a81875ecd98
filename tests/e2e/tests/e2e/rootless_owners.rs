//! Image owners for unprivileged users with subordinate IDs, `--disable-cache`, and what the
//! front says about references it cannot read.
//!
//! * A `USER testuser` image (uid/gid 2000, home owned 2000:2000, the `user` fixture): the home
//!   shows `2000:2000` in the container for root, the test user with subordinate IDs (plain and
//!   `--fakeroot`), with crun and runc; the single-ID user sees it as its own (documented
//!   fallback). As root of the container (`--fakeroot`, host root) the image user can write its
//!   home. `pull` builds the same `keep` tree; `cache list` and `cache clean` handle it.
//! * A warm start enters no extra namespace: one `oci-userns-starter` per run (traced).
//! * `--disable-cache` / `SINGULARITY_DISABLE_CACHE`: nothing read from or written to the cache,
//!   which may be impossible to create; nothing left behind.

use e2e::*;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// The owner the container should see on `/home/testuser`.
fn expected_home_owner(ctx: &Ctx) -> String {
    match ctx.profile {
        Profile::UserNoSubids => format!("{}:{}", ctx.uid(), ctx.gid()),
        _ => "2000:2000".into(),
    }
}

/// Root, the user with subordinate IDs (plain and --fakeroot) with crun and runc, and the user
/// without them with crun (runc cannot run that user's default; actions.rs tests its error).
fn contexts() -> Vec<Ctx> {
    let mut v = matrix_with(&[Profile::Root, Profile::User, Profile::Fakeroot]);
    v.push(Ctx::for_test(Profile::UserNoSubids, Rt::Crun));
    v
}

fn fresh_cache(ctx: &Ctx, name: &str) -> String {
    let c = ctx.mkdir(name);
    std::fs::set_permissions(&c, std::fs::Permissions::from_mode(0o700)).unwrap();
    c.display().to_string()
}

#[test]
fn image_owners_are_kept_for_users_with_subordinate_ids() {
    for ctx in contexts() {
        let cache = fresh_cache(&ctx, "owners-cache");
        let image = oci_ref("user");
        let out = ctx
            .front_cmd(&["exec", &image, "stat", "-c", "%u:%g", "/home/testuser"])
            .env("SINGULARITY_CACHEDIR", &cache)
            .run();
        out.assert_code(0);
        assert_eq!(
            out.stdout.trim(),
            expected_home_owner(&ctx),
            "[{}] owner of /home/testuser",
            ctx.name
        );
        // Root of the container (--fakeroot, with root's capabilities there) acts as the image
        // user (busybox's start-stop-daemon -c), who owns its home and can write there.
        if ctx.profile == Profile::Fakeroot {
            let script = "start-stop-daemon -S -c testuser:testuser -x /bin/touch -- /home/testuser/x \
                          && stat -c %u:%g /home/testuser/x";
            ctx.front_cmd(&["exec", &image, "sh", "-c", script])
                .env("SINGULARITY_CACHEDIR", &cache)
                .run()
                .assert_code(0)
                .assert_stdout_eq("2000:2000\n");
        }
        // The cached tree's key says how it was built.
        let want = if ctx.profile == Profile::UserNoSubids {
            "flatten"
        } else {
            "keep"
        };
        let pulled = ctx
            .front_cmd(&["pull", &image])
            .env("SINGULARITY_CACHEDIR", &cache)
            .run();
        pulled.assert_code(0);
        let rec = pulled.json();
        assert_eq!(rec["ownership"], want, "[{}]", ctx.name);
        assert_eq!(rec["cached"], true, "[{}] exec built it already", ctx.name);
        ctx.assert_no_leftovers();
    }
}

/// `cache list` measures, and `cache clean` removes, a tree whose files belong to the user's
/// subordinate IDs (which the user cannot touch outside its namespace).
#[test]
fn cache_list_and_clean_handle_trees_with_kept_owners() {
    let ctx = Ctx::for_test(Profile::User, Rt::Crun);
    let cache = fresh_cache(&ctx, "keep-cache");
    let pulled = ctx
        .front_cmd(&["pull", &oci_ref("user")])
        .env("SINGULARITY_CACHEDIR", &cache)
        .run();
    pulled.assert_code(0);
    let rootfs = pulled.json()["rootfs"].as_str().unwrap().to_string();
    let home = Path::new(&rootfs).join("home/testuser");
    let (start, _) = subuid_range(ctx.user().unwrap()).expect("the test user has subuids");
    use std::os::unix::fs::MetadataExt;
    assert_eq!(
        std::fs::metadata(&home).unwrap().uid(),
        start + 2000 - 1,
        "uid 2000 lands on the host as the mapped subordinate ID"
    );
    let key = Path::new(&rootfs)
        .parent()
        .unwrap()
        .file_name()
        .unwrap()
        .to_string_lossy()
        .to_string();
    assert!(key.ends_with("-keep"), "{key}");
    let list = ctx
        .front_cmd(&["cache", "list"])
        .env("SINGULARITY_CACHEDIR", &cache)
        .run();
    list.assert_code(0);
    let line = list
        .stdout
        .lines()
        .find(|l| l.contains(&key))
        .unwrap_or_else(|| list.fail("the keep tree is not listed"));
    assert!(
        line.split_whitespace().nth(1).is_some_and(|s| s != "0"),
        "no size for {line}"
    );
    ctx.front_cmd(&["cache", "clean", "--force"])
        .env("SINGULARITY_CACHEDIR", &cache)
        .run()
        .assert_code(0)
        .assert_stderr_empty();
    assert!(
        !Path::new(&cache).join("cache/oci-launcher").exists(),
        "cache clean left the cache"
    );
}

/// The warm start of a user with subordinate IDs starts one oci-userns-starter (the run's);
/// only the cold one also unpacks through it. Counted with a starter that logs each start, in a
/// stage directory named by SINGULARITY_OCI_LIBEXEC (where oci-unpack looks for it too).
#[test]
fn a_warm_start_enters_the_namespace_once() {
    let ctx = Ctx::for_test(Profile::User, Rt::Crun);
    let cache = fresh_cache(&ctx, "warm-cache");
    let stages = ctx.mkdir("stages");
    let log = ctx.dir().join("starter.log");
    let real = prefix().join("bin");
    for e in std::fs::read_dir(&real).unwrap() {
        let name = e.unwrap().file_name();
        let to = stages.join(&name);
        match name.to_str().unwrap() {
            "oci-userns-starter" => {
                let script = format!(
                    "#!/bin/sh\necho start >> {}\nexec {} \"$@\"\n",
                    log.display(),
                    real.join("oci-userns-starter").display()
                );
                std::fs::write(&to, script).unwrap();
            }
            _ => std::os::unix::fs::symlink(real.join(&name), &to).unwrap(),
        }
        if !to.is_symlink() {
            std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
    }
    let writable_log = ctx.write_file("starter.log", "");
    assert_eq!(writable_log, log);
    let starts = || std::fs::read_to_string(&log).unwrap().lines().count();
    for (round, want) in [("cold", 2), ("warm", 1)] {
        let before = starts();
        ctx.cmd(stages.join("singularity-oci").to_str().unwrap())
            .args(&["exec", &oci_ref("user"), "true"])
            .env("SINGULARITY_CACHEDIR", &cache)
            .env("SINGULARITY_OCI_LIBEXEC", stages.to_str().unwrap())
            .run()
            .assert_code(0);
        assert_eq!(starts() - before, want, "{round} start");
    }
    ctx.assert_no_leftovers();
}

#[test]
fn disable_cache_never_touches_the_cache() {
    for ctx in contexts() {
        // A cache that cannot be created at all, even by root.
        let impossible = "/proc/sioci-no-cache-here";
        for how in ["option", "env"] {
            let mut cmd = match how {
                "option" => {
                    ctx.front_cmd(&["exec", "--disable-cache", &oci_ref("user"), "id", "-u"])
                }
                _ => ctx
                    .front_cmd(&["exec", &oci_ref("user"), "id", "-u"])
                    .env("SINGULARITY_DISABLE_CACHE", "true"),
            };
            cmd = cmd.env("SINGULARITY_CACHEDIR", impossible);
            let out = cmd.run();
            out.assert_code(0);
            ctx.assert_no_leftovers();
        }
        // A cache directory the user cannot write stays empty.
        if !ctx.is_root() {
            let ro = ctx.dir().join("ro-cache");
            std::fs::create_dir(&ro).unwrap();
            std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o555)).unwrap();
            ctx.front_cmd(&["exec", "--disable-cache", &oci_ref("busybox"), "echo", "hi"])
                .env("SINGULARITY_CACHEDIR", ro.to_str().unwrap())
                .run()
                .assert_code(0)
                .assert_stdout_eq("hi\n");
            assert_eq!(std::fs::read_dir(&ro).unwrap().count(), 0);
            // Without --disable-cache the same cache is an error: the test is not vacuous.
            ctx.front_cmd(&["exec", &oci_ref("busybox"), "true"])
                .env("SINGULARITY_CACHEDIR", ro.to_str().unwrap())
                .run()
                .assert_code(255);
            ctx.assert_no_leftovers();
        }
        // pull exists to fill the cache.
        ctx.front(&["pull", "--disable-cache", &oci_ref("busybox")])
            .assert_fatal("pull fills the cache");
    }
}

#[test]
fn sif_files_and_directories_are_answered_with_what_is_supported() {
    let ctx = Ctx::for_test(Profile::User, Rt::Crun);
    // A SIF image begins with this launch line (the front hands such a file to oci-fetch).
    let sif = ctx.write_file(
        "image.sif",
        b"#!/usr/bin/env run-singularity\nnot really a SIF",
    );
    ctx.front(&["exec", sif.to_str().unwrap(), "true"])
        .assert_fatal("is not a SIF image: it has no SIF header");
    let sandbox = ctx.mkdir("sandbox");
    ctx.front(&["exec", sandbox.to_str().unwrap(), "true"])
        .assert_fatal("is a directory but not a sandbox image (it has no /.singularity.d)");
    ctx.front(&["exec", fixture("busybox").to_str().unwrap(), "true"])
        .assert_fatal("is an OCI image layout: use oci:");
    ctx.assert_no_leftovers();
}
