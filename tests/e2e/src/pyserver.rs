//! Loopback servers of a few lines of standard-library Python, written for one test each (a
//! CONNECT proxy, a registry front that redirects its blobs): started with their arguments, they
//! print `PORT n` as their first line and are killed when the handle is dropped.

use std::ffi::OsStr;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

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
