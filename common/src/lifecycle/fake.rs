//! A runtime that keeps its containers in memory and answers like runc, for unit tests of the
//! operations: no root, no runtime installed, no process started.
//!
//! It follows runc's state machine (created -> running <-> paused -> stopped -> deleted) and
//! its error lines (logrus `msg="..."`), and records every call. [`FakeRuntime::fail_next`]
//! makes the next call of an operation fail with the given stderr.

use super::process::{Call, Output, Runtime};
use super::runtime::{RuntimeBinary, RuntimeKind};
use anyhow::Result;
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Created,
    Running,
    Paused,
    Stopped,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Created => "created",
            Status::Running => "running",
            Status::Paused => "paused",
            Status::Stopped => "stopped",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeContainer {
    pub status: Status,
    pub bundle: PathBuf,
    pub pid: i32,
    /// Signals received, in order.
    pub signals: Vec<i32>,
    /// The last resources file given to `update`.
    pub resources: Option<String>,
}

pub struct FakeRuntime {
    bin: RuntimeBinary,
    root: PathBuf,
    pub containers: RefCell<BTreeMap<String, FakeContainer>>,
    /// Every call's words (after `--root ROOT`).
    pub calls: RefCell<Vec<Vec<String>>>,
    failures: RefCell<Vec<(String, Output)>>,
    /// The words of the last `replace` (exec).
    pub replaced: RefCell<Option<Vec<String>>>,
}

impl FakeRuntime {
    pub fn new(kind: RuntimeKind, root: &Path) -> FakeRuntime {
        let name = match kind {
            RuntimeKind::Crun => "crun",
            RuntimeKind::Runc => "runc",
            RuntimeKind::Other => "youki",
        };
        FakeRuntime {
            bin: RuntimeBinary {
                path: PathBuf::from("/usr/bin").join(name),
                kind,
            },
            root: root.to_path_buf(),
            containers: RefCell::default(),
            calls: RefCell::default(),
            failures: RefCell::default(),
            replaced: RefCell::default(),
        }
    }

    /// The next call of `op` fails with exit code 1 and `stderr`.
    pub fn fail_next(&self, op: &str, stderr: &str) {
        self.failures.borrow_mut().push((
            op.to_string(),
            Output {
                code: 1,
                stdout: Vec::new(),
                stderr: stderr.as_bytes().to_vec(),
            },
        ));
    }

    /// A container as if `create` had made it.
    pub fn add(&self, id: &str, status: Status) {
        self.containers.borrow_mut().insert(
            id.to_string(),
            FakeContainer {
                status,
                bundle: PathBuf::from("/bundle"),
                pid: std::process::id() as i32,
                signals: Vec::new(),
                resources: None,
            },
        );
    }

    pub fn status(&self, id: &str) -> Option<Status> {
        self.containers.borrow().get(id).map(|c| c.status)
    }

    pub fn container(&self, id: &str) -> Option<FakeContainer> {
        self.containers.borrow().get(id).cloned()
    }

    /// The operations called, in order (`create`, `start`, `delete`, ...).
    pub fn ops(&self) -> Vec<String> {
        self.calls
            .borrow()
            .iter()
            .map(|w| op_of(w).0.to_string())
            .collect()
    }
}

/// runc's error line.
fn err(msg: &str) -> Output {
    Output {
        code: 1,
        stdout: Vec::new(),
        stderr: format!(
            "time=\"2026-01-01T00:00:00Z\" level=error msg=\"{}\"\n",
            msg.replace('\\', "\\\\").replace('"', "\\\"")
        )
        .into_bytes(),
    }
}

fn ok(stdout: String) -> Output {
    Output {
        code: 0,
        stdout: stdout.into_bytes(),
        stderr: Vec::new(),
    }
}

/// The operation and its words, after the global options (`--log FILE`, `--debug`).
fn op_of(words: &[String]) -> (&str, &[String]) {
    let mut i = 0;
    while i < words.len() {
        match words[i].as_str() {
            "--log" | "--log-format" => i += 2,
            w if w.starts_with("--") => i += 1,
            _ => return (&words[i], &words[i + 1..]),
        }
    }
    ("", &[])
}

