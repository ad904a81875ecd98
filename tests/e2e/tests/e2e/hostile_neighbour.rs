//! A second local user (`$SIOCI_TEST_USER_ATTACKER`) and a hostile container attack the trees
//! the launcher trusts: a planted cache, a bundle swapped for a symlink, a squatted state root.
//! Each attack runs for real, against root and the unprivileged test user, with crun and runc.

use e2e::*;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// A root-owned directory beside the test's own (whose ancestors are all root's, as on a real
/// host): mode 1777 is a shared scratch directory like `/tmp`, 0755 a site directory.
fn root_dir_beside(ctx: &Ctx, name: &str, mode: u32) -> PathBuf {
    let d = PathBuf::from(format!("{}.{name}", ctx.dir().display()));
    remove_as_root(&d);
    std::fs::create_dir(&d).unwrap();
    std::os::unix::fs::chown(&d, Some(0), Some(0)).unwrap();
    std::fs::set_permissions(&d, std::fs::Permissions::from_mode(mode)).unwrap();
    d
}

fn remove_as_root(p: &Path) {
    if p.is_symlink() || p.is_file() {
        std::fs::remove_file(p).unwrap();
    } else if p.exists() {
        std::fs::remove_dir_all(p).unwrap_or_else(|e| panic!("rm {}: {e}", p.display()));
    }
}

/// The attacker builds a real cache at the victim's `SINGULARITY_CACHEDIR` (in a shared
/// directory), makes it world-writable, and swaps `/bin/sh` of every cached root filesystem
/// (under both ownership modes' names) for a script that announces itself.
fn plant_cache(atk: &Ctx, victim_cachedir: &Path) {
    let fetch = atk.bin("oci-fetch");
    let unpack = atk.bin("oci-unpack");
    let script = format!(
        r#"set -e
"{fetch}" {image} | "{unpack}" >/dev/null
cd "$SINGULARITY_CACHEDIR/cache/oci-launcher/rootfs"
for e in *-*; do
    hex=${{e%-*}}
    for mode in keep flatten; do [ -e "$hex-$mode" ] || cp -a "$e" "$hex-$mode"; done
done
for e in *-*; do
    rm -f "$e/rootfs/bin/sh"
    printf '#!/bin/busybox sh\necho PLANTED-BY-ATTACKER\n' > "$e/rootfs/bin/sh"
    chmod 0755 "$e/rootfs/bin/sh"
done
find "$SINGULARITY_CACHEDIR" -type d -exec chmod 0777 {{}} +
"#,
        image = oci_ref("busybox"),
    );
    atk.cmd("sh")
        .args(&["-c", &script])
        .env(
            "SINGULARITY_CACHEDIR",
            victim_cachedir.display().to_string(),
        )
        .run()
        .assert_code(0);
}

/// Item: the cache trusts a tree someone else created. The victim's cache directory, pre-made
/// by another user in a shared directory with a planted root filesystem, is refused with one
/// FATAL line before anything runs or is written, by oci-fetch and by oci-unpack's warm lookup.
#[test]
fn a_cache_planted_by_another_user_is_refused() {
    for ctx in matrix() {
        let atk = ctx.attacker();
        let shared = root_dir_beside(&ctx, "shared", 0o1777);
        let planted = shared.join("victim-cache");
        plant_cache(&atk, &planted);
        let cache = planted.join("cache/oci-launcher");
        let before = std::fs::read_dir(cache.join("rootfs")).unwrap().count();

        let out = ctx
            .front_cmd(&["exec", &oci_ref("busybox"), "sh", "-c", "echo real"])
            .env("SINGULARITY_CACHEDIR", planted.display().to_string())
            .run();
        out.assert_fatal("refusing to trust");
        assert!(
            !out.stdout.contains("PLANTED"),
            "[{}] ran the attacker's shell: {}",
            ctx.name,
            out.stdout
        );
        out.assert_stderr_contains(&cache.display().to_string());

        // The warm lookup alone (image record from the victim's own cache).
        let rec = ctx.run(ctx.bin("oci-fetch"), &[&oci_ref("busybox")]);
        rec.assert_code(0);
        let out = ctx
            .cmd(ctx.bin("oci-unpack"))
            .env("SINGULARITY_CACHEDIR", planted.display().to_string())
            .stdin(rec.stdout.clone())
            .run();
        out.assert_fatal("refusing to trust");
        assert!(
            !out.stdout.contains("rootfs"),
            "[{}] {}",
            ctx.name,
            out.stdout
        );

        // Nothing written into the planted tree.
        assert_eq!(
            std::fs::read_dir(cache.join("rootfs")).unwrap().count(),
            before
        );
        ctx.front(&["exec", &oci_ref("busybox"), "sh", "-c", "echo real"])
            .assert_code(0)
            .assert_stdout_eq("real");
        remove_as_root(&shared);
        ctx.assert_no_leftovers();
    }
}

