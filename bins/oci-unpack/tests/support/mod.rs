//! Shared helpers of the oci-unpack integration tests: building OCI layouts from raw layers,
//! running the binary (as root or as a test user), and comparing trees (`e2e::tree`).
#![allow(dead_code)]

pub mod tarw;

use common::digest::Digest;
use e2e::setpriv::{Groups, command_via, setpriv_words};
use serde_json::json;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Comp {
    None,
    Gzip,
    Zstd,
}

pub const UNPRIV_SUB: &str = "sioci-tester";
pub const UNPRIV_NOSUB: &str = "sioci-nosub";

/// Tests here create trees owned by arbitrary users and call chown: they need root, and say
/// so loudly instead of skipping.
pub fn require_root() {
    assert!(
        rustix::process::geteuid().is_root(),
        "these tests must run as root (CI does); they create files for other users and unprivileged users' namespaces"
    );
}

/// A world-traversable scratch directory (test users must reach layouts inside it).
pub fn scratch(tag: &str) -> tempfile::TempDir {
    let d = tempfile::Builder::new()
        .prefix(&format!("oci-unpack-{tag}-"))
        .tempdir_in("/tmp")
        .unwrap();
    std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    d
}

pub fn compress(tar: &[u8], c: Comp) -> Vec<u8> {
    match c {
        Comp::None => tar.to_vec(),
        Comp::Gzip => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(tar).unwrap();
            e.finish().unwrap()
        }
        Comp::Zstd => zstd::encode_all(tar, 3).unwrap(),
    }
}

fn media(c: Comp) -> &'static str {
    match c {
        Comp::None => "application/vnd.oci.image.layer.v1.tar",
        Comp::Gzip => "application/vnd.oci.image.layer.v1.tar+gzip",
        Comp::Zstd => "application/vnd.oci.image.layer.v1.tar+zstd",
    }
}

/// A layer as stored: blob bytes, media type, and the diff_id the config will claim.
pub struct Layer {
    pub blob: Vec<u8>,
    pub comp: Comp,
    pub diff_id: String,
}

impl Layer {
    pub fn new(tar: &[u8], comp: Comp) -> Layer {
        Layer {
            blob: compress(tar, comp),
            comp,
            diff_id: Digest::of_bytes(tar).to_string(),
        }
    }
}

fn put_blob(layout: &Path, bytes: &[u8]) -> String {
    let d = Digest::of_bytes(bytes);
    let p = layout.join("blobs/sha256").join(d.hex());
    std::fs::write(&p, bytes).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
    d.to_string()
}

/// Write an OCI layout (tag `latest`) holding `layers`; return its path.
pub fn layout(dir: &Path, layers: &[Layer]) -> PathBuf {
    let l = dir.to_path_buf();
    std::fs::create_dir_all(l.join("blobs/sha256")).unwrap();
    for p in [l.as_path(), &l.join("blobs"), &l.join("blobs/sha256")] {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    std::fs::write(l.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    let mut descs = vec![];
    for layer in layers {
        let d = put_blob(&l, &layer.blob);
        descs.push(json!({"mediaType": media(layer.comp), "digest": d, "size": layer.blob.len()}));
    }
    let config = json!({
        "architecture": "amd64", "os": "linux", "config": {"Cmd": ["/bin/sh"]},
        "rootfs": {"type": "layers", "diff_ids": layers.iter().map(|l| l.diff_id.clone()).collect::<Vec<_>>()},
    });
    let cbytes = serde_json::to_vec(&config).unwrap();
    let cd = put_blob(&l, &cbytes);
    let manifest = json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": cbytes.len()},
        "layers": descs,
    });
    let mbytes = serde_json::to_vec(&manifest).unwrap();
    let md = put_blob(&l, &mbytes);
    let index = json!({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": md, "size": mbytes.len(),
        "annotations": {"org.opencontainers.image.ref.name": "latest"}}]});
    std::fs::write(l.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
    l
}

/// The image record oci-fetch would print for `layout:tag` (read back from the layout files).
pub fn record(layout: &Path, tag: &str) -> String {
    let read = |p: PathBuf| -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
    };
    let blob = |d: &str| {
        layout
            .join("blobs/sha256")
            .join(d.strip_prefix("sha256:").unwrap())
    };
    let index = read(layout.join("index.json"));
    let desc = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == tag)
        .expect("tag in index")
        .clone();
    let manifest = read(blob(desc["digest"].as_str().unwrap()));
    let config = read(blob(manifest["config"]["digest"].as_str().unwrap()));
    json!({
        "schemaVersion": 1, "kind": "image", "reference": format!("oci:{}:{tag}", layout.display()),
        "transport": "oci", "digest": desc["digest"], "layout": layout,
        "manifest": {"mediaType": desc["mediaType"], "digest": desc["digest"], "size": desc["size"]},
        "config": manifest["config"], "layers": manifest["layers"],
        "platform": {"os": "linux", "architecture": "amd64"}, "imageConfig": config,
    })
    .to_string()
}

/// Build a layout from entry lists and write its record next to it; returns the record path.
pub fn image(dir: &Path, layers: &[(Vec<tarw::Ent>, Comp)]) -> PathBuf {
    let ls: Vec<Layer> = layers
        .iter()
        .map(|(e, c)| Layer::new(&tarw::tar(e, true), *c))
        .collect();
    image_from(dir, &ls)
}

