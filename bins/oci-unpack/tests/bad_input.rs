//! Bad input: each case gives one FATAL line and exit 255, leaves no partial tree, and leaves
//! the cache's rootfs directory exactly as it was (empty here: no entry, no temporary).

mod support;
use std::path::Path;
use support::tarw::*;
use support::*;

fn small_tar() -> Vec<u8> {
    tar(
        &[
            dir("etc"),
            file("etc/a", &vec![b'a'; 5000]),
            file("etc/b", b"bbbb"),
        ],
        true,
    )
}

fn rootfs_cache_listing(cache: &Path) -> Vec<String> {
    let d = cache.join("cache/oci-launcher/rootfs");
    match std::fs::read_dir(&d) {
        Ok(rd) => rd
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => vec![],
    }
}

/// Run on a record in cache mode and check the failure contract.
fn expect_fatal(t: &Path, rec: &Path, extra: &[&str], needle: &str) {
    let cache = t.join("cache");
    let mut args = vec!["--input", rec.to_str().unwrap()];
    args.extend_from_slice(extra);
    let o = run(&As::Root, &cache, &args);
    assert_fatal(&o, needle);
    assert_eq!(
        rootfs_cache_listing(&cache),
        Vec::<String>::new(),
        "cache rootfs/ untouched"
    );
    // and through --bundle: nothing left in the bundle directory
    let b = t.join("bundle");
    let mut args = vec![
        "--input",
        rec.to_str().unwrap(),
        "--bundle",
        b.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let o = run(&As::Root, &cache, &args);
    assert_fatal(&o, needle);
    let left: Vec<_> = std::fs::read_dir(&b)
        .map(|r| r.collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "bundle left with {left:?}");
}

fn corrupt_middle(mut v: Vec<u8>) -> Vec<u8> {
    let n = v.len();
    for b in &mut v[n / 3..n / 3 + 16] {
        *b ^= 0x5a;
    }
    v
}

#[test]
fn corrupt_gzip() {
    require_root();
    let t = scratch("badgz");
    let tarb = small_tar();
    let mut l = Layer::new(&tarb, Comp::Gzip);
    l.blob = corrupt_middle(l.blob);
    let rec = image_from(t.path(), &[Layer::new(&small_tar(), Comp::Gzip), l]);
    expect_fatal(t.path(), &rec, &[], "layer 2");
}

#[test]
fn corrupt_zstd() {
    require_root();
    let t = scratch("badzst");
    let big = tar(
        &[file(
            "f",
            &(0..200_000u32)
                .flat_map(|i| i.to_le_bytes())
                .collect::<Vec<_>>(),
        )],
        true,
    );
    let mut l = Layer::new(&big, Comp::Zstd);
    l.blob = corrupt_middle(l.blob);
    let rec = image_from(t.path(), &[l]);
    // Without a frame checksum the damage may decode "fine": the diff_id catches it then.
    expect_fatal(t.path(), &rec, &[], "layer 1");
}

#[test]
fn truncated_tar_inside_a_file() {
    require_root();
    let t = scratch("trunc");
    let mut tarb = small_tar();
    tarb.truncate(512 + 512 + 2000); // dir header, file header, part of the data
    let rec = image_from(t.path(), &[Layer::new(&tarb, Comp::Gzip)]);
    expect_fatal(t.path(), &rec, &[], "truncated");
}

#[test]
fn truncated_tar_inside_a_header() {
    require_root();
    let t = scratch("trunch");
    let mut tarb = small_tar();
    tarb.truncate(512 + 200);
    let rec = image_from(t.path(), &[Layer::new(&tarb, Comp::None)]);
    expect_fatal(t.path(), &rec, &[], "layer 1");
}

#[test]
fn diff_id_mismatch() {
    require_root();
    let t = scratch("diffid");
    let mut l = Layer::new(&small_tar(), Comp::Gzip);
    l.diff_id = common::digest::Digest::of_bytes(b"something else").to_string();
    let rec = image_from(t.path(), &[l]);
    expect_fatal(t.path(), &rec, &[], "diff_ids");
}

#[test]
fn blob_digest_mismatch() {
    require_root();
    let t = scratch("blobdg");
    let rec = image_from(t.path(), &[Layer::new(&small_tar(), Comp::Gzip)]);
    // Replace the blob's bytes after the layout was written (same length).
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&rec).unwrap()).unwrap();
    let d = r["layers"][0]["digest"]
        .as_str()
        .unwrap()
        .strip_prefix("sha256:")
        .unwrap()
        .to_string();
    let p = t.path().join("layout/blobs/sha256").join(d);
    let b = std::fs::read(&p).unwrap();
    let other = Layer::new(&tar(&[file("x", &vec![b'x'; 5000])], true), Comp::Gzip).blob;
    let mut fake = other.clone();
    fake.resize(b.len().max(other.len()), 0);
    std::fs::write(&p, &fake).unwrap();
    expect_fatal(t.path(), &rec, &[], "layer 1");
}

