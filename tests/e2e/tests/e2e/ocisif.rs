//! OCI-SIF images: the file `pull --oci-sif` (and `pull --name`, `build`) writes, checked against
//! the format as sylabs/sif defines it (siftool's view, and the raw descriptor fields sylabs/sif's
//! Go code reads); an OCI-SIF assembled only with reference tools (siftool, sqfstar, JSON written
//! here) read and run; both as root and the unprivileged users with crun and runc; and the files
//! that must be refused with one FATAL line, leaving nothing behind.

use e2e::*;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const SQUASHFS: &str = "application/vnd.sylabs.image.layer.v1.squashfs";
const DATA_OCI_ROOT_INDEX: i32 = 0x400A;
const DATA_OCI_BLOB: i32 = 0x400B;
const DESCRIPTOR_LEN: usize = 585;

fn sha256_hex(data: &[u8]) -> String {
    let mut c = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    c.stdin.take().unwrap().write_all(data).unwrap();
    let o = c.wait_with_output().unwrap();
    String::from_utf8(o.stdout).unwrap()[..64].to_string()
}

fn digest_of(data: &[u8]) -> String {
    format!("sha256:{}", sha256_hex(data))
}

fn tool(program: &str, args: &[&str]) -> Vec<u8> {
    let o = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program} is installed (scripts/setup): {e}"));
    assert!(
        o.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    o.stdout
}

/// One used descriptor as sylabs/sif's rawDescriptor lays it out.
#[derive(Debug)]
struct RawDesc {
    data_type: i32,
    id: u32,
    group: u32,
    link: u32,
    offset: i64,
    size: i64,
    size_with_padding: i64,
    created: i64,
    modified: i64,
    name: Vec<u8>,
    extra: String,
}