/// The value of option `name` and the positionals, for the options the lifecycle passes.
fn split(args: &[String]) -> (BTreeMap<String, String>, Vec<String>) {
    let mut opts = BTreeMap::new();
    let mut pos = Vec::new();
    let mut i = 0;
    while i < args.len() {
        let a = &args[i];
        if matches!(a.as_str(), "--force" | "-f" | "--tty" | "-t") {
            opts.insert(a.clone(), String::new());
            i += 1;
        } else if a.starts_with("--") && i + 1 < args.len() {
            opts.insert(a.clone(), args[i + 1].clone());
            i += 2;
        } else {
            pos.push(a.clone());
            i += 1;
        }
    }
    (opts, pos)
}

impl FakeRuntime {
    fn answer(&self, words: &[String]) -> Output {
        let (op, rest) = op_of(words);
        let failure = self.failures.borrow().iter().position(|(o, _)| o == op);
        if let Some(i) = failure {
            return self.failures.borrow_mut().remove(i).1;
        }
        let (opts, pos) = split(rest);
        let id = pos.last().cloned().unwrap_or_default();
        let mut cs = self.containers.borrow_mut();
        let missing = || err(&format!("container does not exist: {id}"));
        match op {
            "create" => {
                if cs.contains_key(&id) {
                    return err(&format!("container with id exists: {id}"));
                }
                let bundle = PathBuf::from(opts.get("--bundle").cloned().unwrap_or_default());
                if !bundle.join("config.json").is_file() {
                    return err(&format!(
                        "open {}: no such file or directory",
                        bundle.join("config.json").display()
                    ));
                }
                let pid = std::process::id() as i32;
                if let Some(p) = opts.get("--pid-file")
                    && std::fs::write(p, pid.to_string()).is_err()
                {
                    return err(&format!("cannot write the pid file {p}"));
                }
                cs.insert(
                    id,
                    FakeContainer {
                        status: Status::Created,
                        bundle,
                        pid,
                        signals: Vec::new(),
                        resources: None,
                    },
                );
                ok(String::new())
            }
            "start" => match cs.get_mut(&id) {
                None => missing(),
                Some(c) => match c.status {
                    Status::Created => {
                        c.status = Status::Running;
                        ok(String::new())
                    }
                    Status::Stopped => err("cannot start a container that has stopped"),
                    _ => err("cannot start an already running container"),
                },
            },
            "state" => match cs.get(&id) {
                None => missing(),
                Some(c) => ok(format!(
                    "{{\"ociVersion\":\"1.0.2\",\"id\":\"{id}\",\"pid\":{},\"status\":\"{}\",\"bundle\":\"{}\"}}\n",
                    c.pid,
                    c.status.as_str(),
                    c.bundle.display()
                )),
            },
            "kill" => {
                let (sig_pos, id) = (
                    pos.last().cloned(),
                    pos.first().cloned().unwrap_or_default(),
                );
                let Some(c) = cs.get_mut(&id) else {
                    return err(&format!("container does not exist: {id}"));
                };
                if c.status == Status::Stopped {
                    return err("container not running");
                }
                let sig: i32 = sig_pos.and_then(|s| s.parse().ok()).unwrap_or(15);
                c.signals.push(sig);
                if matches!(sig, 1 | 2 | 9 | 15) {
                    c.status = Status::Stopped;
                }
                ok(String::new())
            }
            "pause" => match cs.get_mut(&id) {
                None => missing(),
                Some(c) if c.status == Status::Running => {
                    c.status = Status::Paused;
                    ok(String::new())
                }
                Some(_) => err("container not running"),
            },
            "resume" => match cs.get_mut(&id) {
                None => missing(),
                Some(c) if c.status == Status::Paused => {
                    c.status = Status::Running;
                    ok(String::new())
                }
                Some(_) => err("container not paused"),
            },
            "delete" => match cs.get(&id).map(|c| c.status) {
                None => missing(),
                Some(Status::Running | Status::Paused) if !opts.contains_key("--force") => {
                    let st = cs[&id].status.as_str();
                    err(&format!(
                        "cannot delete container {id} that is not stopped: {st}"
                    ))
                }
                Some(_) => {
                    cs.remove(&id);
                    ok(String::new())
                }
            },
            "update" => match cs.get_mut(&id) {
                None => missing(),
                Some(c) => {
                    let f = opts.get("--resources").cloned().unwrap_or_default();
                    match std::fs::read_to_string(&f) {
                        Ok(text) => {
                            c.resources = Some(text);
                            ok(String::new())
                        }
                        Err(_) => err(&format!("open {f}: no such file or directory")),
                    }
                }
            },
            "list" if opts.get("--format").map(String::as_str) == Some("json") => {
                let v: Vec<serde_json::Value> = cs
                    .iter()
                    .map(|(id, c)| {
                        serde_json::json!({"id": id, "pid": c.pid, "status": c.status.as_str(),
                            "bundle": c.bundle, "created": "2026-01-01T00:00:00Z", "owner": "root"})
                    })
                    .collect();
                ok(serde_json::to_string(&v).unwrap_or_default())
            }
            "list" => {
                let mut t = String::from("ID  PID  STATUS  BUNDLE\n");
                for (id, c) in cs.iter() {
                    t.push_str(&format!(
                        "{id}  {}  {}  {}\n",
                        c.pid,
                        c.status.as_str(),
                        c.bundle.display()
                    ));
                }
                ok(t)
            }
            other => err(&format!("unknown command {other:?}")),
        }
    }
}

