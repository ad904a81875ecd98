//! oci-fetch through every source kind and both registries, as root and as the
//! unprivileged test user, plus fault cases. Real parts only: Debian's docker-registry, skopeo,
//! umoci, openssl, htpasswd, and tests/faultproxy for network faults.
//!
//! After every failure the cache is checked: every blob under `layout/blobs/sha256` hashes to its
//! name, and no temporary file is left (`assert_cache_verified`).

use e2e::faultproxy::FaultProxy;
use e2e::registry::{CertsD, PASSWORD, Registry, USER};
use e2e::*;
use serde_json::{Value, json};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const PROFILES: [Profile; 2] = [Profile::Root, Profile::User];

/// One context per profile (the runtime does not matter to oci-fetch).
fn contexts() -> Vec<Ctx> {
    let name = current_test_name();
    PROFILES
        .iter()
        .map(|&p| Ctx::new(p, Rt::Crun, &name))
        .collect()
}

/// A fresh cache root for `ctx`, named `name` (used as `SINGULARITY_CACHEDIR`).
fn fresh_cache(ctx: &Ctx, name: &str) -> PathBuf {
    let p = ctx.mkdir(name);
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o700)).unwrap();
    p
}

fn layout_of(cache: &Path) -> PathBuf {
    cache.join("cache/oci-launcher/layout")
}

fn fetch(ctx: &Ctx, cache: &Path, args: &[&str]) -> Output {
    ctx.cmd(ctx.bin("oci-fetch"))
        .env("SINGULARITY_CACHEDIR", cache.display().to_string())
        .args(args)
        .timeout(Duration::from_secs(120))
        .run()
}

/// Every blob in the cache layout is what its name says; no temporary or partial file remains.
fn assert_cache_verified(cache: &Path) {
    let root = cache.join("cache/oci-launcher");
    if !root.exists() {
        return;
    }
    let blobs = root.join("layout/blobs/sha256");
    for e in std::fs::read_dir(&blobs).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            !name.starts_with(".tmp"),
            "temporary file left: {}",
            p.display()
        );
        assert_eq!(
            sha256_file(&p),
            name,
            "unverified blob in the cache: {}",
            p.display()
        );
    }
    let tmp: Vec<_> = std::fs::read_dir(root.join("tmp"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(tmp.is_empty(), "left in cache tmp/: {tmp:?}");
}

/// Check an image record: schema, and every blob it names present and verified in its layout.
fn check_record(out: &Output, transport: &str) -> Value {
    out.assert_code(0);
    assert_eq!(out.lines().len(), 1, "exactly one line on stdout");
    let rec = out.json();
    assert_record_valid("image-record.schema.json", &rec);
    assert_eq!(rec["transport"], transport);
    assert_eq!(rec["digest"], rec["manifest"]["digest"]);
    let layout = PathBuf::from(rec["layout"].as_str().unwrap());
    let mut digests = vec![&rec["manifest"]["digest"], &rec["config"]["digest"]];
    digests.extend(
        rec["layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| &l["digest"]),
    );
    for d in digests {
        let hex = d.as_str().unwrap().strip_prefix("sha256:").unwrap();
        let p = layout.join("blobs/sha256").join(hex);
        assert!(p.is_file(), "blob {d} missing from {}", layout.display());
        assert_eq!(sha256_file(&p), hex);
    }
    // The manifest in the layout validates against the OCI schema.
    let mhex = rec["digest"]
        .as_str()
        .unwrap()
        .strip_prefix("sha256:")
        .unwrap();
    let m: Value =
        serde_json::from_slice(&std::fs::read(layout.join("blobs/sha256").join(mhex)).unwrap())
            .unwrap();
    if m.get("mediaType").and_then(|x| x.as_str())
        == Some("application/vnd.oci.image.manifest.v1+json")
    {
        let errs = image_schema_errors("image-manifest-schema.json", &m);
        assert!(errs.is_empty(), "manifest invalid: {errs:?}");
    }
    assert_eq!(
        rec["imageConfig"]["rootfs"]["diff_ids"]
            .as_array()
            .map(|a| a.len()),
        Some(rec["layers"].as_array().unwrap().len())
    );
    rec
}

/// The manifest digest a fixture's `latest` tag points at.
fn fixture_digest(name: &str) -> String {
    let idx: Value =
        serde_json::from_slice(&std::fs::read(fixture(name).join("index.json")).unwrap()).unwrap();
    idx["manifests"][0]["digest"].as_str().unwrap().to_string()
}

fn scratch(name: &str) -> PathBuf {
    let p = workdir().join("fetch-scratch").join(name);
    if p.exists() {
        std::fs::remove_dir_all(&p).unwrap();
    }
    std::fs::create_dir_all(&p).unwrap();
    std::fs::set_permissions(
        workdir().join("fetch-scratch"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    p
}

fn sh(script: &str) {
    let out = Command::new("sh").arg("-ec").arg(script).output().unwrap();
    assert!(
        out.status.success(),
        "sh failed: {script}\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A multi-platform layout: tag `multi` -> a nested index with busybox as linux/amd64 and the
/// zstd image labelled linux/arm64/v8 (the bytes are amd64; only selection is tested).
fn multi_arch_layout(dir: &Path) -> (String, String) {
    sh(&format!(
        "mkdir -p {d}/blobs/sha256 && cp -n {a}/blobs/sha256/* {b}/blobs/sha256/* {d}/blobs/sha256/ && printf '%s' '{{\"imageLayoutVersion\":\"1.0.0\"}}' > {d}/oci-layout",
        d = dir.display(),
        a = fixture("busybox").display(),
        b = fixture("zstd").display()
    ));
    let desc = |name: &str| -> Value {
        let idx: Value =
            serde_json::from_slice(&std::fs::read(fixture(name).join("index.json")).unwrap())
                .unwrap();
        idx["manifests"][0].clone()
    };
    let mut amd = desc("busybox");
    amd["platform"] = serde_json::json!({"os":"linux","architecture":"amd64"});
    amd.as_object_mut().unwrap().remove("annotations");
    let mut arm = desc("zstd");
    arm["platform"] = serde_json::json!({"os":"linux","architecture":"arm64","variant":"v8"});
    arm.as_object_mut().unwrap().remove("annotations");
    let inner = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [amd, arm]
    }))
    .unwrap();
    let ih = sha256_bytes(&inner);
    std::fs::write(dir.join("blobs/sha256").join(&ih), &inner).unwrap();
    let outer = serde_json::json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{"mediaType": "application/vnd.oci.image.index.v1+json",
            "digest": format!("sha256:{ih}"), "size": inner.len(),
            "annotations": {"org.opencontainers.image.ref.name": "multi"}}]
    });
    std::fs::write(dir.join("index.json"), outer.to_string()).unwrap();
    sh(&format!("chmod -R a+rX {}", dir.display()));
    (fixture_digest("busybox"), fixture_digest("zstd"))
}