fn le_i64(b: &[u8], at: usize) -> i64 {
    i64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

fn raw_descriptors(file: &[u8]) -> Vec<RawDesc> {
    let (total, at) = (le_i64(file, 88) as usize, le_i64(file, 96) as usize);
    (0..total)
        .map(|i| &file[at + i * DESCRIPTOR_LEN..at + (i + 1) * DESCRIPTOR_LEN])
        .filter(|d| d[4] == 1)
        .map(|d| RawDesc {
            data_type: i32::from_le_bytes(d[0..4].try_into().unwrap()),
            id: u32::from_le_bytes(d[5..9].try_into().unwrap()),
            group: u32::from_le_bytes(d[9..13].try_into().unwrap()),
            link: u32::from_le_bytes(d[13..17].try_into().unwrap()),
            offset: le_i64(d, 17),
            size: le_i64(d, 25),
            size_with_padding: le_i64(d, 33),
            created: le_i64(d, 41),
            modified: le_i64(d, 49),
            name: d[73..201].to_vec(),
            extra: String::from_utf8_lossy(&d[201..])
                .trim_end_matches('\0')
                .to_string(),
        })
        .collect()
}

/// Walk the OCI graph of an OCI-SIF with siftool only (`siftool dump` of each object), checking
/// every object against the digest its descriptor records; returns the manifest and config.
fn check_with_siftool(sif: &Path) -> (Value, Value) {
    let s = sif.to_str().unwrap();
    let file = std::fs::read(sif).unwrap();
    let descs = raw_descriptors(&file);
    let list = String::from_utf8(tool("siftool", &["list", s])).unwrap();
    assert_eq!(
        list.lines()
            .filter(|l| l.contains("|1       |NONE"))
            .count(),
        descs.len(),
        "siftool lists every object in group 1, unlinked:\n{list}"
    );
    let by_digest = |d: &str| -> Vec<u8> {
        let o = descs
            .iter()
            .find(|x| x.extra == d)
            .unwrap_or_else(|| panic!("no object records {d}"));
        let bytes = tool("siftool", &["dump", &o.id.to_string(), s]);
        assert_eq!(
            digest_of(&bytes),
            d,
            "object {} holds what it records",
            o.id
        );
        bytes
    };
    let roots: Vec<&RawDesc> = descs
        .iter()
        .filter(|d| d.data_type == DATA_OCI_ROOT_INDEX)
        .collect();
    assert_eq!(roots.len(), 1, "one OCI.RootIndex");
    let index: Value = serde_json::from_slice(&by_digest(&roots[0].extra)).unwrap();
    assert_eq!(index["schemaVersion"], 2);
    let m = &index["manifests"][0];
    let manifest: Value =
        serde_json::from_slice(&by_digest(m["digest"].as_str().unwrap())).unwrap();
    let config: Value =
        serde_json::from_slice(&by_digest(manifest["config"]["digest"].as_str().unwrap())).unwrap();
    let mut diff_ids = Vec::new();
    for l in manifest["layers"].as_array().unwrap() {
        assert_eq!(l["mediaType"], SQUASHFS);
        let bytes = by_digest(l["digest"].as_str().unwrap());
        assert_eq!(&bytes[..4], b"hsqs", "a squashfs layer");
        assert_eq!(bytes.len() as u64, l["size"].as_u64().unwrap());
        diff_ids.push(l["digest"].clone());
    }
    assert_eq!(config["rootfs"]["diff_ids"], Value::Array(diff_ids));
    (manifest, config)
}

/// The layers of fixture `name` as plain tar files in `dir`.
fn layer_tars(name: &str, dir: &Path) -> Vec<PathBuf> {
    let layout = fixture(name);
    let blob = |d: &Value| {
        let hex = d["digest"].as_str().unwrap().trim_start_matches("sha256:");
        layout.join("blobs/sha256").join(hex)
    };
    let index: Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(blob(&index["manifests"][0])).unwrap()).unwrap();
    let mut tars = Vec::new();
    for (i, l) in manifest["layers"].as_array().unwrap().iter().enumerate() {
        let out = dir.join(format!("layer{i}.tar"));
        let gz = l["mediaType"].as_str().unwrap().ends_with("gzip");
        let bytes = if gz {
            tool("gzip", &["-dc", blob(l).to_str().unwrap()])
        } else {
            std::fs::read(blob(l)).unwrap()
        };
        std::fs::write(&out, bytes).unwrap();
        tars.push(out);
    }
    tars
}

fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "aarch64" => "arm64",
        _ => "amd64",
    }
}

