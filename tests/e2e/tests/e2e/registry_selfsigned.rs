//! A registry certificate made the way Docker's registry documentation shows (`openssl req -x509
//! -newkey rsa:4096 -nodes ... -addext subjectAltName=...`, which openssl marks `CA:TRUE`),
//! trusted through `--cert-dir` or `/etc/containers/certs.d/HOST:PORT/*.crt`, on the TLS +
//! htpasswd registry, as root and as the test user: accepted when it is exactly the certificate
//! the server presents, and only for the names it lists; any other certificate stays refused.

use e2e::registry::{CertsD, PASSWORD, Registry, USER};
use e2e::*;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

fn scratch(name: &str) -> PathBuf {
    scratch_dir("selfsigned-scratch", name)
}

fn fetch(ctx: &Ctx, args: &[&str]) -> Output {
    let cache = ctx.mkdir(&format!("cache-{}", common::fsutil::unique_suffix()));
    ctx.cmd(ctx.bin("oci-fetch"))
        .env("SINGULARITY_CACHEDIR", cache.display().to_string())
        .env("SINGULARITY_DOCKER_USERNAME", USER)
        .env("SINGULARITY_DOCKER_PASSWORD", PASSWORD)
        .arg("-q")
        .args(args)
        .timeout(Duration::from_secs(120))
        .run()
}

fn is_ca(cert: &Path) -> bool {
    let out = Command::new("openssl")
        .args(["x509", "-noout", "-text", "-in"])
        .arg(cert)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).contains("CA:TRUE")
}

#[test]
fn docker_style_self_signed_certificate_is_trusted_exactly() {
    let dir = scratch("reg");
    let reg = Registry::tls_self_signed(&dir.join("reg"), "IP:127.0.0.1");
    let trusted = reg.ca_dir().join("domain.crt");
    assert!(
        is_ca(&trusted),
        "openssl made a CA:TRUE certificate, as in Docker's docs"
    );
    // skopeo (the reference client) accepts it: the push goes through it.
    reg.push(&oci_ref("busybox"), "sioci/busybox:v1", false);
    let r = reg.docker_ref("sioci/busybox:v1");
    let port = reg.addr.rsplit(':').next().unwrap().to_string();

    // Another certificate of the same shape, for the same address, that the server does not use.
    let other = Registry::tls_self_signed(&dir.join("other"), "IP:127.0.0.1");
    let impostor = other.ca_dir();
    drop(other);

    for profile in [Profile::Root, Profile::User] {
        let ctx = Ctx::new(profile, Rt::Crun, &current_test_name());
        let cert_dir = reg.ca_dir().display().to_string();
        fetch(&ctx, &["--cert-dir", &cert_dir, &r]).assert_code(0);
        // The name is still checked: the certificate names 127.0.0.1, not localhost.
        let by_name = format!("docker://localhost:{port}/sioci/busybox:v1");
        fetch(&ctx, &["--cert-dir", &cert_dir, &by_name]).assert_fatal("certificate");
        // Any other certificate, even of the same shape, is refused; so is none.
        let wrong = impostor.display().to_string();
        fetch(&ctx, &["--cert-dir", &wrong, &r]).assert_fatal("not trusted");
        fetch(&ctx, &[&r]).assert_fatal("not trusted");
    }
    // Trusted through certs.d for this registry's HOST:PORT.
    let _certs = CertsD::install(&reg.addr, &trusted);
    for profile in [Profile::Root, Profile::User] {
        let ctx = Ctx::new(profile, Rt::Runc, &current_test_name());
        fetch(&ctx, &[&r]).assert_code(0);
    }
}

/// The same certificate through an HTTP CONNECT proxy (`HTTPS_PROXY`): the TLS handshake made for
/// trusted certificates runs inside the tunnel.
#[test]
fn self_signed_registry_through_a_connect_proxy() {
    let dir = scratch("proxy");
    let reg = Registry::tls_self_signed(&dir.join("reg"), "IP:127.0.0.1");
    reg.push(&oci_ref("busybox"), "sioci/busybox:v1", false);
    let log = dir.join("proxy.log");
    let proxy = e2e::pyserver::PyServer::start(e2e::pyserver::CONNECT_PROXY, &[&log]);
    let proxy_url = format!("http://127.0.0.1:{}", proxy.port);
    let r = reg.docker_ref("sioci/busybox:v1");
    let cert_dir = reg.ca_dir().display().to_string();
    for profile in [Profile::Root, Profile::User] {
        let ctx = Ctx::new(profile, Rt::Crun, &current_test_name());
        let _ = std::fs::remove_file(&log);
        let cache = ctx.mkdir("cache-proxy");
        ctx.cmd(ctx.bin("oci-fetch"))
            .env("SINGULARITY_CACHEDIR", cache.display().to_string())
            .env("SINGULARITY_DOCKER_USERNAME", USER)
            .env("SINGULARITY_DOCKER_PASSWORD", PASSWORD)
            .env("HTTPS_PROXY", &proxy_url)
            .args(&["-q", "--cert-dir", &cert_dir, &r])
            .timeout(Duration::from_secs(120))
            .run()
            .assert_code(0);
        let tunnels = std::fs::read_to_string(&log).unwrap_or_default();
        assert!(
            tunnels.contains(&format!("CONNECT {}", reg.addr)),
            "no tunnel to the registry through the proxy: {tunnels:?}"
        );
    }
}

/// The front runs an image from the self-signed TLS + htpasswd registry, as root and as the test
/// user with crun and runc; without the certificate it is one FATAL line and nothing is left.
#[test]
fn front_runs_from_a_docker_style_self_signed_registry() {
    let dir = scratch("front");
    let reg = Registry::tls_self_signed(&dir.join("reg"), "IP:127.0.0.1");
    reg.push(&oci_ref("busybox"), "sioci/busybox:v1", false);
    let r = reg.docker_ref("sioci/busybox:v1");
    let cert_dir = reg.ca_dir().display().to_string();
    for ctx in matrix() {
        let cache = ctx.mkdir("cache-front");
        let front = |args: &[&str]| {
            ctx.front_cmd(args)
                .env("SINGULARITY_CACHEDIR", cache.display().to_string())
                .env("SINGULARITY_DOCKER_USERNAME", USER)
                .env("SINGULARITY_DOCKER_PASSWORD", PASSWORD)
                .timeout(Duration::from_secs(120))
                .run()
        };
        front(&["exec", &r, "true"]).assert_fatal("not trusted");
        ctx.assert_no_leftovers();
        // Nothing half-written in the cache either.
        let tmp = cache.join("cache/oci-launcher/tmp");
        let left: Vec<_> = std::fs::read_dir(&tmp)
            .map(|d| d.flatten().map(|e| e.file_name()).collect())
            .unwrap_or_default();
        assert!(
            left.is_empty(),
            "[{}] left in {}: {left:?}",
            ctx.name,
            tmp.display()
        );
        front(&["exec", "--cert-dir", &cert_dir, &r, "echo", "tls-ok"])
            .assert_code(0)
            .assert_stdout_eq("tls-ok\n");
        ctx.assert_no_leftovers();
    }
}
