//! Native SIF images: `oci-fetch` and `oci-unpack` on SIFs made by the reference tools (siftool
//! and squashfs-tools, see scripts/mkimages) and on sylabs/sif's own test images, compared with
//! `unsquashfs` and `siftool`; the front running them; the SIFs and squashfs trees that must be
//! refused, leaving nothing behind.

use e2e::tree::{Entry, differences, snapshot};
use e2e::*;
use std::path::{Path, PathBuf};
use std::process::Command;

/// sylabs/sif's own test images (Debian package golang-github-sylabs-sif-dev).
const SYLABS_IMAGES: &str = "/usr/share/gocode/src/github.com/sylabs/sif/test/images";

fn sylabs_image(name: &str) -> PathBuf {
    let p = Path::new(SYLABS_IMAGES).join(name);
    assert!(
        p.is_file(),
        "{} is missing (scripts/setup installs golang-github-sylabs-sif-dev)",
        p.display()
    );
    p
}

fn fetch(ctx: &Ctx, args: &[&str]) -> Output {
    ctx.run(ctx.bin("oci-fetch"), args)
}

fn unpack(ctx: &Ctx, image: &Output, extra: &[&str]) -> Output {
    image.assert_code(0);
    ctx.cmd(ctx.bin("oci-unpack"))
        .args(extra)
        .stdin(image.stdout.clone())
        .run()
}

/// What siftool says object `id` holds (`siftool dump`), hashed.
fn siftool_object_digest(sif: &Path, id: u32) -> String {
    let o = Command::new("siftool")
        .args(["dump", &id.to_string()])
        .arg(sif)
        .output()
        .expect("siftool is installed (scripts/setup)");
    assert!(o.status.success(), "siftool dump: {o:?}");
    format!("sha256:{}", sha256_hex(&o.stdout))
}