#[test]
fn missing_blob() {
    require_root();
    let t = scratch("noblob");
    let rec = image_from(t.path(), &[Layer::new(&small_tar(), Comp::Gzip)]);
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&rec).unwrap()).unwrap();
    let d = r["layers"][0]["digest"]
        .as_str()
        .unwrap()
        .strip_prefix("sha256:")
        .unwrap()
        .to_string();
    std::fs::remove_file(t.path().join("layout/blobs/sha256").join(d)).unwrap();
    expect_fatal(t.path(), &rec, &[], "cannot open blob");
}

#[test]
fn decompression_bomb_hits_the_size_limit() {
    require_root();
    let t = scratch("bomb");
    // 64 MiB of zeros compresses to ~64 KiB.
    let bomb = tar(&[file("zeros", &vec![0u8; 64 << 20])], true);
    let l = Layer::new(&bomb, Comp::Gzip);
    assert!(l.blob.len() < 1 << 20);
    let rec = image_from(t.path(), &[l]);
    expect_fatal(t.path(), &rec, &["--max-size", "8M"], "size limit");
}

#[test]
fn hostile_entry_in_cache_mode() {
    require_root();
    let t = scratch("hostcache");
    let rec = image(
        t.path(),
        &[(
            vec![dir("etc"), file("etc/ok", b"ok"), file("../../x", b"x")],
            Comp::Gzip,
        )],
    );
    expect_fatal(t.path(), &rec, &[], "'..'");
}

#[test]
fn unsupported_media_type_and_bad_records() {
    require_root();
    let t = scratch("mt");
    let rec = image(t.path(), &[(vec![file("a", b"a")], Comp::Gzip)]);
    let mut r: serde_json::Value = serde_json::from_slice(&std::fs::read(&rec).unwrap()).unwrap();
    r["layers"][0]["mediaType"] = "application/vnd.example.squashfs".into();
    let bad = t.path().join("bad-mt.json");
    std::fs::write(&bad, r.to_string()).unwrap();
    expect_fatal(t.path(), &bad, &[], "unsupported layer media type");

    let mut r: serde_json::Value = serde_json::from_slice(&std::fs::read(&rec).unwrap()).unwrap();
    r["imageConfig"]["rootfs"]["diff_ids"] = serde_json::json!([]);
    std::fs::write(&bad, r.to_string()).unwrap();
    expect_fatal(t.path(), &bad, &[], "diff_ids for 1 layers");

    let mut r: serde_json::Value = serde_json::from_slice(&std::fs::read(&rec).unwrap()).unwrap();
    r["kind"] = "rootfs".into();
    std::fs::write(&bad, r.to_string()).unwrap();
    expect_fatal(t.path(), &bad, &[], "'rootfs' record");

    let o = run(&As::Root, &t.path().join("cache"), &["--bogus"]);
    assert_fatal(&o, "unknown option");
    let o = run(
        &As::Root,
        &t.path().join("cache"),
        &["--input", rec.to_str().unwrap(), "--max-size", "lots"],
    );
    assert_fatal(&o, "--max-size");
}
