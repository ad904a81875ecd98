//! Loopback servers of a few lines of standard-library Python (a CONNECT proxy, a registry
//! front that asks for credentials and redirects its blobs): started with their arguments, they
//! print `PORT n` as their first line and are killed when the handle is dropped.

use crate::{Ctx, Output, fixture};
use std::ffi::OsStr;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub struct PyServer {
    child: Child,
    pub port: u16,
}

impl PyServer {
    /// Run `python3 -c SCRIPT ARGS...` and wait for its `PORT n` line.
    pub fn start<S: AsRef<OsStr>>(script: &str, args: &[S]) -> PyServer {
        let mut child = Command::new("python3")
            .arg("-c")
            .arg(script)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 is required: run scripts/setup");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("piped stdout"))
            .read_line(&mut line)
            .expect("reading the server's first line");
        let port = line
            .trim()
            .strip_prefix("PORT ")
            .and_then(|p| p.parse().ok());
        let mut server = PyServer { child, port: 0 };
        server.port = port.unwrap_or_else(|| panic!("the server printed {line:?}, not PORT n"));
        server
    }
}

impl Drop for PyServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An HTTP CONNECT proxy in a few lines of standard-library Python on 127.0.0.1: it tunnels to
/// the target and appends `METHOD TARGET` of each request to the log file named by its first
/// argument (anything but CONNECT gets 405).
pub const CONNECT_PROXY: &str = r#"
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

/// A registry front serving the `busybox` fixture on 127.0.0.1 that wants the credentials
/// `u:p`, and a storage server and a token service beside it on other ports that log every
/// request they get (`{"who": "storage"|"token", "path", "auth"}`), so a test sees where
/// credentials travel. Every blob GET is redirected to the storage server.
pub struct AuthFront {
    _server: PyServer,
    log: PathBuf,
    /// `docker://127.0.0.1:PORT/sioci/busybox:latest`.
    pub reference: String,
}

impl AuthFront {
    /// Start it with its log in `dir` (emptied first). `mode`: `basic` (Basic auth), or a
    /// Bearer challenge whose realm is the token service addressed as the registry's own host
    /// (`bearer-same-host`) or as `localhost` (`bearer-other-host`); the token service hands
    /// out a token for any request. `storage_host`: how blob redirects address the storage
    /// server (`127.0.0.1`, the registry's host, or `localhost`, another host name).
    pub fn start(dir: &Path, mode: &str, storage_host: &str) -> AuthFront {
        let _ = std::fs::remove_dir_all(dir);
        std::fs::create_dir_all(dir).unwrap();
        let log = dir.join("requests.log");
        let server = PyServer::start(
            AUTH_FRONT,
            &[
                fixture("busybox").as_os_str(),
                log.as_os_str(),
                mode.as_ref(),
                storage_host.as_ref(),
            ],
        );
        let reference = format!("docker://127.0.0.1:{}/sioci/busybox:latest", server.port);
        AuthFront {
            _server: server,
            log,
            reference,
        }
    }

    /// `oci-fetch --no-https --creds u:p` of the image as `ctx`'s user, into `ctx`'s own
    /// `cache` directory, after emptying the log; the fetch must succeed.
    pub fn pull(&self, ctx: &Ctx) -> Output {
        let cache = ctx.mkdir("cache");
        let _ = std::fs::remove_file(&self.log);
        let out = ctx
            .cmd(ctx.bin("oci-fetch"))
            .env("SINGULARITY_CACHEDIR", cache.display().to_string())
            .args(&["--no-https", "--creds", "u:p", &self.reference])
            .timeout(Duration::from_secs(60))
            .run();
        out.assert_code(0);
        out
    }

    /// The requests logged since the last [`AuthFront::pull`] began.
    pub fn hits(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

/// The script of [`AuthFront`]: argv is LAYOUT LOG MODE STORAGE_HOST.
const AUTH_FRONT: &str = r#"
import base64, json, os, sys, threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
layout, log, mode, storage_host = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
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
            send(self, 307, headers=[("Location", "http://%s:%d/storage/%s" % (storage_host, storage.server_address[1], d))])
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
