//! Proxies come from the environment: oci-fetch reaches a real registry through an
//! HTTP CONNECT proxy named by `HTTPS_PROXY`/`HTTP_PROXY`, and goes direct for `NO_PROXY` hosts.
//! The proxy is `e2e::pyserver::CONNECT_PROXY`.

use e2e::pyserver::{CONNECT_PROXY, PyServer};
use e2e::registry::Registry;
use e2e::*;
use std::time::Duration;

#[test]
fn proxy_from_environment_and_no_proxy() {
    let dir = workdir().join("fetch-scratch").join("proxy");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let reg = Registry::plain(&dir.join("reg"));
    reg.push(&oci_ref("busybox"), "sioci/busybox:latest", false);
    let log = dir.join("proxy.log");
    let proxy = PyServer::start(CONNECT_PROXY, &[&log]);
    let proxy_url = format!("http://127.0.0.1:{}", proxy.port);
    let r = reg.docker_ref("sioci/busybox:latest");

    let ctx = Ctx::new(Profile::User, Rt::Crun, &current_test_name());
    for (var, no_proxy, through) in [
        ("HTTPS_PROXY", "", true),
        ("http_proxy", "", true),
        ("HTTP_PROXY", "127.0.0.1", false),
    ] {
        let cache = ctx.mkdir(&format!("cache-{var}-{through}"));
        let _ = std::fs::remove_file(&log);
        let mut cmd = ctx
            .cmd(ctx.bin("oci-fetch"))
            .env("SINGULARITY_CACHEDIR", cache.display().to_string())
            .env(var, &proxy_url)
            .args(&["--no-https", &r])
            .timeout(Duration::from_secs(60));
        if !no_proxy.is_empty() {
            cmd = cmd.env("NO_PROXY", no_proxy);
        }
        let out = cmd.run();
        out.assert_code(0);
        let tunnels = std::fs::read_to_string(&log).unwrap_or_default();
        if through {
            assert!(
                tunnels.contains(&format!("CONNECT {}", reg.addr)),
                "{var}: no tunnel to the registry through the proxy: {tunnels:?}"
            );
        } else {
            assert!(
                tunnels.is_empty(),
                "NO_PROXY host went through the proxy: {tunnels:?}"
            );
        }
    }
}