impl Runtime for FakeRuntime {
    fn binary(&self) -> &RuntimeBinary {
        &self.bin
    }
    fn root(&self) -> &Path {
        &self.root
    }
    fn call(&self, call: &Call) -> Result<Output> {
        let words = call.words();
        self.calls.borrow_mut().push(words.clone());
        let out = self.answer(&words);
        if let Some(log) = &call.log {
            use std::io::Write;
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(log)?;
            f.write_all(&out.stdout)?;
            f.write_all(&out.stderr)?;
            return Ok(Output {
                code: out.code,
                ..Output::default()
            });
        }
        Ok(out)
    }
    fn replace(&self, args: &[OsString]) -> anyhow::Error {
        let words: Vec<String> = args
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        self.calls.borrow_mut().push(words.clone());
        *self.replaced.borrow_mut() = Some(words);
        anyhow::anyhow!("fake runtime: exec recorded")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rt() -> FakeRuntime {
        FakeRuntime::new(RuntimeKind::Runc, Path::new("/r"))
    }
    fn call(r: &FakeRuntime, w: &[&str]) -> Output {
        r.call(&Call::new(w)).unwrap()
    }

    #[test]
    fn global_options_are_skipped() {
        let w: Vec<String> = ["--log", "/l", "create", "--bundle", "/b", "c"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(op_of(&w).0, "create");
        assert_eq!(op_of(&[]).0, "");
    }

    #[test]
    fn errors_are_runc_lines() {
        let r = rt();
        let o = call(&r, &["start", "nope"]);
        assert_eq!(o.code, 1);
        assert_eq!(
            super::super::error::last_message(&String::from_utf8_lossy(&o.stderr)).unwrap(),
            "container does not exist: nope"
        );
    }

    #[test]
    fn injected_failures_are_used_once() {
        let r = rt();
        r.add("c", Status::Created);
        r.fail_next("start", "boom\n");
        assert_eq!(call(&r, &["start", "c"]).stderr, b"boom\n");
        assert!(call(&r, &["start", "c"]).success());
    }

    #[test]
    fn knows_follows_state() {
        let r = rt();
        assert!(!r.knows("c"));
        r.add("c", Status::Running);
        assert!(r.knows("c"));
        r.force_delete("c");
        assert!(!r.knows("c"));
    }
}
