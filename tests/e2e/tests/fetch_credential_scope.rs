//! Where registry credentials may travel: only to the scheme, host and port they were given for
//! (redirects), and to a token service only over TLS, or over plain HTTP to the registry's own
//! host when the user asked for plain HTTP (`--no-https`).
//!
//! A loopback registry front in Python (standard library only) serves one OCI layout. Its blobs
//! are redirected to a storage server on *the same host, another port*; in the Bearer modes its
//! 401 names a token service on another port, addressed as `127.0.0.1` (the registry's host) or
//! as `localhost` (another host name). Storage and token service log every Authorization header
//! they receive.

use e2e::pyserver::PyServer;
use e2e::*;
use std::path::Path;
use std::time::Duration;

const SERVER: &str = r#"
import base64, json, os, sys, threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
layout, log, mode = sys.argv[1], sys.argv[2], sys.argv[3]
basic = "Basic " + base64.b64encode(b"u:p").decode()
def note(who, h):
    with open(log, "a") as f:
        f.write(json.dumps({"who": who, "path": h.path, "auth": h.headers.get("Authorization")}) + "\n")
def blob(d):
    return os.path.join(layout, "blobs", "sha256", d.split(":", 1)[1])
def send(h, code, body=b"", headers=()):
    h.send_response(code)
    for k, v in headers: h.send_header(k, v)
    h.send_header("Content-Length", str(len(body))); h.end_headers()
    if h.command != "HEAD": h.wfile.write(body)
class Storage(BaseHTTPRequestHandler):
    def log_message(self, *a): pass
    def do_GET(self):
        note("storage", self)
        send(self, 200, open(blob(self.path.rsplit("/", 1)[1]), "rb").read())
class Token(BaseHTTPRequestHandler):
    def log_message(self, *a): pass
    def do_GET(self):
        note("token", self)
        tok = "authed" if self.headers.get("Authorization") == basic else "anonymous"
        send(self, 200, json.dumps({"token": tok}).encode(), [("Content-Type", "application/json")])
storage = ThreadingHTTPServer(("127.0.0.1", 0), Storage)
token = ThreadingHTTPServer(("127.0.0.1", 0), Token)
class Front(BaseHTTPRequestHandler):
    def log_message(self, *a): pass
    def do_HEAD(self): self.do_GET()
    def do_GET(self):
        got = self.headers.get("Authorization")
        if mode == "basic":
            ok = got == basic
            challenge = 'Basic realm="r"'
        else:
            ok = got in ("Bearer authed", "Bearer anonymous")
            host = "127.0.0.1" if mode == "bearer-same-host" else "localhost"
            challenge = 'Bearer realm="http://%s:%d/token",service="r"' % (host, token.server_address[1])
        if not ok:
            send(self, 401, headers=[("WWW-Authenticate", challenge)]); return
        if "/blobs/" in self.path:
            d = self.path.rsplit("/", 1)[1]
            send(self, 307, headers=[("Location", "http://127.0.0.1:%d/storage/%s" % (storage.server_address[1], d))])
            return
        idx = json.load(open(os.path.join(layout, "index.json")))
        m = idx["manifests"][0]
        send(self, 200, open(blob(m["digest"]), "rb").read(),
             [("Content-Type", m["mediaType"]), ("Docker-Content-Digest", m["digest"])])
front = ThreadingHTTPServer(("127.0.0.1", 0), Front)
for s in (storage, token):
    threading.Thread(target=s.serve_forever, daemon=True).start()
print("PORT %d" % front.server_address[1], flush=True)
front.serve_forever()
"#;

/// One logged request: which server, and the Authorization it received.
type Hit = (String, Option<String>);

/// Every logged request.
fn hits(log: &Path) -> Vec<Hit> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (
                v["who"].as_str().unwrap().to_string(),
                v["auth"].as_str().map(str::to_string),
            )
        })
        .collect()
}

