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