pub fn image_from(dir: &Path, layers: &[Layer]) -> PathBuf {
    let l = layout(&dir.join("layout"), layers);
    let rec = dir.join("record.json");
    std::fs::write(&rec, record(&l, "latest")).unwrap();
    std::fs::set_permissions(&rec, std::fs::Permissions::from_mode(0o644)).unwrap();
    rec
}

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_oci-unpack")
}

/// How to run the binary.
#[derive(Clone, Debug)]
pub enum As {
    Root,
    /// `setpriv` to this user (clean groups).
    User(&'static str),
    /// This user, then `unshare --user --map-root-user` plus these extra unshare options
    /// (for example `--map-users=START,1,COUNT --map-groups=START,1,COUNT` with the user's
    /// subordinate ranges): uid 0 in a user namespace the way oci-userns-starter makes one.
    UserUserns(&'static str, String),
}

pub fn uid_of(user: &str) -> u32 {
    let o = Command::new("id").args(["-u", user]).output().unwrap();
    assert!(
        o.status.success(),
        "test user {user} missing (scripts/setup creates it)"
    );
    String::from_utf8(o.stdout).unwrap().trim().parse().unwrap()
}

/// Run oci-unpack with `args`, `SINGULARITY_CACHEDIR=cache` and a clean environment.
pub fn run(who: &As, cache: &Path, args: &[&str]) -> Output {
    let mut argv: Vec<String> = vec![];
    let setpriv = |argv: &mut Vec<String>, u: &str| {
        let id = uid_of(u);
        argv.extend(setpriv_words(id, id, Groups::Clear));
    };
    match who {
        As::Root => {}
        As::User(u) => setpriv(&mut argv, u),
        As::UserUserns(u, extra) => {
            setpriv(&mut argv, u);
            argv.extend(["unshare", "--user", "--map-root-user"].map(String::from));
            argv.extend(extra.split_whitespace().map(String::from));
            argv.push("--".into());
        }
    }
    argv.push(bin().into());
    argv.extend(args.iter().map(|s| s.to_string()));
    Command::new(&argv[0])
        .args(&argv[1..])
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("HOME", cache)
        .env("SINGULARITY_CACHEDIR", cache)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Assert the launcher-error contract: exit 255, exactly one line, a FATAL line.
pub fn assert_fatal(o: &Output, needle: &str) {
    let err = stderr(o);
    assert_eq!(
        o.status.code(),
        Some(255),
        "expected exit 255; stderr: {err}"
    );
    assert!(o.stdout.is_empty(), "nothing on stdout on failure");
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "exactly one stderr line: {err}");
    assert!(lines[0].starts_with("FATAL: oci-unpack: "), "{err}");
    assert!(
        err.to_lowercase().contains(&needle.to_lowercase()),
        "stderr should mention '{needle}': {err}"
    );
}

pub fn ok_record(o: &Output) -> serde_json::Value {
    assert_eq!(o.status.code(), Some(0), "oci-unpack failed: {}", stderr(o));
    let s = String::from_utf8(o.stdout.clone()).unwrap();
    assert_eq!(s.lines().count(), 1, "exactly one record line: {s}");
    serde_json::from_str(&s).unwrap()
}

// Not every test binary that includes this module compares trees.
#[allow(unused_imports)]
pub use e2e::tree::{Entry, Tree, snapshot};

/// An entry's modification time in whole seconds (what tar headers carry).
pub fn mtime(e: &Entry) -> i64 {
    e.mtime_ns.div_euclid(1_000_000_000) as i64
}

/// Differences between two snapshots, one line each (empty when equal): every attribute but
/// the link count, times to the second, and directories' times not at all with
/// `ignore_dir_mtime`.
pub fn diff(a: &Tree, b: &Tree, ignore_dir_mtime: bool) -> Vec<String> {
    e2e::tree::differences(a, b, ("ours", "other"), |_, e| {
        let seconds = if ignore_dir_mtime && e.kind == 'd' {
            0
        } else {
            mtime(e)
        };
        Some(Entry {
            nlink: 0,
            mtime_ns: seconds as i128 * 1_000_000_000,
            ..e.clone()
        })
    })
}

/// The rootfs path of a successful run.
pub fn rootfs_of(rec: &serde_json::Value) -> PathBuf {
    PathBuf::from(rec["rootfs"].as_str().unwrap())
}

/// `umoci unpack` of `layout:latest` into `bundle` (root: owners kept; `rootless`: --rootless).
pub fn umoci_unpack(layout: &Path, bundle: &Path, rootless_user: Option<&str>) -> PathBuf {
    let img = format!("{}:latest", layout.display());
    let mut c = match rootless_user {
        None => {
            let mut c = Command::new("umoci");
            c.args(["unpack", "--image", &img]);
            c
        }
        Some(u) => {
            let id = uid_of(u);
            let mut c = command_via(&setpriv_words(id, id, Groups::Clear), "umoci");
            c.args(["unpack", "--rootless", "--image", &img]);
            c.env("HOME", "/tmp");
            c
        }
    };
    let o = c
        .arg(bundle)
        .output()
        .expect("umoci is installed (scripts/setup)");
    assert!(
        o.status.success(),
        "umoci unpack failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    bundle.join("rootfs")
}