/// Pull `sioci/busybox` from a fresh server in `mode` as root and as the test user, with
/// `--no-https --creds u:p`; returns each run's log and stderr.
fn pull_in_mode(mode: &str) -> Vec<(Ctx, Vec<Hit>, String)> {
    let dir = workdir()
        .join("fetch-scratch")
        .join(format!("scope-{mode}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let log = dir.join("requests.log");
    let server = PyServer::start(
        SERVER,
        &[fixture("busybox").as_path(), &log, Path::new(mode)],
    );
    let reference = format!("docker://127.0.0.1:{}/sioci/busybox:latest", server.port);
    let mut runs = Vec::new();
    for p in [Profile::Root, Profile::User] {
        let ctx = Ctx::new(p, Rt::Crun, &format!("{}-{mode}", current_test_name()));
        let cache = ctx.mkdir("cache");
        let _ = std::fs::remove_file(&log);
        let out = ctx
            .cmd(ctx.bin("oci-fetch"))
            .env("SINGULARITY_CACHEDIR", cache.display().to_string())
            .args(&["--no-https", "--creds", "u:p", &reference])
            .timeout(Duration::from_secs(60))
            .run();
        out.assert_code(0);
        assert!(!out.stderr.contains("u:p") && !out.stderr.contains("dTpw"));
        runs.push((ctx, hits(&log), out.stderr.clone()));
    }
    runs
}

/// ureq's `SameHost` would keep Authorization on a redirect to another port of the same host.
#[test]
fn a_redirect_to_another_port_of_the_same_host_gets_no_credentials() {
    for (ctx, hits, _) in pull_in_mode("basic") {
        let storage: Vec<_> = hits.iter().filter(|(w, _)| w == "storage").collect();
        assert!(
            storage.len() >= 2,
            "[{}] blobs did not go through the redirect: {hits:?}",
            ctx.name
        );
        for (_, auth) in storage {
            assert_eq!(
                auth, &None,
                "[{}] Authorization went to another port",
                ctx.name
            );
        }
    }
}

/// A registry may name a token service on another host (Docker Hub does), but Basic
/// credentials go there over plain HTTP only when it is the registry's own host and the user
/// asked for plain HTTP: the `localhost` realm gets none (and the pull goes on anonymously,
/// with a WARNING), the `127.0.0.1` realm gets them (the control: the test can see them).
#[test]
fn basic_credentials_reach_a_plain_http_token_service_only_on_the_registry_host() {
    for (ctx, hits, stderr) in pull_in_mode("bearer-other-host") {
        let token: Vec<_> = hits.iter().filter(|(w, _)| w == "token").collect();
        assert!(
            !token.is_empty(),
            "[{}] no token request: {hits:?}",
            ctx.name
        );
        for (_, auth) in &token {
            assert_eq!(
                auth, &None,
                "[{}] credentials sent to a plain-HTTP realm on another host",
                ctx.name
            );
        }
        assert!(
            stderr.contains("WARNING: oci-fetch: not sending the credentials"),
            "[{}] {stderr}",
            ctx.name
        );
        // The blob redirect to another port got nothing either (the Bearer token included).
        assert!(
            hits.iter()
                .filter(|(w, _)| w == "storage")
                .all(|(_, a)| a.is_none()),
            "[{}] {hits:?}",
            ctx.name
        );
    }
    for (ctx, hits, stderr) in pull_in_mode("bearer-same-host") {
        let token: Vec<_> = hits.iter().filter(|(w, _)| w == "token").collect();
        assert!(
            !token.is_empty(),
            "[{}] no token request: {hits:?}",
            ctx.name
        );
        assert!(
            token
                .iter()
                .all(|(_, a)| a.as_deref() == Some("Basic dTpw")),
            "[{}] the registry's own host should get the credentials: {hits:?}",
            ctx.name
        );
        assert!(!stderr.contains("WARNING"), "[{}] {stderr}", ctx.name);
    }
}
