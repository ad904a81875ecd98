//! `tests/faultproxy/faultproxy.py` in front of a loopback registry: it forwards every request
//! except those its rules break (status codes, resets, trickles, wrong lengths, redirect and
//! 401 loops), and logs each request as one JSON line. Killed when the handle is dropped.

use crate::tools::require_tool;
use serde_json::Value;
use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub struct FaultProxy {
    child: Child,
    pub port: u16,
    /// `127.0.0.1:PORT`.
    pub addr: String,
    rules: PathBuf,
    log: PathBuf,
}

impl FaultProxy {
    /// A proxy to `upstream` (`127.0.0.1:PORT`) with no rules yet, keeping its rule file, its
    /// request log and its stderr in `dir` (created).
    pub fn start(dir: &Path, upstream: &str) -> FaultProxy {
        fs::create_dir_all(dir).unwrap();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../faultproxy/faultproxy.py");
        let rules = dir.join("rules.json");
        let log = dir.join("requests.jsonl");
        fs::write(&rules, br#"{"rules":[]}"#).unwrap();
        let mut child = Command::new(require_tool("python3"))
            .arg(&script)
            .args(["--upstream", upstream, "--rules"])
            .arg(&rules)
            .arg("--log")
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(fs::File::create(dir.join("proxy.err")).unwrap())
            .spawn()
            .expect("cannot start faultproxy");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port: u16 = line
            .trim()
            .strip_prefix("PORT ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("faultproxy printed {line:?}, not PORT n"));
        FaultProxy {
            child,
            port,
            addr: format!("127.0.0.1:{port}"),
            rules,
            log,
        }
    }

    /// Replace the rules (a JSON array; the proxy re-reads the file when its mtime changes)
    /// and clear the request log.
    pub fn set_rules(&self, rules: Value) {
        let tmp = self.rules.with_extension("tmp");
        fs::write(
            &tmp,
            serde_json::to_vec(&serde_json::json!({ "rules": rules })).unwrap(),
        )
        .unwrap();
        // mtime granularity: make sure the new file's mtime differs from the old one's.
        std::thread::sleep(Duration::from_millis(20));
        fs::rename(&tmp, &self.rules).unwrap();
        fs::write(&self.log, b"").unwrap();
    }

    /// The requests seen since the last [`FaultProxy::set_rules`].
    pub fn requests(&self) -> Vec<Value> {
        fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
