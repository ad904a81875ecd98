//! oci-unpack on the project's fixture images, through the installed stages, compared
//! with `umoci unpack` of the same images (path, type, mode, owner, size, content, link target,
//! hardlink groups, xattrs), and checked against `layered.expected.json`, as root, as the
//! unprivileged user with subordinate IDs (inside oci-userns-starter, or outside it, where
//! oci-unpack enters the user's namespace itself: owners kept as mapped), and as users with a
//! single ID (flattened).
//!
//! The extractor's own corner cases (hostile layers, bad input, concurrency, every whiteout and
//! link kind against umoci) are in bins/oci-unpack/tests/.

use e2e::tree::{Entry, differences, snapshot};
use e2e::*;
use serde_json::Value;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Fixtures umoci 0.4 can read (it has no zstd); `zstd` is compared with `busybox` instead.
const UMOCI_FIXTURES: [&str; 5] = ["busybox", "layered", "user", "vartmp-link", "uncompressed"];

/// What oci-unpack and umoci must agree on: everything but link counts and times.
fn unpack_view(e: &Entry) -> Entry {
    Entry {
        nlink: 0,
        mtime_ns: 0,
        ..e.clone()
    }
}

/// `oci-fetch` the fixture into the context's cache, then `oci-unpack` it (through `wrap`,
/// for example oci-userns-starter); returns the rootfs record.
fn fetch_and_unpack(ctx: &Ctx, fixture: &str, wrap: &[String], extra: &[&str]) -> Value {
    let image = ctx.run(ctx.bin("oci-fetch"), &[&oci_ref(fixture)]);
    image.assert_code(0);
    let file = ctx.write_file(&format!("{fixture}.image.json"), &image.stdout);
    let mut argv: Vec<String> = wrap.to_vec();
    argv.push(ctx.bin("oci-unpack"));
    argv.extend(["--input".to_string(), file.display().to_string()]);
    argv.extend(extra.iter().map(|s| s.to_string()));
    let out = ctx.cmd(&argv[0]).args(&argv[1..]).run();
    out.assert_code(0);
    let lines = out.lines();
    assert_eq!(lines.len(), 1, "one record line: {}", out.stdout);
    let rec: Value = serde_json::from_str(lines[0]).unwrap();
    assert_eq!(rec["kind"], "rootfs");
    let img: Value = serde_json::from_str(image.stdout.trim()).unwrap();
    assert_eq!(rec["image"], img, "the image record is carried whole");
    rec
}