/// An OCI-SIF assembled with reference tools only: each layer tar made a squashfs by sqfstar,
/// the OCI JSON written here, `siftool new` and `siftool add` for the objects. Debian's siftool
/// (sylabs/sif 2.8) predates the OCI data types, so the blobs are added as Generic objects and
/// their descriptors then given the type and digest sylabs/sif writes for OCI.Blob and
/// OCI.RootIndex (4 type bytes and the digest text in the descriptor's extra field).
/// `layer_media` overrides the media type the manifest gives each layer.
fn reference_oci_sif(dir: &Path, tars: &[PathBuf], layer_media: Option<&str>) -> PathBuf {
    let mut blobs: Vec<(PathBuf, String, usize)> = Vec::new();
    let mut layers = Vec::new();
    for (i, tar) in tars.iter().enumerate() {
        let sq = dir.join(format!("layer{i}.sqfs"));
        let _ = std::fs::remove_file(&sq);
        let st = Command::new("sqfstar")
            .args(["-quiet", "-no-progress", sq.to_str().unwrap()])
            .stdin(std::fs::File::open(tar).unwrap())
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(st.success(), "sqfstar");
        let bytes = std::fs::read(&sq).unwrap();
        let d = digest_of(&bytes);
        layers.push(
            json!({"mediaType": layer_media.unwrap_or(SQUASHFS), "digest": d, "size": bytes.len()}),
        );
        blobs.push((sq, d, bytes.len()));
    }
    let mut put = |name: &str, v: &Value| -> Value {
        let bytes = serde_json::to_vec(v).unwrap();
        let p = dir.join(name);
        std::fs::write(&p, &bytes).unwrap();
        let d = digest_of(&bytes);
        blobs.push((p, d.clone(), bytes.len()));
        json!({"digest": d, "size": bytes.len()})
    };
    let diff_ids: Vec<Value> = layers.iter().map(|l| l["digest"].clone()).collect();
    let mut config = put(
        "config.json",
        &json!({
            "architecture": host_arch(), "os": "linux",
            "config": {"Env": ["PATH=/usr/sbin:/usr/bin:/sbin:/bin", "FROM_REFERENCE=yes"]},
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
        }),
    );
    config["mediaType"] = "application/vnd.oci.image.config.v1+json".into();
    let mut manifest = put(
        "manifest.json",
        &json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": config, "layers": layers,
        }),
    );
    manifest["mediaType"] = "application/vnd.oci.image.manifest.v1+json".into();
    put(
        "index.json",
        &json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [manifest],
        }),
    );
    let sif = dir.join("reference.sif");
    let _ = std::fs::remove_file(&sif);
    let s = sif.to_str().unwrap();
    tool("siftool", &["new", s]);
    for (p, _, _) in &blobs {
        tool(
            "siftool",
            &[
                "add",
                "--datatype",
                "7",
                "--groupid",
                "1",
                s,
                p.to_str().unwrap(),
            ],
        );
    }
    let mut file = std::fs::read(&sif).unwrap();
    let at = le_i64(&file, 96) as usize;
    let n = blobs.len();
    for (i, (_, digest, size)) in blobs.iter().enumerate() {
        let d = &mut file[at + i * DESCRIPTOR_LEN..at + (i + 1) * DESCRIPTOR_LEN];
        assert_eq!(
            le_i64(d, 25) as usize,
            *size,
            "siftool stored object {i} whole"
        );
        let t = if i + 1 == n {
            DATA_OCI_ROOT_INDEX
        } else {
            DATA_OCI_BLOB
        };
        d[0..4].copy_from_slice(&t.to_le_bytes());
        d[201..201 + digest.len()].copy_from_slice(digest.as_bytes());
    }
    std::fs::write(&sif, &file).unwrap();
    sif
}

/// `singularity-oci pull --oci-sif OUT [EXTRA...] oci:FIXTURE`, as root.
fn pull_oci_sif(out: &Path, fixture_name: &str, extra: &[&str]) {
    let mut args = vec!["pull", "--oci-sif", out.to_str().unwrap()];
    args.extend_from_slice(extra);
    let image = oci_ref(fixture_name);
    args.push(&image);
    Ctx::for_test(Profile::Root, Rt::Crun)
        .front(&args)
        .assert_code(0);
}

fn fetch(ctx: &Ctx, args: &[&str]) -> Output {
    ctx.run(ctx.bin("oci-fetch"), args)
}

fn unpacked_root(ctx: &Ctx, image: &Output) -> PathBuf {
    image.assert_code(0);
    let rec = ctx
        .cmd(ctx.bin("oci-unpack"))
        .stdin(image.stdout.clone())
        .run();
    rec.assert_code(0);
    PathBuf::from(rec.json()["rootfs"].as_str().unwrap())
}

fn make_readable(p: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o644)).unwrap();
}