/// A cache root populated and left read-only for everyone passes the checks of other users:
/// their fetch and unpack find the tree there without writing anything.
#[test]
fn a_shared_cache_root_populated_stays_usable() {
    for ctx in matrix_with(&[Profile::User]) {
        let shared = root_dir_beside(&ctx, "site-cache", 0o755);
        let root = Ctx::for_test(Profile::Root, ctx.rt);
        // Root builds the trees users may ask for (either ownership mode).
        let populate = format!(
            "rec=$(\"{fetch}\" {img}) && for o in keep flatten; do printf '%s\\n' \"$rec\" | \"{unpack}\" --ownership $o || exit 1; done",
            fetch = root.bin("oci-fetch"),
            img = oci_ref("busybox"),
            unpack = root.bin("oci-unpack")
        );
        root.cmd("sh")
            .args(&["-c", &populate])
            .env("SINGULARITY_CACHEDIR", shared.display().to_string())
            .run()
            .assert_code(0);
        // What a site does to share it: readable and searchable, writable by root only.
        root.run(
            "chmod",
            &["-R", "go+rX,go-w", &shared.display().to_string()],
        )
        .assert_code(0);
        // The user's fetch and unpack accept root's cache and find the tree without writing.
        let out = ctx
            .front_cmd(&["pull", &oci_ref("busybox")])
            .env("SINGULARITY_CACHEDIR", shared.display().to_string())
            .run();
        out.assert_code(0);
        let rec = out.json();
        assert_eq!(rec["cached"], true, "{}", out.stdout);
        let rootfs = PathBuf::from(rec["rootfs"].as_str().unwrap());
        assert!(rootfs.starts_with(&shared) && rootfs.join("bin/busybox").is_file());
        remove_as_root(&shared);
        ctx.assert_no_leftovers();
    }
}

/// Item: bundle removal follows a symlink. The container sees its bundle's parent directory
/// (bound in), moves its bundle away and leaves a symlink to a directory of the host in its
/// place. After the run that directory is intact and the launcher says, once, what it left.
#[test]
fn a_bundle_swapped_for_a_symlink_is_left_and_its_target_kept() {
    for ctx in matrix() {
        let precious = ctx.mkdir("precious");
        ctx.write_file("precious/keep", "keep me");
        let tmp = ctx.tmpdir().display().to_string();
        let script = format!(
            "b=$(ls -d /hosttmp/singularity-oci.*) && mv \"$b\" /hosttmp/moved && ln -s {} \"$b\" && echo swapped",
            precious.display()
        );
        let out = ctx.front(&[
            "exec",
            "--bind",
            &format!("{tmp}:/hosttmp"),
            &oci_ref("busybox"),
            "sh",
            "-c",
            &script,
        ]);
        out.assert_code(0).assert_stdout_eq("swapped");
        assert!(
            precious.join("keep").is_file(),
            "[{}] the host directory behind the symlink was removed",
            ctx.name
        );
        let warnings: Vec<&str> = out
            .stderr
            .lines()
            .filter(|l| l.contains("not the directory oci-mkspec created"))
            .collect();
        assert_eq!(warnings.len(), 1, "[{}] {}", ctx.name, out.stderr);
        assert!(warnings[0].starts_with("WARNING:"), "{}", warnings[0]);
        // Clean up what the container left (the launcher refused to touch it).
        for e in std::fs::read_dir(ctx.tmpdir()).unwrap().flatten() {
            let p = e.path();
            if p != ctx.state_root() {
                remove_as_root(&p);
            }
        }
        ctx.assert_no_leftovers();
    }
}

/// Item: another user can block your runs. With `$TMPDIR` a shared directory and no
/// `/run/user/UID`, another user pre-creates `$TMPDIR/singularity-oci-UID`: the run still
/// works, keeping its state (after one WARNING) below the user's own cache directory, where the
/// next command finds it again.
#[test]
fn a_squatted_state_root_falls_back_to_the_users_own() {
    for ctx in matrix() {
        let atk = ctx.attacker();
        let shared = root_dir_beside(&ctx, "shared-tmp", 0o1777);
        let squat = shared.join(format!("singularity-oci-{}", ctx.uid()));
        atk.run("mkdir", &["-m", "0777", &squat.display().to_string()])
            .assert_code(0);
        let run = |args: &[&str]| {
            ctx.front_cmd(args)
                .env("TMPDIR", shared.display().to_string())
                .run()
        };
        let out = run(&["exec", &oci_ref("busybox"), "sh", "-c", "echo real"]);
        out.assert_code(0).assert_stdout_eq("real");
        let squatted = !ctx.is_root() && !Path::new(&format!("/run/user/{}", ctx.uid())).is_dir();
        let warnings = out.stderr.matches("keeping runtime state in").count();
        assert_eq!(
            warnings,
            usize::from(squatted),
            "[{}] {}",
            ctx.name,
            out.stderr
        );
        if squatted {
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
            let fallback = ctx.cache_dir().join("oci-state").join(host.trim());
            let m = std::fs::symlink_metadata(&fallback).unwrap();
            assert!(m.is_dir() && m.uid() == ctx.uid() && m.mode() & 0o077 == 0);
            let left: Vec<_> = std::fs::read_dir(fallback.join("containers"))
                .map(|rd| rd.flatten().map(|e| e.path()).collect())
                .unwrap_or_default();
            assert!(left.is_empty(), "[{}] state left: {left:?}", ctx.name);
            // A later `oci` command of the same user looks in the same place.
            let out = run(&["oci", "state", "no-such-container"]);
            out.assert_code(255);
            out.assert_stderr_contains(&fallback.display().to_string());
        }
        // The squatter's directory is untouched and nothing was written into it.
        assert_eq!(std::fs::read_dir(&squat).unwrap().count(), 0);
        remove_as_root(&shared);
        ctx.assert_no_leftovers();
    }
}