/// A `docker save` archive in the old form (`<id>/layer.tar`, `<id>/json`, `repositories`) from
/// the `uncompressed` fixture, whose plain-tar layer is its own diff_id.
fn docker_save_archive(dir: &Path) -> PathBuf {
    let fx = fixture("uncompressed");
    let m: Value = {
        let idx: Value =
            serde_json::from_slice(&std::fs::read(fx.join("index.json")).unwrap()).unwrap();
        let h = idx["manifests"][0]["digest"].as_str().unwrap()[7..].to_string();
        serde_json::from_slice(&std::fs::read(fx.join("blobs/sha256").join(h)).unwrap()).unwrap()
    };
    let cfg_hex = &m["config"]["digest"].as_str().unwrap()[7..];
    let layer_hex = &m["layers"][0]["digest"].as_str().unwrap()[7..];
    let root = dir.join("save");
    let id = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    std::fs::create_dir_all(root.join(id)).unwrap();
    std::fs::copy(
        fx.join("blobs/sha256").join(layer_hex),
        root.join(id).join("layer.tar"),
    )
    .unwrap();
    std::fs::write(root.join(id).join("VERSION"), "1.0").unwrap();
    std::fs::write(root.join(id).join("json"), format!("{{\"id\":\"{id}\"}}")).unwrap();
    std::fs::copy(
        fx.join("blobs/sha256").join(cfg_hex),
        root.join(format!("{cfg_hex}.json")),
    )
    .unwrap();
    std::fs::write(
        root.join("manifest.json"),
        format!(
            r#"[{{"Config":"{cfg_hex}.json","RepoTags":["sioci/uncompressed:v1"],"Layers":["{id}/layer.tar"]}}]"#
        ),
    )
    .unwrap();
    std::fs::write(
        root.join("repositories"),
        format!(r#"{{"sioci/uncompressed":{{"v1":"{id}"}}}}"#),
    )
    .unwrap();
    let tar = dir.join("saved.tar");
    sh(&format!(
        "cd {} && tar -cf {} manifest.json repositories {cfg_hex}.json {id} && chmod 0644 {}",
        root.display(),
        tar.display(),
        tar.display()
    ));
    tar
}

/// A layout written by umoci (its own gzip layer with busybox).
fn umoci_layout(dir: &Path) -> PathBuf {
    require_tool("umoci");
    let l = dir.join("umoci");
    sh(&format!(
        "cd {d} && umoci init --layout umoci && umoci new --image umoci:latest && mkdir -p r/bin && cp /bin/busybox r/bin/ && tar -C r -cf layer.tar . && umoci raw add-layer --image umoci:latest layer.tar && chmod -R a+rX umoci",
        d = dir.display()
    ));
    l
}

#[test]
fn local_sources_every_kind() {
    require_tool("skopeo");
    let dir = scratch("local");
    sh(&format!(
        "skopeo copy -q oci:{}:latest oci:{d}/skopeo:sk && skopeo copy -q oci:{}:latest oci-archive:{d}/layered.oci.tar:v1 && skopeo copy -q oci:{}:latest docker-archive:{d}/bb.docker.tar:sioci/bb:v2 && chmod -R a+rX {d}",
        fixture("busybox").display(),
        fixture("layered").display(),
        fixture("busybox").display(),
        d = dir.display()
    ));
    let umoci = umoci_layout(&dir);
    let saved = docker_save_archive(&dir);
    let multi = dir.join("multi");
    let (amd, arm) = multi_arch_layout(&multi);
    let d = |p: &Path| p.display().to_string();

    for ctx in contexts() {
        let cache = fresh_cache(&ctx, "cache");
        for fx in ["busybox", "layered", "uncompressed", "zstd", "user"] {
            let r = oci_ref(fx);
            let rec = check_record(&fetch(&ctx, &cache, &[&r]), "oci");
            assert_eq!(rec["digest"], fixture_digest(fx), "{fx}");
            assert_eq!(rec["reference"], r);
            assert_eq!(rec["layout"], d(&layout_of(&cache)));
            // Warm: the same record again.
            let again = check_record(&fetch(&ctx, &cache, &[&r]), "oci");
            assert_eq!(again, rec);
        }
        // By digest, and the only image of a layout without a tag.
        let by_digest = format!(
            "oci:{}@{}",
            d(&fixture("layered")),
            fixture_digest("layered")
        );
        check_record(&fetch(&ctx, &cache, &[&by_digest]), "oci");
        check_record(
            &fetch(&ctx, &cache, &[&format!("oci:{}", d(&fixture("busybox")))]),
            "oci",
        );

        let sk = check_record(
            &fetch(&ctx, &cache, &[&format!("oci:{}/skopeo:sk", d(&dir))]),
            "oci",
        );
        assert_eq!(sk["digest"], fixture_digest("busybox"));
        check_record(
            &fetch(&ctx, &cache, &[&format!("oci:{}:latest", d(&umoci))]),
            "oci",
        );

        let oa = check_record(
            &fetch(
                &ctx,
                &cache,
                &[&format!("oci-archive:{}/layered.oci.tar:v1", d(&dir))],
            ),
            "oci-archive",
        );
        assert_eq!(oa["digest"], fixture_digest("layered"));

        // docker-archive written by skopeo, and the old-form archive built above.
        let da = check_record(
            &fetch(
                &ctx,
                &cache,
                &[&format!("docker-archive:{}/bb.docker.tar", d(&dir))],
            ),
            "docker-archive",
        );
        assert_eq!(
            da["layers"][0]["digest"], da["imageConfig"]["rootfs"]["diff_ids"][0],
            "docker-archive layers are named by their diff_id"
        );
        let old = check_record(
            &fetch(
                &ctx,
                &cache,
                &[&format!(
                    "docker-archive:{}:sioci/uncompressed:v1",
                    d(&saved)
                )],
            ),
            "docker-archive",
        );
        assert_eq!(
            old["layers"][0]["mediaType"],
            "application/vnd.oci.image.layer.v1.tar"
        );
        fetch(
            &ctx,
            &cache,
            &[&format!("docker-archive:{}:sioci/other:v1", d(&saved))],
        )
        .assert_fatal("not found");

        // Multi-platform: default host (amd64), explicit arm64, and an absent platform.
        let mref = format!("oci:{}:multi", d(&multi));
        let host = check_record(&fetch(&ctx, &cache, &[&mref]), "oci");
        if std::env::consts::ARCH == "x86_64" {
            assert_eq!(host["digest"], amd);
        }
        let a = check_record(
            &fetch(&ctx, &cache, &["--platform", "linux/arm64", &mref]),
            "oci",
        );
        assert_eq!(a["digest"], arm);
        assert_eq!(a["platform"]["architecture"], "arm64");
        check_record(&fetch(&ctx, &cache, &["--arch", "amd64", &mref]), "oci");
        fetch(&ctx, &cache, &["--platform", "linux/s390x", &mref])
            .assert_fatal("linux/amd64, linux/arm64/v8");

        // --disable-cache: a private temporary layout, not the cache.
        let tmp_cache = fresh_cache(&ctx, "unused-cache");
        let out = fetch(&ctx, &tmp_cache, &["--disable-cache", &oci_ref("busybox")]);
        let rec = check_record(&out, "oci");
        let lay = PathBuf::from(rec["layout"].as_str().unwrap());
        assert!(lay.starts_with(ctx.tmpdir()), "{}", lay.display());
        assert!(
            !layout_of(&tmp_cache).exists(),
            "--disable-cache wrote the cache"
        );
        std::fs::remove_dir_all(lay.parent().unwrap()).unwrap();
        assert_cache_verified(&cache);
    }
}

/// Registry access-log lines mentioning `part`, by method.
fn count(reg: &Registry, method: &str, part: &str) -> usize {
    reg.log_text()
        .lines()
        .filter(|l| l.contains(&format!("\"{method} ")) && l.contains(part))
        .count()
}

fn manifest_requests(reg: &Registry) -> usize {
    count(reg, "GET", "/manifests/") + count(reg, "HEAD", "/manifests/")
}

#[test]
fn plain_registry_warm_path_offline_and_platforms() {
    let dir = scratch("plainreg");
    let reg = Registry::plain(&dir.join("reg"));
    reg.push(&oci_ref("busybox"), "sioci/busybox:latest", false);
    reg.push(&oci_ref("layered"), "sioci/layered:v1", false);
    reg.push(&oci_ref("zstd"), "sioci/zstd:v1", false);
    reg.push_with(
        &oci_ref("layered"),
        "sioci/docker:v2s2",
        false,
        &["--format=v2s2"],
    );
    let multi = dir.join("multi");
    let (amd, arm) = multi_arch_layout(&multi);
    reg.push(
        &format!("oci:{}:multi", multi.display()),
        "sioci/multi:v1",
        true,
    );

    for ctx in contexts() {
        let cache = fresh_cache(&ctx, "cache");
        for (repo, fx) in [
            ("sioci/busybox:latest", "busybox"),
            ("sioci/layered:v1", "layered"),
            ("sioci/zstd:v1", "zstd"),
        ] {
            let r = reg.docker_ref(repo);
            let rec = check_record(&fetch(&ctx, &cache, &["--no-https", &r]), "docker");
            assert_eq!(rec["digest"], fixture_digest(fx));
            // Warm path: exactly one manifest request (a HEAD), no blob GET.
            let (m0, b0) = (manifest_requests(&reg), count(&reg, "GET", "/blobs/"));
            let warm = check_record(&fetch(&ctx, &cache, &["--no-https", &r]), "docker");
            assert_eq!(warm, rec);
            assert_eq!(
                manifest_requests(&reg) - m0,
                1,
                "warm path asked more than once"
            );
            assert_eq!(
                count(&reg, "GET", "/blobs/"),
                b0,
                "warm path fetched a blob"
            );
            // Offline and by digest: no request at all.
            let n0 = reg
                .log_text()
                .lines()
                .filter(|l| l.contains("\"GET ") || l.contains("\"HEAD "))
                .count();
            check_record(&fetch(&ctx, &cache, &["--offline", &r]), "docker");
            let by_digest = format!(
                "{}@{}",
                reg.docker_ref(repo.split(':').next().unwrap()),
                fixture_digest(fx)
            );
            check_record(&fetch(&ctx, &cache, &["--no-https", &by_digest]), "docker");
            let n1 = reg
                .log_text()
                .lines()
                .filter(|l| l.contains("\"GET ") || l.contains("\"HEAD "))
                .count();
            assert_eq!(n0, n1, "--offline or a cached digest reached the registry");
        }
        // Docker schema 2 media types (manifest, config, gzip layers).
        let dk = check_record(
            &fetch(
                &ctx,
                &cache,
                &["--no-https", &reg.docker_ref("sioci/docker:v2s2")],
            ),
            "docker",
        );
        assert_eq!(
            dk["manifest"]["mediaType"],
            "application/vnd.docker.distribution.manifest.v2+json"
        );
        assert_eq!(
            dk["config"]["mediaType"],
            "application/vnd.docker.container.image.v1+json"
        );
        assert_eq!(
            dk["layers"][0]["mediaType"],
            "application/vnd.docker.image.rootfs.diff.tar.gzip"
        );
        let m = reg.docker_ref("sioci/multi:v1");
        let a = check_record(
            &fetch(
                &ctx,
                &cache,
                &["--no-https", "--platform", "linux/arm64/v8", &m],
            ),
            "docker",
        );
        assert_eq!(a["digest"], arm);
        let h = check_record(
            &fetch(&ctx, &cache, &["--no-https", "--arch", "amd64", &m]),
            "docker",
        );
        assert_eq!(h["digest"], amd);
        fetch(
            &ctx,
            &cache,
            &["--no-https", "--platform", "linux/ppc64le", &m],
        )
        .assert_fatal("available: linux/amd64, linux/arm64/v8");
        // Missing tag, missing repository, uncached --offline.
        fetch(
            &ctx,
            &cache,
            &["--no-https", &reg.docker_ref("sioci/busybox:nope")],
        )
        .assert_fatal("not found");
        fetch(
            &ctx,
            &cache,
            &["--offline", &reg.docker_ref("sioci/never:v1")],
        )
        .assert_fatal("not in the cache");
        // https to a plain-HTTP registry is refused with a hint, not silently downgraded.
        fetch(&ctx, &cache, &[&reg.docker_ref("sioci/busybox:latest")]).assert_fatal("--no-https");
        assert_cache_verified(&cache);
    }
}

#[test]
fn tls_registry_with_auth() {
    let dir = scratch("tlsreg");
    let reg = Registry::tls_auth(&dir.join("reg"));
    reg.push(&oci_ref("busybox"), "sioci/busybox:latest", false);
    let ca = reg.ca_dir().display().to_string();
    let r = reg.docker_ref("sioci/busybox:latest");
    let creds = format!("{USER}:{PASSWORD}");
    let auth = dir.join("auth.json");
    let b64 = {
        let out = Command::new("sh")
            .arg("-c")
            .arg(format!("printf %s '{creds}' | base64 -w0"))
            .output()
            .unwrap();
        String::from_utf8(out.stdout).unwrap()
    };
    std::fs::write(
        &auth,
        format!(r#"{{"auths":{{"{}":{{"auth":"{b64}"}}}}}}"#, reg.addr),
    )
    .unwrap();
    std::fs::set_permissions(&auth, std::fs::Permissions::from_mode(0o644)).unwrap();
    let authf = auth.display().to_string();

    for ctx in contexts() {
        let cache = fresh_cache(&ctx, "cache");
        let rec = check_record(
            &fetch(&ctx, &cache, &["--cert-dir", &ca, "--creds", &creds, &r]),
            "docker",
        );
        assert_eq!(rec["digest"], fixture_digest("busybox"));
        let out = fetch(&ctx, &cache, &["--cert-dir", &ca, "--creds", &creds, &r]);
        assert!(!out.stderr.contains(PASSWORD), "password printed");
        let c2 = fresh_cache(&ctx, "cache2");
        check_record(
            &fetch(&ctx, &c2, &["--cert-dir", &ca, "--authfile", &authf, &r]),
            "docker",
        );
        let c3 = fresh_cache(&ctx, "cache3");
        check_record(
            &ctx.cmd(ctx.bin("oci-fetch"))
                .env("SINGULARITY_CACHEDIR", c3.display().to_string())
                .env("REGISTRY_AUTH_FILE", &authf)
                .args(&["--tls-verify=false", &r])
                .run(),
            "docker",
        );
        let c4 = fresh_cache(&ctx, "cache4");
        let bad = fetch(
            &ctx,
            &c4,
            &[
                "--cert-dir",
                &ca,
                "--creds",
                &format!("{USER}:wrong-pw"),
                &r,
            ],
        );
        bad.assert_fatal("denied");
        assert!(!bad.stderr.contains("wrong-pw"), "password printed");
        fetch(&ctx, &c4, &["--cert-dir", &ca, &r]).assert_fatal("requires authentication");
        fetch(&ctx, &c4, &["--creds", &creds, &r]).assert_fatal("not trusted");
        {
            // The system-wide certs.d directory for this host:port is trusted too.
            let _certs = CertsD::install(&reg.addr, &reg.ca_dir().join("ca.crt"));
            let c5 = fresh_cache(&ctx, "cache5");
            check_record(&fetch(&ctx, &c5, &["--creds", &creds, &r]), "docker");
        }
        assert_cache_verified(&c4);
        let blobs = std::fs::read_dir(layout_of(&c4).join("blobs/sha256"))
            .unwrap()
            .count();
        assert_eq!(blobs, 0, "failed fetches cached something");
    }
}

/// Docker credential helpers named in an auth file (`credHelpers` for the registry host, else
/// `credsStore`) answer for a real TLS registry with htpasswd auth; a helper that is missing
/// only costs a warning, and the password never reaches the output.
#[test]
fn credential_helpers_against_a_real_registry() {
    let dir = scratch("credhelper");
    let reg = Registry::tls_auth(&dir.join("reg"));
    reg.push(&oci_ref("busybox"), "sioci/busybox:latest", false);
    let ca = reg.ca_dir().display().to_string();
    let r = reg.docker_ref("sioci/busybox:latest");
    let helpers = dir.join("helpers");
    std::fs::create_dir_all(&helpers).unwrap();
    let helper = helpers.join("docker-credential-sioci");
    // The helper protocol: `get`, the server on stdin, JSON on stdout.
    let script = format!(
        r#"#!/bin/sh
read server
if [ "$1" != get ] || [ "$server" != '{addr}' ]; then
    echo 'credentials not found in native keychain'
    exit 1
fi
printf '{{"ServerURL":"%s","Username":"{USER}","Secret":"{PASSWORD}"}}\n' "$server"
"#,
        addr = reg.addr
    );
    std::fs::write(&helper, script).unwrap();
    std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o755)).unwrap();
    let per_host = dir.join("per-host.json");
    std::fs::write(
        &per_host,
        format!(
            r#"{{"credsStore":"sioci-missing","credHelpers":{{"{}":"sioci"}}}}"#,
            reg.addr
        ),
    )
    .unwrap();
    let missing = dir.join("missing.json");
    std::fs::write(&missing, r#"{"credsStore":"sioci-missing","auths":{}}"#).unwrap();
    for f in [&per_host, &missing] {
        std::fs::set_permissions(f, std::fs::Permissions::from_mode(0o644)).unwrap();
    }

    for ctx in contexts() {
        let path = format!("{}:{}", helpers.display(), ctx.path_env());
        let run = |cache: &Path, authfile: &Path| {
            ctx.cmd(ctx.bin("oci-fetch"))
                .env("SINGULARITY_CACHEDIR", cache.display().to_string())
                .env("PATH", &path)
                .args(&[
                    "--cert-dir",
                    &ca,
                    "--authfile",
                    authfile.to_str().unwrap(),
                    &r,
                ])
                .timeout(Duration::from_secs(120))
                .run()
        };
        let out = run(&fresh_cache(&ctx, "cache"), &per_host);
        let rec = check_record(&out, "docker");
        assert_eq!(rec["digest"], fixture_digest("busybox"));
        assert!(!out.stderr.contains(PASSWORD), "password printed");
        let out = run(&fresh_cache(&ctx, "cache2"), &missing);
        out.assert_code(255);
        let lines: Vec<&str> = out.stderr.lines().collect();
        assert_eq!(lines.len(), 2, "{}", out.stderr);
        assert!(
            lines[0].starts_with("WARNING: oci-fetch: credential helper 'sioci-missing'")
                && lines[0].contains("docker-credential-sioci-missing is not on PATH"),
            "{}",
            out.stderr
        );
        assert!(
            lines[1].starts_with("FATAL: ") && lines[1].contains("requires authentication"),
            "{}",
            out.stderr
        );
        assert!(!out.stderr.contains(PASSWORD), "password printed");
    }
}

/// A registry that requires a client certificate (docker-registry `http.tls.clientcas`): the
/// `client.cert`/`client.key` pair in the certificate directory gets in; without it the FATAL
/// line says what is missing; a `.cert` without its `.key` is refused before connecting.
#[test]
fn client_certificate_registry() {
    let dir = scratch("clientcert");
    let reg = Registry::tls_client_cert(&dir.join("reg"));
    reg.push(&oci_ref("busybox"), "sioci/busybox:latest", false);
    let r = reg.docker_ref("sioci/busybox:latest");
    let with_cert = reg.ca_dir().display().to_string();
    let ca_only = reg.server_ca_only_dir().display().to_string();
    let no_key = dir.join("no-key");
    std::fs::create_dir_all(&no_key).unwrap();
    for f in ["ca.crt", "client.cert"] {
        std::fs::copy(reg.ca_dir().join(f), no_key.join(f)).unwrap();
        std::fs::set_permissions(no_key.join(f), std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let no_key = no_key.display().to_string();
    for ctx in contexts() {
        let rec = check_record(
            &fetch(
                &ctx,
                &fresh_cache(&ctx, "cache"),
                &["--cert-dir", &with_cert, &r],
            ),
            "docker",
        );
        assert_eq!(rec["digest"], fixture_digest("busybox"));
        let c2 = fresh_cache(&ctx, "cache2");
        fetch(&ctx, &c2, &["--cert-dir", &ca_only, &r]).assert_fatal("client certificate");
        fetch(&ctx, &c2, &["--cert-dir", &no_key, &r]).assert_fatal("has no key");
        assert_cache_verified(&c2);
    }
}

#[test]
fn concurrent_fetches_download_each_blob_once() {
    let dir = scratch("concurrent");
    let reg = Registry::plain(&dir.join("reg"));
    reg.push(&oci_ref("layered"), "sioci/layered:v1", false);
    let r = reg.docker_ref("sioci/layered:v1");
    let ctx = Ctx::new(Profile::User, Rt::Crun, &current_test_name());
    let cache = fresh_cache(&ctx, "cache");
    let outs: Vec<Output> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..8)
            .map(|_| s.spawn(|| fetch(&ctx, &cache, &["--no-https", &r])))
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let first = check_record(&outs[0], "docker");
    for o in &outs {
        assert_eq!(check_record(o, "docker"), first);
    }
    let mut blobs = vec![first["config"]["digest"].as_str().unwrap().to_string()];
    blobs.extend(
        first["layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["digest"].as_str().unwrap().to_string()),
    );
    for b in blobs {
        assert_eq!(
            count(&reg, "GET", &format!("/blobs/{b}")),
            1,
            "blob {b} downloaded more than once:\n{}",
            reg.log_text()
        );
    }
    assert_cache_verified(&cache);
}

/// A layout with one large, incompressible layer (for slow and interrupted downloads).
fn big_layer_layout(dir: &Path, mib: u32) -> PathBuf {
    require_tool("umoci");
    sh(&format!(
        "cd {d} && umoci init --layout big && umoci new --image big:latest && mkdir -p r && head -c {mib}M /dev/urandom > r/random.bin && tar -C r -cf layer.tar . && umoci raw add-layer --image big:latest layer.tar && chmod -R a+rX big",
        d = dir.display()
    ));
    dir.join("big")
}

#[test]
fn network_faults_retries_resume_and_kill() {
    let dir = scratch("faults");
    let reg = Registry::plain(&dir.join("reg"));
    let big = big_layer_layout(&dir, 4);
    reg.push(
        &format!("oci:{}:latest", big.display()),
        "sioci/big:v1",
        false,
    );
    reg.push(&oci_ref("busybox"), "sioci/busybox:latest", false);
    let proxy = FaultProxy::start(&dir.join("proxy"), &reg.addr);
    let via = |repo: &str| format!("docker://{}/{repo}", proxy.addr);
    let ctx = Ctx::new(Profile::User, Rt::Crun, &current_test_name());

    // 503 twice, then a reset mid-blob: retried, and the fetch succeeds.
    let cache = fresh_cache(&ctx, "c1");
    proxy.set_rules(json!([
        {"match": "/blobs/", "method": "GET", "fault": "status", "status": 503, "times": 2},
        {"match": "/blobs/", "method": "GET", "fault": "reset", "times": 1},
    ]));
    check_record(
        &fetch(&ctx, &cache, &["--no-https", &via("sioci/big:v1")]),
        "docker",
    );
    assert_cache_verified(&cache);

    // A body that is always short: bounded retries, then FATAL, nothing cached.
    let cache = fresh_cache(&ctx, "c2");
    proxy.set_rules(json!([
        {"match": "/blobs/", "method": "GET", "fault": "badlength", "delta": -1000},
    ]));
    let t = Instant::now();
    fetch(&ctx, &cache, &["--no-https", &via("sioci/busybox:latest")]).assert_fatal("truncated");
    assert!(
        t.elapsed() < Duration::from_secs(60),
        "retries are not bounded"
    );
    let (_, bm) = manifest_of(&fixture("busybox"));
    let layer_hex = &bm["layers"][0]["digest"].as_str().unwrap()[7..];
    assert!(
        !layout_of(&cache)
            .join("blobs/sha256")
            .join(layer_hex)
            .exists(),
        "a truncated layer was published"
    );
    // Only the verified manifest and config may be cached; the partial stays in tmp/ for a
    // resume, and is resumed and verified by the next fetch.
    proxy.set_rules(json!([]));
    check_record(
        &fetch(&ctx, &cache, &["--no-https", &via("sioci/busybox:latest")]),
        "docker",
    );
    assert_cache_verified(&cache);

    // Redirect loop and 401 loop: FATAL, no hang.
    let cache = fresh_cache(&ctx, "c3");
    proxy.set_rules(json!([{"match": "/blobs/", "fault": "redirect"}]));
    fetch(&ctx, &cache, &["--no-https", &via("sioci/busybox:latest")]).assert_code(255);
    proxy.set_rules(json!([{"match": "/manifests/", "fault": "authloop"}]));
    fetch(&ctx, &cache, &["--no-https", &via("sioci/busybox:latest")]).assert_code(255);
    proxy.set_rules(json!([]));

    // Killed mid-blob, then rerun: the rerun resumes with Range and verifies.
    let cache = fresh_cache(&ctx, "c4");
    proxy.set_rules(json!([
        {"match": "/blobs/", "method": "GET", "fault": "trickle", "chunk": 65536, "interval": 0.05},
    ]));
    let mut child = ctx
        .command(ctx.bin("oci-fetch"))
        .args(["--no-https", "--quiet", &via("sioci/big:v1")])
        .env("SINGULARITY_CACHEDIR", &cache)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let tmp = cache.join("cache/oci-launcher/tmp");
    let deadline = Instant::now() + Duration::from_secs(60);
    let partial = loop {
        let found = std::fs::read_dir(&tmp).ok().and_then(|rd| {
            rd.filter_map(|e| e.ok())
                .find(|e| e.metadata().map(|m| m.len() > 512 * 1024).unwrap_or(false))
                .map(|e| e.path())
        });
        if let Some(p) = found {
            break p;
        }
        assert!(Instant::now() < deadline, "no partial download appeared");
        std::thread::sleep(Duration::from_millis(20));
    };
    child.kill().unwrap();
    child.wait().unwrap();
    let hex = partial
        .file_name()
        .unwrap()
        .to_string_lossy()
        .replace("blob-", "")
        .replace(".partial", "");
    assert!(
        !layout_of(&cache).join("blobs/sha256").join(&hex).exists(),
        "a partial blob was published"
    );
    proxy.set_rules(json!([]));
    check_record(
        &fetch(&ctx, &cache, &["--no-https", &via("sioci/big:v1")]),
        "docker",
    );
    let resumed = proxy.requests().iter().any(|l| {
        l["path"].as_str().is_some_and(|p| p.contains(&hex))
            && l["range"]
                .as_str()
                .is_some_and(|r| r.starts_with("bytes=") && !r.starts_with("bytes=0-"))
    });
    assert!(
        resumed,
        "the rerun did not resume with Range: {:?}",
        proxy.requests()
    );
    assert_cache_verified(&cache);
}

/// Copy a fixture layout so it can be damaged.
fn copy_fixture(dir: &Path, name: &str) -> PathBuf {
    let p = dir.join(name);
    sh(&format!(
        "cp -r {} {} && chmod -R a+rX,u+w {}",
        fixture("busybox").display(),
        p.display(),
        p.display()
    ));
    p
}

fn manifest_of(layout: &Path) -> (PathBuf, Value) {
    let idx: Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    let h = idx["manifests"][0]["digest"].as_str().unwrap()[7..].to_string();
    let p = layout.join("blobs/sha256").join(h);
    let v = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
    (p, v)
}

/// Store `bytes` as a blob of `layout` and point index.json's only entry at it.
fn repoint(layout: &Path, bytes: &[u8], media_type: &str) {
    let h = sha256_bytes(bytes);
    std::fs::write(layout.join("blobs/sha256").join(&h), bytes).unwrap();
    let idx = serde_json::json!({"schemaVersion":2,"manifests":[{"mediaType":media_type,
        "digest":format!("sha256:{h}"),"size":bytes.len(),
        "annotations":{"org.opencontainers.image.ref.name":"latest"}}]});
    std::fs::write(layout.join("index.json"), idx.to_string()).unwrap();
    sh(&format!("chmod -R a+rX {}", layout.display()));
}

#[test]
fn bad_input_is_one_fatal_line_and_caches_nothing_unverified() {
    let dir = scratch("bad");
    let mt = "application/vnd.oci.image.manifest.v1+json";

    // Digest mismatch in the manifest: change its bytes, keep index.json.
    let mism = copy_fixture(&dir, "mismatch");
    let (mp, _) = manifest_of(&mism);
    // Same size, different bytes: only the digest can tell.
    let b = String::from_utf8(std::fs::read(&mp).unwrap()).unwrap();
    assert!(b.contains("\"schemaVersion\":2"), "{b}");
    std::fs::write(
        &mp,
        b.replacen("\"schemaVersion\":2", "\"schemaVersion\":3", 1),
    )
    .unwrap();

    // Corrupted layer (same size), and a truncated layer.
    let corrupt = copy_fixture(&dir, "corrupt");
    let (_, m) = manifest_of(&corrupt);
    let lp = corrupt
        .join("blobs/sha256")
        .join(&m["layers"][0]["digest"].as_str().unwrap()[7..]);
    let mut b = std::fs::read(&lp).unwrap();
    let mid = b.len() / 2;
    b[mid] ^= 0xff;
    std::fs::write(&lp, &b).unwrap();
    let trunc = copy_fixture(&dir, "truncated");
    let lp = trunc
        .join("blobs/sha256")
        .join(&m["layers"][0]["digest"].as_str().unwrap()[7..]);
    let b = std::fs::read(&lp).unwrap();
    std::fs::write(&lp, &b[..b.len() / 2]).unwrap();

    // A manifest that is not JSON, one over the size limit, a config that is not JSON, and an
    // artifact (unsupported config media type), a layer with an unsupported media type.
    let badjson = copy_fixture(&dir, "badjson");
    repoint(&badjson, b"{\"schemaVersion\": 2, \"config\": ", mt);
    let huge = copy_fixture(&dir, "huge");
    let mut big = m.clone();
    big["annotations"] = serde_json::json!({"pad": "x".repeat(5 << 20)});
    repoint(&huge, &serde_json::to_vec(&big).unwrap(), mt);
    let badcfg = copy_fixture(&dir, "badcfg");
    let cfg = b"not json at all";
    let ch = sha256_bytes(cfg);
    std::fs::write(badcfg.join("blobs/sha256").join(&ch), cfg).unwrap();
    let mut mc = m.clone();
    mc["config"]["digest"] = format!("sha256:{ch}").into();
    mc["config"]["size"] = cfg.len().into();
    repoint(&badcfg, &serde_json::to_vec(&mc).unwrap(), mt);
    let artifact = copy_fixture(&dir, "artifact");
    let mut ma = m.clone();
    ma["config"]["mediaType"] = "application/vnd.cncf.helm.config.v1+json".into();
    repoint(&artifact, &serde_json::to_vec(&ma).unwrap(), mt);
    let badlayer = copy_fixture(&dir, "badlayer");
    let mut ml = m.clone();
    ml["layers"][0]["mediaType"] = "application/vnd.oci.image.layer.v1.tar+bzip2".into();
    repoint(&badlayer, &serde_json::to_vec(&ml).unwrap(), mt);

    // A non-distributable layer the layout does not carry.
    let foreign = copy_fixture(&dir, "foreign");
    let mut mf = m.clone();
    mf["layers"][0]["mediaType"] =
        "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip".into();
    mf["layers"][0]["digest"] = format!("sha256:{}", "ab".repeat(32)).into();
    mf["layers"][0]["urls"] = serde_json::json!(["https://example.invalid/layer.tgz"]);
    repoint(&foreign, &serde_json::to_vec(&mf).unwrap(), mt);

    let free = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let d = |p: &Path| p.display().to_string();
    let cases: Vec<(Vec<String>, &str)> = vec![
        (vec!["foo:bar".into()], "unknown transport"),
        (vec!["busybox".into()], "no transport"),
        (
            vec!["docker://UPPER/case".into()],
            "malformed registry reference",
        ),
        (vec!["docker://alpine:bad tag".into()], "malformed"),
        (
            vec![format!("oci:{}:nope", d(&fixture("busybox")))],
            "tag 'nope' not found",
        ),
        (
            vec![format!("oci:{}/missing:latest", d(&dir))],
            "does not exist",
        ),
        (vec![format!("oci:{}:latest", d(&mism))], "digest mismatch"),
        (
            vec![format!("oci:{}:latest", d(&corrupt))],
            "digest mismatch",
        ),
        (vec![format!("oci:{}:latest", d(&trunc))], "truncated"),
        (
            vec![format!("oci:{}:latest", d(&badjson))],
            "not a valid manifest",
        ),
        (vec![format!("oci:{}:latest", d(&huge))], "limit"),
        (vec![format!("oci:{}:latest", d(&badcfg))], "not valid JSON"),
        (
            vec![format!("oci:{}:latest", d(&artifact))],
            "unsupported config media type",
        ),
        (
            vec![format!("oci:{}:latest", d(&badlayer))],
            "unsupported media type",
        ),
        (
            vec![format!("docker-archive:{}/nothing.tar", d(&dir))],
            "cannot open",
        ),
        (
            vec![format!("oci:{}:latest", d(&foreign))],
            "non-distributable",
        ),
        (
            vec![
                "--no-https".into(),
                format!("docker://127.0.0.1:{free}/x/y:z"),
            ],
            "cannot connect",
        ),
        (
            vec!["--platform".into(), "linux".into(), oci_ref("busybox")],
            "malformed platform",
        ),
        (vec!["--bogus".into(), oci_ref("busybox")], "unknown option"),
        (vec![], "missing image reference"),
    ];
    let hex = &m["layers"][0]["digest"].as_str().unwrap()[7..];
    for ctx in contexts() {
        let cache = fresh_cache(&ctx, "cache");
        for (args, needle) in &cases {
            let a: Vec<&str> = args.iter().map(String::as_str).collect();
            let out = fetch(&ctx, &cache, &a);
            out.assert_fatal(needle);
            assert!(
                out.stdout.trim().is_empty(),
                "stdout not empty for {args:?}"
            );
            assert_cache_verified(&cache);
            // The corrupted and the truncated layer never reached the cache. (A later case may
            // cache the intact layer of the same digest: its config is read while the layers
            // download; assert_cache_verified checks every cached blob's content.)
            if ["digest mismatch", "truncated"].contains(needle) {
                assert!(
                    !layout_of(&cache).join("blobs/sha256").join(hex).exists(),
                    "{args:?} left its layer in the cache"
                );
            }
        }
    }
}
