//! `exec`: run a command in a running container. The shim is replaced by the runtime, so the
//! command's exit status and signals pass through untouched, with no proxy.
//!
//! runc's `exec` starts from the container's own `process` (its user and groups, working
//! directory, environment, capabilities, rlimits) and changes only what the caller asked for.
//! crun 1.8's `exec` with plain flags starts from nothing: uid 0, `/`, no environment. So for
//! crun the process is taken from the bundle's config.json, with the arguments (and the
//! terminal, environment and working directory the caller gave) replaced, and handed to
//! `crun exec --process`. The JSON goes through a memfd named as `/proc/self/fd/N`, so nothing
//! is left to clean up when the runtime replaces us.

use super::{Target, enter};
use crate::lifecycle::host::Host;
use crate::lifecycle::process::Runtime;
use crate::lifecycle::runtime::RuntimeKind;
use anyhow::{Context, Result};
use serde_json::{Value, json};
use std::ffi::OsString;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;

/// What the caller of `exec` asked for.
pub struct Request<'a> {
    pub command: &'a [String],
    pub tty: bool,
    pub env: &'a [String],
    pub cwd: Option<&'a str>,
}

/// Join the container's namespace (required), then become the runtime. Returns only on
/// failure.
pub fn exec(rt: &dyn Runtime, host: &dyn Host, t: &Target, req: &Request) -> Result<i32> {
    enter(host, t, true)?;
    let (_keep_open_until_exec, words) = words(rt.kind(), t, req)?;
    Err(rt.replace(&words))
}

/// The runtime's words for the request, and the memfd they name (kept open until the exec).
pub fn words(
    kind: RuntimeKind,
    t: &Target,
    req: &Request,
) -> Result<(Option<OwnedFd>, Vec<OsString>)> {
    let base = (kind == RuntimeKind::Crun)
        .then(|| t.sd.and_then(|s| s.bundle()))
        .flatten()
        .and_then(|b| container_process(&b));
    if let Some(base) = base {
        let process = exec_process(base, req);
        let (fd, path) = process_file(&process)?;
        let words = ["exec", "--process", &path, t.id]
            .iter()
            .map(OsString::from)
            .collect();
        return Ok((Some(fd), words));
    }
    let mut w: Vec<OsString> = vec!["exec".into()];
    if req.tty {
        w.push("--tty".into());
    }
    for e in req.env {
        w.extend(["--env".into(), e.into()]);
    }
    if let Some(c) = req.cwd {
        w.extend(["--cwd".into(), c.into()]);
    }
    w.push(t.id.into());
    w.extend(req.command.iter().map(OsString::from));
    Ok((None, w))
}

/// The container's `process` from its bundle's config.json, if readable.
pub fn container_process(bundle: &Path) -> Option<Value> {
    let text = std::fs::read(bundle.join("config.json")).ok()?;
    let v: Value = serde_json::from_slice(&text).ok()?;
    v.get("process").filter(|p| p.is_object()).cloned()
}

