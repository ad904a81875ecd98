//! Multi-platform images from a real registry (Debian's docker-registry), as root and as the
//! unprivileged test user:
//!
//! * an OCI image index pushed with `skopeo copy --all`;
//! * the same as a Docker schema 2 manifest list (`--format v2s2`: other child digests);
//! * an index shaped like Docker Hub's buildx images, with an in-toto attestation manifest
//!   (platform `unknown/unknown`, `vnd.docker.reference.type: attestation-manifest`) listed first;
//! * `--arch`/`--platform`, a digest reference to a child manifest, and indexes without a usable
//!   platform (one FATAL that lists what the index has).
//!
//! Every fetch starts from an empty cache, so a child manifest can only come from the registry's
//! manifests endpoint; the registry's access log shows which endpoints were asked.

use common::digest::Digest;
use e2e::registry::Registry;
use e2e::*;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";

fn scratch(name: &str) -> PathBuf {
    scratch_dir("index-scratch", name)
}

/// The host platform's architecture as image indexes spell it (Go's names), from `uname -m`.
fn host_arch() -> String {
    let out = Command::new("uname").arg("-m").output().expect("uname");
    match String::from_utf8_lossy(&out.stdout).trim() {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "i686" | "i386" => "386",
        other => return other.to_string(),
    }
    .to_string()
}

/// An architecture that is not the host's, for the index entry that must not be picked.
fn other_arch() -> &'static str {
    if host_arch() == "riscv64" {
        "ppc64le"
    } else {
        "riscv64"
    }
}

/// Write `bytes` as a blob of the layout `dir`; its digest.
fn put_blob(dir: &Path, bytes: &[u8]) -> String {
    let d = Digest::of_bytes(bytes);
    std::fs::write(dir.join("blobs/sha256").join(d.hex()), bytes).unwrap();
    d.to_string()
}

/// An OCI layout holding the blobs of the busybox and layered fixtures (index written later).
fn new_layout(dir: &Path) {
    std::fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
    for fx in ["busybox", "layered"] {
        for e in std::fs::read_dir(fixture(fx).join("blobs/sha256")).unwrap() {
            let e = e.unwrap();
            let to = dir.join("blobs/sha256").join(e.file_name());
            if !to.exists() {
                std::fs::copy(e.path(), to).unwrap();
            }
        }
    }
    std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
}

/// The fixture's image manifest descriptor, labelled with `platform`.
fn image_entry(fx: &str, platform: Value) -> Value {
    let idx: Value =
        serde_json::from_slice(&std::fs::read(fixture(fx).join("index.json")).unwrap()).unwrap();
    let mut d = idx["manifests"][0].clone();
    d.as_object_mut().unwrap().remove("annotations");
    d["platform"] = platform;
    d
}

/// An attestation manifest for `subject` as Docker's buildx makes them: an OCI manifest whose
/// one layer is an in-toto statement, listed in the index as `unknown/unknown`.
fn attestation_entry(dir: &Path, subject: &str) -> Value {
    let statement = serde_json::to_vec(&json!({
        "_type": "https://in-toto.io/Statement/v0.1",
        "predicateType": "https://slsa.dev/provenance/v0.2",
        "subject": [{"name": "_", "digest": {"sha256": subject.trim_start_matches("sha256:")}}],
        "predicate": {"builder": {"id": "sioci-tests"}}
    }))
    .unwrap();
    let layer = put_blob(dir, &statement);
    let config = serde_json::to_vec(&json!({
        "architecture": "unknown", "os": "unknown", "config": {},
        "rootfs": {"type": "layers", "diff_ids": [layer]}
    }))
    .unwrap();
    let config_digest = put_blob(dir, &config);
    let manifest = json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": config_digest, "size": config.len()},
        "layers": [{"mediaType": "application/vnd.in-toto+json", "digest": layer,
            "size": statement.len(),
            "annotations": {"in-toto.io/predicate-type": "https://slsa.dev/provenance/v0.2"}}]
    });
    let errs = image_schema_errors("image-manifest-schema.json", &manifest);
    assert!(errs.is_empty(), "attestation manifest: {errs:?}");
    let bytes = serde_json::to_vec(&manifest).unwrap();
    json!({
        "mediaType": OCI_MANIFEST, "digest": put_blob(dir, &bytes), "size": bytes.len(),
        "platform": {"os": "unknown", "architecture": "unknown"},
        "annotations": {"vnd.docker.reference.digest": subject,
            "vnd.docker.reference.type": "attestation-manifest"}
    })
}