fn sha256_hex(data: &[u8]) -> String {
    let mut c = Command::new("sha256sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    c.stdin.take().unwrap().write_all(data).unwrap();
    let o = c.wait_with_output().unwrap();
    String::from_utf8(o.stdout).unwrap()[..64].to_string()
}

/// `unsquashfs -d` of the SIF's partition at `offset`, into `dest`.
fn unsquashfs(sif: &Path, offset: u64, dest: &Path) {
    let o = Command::new("unsquashfs")
        .args(["-quiet", "-no-progress", "-o", &offset.to_string(), "-d"])
        .arg(dest)
        .arg(sif)
        .output()
        .expect("unsquashfs is installed (scripts/setup)");
    assert!(o.status.success(), "unsquashfs: {o:?}");
}

/// What unsquashfs and oci-unpack must agree on below the root, per type: mode and owner;
/// directories and files their link count and modification time; files their size and
/// content; symbolic links their owner and target only (their mode means nothing).
fn unsquashfs_view(path: &str, e: &Entry) -> Option<Entry> {
    if path == "/" {
        return None;
    }
    let dir_or_file = matches!(e.kind, 'd' | 'f');
    Some(Entry {
        mode: if e.kind == 'l' { 0 } else { e.mode },
        size: if e.kind == 'f' { e.size } else { 0 },
        nlink: if dir_or_file { e.nlink } else { 0 },
        mtime_ns: if dir_or_file { e.mtime_ns } else { 0 },
        link_group: None,
        xattrs: Default::default(),
        ..e.clone()
    })
}

fn same_tree(ours: &Path, theirs: &Path) {
    let d = differences(
        &snapshot(ours),
        &snapshot(theirs),
        ("ours", "unsquashfs"),
        unsquashfs_view,
    );
    assert!(d.is_empty(), "trees differ:\n  {}", d.join("\n  "));
}

/// A cache of this test's own (`CTX_DIR/cache`), so what a run leaves is not mixed up with the
/// other tests of the profile that run beside it.
fn private_cache(ctx: &Ctx) -> PathBuf {
    let p = ctx.dir().join("cache");
    if !p.exists() {
        ctx.mkdir("cache");
    }
    p
}

/// Entries of a cache directory (`rootfs`, `tmp`, ...), sorted.
fn entries(cache: &Path, sub: &str) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(cache.join("cache/oci-launcher").join(sub))
        .map(|rd| {
            rd.filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

#[test]
fn native_sif_record_names_the_partition_siftool_sees() {
    for profile in [Profile::Root, Profile::User] {
        let ctx = Ctx::for_test(profile, Rt::Crun);
        let sif = sif_fixture("busybox");
        let plain = fetch(&ctx, &[sif.to_str().unwrap()]);
        plain.assert_code(0);
        assert_eq!(plain.lines().len(), 1);
        let rec = plain.json();
        assert_record_valid("image-record.schema.json", &rec);
        assert_eq!(rec["transport"], "sif");
        assert_eq!(rec["layers"].as_array().unwrap().len(), 1);
        assert_eq!(
            rec["layers"][0]["mediaType"],
            "application/vnd.sylabs.image.layer.v1.squashfs"
        );
        assert_eq!(
            rec["layers"][0]["digest"].as_str().unwrap(),
            siftool_object_digest(&sif, 1),
            "the layer is the primary partition, byte for byte"
        );
        assert_eq!(rec["sif"]["path"], sif.to_str().unwrap());
        assert_eq!(rec["digest"], rec["manifest"]["digest"]);
        // sif:PATH names the same image.
        let prefixed = fetch(&ctx, &[&format!("sif:{}", sif.display())]);
        prefixed.assert_code(0);
        assert_eq!(prefixed.json()["digest"], rec["digest"]);
        assert_eq!(prefixed.json()["transport"], "sif");
        let rootfs = unpack(&ctx, &plain, &[]);
        rootfs.assert_code(0);
        assert_record_valid("rootfs-record.schema.json", &rootfs.json());
        // The remembered digest is a private file of the caller.
        let dir = ctx.cache_dir().join("cache/oci-launcher/sif");
        for e in std::fs::read_dir(&dir).unwrap() {
            use std::os::unix::fs::MetadataExt;
            let m = std::fs::symlink_metadata(e.unwrap().path()).unwrap();
            assert!(m.is_file() && m.uid() == ctx.uid() && m.mode() & 0o077 == 0);
        }
    }
}

/// pread64 calls of a traced oci-fetch (with its own cache, `CTX_DIR/cache`) that read at or
/// beyond `from` in the SIF.
fn data_reads(ctx: &Ctx, sif: &Path, from: u64) -> usize {
    let cache = private_cache(ctx);
    static RUNS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let log = ctx.dir().join(format!("strace-{n}.log"));
    ctx.cmd("strace")
        .args(&["-f", "-e", "trace=pread64", "-o", log.to_str().unwrap()])
        .arg(ctx.bin("oci-fetch"))
        .arg(sif.to_str().unwrap())
        .env("SINGULARITY_CACHEDIR", cache.to_str().unwrap())
        .run()
        .assert_code(0);
    let text = std::fs::read_to_string(&log).unwrap();
    text.lines()
        .filter_map(|l| {
            let call = l.split("pread64(").nth(1)?;
            let args = call.rsplit_once(')')?.0;
            args.rsplit(", ").next()?.trim().parse::<u64>().ok()
        })
        .filter(|&off| off >= from)
        .count()
}

#[test]
fn warm_fetch_reads_no_image_data() {
    let ctx = Ctx::for_test(Profile::User, Rt::Crun);
    let sif = sif_fixture("busybox");
    let first = fetch(&ctx, &[sif.to_str().unwrap()]);
    first.assert_code(0);
    let offset = first.json()["sif"]["objects"][0]["offset"]
        .as_u64()
        .unwrap();
    // A fresh cache: the first traced run hashes the partition, the second only remembers it.
    let fresh = Ctx::new(
        Profile::User,
        Rt::Crun,
        &format!("{}-fresh", current_test_name()),
    );
    assert!(
        data_reads(&fresh, &sif, offset) > 0,
        "a cold fetch reads the partition"
    );
    assert_eq!(
        data_reads(&fresh, &sif, offset),
        0,
        "a warm fetch reads no image data"
    );
    // Touching the file changes its identity: the digest is computed again.
    let copy = fresh.dir().join("copy.sif");
    std::fs::copy(&sif, &copy).unwrap();
    Command::new("chown")
        .arg(format!("{}:{}", fresh.uid(), fresh.gid()))
        .arg(&copy)
        .status()
        .unwrap();
    assert!(data_reads(&fresh, &copy, offset) > 0);
    assert_eq!(data_reads(&fresh, &copy, offset), 0);
    Command::new("touch").arg(&copy).status().unwrap();
    assert!(
        data_reads(&fresh, &copy, offset) > 0,
        "a changed file is hashed again"
    );
}

/// SIF fixture `name` fetched and unpacked gives the tree `unsquashfs` makes of its partition.
fn unpacks_as_unsquashfs_does(ctx: &Ctx, name: &str) {
    let sif = sif_fixture(name);
    let image = fetch(ctx, &[sif.to_str().unwrap()]);
    let rec = unpack(ctx, &image, &[]);
    rec.assert_code(0);
    let ours = PathBuf::from(rec.json()["rootfs"].as_str().unwrap());
    let offset = image.json()["sif"]["objects"][0]["offset"]
        .as_u64()
        .unwrap();
    let theirs = ctx.dir().join(format!("{name}.unsquashfs"));
    unsquashfs(&sif, offset, &theirs);
    same_tree(&ours, &theirs);
}

#[test]
fn unpacked_trees_match_unsquashfs() {
    let ctx = Ctx::for_test(Profile::Root, Rt::Crun);
    for name in ["busybox", "layered"] {
        unpacks_as_unsquashfs_does(&ctx, name);
    }
    // sylabs/sif's own image: its primary partition is built for 386.
    let sif = sylabs_image("one-group.sif");
    let image = fetch(&ctx, &["--arch", "386", sif.to_str().unwrap()]);
    assert_eq!(image.json()["platform"]["architecture"], "386");
    let rec = unpack(&ctx, &image, &[]);
    rec.assert_code(0);
    let ours = PathBuf::from(rec.json()["rootfs"].as_str().unwrap());
    let theirs = ctx.dir().join("one-group.unsquashfs");
    unsquashfs(&sif, 36864, &theirs);
    same_tree(&ours, &theirs);
}

/// The compressors of Debian's mksquashfs that oci-unpack reads (`comp-<name>.sif`, built by
/// scripts/mkimages with sqfstar and siftool; lz4 with -Xhc).
const READ_COMPRESSORS: [&str; 5] = ["gzip", "lzma", "xz", "lz4", "zstd"];

#[test]
fn every_mksquashfs_compressor_unpacks_as_unsquashfs_does() {
    let ctx = Ctx::for_test(Profile::Root, Rt::Crun);
    for comp in READ_COMPRESSORS {
        unpacks_as_unsquashfs_does(&ctx, &format!("comp-{comp}"));
    }
}

#[test]
fn every_mksquashfs_compressor_runs_through_the_front() {
    for ctx in matrix() {
        for comp in READ_COMPRESSORS {
            let sif = sif_fixture(&format!("comp-{comp}"));
            ctx.front(&["exec", sif.to_str().unwrap(), "/bin/echo", comp])
                .assert_code(0)
                .assert_stdout_eq(comp);
        }
        ctx.assert_no_leftovers();
    }
}

#[test]
fn layered_sif_holds_for_every_identity() {
    let exp = layered_expected();
    for profile in [Profile::Root, Profile::User, Profile::UserNoSubids] {
        let ctx = Ctx::for_test(profile, Rt::Crun);
        let image = fetch(&ctx, &[sif_fixture("layered").to_str().unwrap()]);
        let rec = unpack(&ctx, &image, &[]);
        rec.assert_code(0);
        let root = PathBuf::from(rec.json()["rootfs"].as_str().unwrap());
        let errs = layered_errors(&root, &exp);
        assert!(errs.is_empty(), "{profile:?}: {errs:?}");
    }
}

#[test]
fn native_sif_runs_through_the_front() {
    for ctx in matrix() {
        let sif = sif_fixture("busybox");
        ctx.front(&["exec", sif.to_str().unwrap(), "/bin/echo", "from-sif"])
            .assert_code(0)
            .assert_stdout_eq("from-sif");
        ctx.front(&[
            "exec",
            &format!("sif:{}", sif.display()),
            "/bin/sh",
            "-c",
            "id -u; exit 3",
        ])
        .assert_code(3)
        .assert_stdout_eq(&ctx.uid().to_string());
        ctx.assert_no_leftovers();
    }
}

#[test]
fn refused_sifs_say_why_and_leave_nothing() {
    let cases: Vec<(PathBuf, &str)> = vec![
        (sif_fixture("ext3"), "ext3 partition"),
        (sif_fixture("encrypted"), "encrypted squashfs"),
        (sif_fixture("data-only"), "no root filesystem"),
        (sif_fixture("other-arch"), "built for"),
        (sif_fixture("truncated"), "truncated"),
        (sylabs_image("empty.sif"), "no root filesystem"),
        (sylabs_image("one-group.sif"), "built for 386"),
        (sif_fixture("hostile-dotdot"), "'..'"),
        (sif_fixture("hostile-cycle"), "hard-link cycle"),
        (sif_fixture("comp-lzo"), "compressed with lzo"),
        (sif_fixture("comp-unknown"), "unknown compressor (id 99)"),
    ];
    for ctx in matrix_with(&[Profile::Root, Profile::User])
        .into_iter()
        .filter(|c| c.rt == Rt::Crun)
    {
        let cache = private_cache(&ctx);
        for (sif, needle) in &cases {
            ctx.front_cmd(&["exec", sif.to_str().unwrap(), "/bin/true"])
                .env("SINGULARITY_CACHEDIR", cache.to_str().unwrap())
                .run()
                .assert_code(255)
                .assert_fatal(needle);
            for sub in ["rootfs", "tmp"] {
                assert!(
                    entries(&cache, sub).is_empty(),
                    "{}: left in the cache's {sub}/: {:?}",
                    sif.display(),
                    entries(&cache, sub)
                );
            }
            ctx.assert_no_leftovers();
        }
    }
}

#[test]
fn hostile_squashfs_gets_the_tar_layer_guarantees() {
    let sif = sif_fixture("hostile-misc");
    for profile in [Profile::Root, Profile::User] {
        let ctx = Ctx::for_test(profile, Rt::Crun);
        let image = fetch(&ctx, &[sif.to_str().unwrap()]);
        let cache = private_cache(&ctx);
        // A sparse 64 MiB file is 64 MiB of output: the size bound counts it.
        ctx.cmd(ctx.bin("oci-unpack"))
            .args(&["--max-size", "16M"])
            .env("SINGULARITY_CACHEDIR", cache.to_str().unwrap())
            .stdin(image.stdout.clone())
            .run()
            .assert_code(255)
            .assert_fatal("--max-size");
        assert!(entries(&cache, "rootfs").is_empty() && entries(&cache, "tmp").is_empty());
        let rec = unpack(&ctx, &image, &[]);
        rec.assert_code(0);
        let root = PathBuf::from(rec.json()["rootfs"].as_str().unwrap());
        // The absolute symlink is stored verbatim, never followed.
        assert_eq!(
            std::fs::read_link(root.join("shadow")).unwrap(),
            Path::new("/etc/shadow")
        );
        assert_eq!(std::fs::metadata(root.join("big")).unwrap().len(), 64 << 20);
        assert_eq!(std::fs::read_to_string(root.join("ok")).unwrap(), "ok\n");
        use std::os::unix::fs::FileTypeExt;
        let null = std::fs::symlink_metadata(root.join("null"));
        if ctx.is_root() {
            assert!(null.unwrap().file_type().is_char_device());
        } else {
            // Device nodes need real root: skipped with one warning, as for tar layers.
            assert!(null.is_err());
            assert!(
                rec.stderr.contains("skipped 2 device node(s)"),
                "{}",
                rec.stderr
            );
        }
    }
}

#[test]
fn singularity_actions_on_native_sif() {
    let sif = sif_fixture("busybox");
    let img = sif.to_str().unwrap();
    for ctx in matrix_with(&[Profile::Root, Profile::User, Profile::Fakeroot]) {
        // env/*.sh are sourced in lexical order before every action.
        ctx.front(&["exec", img, "/bin/sh", "-c", "echo $SIF_ORDER"])
            .assert_code(0)
            .assert_stdout_eq("base:env");
        ctx.front(&["run", img, "a", "b c"])
            .assert_code(0)
            .assert_stdout_eq("runscript:base:env:a b c");
        ctx.front(&["test", img])
            .assert_code(7)
            .assert_stdout_eq("test:hello from the sif");
        // The usual options work on them as on OCI images.
        ctx.front_cmd(&[
            "exec",
            "--cleanenv",
            "--env",
            "FOO=bar",
            img,
            "/bin/sh",
            "-c",
            "echo $FOO:$SIF_GREETING:${HOSTVAR:-unset}",
        ])
        .env("HOSTVAR", "leaked")
        .run()
        .assert_code(0)
        .assert_stdout_eq("bar:hello from the sif:unset");
        ctx.front_cmd(&["exec", img, "/bin/sh", "-c", "echo $OTHER:$SIF_ORDER"])
            .env("SINGULARITYENV_OTHER", "passed")
            .run()
            .assert_code(0)
            .assert_stdout_eq("passed:base:env");
        ctx.front(&[
            "exec",
            "--writable-tmpfs",
            img,
            "/bin/sh",
            "-c",
            "echo w > /new && cat /new",
        ])
        .assert_code(0)
        .assert_stdout_eq("w");
        ctx.mkdir("bound");
        let data = ctx.write_file("bound/file", "bound\n");
        let bind = format!("{}:/mnt", data.parent().unwrap().display());
        ctx.front(&["exec", "-B", &bind, img, "/bin/cat", "/mnt/file"])
            .assert_code(0)
            .assert_stdout_eq("bound");
        let want_uid = if ctx.profile == Profile::Fakeroot {
            0
        } else {
            ctx.uid()
        };
        ctx.front(&["exec", img, "/bin/sh", "-c", "id -u"])
            .assert_code(0)
            .assert_stdout_eq(&want_uid.to_string());
        ctx.assert_no_leftovers();
    }
}
