//! The rootfs cache: a cold run builds, a warm run extracts nothing, concurrent runs build one
//! tree, a crashed run's leftovers are cleaned, and --bundle writes a private tree.

mod support;
use std::process::{Command, Stdio};
use support::tarw::*;
use support::*;

/// An image big enough that concurrent unpacks really overlap (~24 MiB, 1500 files).
fn sizeable(t: &std::path::Path) -> std::path::PathBuf {
    let mut ents = vec![dir("data")];
    for i in 0..1500u32 {
        let data: Vec<u8> = (0..4096u32)
            .flat_map(|j| (i.wrapping_mul(7919) ^ j).to_le_bytes())
            .collect();
        ents.push(file(&format!("data/f{i}"), &data));
    }
    // The big layer is plain tar: compressing it in a debug test build would dominate the run.
    image(
        t,
        &[
            (ents, Comp::None),
            (vec![file("data/last", b"done")], Comp::Gzip),
        ],
    )
}

#[test]
fn cold_then_warm() {
    require_root();
    let t = scratch("warm");
    let rec = image(
        t.path(),
        &[(vec![dir("etc"), file("etc/hostname", b"box\n")], Comp::Gzip)],
    );
    let cache = t.path().join("cache");
    let a = ok_record(&run(&As::Root, &cache, &["--input", rec.to_str().unwrap()]));
    assert_eq!(
        (a["cached"].as_bool(), a["readOnly"].as_bool()),
        (Some(false), Some(true))
    );
    let root = rootfs_of(&a);
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&rec).unwrap()).unwrap();
    let hex = r["digest"]
        .as_str()
        .unwrap()
        .strip_prefix("sha256:")
        .unwrap()
        .to_string();
    assert_eq!(
        root,
        cache.join(format!("cache/oci-launcher/rootfs/{hex}-keep/rootfs")),
        "CACHE/rootfs/<manifest-hex>-<ownership>/rootfs"
    );
    assert_eq!(std::fs::read(root.join("etc/hostname")).unwrap(), b"box\n");
    let m = std::fs::metadata(root.parent().unwrap()).unwrap();
    // Remove the layout: a warm run must not need a single blob.
    std::fs::remove_dir_all(t.path().join("layout")).unwrap();
    let b = ok_record(&run(&As::Root, &cache, &["--input", rec.to_str().unwrap()]));
    assert_eq!(b["cached"], true);
    assert_eq!(b["rootfs"], a["rootfs"]);
    assert_eq!(b["image"], r, "the image record is carried whole");
    use std::os::unix::fs::MetadataExt;
    assert_eq!(
        std::fs::metadata(root.parent().unwrap()).unwrap().ino(),
        m.ino()
    );
    // stdin works the same
    let o = Command::new(bin())
        .env("SINGULARITY_CACHEDIR", &cache)
        .stdin(std::fs::File::open(&rec).unwrap())
        .output()
        .unwrap();
    assert_eq!(ok_record(&o)["cached"], true);
}

#[test]
fn eight_concurrent_unpacks_make_one_tree() {
    require_root();
    let t = scratch("conc");
    let rec = sizeable(t.path());
    let cache = t.path().join("cache");
    let children: Vec<_> = (0..8)
        .map(|_| {
            Command::new(bin())
                .args(["--input", rec.to_str().unwrap()])
                .env("SINGULARITY_CACHEDIR", &cache)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let recs: Vec<serde_json::Value> = children
        .into_iter()
        .map(|c| ok_record(&c.wait_with_output().unwrap()))
        .collect();
    let built = recs.iter().filter(|r| r["cached"] == false).count();
    assert_eq!(built, 1, "exactly one process extracted");
    assert!(recs.iter().all(|r| r["rootfs"] == recs[0]["rootfs"]));
    let entries: Vec<_> = std::fs::read_dir(cache.join("cache/oci-launcher/rootfs"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(entries.len(), 1, "one tree, no temporaries: {entries:?}");
    assert_eq!(
        std::fs::read(rootfs_of(&recs[0]).join("data/last")).unwrap(),
        b"done"
    );
}

#[test]
fn a_killed_unpack_leaves_nothing_that_matters() {
    require_root();
    let t = scratch("kill");
    let rec = sizeable(t.path());
    let cache = t.path().join("cache");
    let mut c = Command::new(bin())
        .args(["--input", rec.to_str().unwrap()])
        .env("SINGULARITY_CACHEDIR", &cache)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Kill it once its temporary tree exists.
    let rootfs_dir = cache.join("cache/oci-launcher/rootfs");
    let start = std::time::Instant::now();
    while start.elapsed().as_secs() < 10 {
        if std::fs::read_dir(&rootfs_dir).is_ok_and(|mut r| r.next().is_some()) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    c.kill().unwrap();
    c.wait().unwrap();
    let r = ok_record(&run(&As::Root, &cache, &["--input", rec.to_str().unwrap()]));
    assert_eq!(
        r["cached"], false,
        "a partial tree is never taken for a cache entry"
    );
    let entries: Vec<_> = std::fs::read_dir(&rootfs_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        entries.len(),
        1,
        "the crashed run's temporary was removed: {entries:?}"
    );
}

#[test]
fn bundle_mode_is_private_and_refuses_a_used_target() {
    require_root();
    let t = scratch("bundle");
    let rec = image(t.path(), &[(vec![file("a", b"a")], Comp::Gzip)]);
    let cache = t.path().join("cache");
    let b = t.path().join("b");
    std::fs::create_dir_all(b.join("rootfs")).unwrap(); // an empty mount point is fine
    let r = ok_record(&run(
        &As::Root,
        &cache,
        &[
            "--input",
            rec.to_str().unwrap(),
            "--bundle",
            b.to_str().unwrap(),
        ],
    ));
    assert_eq!(
        (r["readOnly"].as_bool(), r["cached"].as_bool()),
        (Some(false), Some(false))
    );
    assert_eq!(rootfs_of(&r), b.join("rootfs"));
    assert!(b.join("rootfs/a").is_file());
    assert!(
        !cache.join("cache/oci-launcher/rootfs").exists(),
        "the cache is not used"
    );
    let o = run(
        &As::Root,
        &cache,
        &[
            "--input",
            rec.to_str().unwrap(),
            "--bundle",
            b.to_str().unwrap(),
        ],
    );
    assert_fatal(&o, "not empty");
    assert!(
        b.join("rootfs/a").is_file(),
        "the existing tree is left alone"
    );
    assert_eq!(
        std::fs::read_dir(&b).unwrap().count(),
        1,
        "no temporary left"
    );
}