/// Make the layout's tag `multi` point at an image index of `entries`; `oci:DIR:multi`.
fn tag_index(dir: &Path, entries: Vec<Value>) -> String {
    let index = json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries});
    let errs = image_schema_errors("image-index-schema.json", &index);
    assert!(errs.is_empty(), "index: {errs:?}");
    let bytes = serde_json::to_vec(&index).unwrap();
    let digest = put_blob(dir, &bytes);
    let top = json!({"schemaVersion": 2, "manifests": [{"mediaType": OCI_INDEX,
        "digest": digest, "size": bytes.len(),
        "annotations": {"org.opencontainers.image.ref.name": "multi"}}]});
    std::fs::write(dir.join("index.json"), top.to_string()).unwrap();
    let out = Command::new("chmod")
        .arg("-R")
        .arg("a+rX")
        .arg(dir)
        .output()
        .unwrap();
    assert!(out.status.success());
    format!("oci:{}:multi", dir.display())
}

/// The manifest the registry serves for `repo_ref` (`REPO:TAG` or `REPO@DIGEST`), raw.
fn served(reg: &Registry, repo_ref: &str) -> (Value, String) {
    let out = Command::new("skopeo")
        .args(["inspect", "--raw", "--tls-verify=false"])
        .arg(format!("docker://{}/{repo_ref}", reg.addr))
        .output()
        .expect("skopeo inspect");
    assert!(
        out.status.success(),
        "skopeo inspect --raw {repo_ref}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (
        serde_json::from_slice(&out.stdout).unwrap(),
        Digest::of_bytes(&out.stdout).to_string(),
    )
}

/// The digest of the entry of `index` for `arch`.
fn child(index: &Value, arch: &str) -> String {
    index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["platform"]["architecture"] == arch)
        .unwrap_or_else(|| panic!("no {arch} entry in {index}"))["digest"]
        .as_str()
        .unwrap()
        .to_string()
}

/// `METHOD` requests the registry answered whose path contains `part`.
fn requests(reg: &Registry, method: &str, part: &str) -> usize {
    reg.log_text()
        .lines()
        .filter(|l| l.contains(&format!("\"{method} ")) && l.contains(part))
        .count()
}

/// oci-fetch into a new, empty cache.
fn fetch_fresh(ctx: &Ctx, args: &[&str]) -> Output {
    let cache = ctx.mkdir(&format!("cache-{}", common::fsutil::unique_suffix()));
    ctx.cmd(ctx.bin("oci-fetch"))
        .env("SINGULARITY_CACHEDIR", cache.display().to_string())
        .arg("-q")
        .arg("--no-https")
        .args(args)
        .timeout(Duration::from_secs(120))
        .run()
}

fn fetched_digest(out: &Output) -> String {
    out.assert_code(0);
    let rec = out.json();
    assert_eq!(rec["digest"], rec["manifest"]["digest"]);
    rec["digest"].as_str().unwrap().to_string()
}

struct Pushed {
    reg: Registry,
    /// OCI index (`idx/oci:v1`): host busybox and the other arch.
    oci: Value,
    /// The same pushed as a Docker manifest list (`idx/docker:v1`).
    docker: Value,
    /// buildx shape (`idx/buildx:v1`): attestation first, then the images.
    buildx: Value,
}

fn push_all(dir: &Path) -> Pushed {
    let reg = Registry::plain(&dir.join("reg"));
    let host = json!({"os": "linux", "architecture": host_arch()});
    let other = json!({"os": "linux", "architecture": other_arch()});

    let plain = dir.join("plain");
    new_layout(&plain);
    let src = tag_index(
        &plain,
        vec![
            image_entry("busybox", host.clone()),
            image_entry("layered", other.clone()),
        ],
    );
    reg.push(&src, "idx/oci:v1", true);
    reg.push_with(&src, "idx/docker:v1", true, &["--format=v2s2"]);

    let bx = dir.join("buildx");
    new_layout(&bx);
    let host_entry = image_entry("busybox", host);
    let att = attestation_entry(&bx, host_entry["digest"].as_str().unwrap());
    let src = tag_index(&bx, vec![att, host_entry, image_entry("layered", other)]);
    reg.push(&src, "idx/buildx:v1", true);

    // No usable platform: an attestation and a Windows image; an attestation alone.
    let none = dir.join("none");
    new_layout(&none);
    let win = image_entry(
        "busybox",
        json!({"os": "windows", "architecture": host_arch()}),
    );
    let att = attestation_entry(&none, win["digest"].as_str().unwrap());
    reg.push(
        &tag_index(&none, vec![att.clone(), win]),
        "idx/windows:v1",
        true,
    );
    reg.push(&tag_index(&none, vec![att]), "idx/attonly:v1", true);

    let (oci, _) = served(&reg, "idx/oci:v1");
    let (docker, _) = served(&reg, "idx/docker:v1");
    let (buildx, _) = served(&reg, "idx/buildx:v1");
    assert_eq!(oci["mediaType"], OCI_INDEX);
    assert_eq!(docker["mediaType"], DOCKER_LIST);
    assert_eq!(buildx["manifests"][0]["platform"]["os"], "unknown");
    Pushed {
        reg,
        oci,
        docker,
        buildx,
    }
}