/// `base` with `extra` applied on top: a NAME in `extra` replaces the same NAME in `base`.
pub fn merge_env(base: Vec<String>, extra: Vec<String>) -> Vec<String> {
    let name = |kv: &str| kv.split_once('=').map_or(kv, |(k, _)| k).to_string();
    let overridden: std::collections::HashSet<String> = extra.iter().map(|e| name(e)).collect();
    base.into_iter()
        .filter(|e| !overridden.contains(&name(e)))
        .chain(extra)
        .collect()
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
    base["env"] = json!(merge_env(env, r.env.to_vec()));
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
    use crate::lifecycle::fake::Status;
    use crate::lifecycle::host::FakeHost;
    use crate::lifecycle::ops::testing::World;
    use crate::lifecycle::userns::Relation;

    fn v(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    fn base() -> Value {
        json!({
            "terminal": true,
            "consoleSize": {"height": 1, "width": 2},
            "user": {"uid": 2000, "gid": 2000, "additionalGids": [5]},
            "args": ["/init", "--", "sh"],
            "env": ["PATH=/bin", "A=1"],
            "cwd": "/work",
            "capabilities": {"bounding": ["CAP_KILL"]},
        })
    }

    #[test]
    fn user_env_overrides_the_container_env() {
        assert_eq!(
            merge_env(v(&["PATH=/bin", "A=1", "B=2"]), v(&["A=x y", "C=3"])),
            v(&["PATH=/bin", "B=2", "A=x y", "C=3"])
        );
        assert_eq!(merge_env(v(&["A=1"]), vec![]), v(&["A=1"]));
        assert_eq!(merge_env(vec![], v(&["A=1"])), v(&["A=1"]));
    }

    #[test]
    fn user_and_cwd_are_kept_and_the_request_applied() {
        let cmd = v(&["id", "-u"]);
        let env = v(&["A=2"]);
        let p = exec_process(
            base(),
            &Request {
                command: &cmd,
                tty: false,
                env: &env,
                cwd: None,
            },
        );
        assert_eq!(p["user"], base()["user"]);
        assert_eq!(p["cwd"], "/work");
        assert_eq!(p["args"], json!(["id", "-u"]));
        assert_eq!(p["env"], json!(["PATH=/bin", "A=2"]));
        assert_eq!(p["terminal"], false);
        assert_eq!(p["capabilities"], base()["capabilities"]);
        assert!(p.get("consoleSize").is_none());
    }

    #[test]
    fn terminal_and_cwd_requests() {
        let cmd = v(&["sh"]);
        let p = exec_process(
            base(),
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

    fn request<'a>(cmd: &'a [String], env: &'a [String]) -> Request<'a> {
        Request {
            command: cmd,
            tty: true,
            env,
            cwd: Some("/w"),
        }
    }

    #[test]
    fn runc_gets_plain_flags() {
        let w = World::new(FakeHost::user());
        let sd = w.container("c", Status::Running);
        let cmd = v(&["ls", "-l"]);
        let env = v(&["A=1"]);
        let (fd, words) = words(RuntimeKind::Runc, &Target::of(&sd), &request(&cmd, &env)).unwrap();
        assert!(fd.is_none());
        let words: Vec<_> = words.iter().map(|w| w.to_str().unwrap()).collect();
        assert_eq!(
            words,
            [
                "exec", "--tty", "--env", "A=1", "--cwd", "/w", "c", "ls", "-l"
            ]
        );
    }

    #[test]
    fn crun_gets_the_containers_process() {
        let w = World::crun(FakeHost::user());
        let sd = w.container("c", Status::Running);
        let b = sd.bundle().unwrap();
        std::fs::write(
            b.join("config.json"),
            serde_json::to_vec(&json!({"process": base()})).unwrap(),
        )
        .unwrap();
        let cmd = v(&["id"]);
        let (fd, words) = words(RuntimeKind::Crun, &Target::of(&sd), &request(&cmd, &[])).unwrap();
        assert!(fd.is_some());
        assert_eq!(words[0], "exec");
        assert_eq!(words[1], "--process");
        assert_eq!(words[3], "c");
        let p: Value = serde_json::from_slice(&std::fs::read(&words[2]).unwrap()).unwrap();
        assert_eq!(p["user"]["uid"], 2000);
        assert_eq!(p["args"], json!(["id"]));
    }

    #[test]
    fn crun_without_a_readable_config_falls_back_to_flags() {
        let w = World::crun(FakeHost::user());
        let cmd = v(&["id"]);
        let (fd, words) = words(
            RuntimeKind::Crun,
            &Target { id: "c", sd: None },
            &request(&cmd, &[]),
        )
        .unwrap();
        assert!(fd.is_none());
        assert_eq!(words.last().unwrap(), "id");
        drop(w);
    }

    #[test]
    fn exec_joins_then_replaces() {
        let w = World::new(FakeHost::user());
        let sd = w.container("c", Status::Running);
        let cmd = v(&["true"]);
        let e = exec(&w.rt, &w.host, &Target::of(&sd), &request(&cmd, &[])).unwrap_err();
        assert_eq!(e.to_string(), "fake runtime: exec recorded");
        assert_eq!(w.host.events().len(), 1, "joined first");
        assert_eq!(
            w.rt.replaced.borrow().as_ref().unwrap().last().unwrap(),
            "true"
        );
    }

    #[test]
    fn exec_into_an_unreachable_namespace_fails_before_the_runtime() {
        let w = World::new(FakeHost {
            relation: Some(Relation::Unreachable),
            ..FakeHost::user()
        });
        let sd = w.container("c", Status::Running);
        let cmd = v(&["true"]);
        let e = exec(&w.rt, &w.host, &Target::of(&sd), &request(&cmd, &[])).unwrap_err();
        assert!(e.to_string().contains("cannot be joined from here"), "{e}");
        assert!(w.rt.replaced.borrow().is_none());
    }

    #[test]
    fn exec_as_host_root_does_not_join() {
        let w = World::new(FakeHost::host_root());
        let sd = w.container("c", Status::Running);
        let cmd = v(&["true"]);
        let _ = exec(&w.rt, &w.host, &Target::of(&sd), &request(&cmd, &[]));
        assert!(w.host.events().is_empty());
        assert!(w.rt.replaced.borrow().is_some());
    }
}
