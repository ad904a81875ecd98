//! `exec` with crun: the process to run, described the way runc describes it.
//!
//! runc's `exec` starts from the container's own `process` (its user and groups, working
//! directory, environment, capabilities, rlimits) and changes only what the caller asked for.
//! crun 1.8's `exec` with plain flags starts from nothing: uid 0, `/`, no environment. So for
//! crun the shim takes `process` from the bundle's config.json, replaces the arguments (and the
//! terminal, environment and working directory the caller gave), and hands the result to
//! `crun exec --process`. The JSON goes through a memfd named as `/proc/self/fd/N`, so nothing
//! is left to clean up when the runtime replaces the shim.

use anyhow::{Context, Result};
use serde_json::{Value, json};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;

/// What the caller of `exec` asked for.
pub struct Request<'a> {
    pub command: &'a [String],
    pub tty: bool,
    pub env: &'a [String],
    pub cwd: Option<&'a str>,
}

/// The container's `process` from its bundle's config.json, if readable.
pub fn container_process(bundle: &Path) -> Option<Value> {
    let text = std::fs::read(bundle.join("config.json")).ok()?;
    let v: Value = serde_json::from_slice(&text).ok()?;
    v.get("process").filter(|p| p.is_object()).cloned()
}

/// `base` changed as the request says: new args, terminal, env (the caller's variables replace
/// the same names), cwd.
pub fn exec_process(mut base: Value, r: &Request) -> Value {
    let env: Vec<String> = base["env"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|e| e.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    base["env"] = json!(crate::ops::merge_env(env, r.env.to_vec()));
    base["args"] = json!(r.command);
    base["terminal"] = json!(r.tty);
    if let Some(c) = r.cwd {
        base["cwd"] = json!(c);
    }
    if let Some(p) = base.as_object_mut() {
        // Sizes belong to the terminal of the container's first process, not this one.
        p.remove("consoleSize");
    }
    base
}

/// An inheritable memfd holding `process`, and the path the runtime opens it by.
pub fn process_file(process: &Value) -> Result<(OwnedFd, String)> {
    let fd = rustix::fs::memfd_create("sioci-exec-process", rustix::fs::MemfdFlags::empty())
        .context("cannot create a memfd for the exec process")?;
    let bytes = serde_json::to_vec(process)?;
    let mut written = 0;
    while written < bytes.len() {
        written +=
            rustix::io::write(&fd, &bytes[written..]).context("cannot write the exec process")?;
    }
    let path = format!("/proc/self/fd/{}", fd.as_raw_fd());
    Ok((fd, path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_and_cwd_are_kept_and_the_request_applied() {
        let base = json!({
            "terminal": true,
            "consoleSize": {"height": 1, "width": 2},
            "user": {"uid": 2000, "gid": 2000, "additionalGids": [5]},
            "args": ["/init", "--", "sh"],
            "env": ["PATH=/bin", "A=1"],
            "cwd": "/work",
            "capabilities": {"bounding": ["CAP_KILL"]},
        });
        let cmd = vec!["id".to_string(), "-u".to_string()];
        let env = vec!["A=2".to_string()];
        let p = exec_process(
            base.clone(),
            &Request {
                command: &cmd,
                tty: false,
                env: &env,
                cwd: None,
            },
        );
        assert_eq!(p["user"], base["user"]);
        assert_eq!(p["cwd"], "/work");
        assert_eq!(p["args"], json!(["id", "-u"]));
        assert_eq!(p["env"], json!(["PATH=/bin", "A=2"]));
        assert_eq!(p["terminal"], false);
        assert_eq!(p["capabilities"], base["capabilities"]);
        assert!(p.get("consoleSize").is_none());
        let p = exec_process(
            base,
            &Request {
                command: &cmd,
                tty: true,
                env: &[],
                cwd: Some("/tmp"),
            },
        );
        assert_eq!(
            (p["cwd"].as_str(), p["terminal"].as_bool()),
            (Some("/tmp"), Some(true))
        );
    }

    #[test]
    fn the_memfd_reads_back() {
        let (fd, path) = process_file(&json!({"args": ["x"]})).unwrap();
        let back: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(back["args"], json!(["x"]));
        drop(fd);
    }
}