#[test]
fn registry_indexes_pick_the_platform_from_the_manifests_endpoint() {
    let dir = scratch("pick");
    let p = push_all(&dir);
    let reg = &p.reg;
    let host = host_arch();
    let other = other_arch();
    let oci_host = child(&p.oci, &host);
    let oci_other = child(&p.oci, other);
    let docker_host = child(&p.docker, &host);
    assert_ne!(
        oci_host, docker_host,
        "skopeo --format v2s2 rewrote the manifests, so their digests differ"
    );
    let att = p.buildx["manifests"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string();

    for profile in [Profile::Root, Profile::User] {
        let ctx = Ctx::new(profile, Rt::Crun, &current_test_name());
        // The OCI index: the host's entry by default, the other with --arch or --platform.
        let r = reg.docker_ref("idx/oci:v1");
        let before = requests(reg, "GET", &format!("/manifests/{oci_host}"));
        assert_eq!(fetched_digest(&fetch_fresh(&ctx, &[&r])), oci_host);
        assert_eq!(
            requests(reg, "GET", &format!("/manifests/{oci_host}")),
            before + 1,
            "the child manifest comes from the manifests endpoint"
        );
        assert_eq!(requests(reg, "GET", &format!("/blobs/{oci_host}")), 0);
        assert_eq!(
            fetched_digest(&fetch_fresh(&ctx, &["--arch", other, &r])),
            oci_other
        );
        let plat = format!("linux/{other}");
        assert_eq!(
            fetched_digest(&fetch_fresh(&ctx, &["--platform", &plat, &r])),
            oci_other
        );

        // The Docker manifest list: its own child digests and media types.
        let out = fetch_fresh(&ctx, &[&reg.docker_ref("idx/docker:v1")]);
        assert_eq!(fetched_digest(&out), docker_host);
        assert_eq!(out.json()["manifest"]["mediaType"], DOCKER_MANIFEST);

        // buildx: the attestation listed first is never asked for, not even by name.
        let r = reg.docker_ref("idx/buildx:v1");
        assert_eq!(fetched_digest(&fetch_fresh(&ctx, &[&r])), oci_host);
        fetch_fresh(&ctx, &["--platform", "unknown/unknown", &r])
            .assert_fatal("1 attestation manifest(s), which are not images");
        assert_eq!(
            requests(reg, "GET", &format!("/manifests/{att}")),
            0,
            "the attestation manifest was fetched"
        );

        // A digest reference to a child manifest of the index.
        let by_digest = format!("{}@{oci_other}", reg.docker_ref("idx/oci"));
        assert_eq!(fetched_digest(&fetch_fresh(&ctx, &[&by_digest])), oci_other);

        // No usable platform: one FATAL line that says what the index has.
        let out = fetch_fresh(&ctx, &[&reg.docker_ref("idx/windows:v1")]);
        out.assert_fatal(&format!("available: windows/{host}"));
        out.assert_fatal("attestation");
        fetch_fresh(&ctx, &[&reg.docker_ref("idx/attonly:v1")])
            .assert_fatal("names no usable platform (it has only 1 attestation manifest(s)");
    }
}

/// The front runs an image from a buildx-shaped index with crun and runc, as root and as the
/// test user, from an empty cache.
#[test]
fn front_runs_a_buildx_index_from_a_registry() {
    let dir = scratch("front");
    let p = push_all(&dir);
    let r = p.reg.docker_ref("idx/buildx:v1");
    for ctx in matrix() {
        let cache = ctx.mkdir("index-cache");
        ctx.front_cmd(&["exec", "--no-https", &r, "echo", "from-index"])
            .env("SINGULARITY_CACHEDIR", cache.display().to_string())
            .run()
            .assert_code(0)
            .assert_stdout_eq("from-index\n");
        ctx.assert_no_leftovers();
    }
}