#[test]
fn written_oci_sif_follows_sylabs_sif_and_is_deterministic() {
    let dir = scratch_dir("ocisif", "written");
    let ctx = Ctx::for_test(Profile::Root, Rt::Crun);
    let (a, b) = (dir.join("a.sif"), dir.join("b.sif"));
    for f in [&a, &b] {
        ctx.front(&[
            "pull",
            "--oci-sif",
            f.to_str().unwrap(),
            &oci_ref("busybox"),
        ])
        .assert_code(0);
    }
    let (fa, fb) = (std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
    assert!(fa == fb, "the same image gives the same bytes");
    // The header as sylabs/sif's deterministic mode writes it.
    assert_eq!(&fa[32..42], b"SIF_MAGIC\0");
    assert_eq!(&fa[42..45], b"01\0");
    assert_eq!(&fa[48..64], &[0u8; 16], "nil ID");
    assert_eq!(le_i64(&fa, 64), -62_135_596_800, "created: Go's zero time");
    assert_eq!(le_i64(&fa, 80), 0, "no free descriptors");
    assert_eq!(le_i64(&fa, 96), 4096);
    let header = String::from_utf8(tool("siftool", &["header", a.to_str().unwrap()])).unwrap();
    assert!(header.contains("Descriptors Total:  4"), "{header}");
    let descs = raw_descriptors(&fa);
    // oci-tools' order: the layers, the config, the manifest, the root index.
    let types: Vec<i32> = descs.iter().map(|d| d.data_type).collect();
    assert_eq!(
        types,
        [
            DATA_OCI_BLOB,
            DATA_OCI_BLOB,
            DATA_OCI_BLOB,
            DATA_OCI_ROOT_INDEX
        ]
    );
    let data_at = le_i64(&fa, 112);
    let mut next = data_at;
    for (i, d) in descs.iter().enumerate() {
        assert_eq!(d.id, i as u32 + 1);
        assert_eq!(d.group, 0xf000_0001, "group 1, stored with the group mask");
        assert_eq!(d.link, 0);
        assert_eq!((d.offset, d.size_with_padding), (next, d.size));
        assert_eq!((d.created, d.modified), (-62_135_596_800, -62_135_596_800));
        assert!(d.name.iter().all(|&c| c == 0));
        assert!(d.extra.starts_with("sha256:") && d.extra.len() == 71);
        next += d.size;
    }
    assert_eq!(next as usize, fa.len());
    assert_eq!(le_i64(&fa, 120), next - data_at, "data size");
    let (manifest, config) = check_with_siftool(&a);
    assert_eq!(manifest["layers"].as_array().unwrap().len(), 1);
    assert_eq!(config["architecture"], host_arch());
    // Our reader agrees with siftool.
    let rec = fetch(&ctx, &[a.to_str().unwrap()]);
    rec.assert_code(0);
    let r = rec.json();
    assert_eq!(r["transport"], "oci-sif");
    assert_eq!(
        r["digest"],
        digest_of(&serde_json::to_vec(&manifest).unwrap())
    );
    assert_record_valid("image-record.schema.json", &r);
    ctx.assert_no_leftovers();
}

/// The layered fixture written as an OCI-SIF: its layers squashed into one squashfs, as
/// SingularityCE writes one, which unpacks to the layered tree for every identity (the top
/// layer's hard link to a file of a lower layer still one inode with it) and runs with crun and
/// runc. With `--keep-layers`: three squashfs layers, the whiteouts as OverlayFS markers, and
/// the cross-layer link a copy of the file (one layer's squashfs cannot hold it), its own inode.
#[test]
fn written_layered_oci_sif_holds_the_tree_for_every_identity() {
    let dir = scratch_dir("ocisif", "layered");
    for (extra, layers) in [(&[][..], 1), (&["--keep-layers"][..], 3)] {
        let sif = dir.join(format!("layered{layers}.sif"));
        pull_oci_sif(&sif, "layered", extra);
        let again = dir.join(format!("again{layers}.sif"));
        pull_oci_sif(&again, "layered", extra);
        assert!(
            std::fs::read(&sif).unwrap() == std::fs::read(&again).unwrap(),
            "{extra:?}: three layers, whiteouts and a cross-layer link: still the same bytes"
        );
        let (manifest, config) = check_with_siftool(&sif);
        assert_eq!(manifest["layers"].as_array().unwrap().len(), layers);
        assert_eq!(
            config["rootfs"]["diff_ids"].as_array().unwrap().len(),
            layers
        );
        for profile in [Profile::Root, Profile::User, Profile::UserNoSubids] {
            let ctx = Ctx::for_test(profile, Rt::Crun);
            let root = unpacked_root(&ctx, &fetch(&ctx, &[&format!("oci-sif:{}", sif.display())]));
            let errs: Vec<String> = layered_errors(&root, &layered_expected())
                .into_iter()
                .filter(|e| {
                    layers == 1 || !(e.contains("/data/hl/upper-link") && e.contains("one inode"))
                })
                .collect();
            assert!(errs.is_empty(), "{extra:?} {profile:?}: {errs:?}");
        }
        for ctx in matrix_with(&[Profile::Root, Profile::User]) {
            ctx.front(&[
                "exec",
                sif.to_str().unwrap(),
                "/bin/sh",
                "-c",
                "cat /data/hl/upper-link; [ /data/hl/upper-link -ef /data/hl/lower-orig ] && echo linked || echo copied",
            ])
            .assert_code(0)
            .assert_stdout_eq(if layers == 1 {
                "hardlink-lower\nlinked"
            } else {
                "hardlink-lower\ncopied"
            });
            ctx.assert_no_leftovers();
        }
    }
}

/// The layered fixture's expectations but its one hard link from an upper layer into a lower one,
/// which sqfstar drops from a layer made from the layer's tar as it is (see above).
fn layered_errors_but_cross_layer_link(root: &Path) -> Vec<String> {
    layered_errors(root, &layered_expected())
        .into_iter()
        .filter(|e| !e.contains("/data/hl/upper-link"))
        .collect()
}

#[test]
fn reference_tools_oci_sif_reads_and_runs() {
    let dir = scratch_dir("ocisif", "reference");
    let tars = layer_tars("layered", &dir);
    let sif = reference_oci_sif(&dir, &tars, None);
    make_readable(&sif);
    check_with_siftool(&sif);
    for profile in [Profile::Root, Profile::User, Profile::UserNoSubids] {
        let ctx = Ctx::for_test(profile, Rt::Crun);
        let image = fetch(&ctx, &[sif.to_str().unwrap()]);
        image.assert_code(0);
        assert_eq!(image.json()["transport"], "oci-sif");
        let errs = layered_errors_but_cross_layer_link(&unpacked_root(&ctx, &image));
        assert!(errs.is_empty(), "{profile:?}: {errs:?}");
    }
    for ctx in matrix_with(&[Profile::Root, Profile::User]) {
        ctx.front(&[
            "exec",
            sif.to_str().unwrap(),
            "/bin/sh",
            "-c",
            "echo $FROM_REFERENCE; id -u",
        ])
        .assert_code(0)
        .assert_stdout_eq(&format!("yes\n{}", ctx.uid()));
        ctx.assert_no_leftovers();
    }
}

#[test]
fn oci_sif_from_pull_runs_through_the_front() {
    let dir = scratch_dir("ocisif", "front");
    let sif = dir.join("busybox.sif");
    Ctx::for_test(Profile::Root, Rt::Crun)
        .front(&["build", sif.to_str().unwrap(), &oci_ref("busybox")])
        .assert_code(0);
    // build from a SIF copies it as it is.
    let copy = dir.join("copy.sif");
    Ctx::for_test(Profile::Root, Rt::Crun)
        .front(&["build", copy.to_str().unwrap(), sif.to_str().unwrap()])
        .assert_code(0);
    assert!(std::fs::read(&copy).unwrap() == std::fs::read(&sif).unwrap());
    for ctx in matrix_with(&[Profile::Root, Profile::User]) {
        let img = sif.to_str().unwrap();
        ctx.front(&["exec", img, "/bin/sh", "-c", "echo from-oci-sif; exit 4"])
            .assert_code(4)
            .assert_stdout_eq("from-oci-sif");
        let inspect = ctx.front(&["inspect", "--json", img]);
        inspect.assert_code(0);
        assert_eq!(inspect.json()["type"], "container");
        ctx.assert_no_leftovers();
    }
}

/// Overwrite `len` bytes of a copy of `src` at `at`, into `dst`.
fn damaged(src: &Path, dst: &Path, at: usize, bytes: &[u8]) -> PathBuf {
    let mut f = std::fs::read(src).unwrap();
    f[at..at + bytes.len()].copy_from_slice(bytes);
    std::fs::write(dst, f).unwrap();
    make_readable(dst);
    dst.to_path_buf()
}

#[test]
fn broken_oci_sifs_are_refused_and_leave_nothing() {
    let dir = scratch_dir("ocisif", "broken");
    let good = dir.join("good.sif");
    pull_oci_sif(&good, "busybox", &[]);
    let bytes = std::fs::read(&good).unwrap();
    let descs = raw_descriptors(&bytes);
    let layer = &descs[0];
    let manifest = &descs[descs.len() - 2];
    let truncated = dir.join("truncated.sif");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    make_readable(&truncated);
    let flipped = damaged(
        &good,
        &dir.join("flipped.sif"),
        layer.offset as usize + 300,
        b"XX",
    );
    // The manifest's descriptor records another digest: the index names a blob that is absent.
    let table = le_i64(&bytes, 96) as usize;
    let extra = table + (manifest.id as usize - 1) * DESCRIPTOR_LEN + 201 + 7;
    let no_manifest = damaged(&good, &dir.join("no-manifest.sif"), extra, b"00000000");
    let sub = scratch_dir("ocisif", "broken-ref");
    let tars = layer_tars("busybox", &sub);
    let gz = reference_oci_sif(
        &sub,
        &tars,
        Some("application/vnd.oci.image.layer.v1.tar+gzip"),
    );
    make_readable(&gz);
    let sub3 = scratch_dir("ocisif", "broken-ext3");
    let tars3 = layer_tars("busybox", &sub3);
    let ext3 = reference_oci_sif(
        &sub3,
        &tars3,
        Some("application/vnd.sylabs.image.layer.v1.ext3"),
    );
    make_readable(&ext3);
    let cases: Vec<(&Path, &str)> = vec![
        (&truncated, "truncated"),
        (&flipped, "digest mismatch"),
        (&no_manifest, "missing its manifest"),
        (
            &gz,
            "media type 'application/vnd.oci.image.layer.v1.tar+gzip'",
        ),
        (&ext3, "ext3 overlay"),
    ];
    for ctx in matrix_with(&[Profile::Root, Profile::User])
        .into_iter()
        .filter(|c| c.rt == Rt::Crun)
    {
        // A cache of this test's own: the profile's shared one has other tests' work in it.
        let cache = ctx.dir().join("cache");
        if !cache.exists() {
            ctx.mkdir("cache");
        }
        for (sif, needle) in &cases {
            ctx.front_cmd(&["exec", sif.to_str().unwrap(), "/bin/true"])
                .env("SINGULARITY_CACHEDIR", cache.to_str().unwrap())
                .run()
                .assert_code(255)
                .assert_fatal(needle);
            let rootfs = cache.join("cache/oci-launcher/rootfs");
            let left: Vec<_> = std::fs::read_dir(&rootfs)
                .map(|rd| rd.filter_map(Result::ok).map(|e| e.file_name()).collect())
                .unwrap_or_default();
            assert!(left.is_empty(), "{left:?}");
        }
        ctx.assert_no_leftovers();
    }
    // A pull that fails leaves no file and no temporary beside it.
    let ctx = Ctx::for_test(Profile::User, Rt::Crun);
    let out = ctx.dir().join("never.sif");
    ctx.front(&[
        "pull",
        "--oci-sif",
        out.to_str().unwrap(),
        "oci:/nonexistent/layout:latest",
    ])
    .assert_code(255);
    assert_eq!(
        std::fs::read_dir(ctx.dir())
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .contains("sif")
            })
            .count(),
        0
    );
}
