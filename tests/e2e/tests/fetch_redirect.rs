//! Blob redirects never forward Authorization to another host (a registry's storage backend
//! must not receive the user's registry password).
//!
//! docker-registry with filesystem storage never redirects, so this test runs a minimal
//! registry front in Python (standard library only, loopback only): it serves one OCI layout's
//! manifests on 127.0.0.1 behind Basic auth, and answers every blob GET with a 307 to a second
//! server addressed as `localhost` (another host name), which serves the blob and logs whether an
//! Authorization header arrived. oci-fetch must authenticate to the first and send nothing to
//! the second.

use e2e::pyserver::PyServer;
use e2e::*;
use std::path::Path;
use std::time::Duration;

const SERVER: &str = r#"
import base64, json, os, sys, threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
layout, log = sys.argv[1], sys.argv[2]
want = "Basic " + base64.b64encode(b"u:p").decode()
def blob(d):
    return os.path.join(layout, "blobs", "sha256", d.split(":", 1)[1])
class Storage(BaseHTTPRequestHandler):
    def log_message(self, *a): pass
    def do_GET(self):
        with open(log, "a") as f:
            f.write(json.dumps({"path": self.path, "auth": self.headers.get("Authorization")}) + "\n")
        d = self.path.rsplit("/", 1)[1]
        data = open(blob(d), "rb").read()
        self.send_response(200); self.send_header("Content-Length", str(len(data))); self.end_headers()
        self.wfile.write(data)
storage = ThreadingHTTPServer(("127.0.0.1", 0), Storage)
class Front(BaseHTTPRequestHandler):
    def log_message(self, *a): pass
    def do_HEAD(self): self.do_GET(head=True)
    def do_GET(self, head=False):
        if self.headers.get("Authorization") != want:
            self.send_response(401); self.send_header("WWW-Authenticate", 'Basic realm="r"')
            self.send_header("Content-Length", "0"); self.end_headers(); return
        if "/blobs/" in self.path:
            d = self.path.rsplit("/", 1)[1]
            self.send_response(307)
            self.send_header("Location", "http://localhost:%d/storage/%s" % (storage.server_address[1], d))
            self.send_header("Content-Length", "0"); self.end_headers(); return
        idx = json.load(open(os.path.join(layout, "index.json")))
        m = idx["manifests"][0]
        data = open(blob(m["digest"]), "rb").read()
        self.send_response(200); self.send_header("Content-Type", m["mediaType"])
        self.send_header("Docker-Content-Digest", m["digest"])
        self.send_header("Content-Length", str(len(data))); self.end_headers()
        if not head: self.wfile.write(data)
front = ThreadingHTTPServer(("127.0.0.1", 0), Front)
threading.Thread(target=storage.serve_forever, daemon=True).start()
print("PORT %d" % front.server_address[1], flush=True)
front.serve_forever()
"#;

#[test]
fn blob_redirects_do_not_carry_credentials_to_another_host() {
    let dir = workdir().join("fetch-scratch").join("redirect");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let log = dir.join("storage.log");
    let server = PyServer::start(SERVER, &[fixture("busybox").as_path(), log.as_path()]);
    let reference = format!("docker://127.0.0.1:{}/sioci/busybox:latest", server.port);

    for p in [Profile::Root, Profile::User] {
        let ctx = Ctx::new(p, Rt::Crun, &current_test_name());
        let cache = ctx.mkdir("cache");
        let _ = std::fs::remove_file(&log);
        let out = ctx
            .cmd(ctx.bin("oci-fetch"))
            .env("SINGULARITY_CACHEDIR", cache.display().to_string())
            .args(&["--no-https", "--creds", "u:p", &reference])
            .timeout(Duration::from_secs(60))
            .run();
        out.assert_code(0);
        let rec = out.json();
        let idx: serde_json::Value =
            serde_json::from_slice(&std::fs::read(fixture("busybox").join("index.json")).unwrap())
                .unwrap();
        assert_eq!(rec["digest"], idx["manifests"][0]["digest"]);
        let hits: Vec<serde_json::Value> = std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        // The config and the layer both came through the redirect.
        assert!(
            hits.len() >= 2,
            "blobs did not go through the redirect: {hits:?}"
        );
        for h in &hits {
            assert!(
                h["auth"].is_null(),
                "Authorization was forwarded to another host: {h}"
            );
        }
        assert!(Path::new(&cache).join("cache/oci-launcher/layout").is_dir());
    }
}
