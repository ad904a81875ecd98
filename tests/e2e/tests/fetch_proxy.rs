//! Issue 3, "proxies come from the environment": oci-fetch reaches a real registry through an
//! HTTP CONNECT proxy named by `HTTPS_PROXY`/`HTTP_PROXY`, and goes direct for `NO_PROXY` hosts.
//! The proxy is a few lines of standard-library Python on 127.0.0.1 that logs each tunnel.

use e2e::pyserver::PyServer;
use e2e::registry::Registry;
use e2e::*;
use std::time::Duration;

const PROXY: &str = r#"
import socket, sys, threading
log = sys.argv[1]
def pipe(a, b):
    try:
        while True:
            d = a.recv(65536)
            if not d: break
            b.sendall(d)
    except OSError: pass
    finally:
        for s in (a, b):
            try: s.shutdown(socket.SHUT_RDWR)
            except OSError: pass
def handle(c):
    f = c.makefile("rb")
    line = f.readline().decode()
    while f.readline() not in (b"\r\n", b"\n", b""): pass
    method, target = line.split()[:2]
    with open(log, "a") as l: l.write(method + " " + target + "\n")
    if method != "CONNECT":
        c.sendall(b"HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\n\r\n"); c.close(); return
    host, port = target.rsplit(":", 1)
    u = socket.create_connection((host, int(port)))
    c.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
    threading.Thread(target=pipe, args=(u, c), daemon=True).start()
    pipe(c, u)
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", 0)); s.listen(64)
print("PORT %d" % s.getsockname()[1], flush=True)
while True:
    c, _ = s.accept()
    threading.Thread(target=handle, args=(c,), daemon=True).start()
"#;

#[test]
fn proxy_from_environment_and_no_proxy() {
    let dir = workdir().join("fetch-scratch").join("proxy");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let reg = Registry::plain(&dir.join("reg"));
    reg.push(&oci_ref("busybox"), "sioci/busybox:latest", false);
    let log = dir.join("proxy.log");
    let proxy = PyServer::start(PROXY, &[&log]);
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