fn umoci_tree(ctx: &Ctx, fixture: &str) -> PathBuf {
    // umoci may want to write next to the image: unpack from a private copy of the layout.
    let copy = ctx.dir().join(format!("{fixture}.layout"));
    let st = Command::new("cp")
        .arg("-a")
        .arg(fixture_path(fixture))
        .arg(&copy)
        .status()
        .unwrap();
    assert!(st.success());
    let bundle = ctx.dir().join(format!("{fixture}.umoci"));
    let o = Command::new("umoci")
        .args(["unpack", "--image", &format!("{}:latest", copy.display())])
        .arg(&bundle)
        .output()
        .expect("umoci is installed (scripts/setup)");
    assert!(
        o.status.success(),
        "umoci unpack: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    bundle.join("rootfs")
}

fn fixture_path(name: &str) -> PathBuf {
    fixture(name)
}

#[test]
fn fixtures_match_umoci_as_root() {
    let ctx = Ctx::for_test(Profile::Root, Rt::Crun);
    let mut busybox = None;
    for fx in UMOCI_FIXTURES {
        let rec = fetch_and_unpack(
            &ctx,
            fx,
            &[],
            &[
                "--bundle",
                ctx.dir().join(format!("{fx}.ours")).to_str().unwrap(),
            ],
        );
        assert_eq!(
            (rec["ownership"].as_str(), rec["readOnly"].as_bool()),
            (Some("keep"), Some(false))
        );
        let ours = snapshot(Path::new(rec["rootfs"].as_str().unwrap()));
        let theirs = snapshot(&umoci_tree(&ctx, fx));
        // The root directory itself is umoci's bundle rootfs (its metadata is umoci's choice).
        let d = differences(&ours, &theirs, ("oci-unpack", "umoci"), |p, e| {
            (p != "/").then(|| unpack_view(e))
        });
        assert!(
            d.is_empty(),
            "{fx}: oci-unpack and umoci differ:\n  {}",
            d.join("\n  ")
        );
        if fx == "busybox" {
            busybox = Some(ours);
        }
    }
    let rec = fetch_and_unpack(
        &ctx,
        "zstd",
        &[],
        &["--bundle", ctx.dir().join("zstd.ours").to_str().unwrap()],
    );
    let z = snapshot(Path::new(rec["rootfs"].as_str().unwrap()));
    let d = differences(&z, busybox.as_ref().unwrap(), ("zstd", "gzip"), |_, e| {
        Some(unpack_view(e))
    });
    assert!(
        d.is_empty(),
        "zstd layer differs from its gzip twin:\n  {}",
        d.join("\n  ")
    );
}

#[test]
fn layered_holds_for_every_identity() {
    let exp = layered_expected();
    let starter = |ctx: &Ctx| vec![ctx.bin("oci-userns-starter"), "--".to_string()];
    let cases: Vec<(Profile, bool, &str)> = vec![
        (Profile::Root, false, "keep"),
        (Profile::User, true, "keep"),
        // Outside the starter too: oci-unpack enters the user's namespace itself to build it.
        (Profile::User, false, "keep"),
        (Profile::UserNoSubids, true, "flatten"),
        (Profile::UserNoSubids, false, "flatten"),
    ];
    for (profile, in_starter, want) in cases {
        let ctx = Ctx::new(
            profile,
            Rt::Crun,
            &format!("{}-{}", current_test_name(), in_starter),
        );
        let wrap = if in_starter { starter(&ctx) } else { vec![] };
        let rec = fetch_and_unpack(&ctx, "layered", &wrap, &[]);
        let what = format!("{profile:?} (starter: {in_starter})");
        assert_eq!(rec["ownership"], want, "{what}");
        assert_eq!(rec["readOnly"], true);
        let root = PathBuf::from(rec["rootfs"].as_str().unwrap());
        assert!(
            root.starts_with(ctx.cache_dir()),
            "{what}: in the profile's cache"
        );
        assert!(
            root.to_str().unwrap().ends_with(&format!("-{want}/rootfs")),
            "{what}: CACHE/rootfs/<hex>-<ownership>/rootfs: {}",
            root.display()
        );
        let errs = layered_errors(&root, &exp);
        assert!(
            errs.is_empty(),
            "{what}: layered.expected.json:\n  {}",
            errs.join("\n  ")
        );
        let snap = snapshot(&root);
        if want == "flatten" {
            let host = if in_starter || profile != Profile::Root {
                ctx.uid()
            } else {
                0
            };
            for (p, i) in &snap {
                assert_eq!(i.uid, host, "{what}: {p} owned by the caller");
            }
        }
        // A second run is a warm cache hit that extracts nothing.
        let again = fetch_and_unpack(&ctx, "layered", &wrap, &[]);
        assert_eq!(
            (again["cached"].as_bool(), again["rootfs"].clone()),
            (Some(true), rec["rootfs"].clone()),
            "{what}"
        );
    }
}

#[test]
fn subuid_owners_land_on_the_mapped_host_ids() {
    let ctx = Ctx::for_test(Profile::User, Rt::Crun);
    let (start, _) = subuid_range(ctx.user().unwrap()).expect("the test user has subordinate uids");
    let rec = fetch_and_unpack(
        &ctx,
        "user",
        &[ctx.bin("oci-userns-starter"), "--".into()],
        &[],
    );
    assert_eq!(rec["ownership"], "keep");
    let root = PathBuf::from(rec["rootfs"].as_str().unwrap());
    // The `user` fixture's /home/testuser is 2000:2000 in the image: subordinate uid 2000
    // is host uid start + 2000 - 1 (container 0 is the user, 1.. are the range).
    let m = std::fs::symlink_metadata(root.join("home/testuser")).unwrap();
    assert_eq!(m.uid(), start + 1999);
    let m = std::fs::symlink_metadata(root.join("bin/busybox")).unwrap();
    assert_eq!(m.uid(), ctx.uid(), "container root is the user");
}
