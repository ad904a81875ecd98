//! `state` of one container, as the runtime prints it, and `list` of all of them: the
//! runtime's JSON list as runc's table, with the real owner.

use super::{Target, simple};
use crate::lifecycle::error;
use crate::lifecycle::host::Host;
use crate::lifecycle::process::{Call, Output, Runtime};
use anyhow::{Context, Result, bail};
use std::path::Path;

pub fn state(rt: &dyn Runtime, host: &dyn Host, t: &Target) -> Result<Output> {
    simple(rt, host, t, "state", &[], "")
}

/// The runtime's list as a table under runc's headings. OWNER is the user that owns each
/// container's runtime state on the host: crun records the creator's uid inside its user
/// namespace (0 for every unprivileged container, shown as root), while the state directory
/// itself belongs to the user.
pub fn list(rt: &dyn Runtime) -> Result<Output> {
    let mut out = list_json(rt)?;
    let text = String::from_utf8_lossy(&out.stdout);
    // runc prints `null` for no containers.
    let entries: Vec<serde_json::Value> = match text.trim() {
        "" | "null" => Vec::new(),
        t => serde_json::from_str(t).context("the runtime's list is not JSON")?,
    };
    let rows: Vec<[String; 6]> = entries
        .iter()
        .map(|e| {
            let field = |k: &str| match &e[k] {
                serde_json::Value::String(s) => s.clone(),
                serde_json::Value::Null => String::new(),
                v => v.to_string(),
            };
            let id = field("id");
            let owner = state_owner(rt.root(), &id).unwrap_or_else(|| field("owner"));
            [
                id,
                field("pid"),
                field("status"),
                field("bundle"),
                field("created"),
                owner,
            ]
        })
        .collect();
    out.stdout = list_table(&rows).into_bytes();
    Ok(out)
}

/// How often a listing that raced a container's deletion is tried again.
const LIST_TRIES: usize = 5;

/// The runtime's JSON list. runc reads the root's entries and then each one's state: a container
/// deleted in between (any other run ending, in a root shared by all of root's containers) fails
/// the whole listing with `stat ROOT/ID: no such file or directory`, so that is tried again.
fn list_json(rt: &dyn Runtime) -> Result<Output> {
    let call = Call::new(["list", "--format", "json"]);
    let mut tries = 1;
    loop {
        let out = rt.call(&call)?;
        if out.success() {
            return Ok(out);
        }
        let raced = String::from_utf8_lossy(&out.stderr).contains("no such file or directory");
        if !raced || tries == LIST_TRIES {
            bail!(error::failure("list", &out.stderr, &rt.name(), out.code));
        }
        tries += 1;
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// The name (else the number) of the user owning the runtime's state directory of `id`.
fn state_owner(root: &Path, id: &str) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    if id.is_empty() || id.contains('/') || id.starts_with('.') {
        return None;
    }
    let uid = std::fs::symlink_metadata(root.join(id)).ok()?.uid();
    Some(
        nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
            .ok()
            .flatten()
            .map(|u| u.name)
            .unwrap_or_else(|| uid.to_string()),
    )
}

/// The rows under runc's headings, each column as wide as its widest cell plus three spaces.
fn list_table(rows: &[[String; 6]]) -> String {
    const HEAD: [&str; 6] = ["ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER"];
    let mut width = HEAD.map(str::len);
    for r in rows {
        for (w, c) in width.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: [&str; 6]| {
        let mut l = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 < cells.len() {
                l.push_str(&format!("{c:<w$}   ", w = width[i]));
            } else {
                l.push_str(c);
            }
        }
        l.push('\n');
        l
    };
    let mut t = line(HEAD);
    for r in rows {
        t.push_str(&line([&r[0], &r[1], &r[2], &r[3], &r[4], &r[5]]));
    }
    t
}

/// The `status` field of the runtime's state JSON.
pub fn status_of(out: &Output) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    v.get("status")?.as_str().map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lifecycle::fake::Status;
    use crate::lifecycle::host::FakeHost;
    use crate::lifecycle::ops::testing::World;
    use crate::lifecycle::ops::{delete, kill, pause, start};

    fn st(w: &World, t: &Target) -> String {
        status_of(&state(&w.rt, &w.host, t).unwrap()).unwrap()
    }

    #[test]
    fn the_whole_life_of_a_container() {
        let w = World::new(FakeHost::user());
        let sd = w.container("c", Status::Created);
        let t = Target::of(&sd);
        assert_eq!(st(&w, &t), "created");
        start::start(&w.rt, &w.host, &t).unwrap();
        assert_eq!(st(&w, &t), "running");
        pause::pause(&w.rt, &w.host, &t).unwrap();
        assert_eq!(st(&w, &t), "paused");
        pause::resume(&w.rt, &w.host, &t).unwrap();
        assert_eq!(st(&w, &t), "running");
        kill::kill(&w.rt, &w.host, &t, "TERM").unwrap();
        assert_eq!(st(&w, &t), "stopped");
        delete::delete(&w.rt, &w.host, &t, false).unwrap();
        drop(sd);
        assert!(!w.root().join("containers/c").exists());
        let e = state(&w.rt, &w.host, &Target { id: "c", sd: None })
            .unwrap_err()
            .to_string();
        assert_eq!(e, "state failed: container does not exist: c");
    }

    #[test]
    fn state_prints_the_runtimes_json() {
        let w = World::new(FakeHost::user());
        let sd = w.container("c", Status::Running);
        let out = state(&w.rt, &w.host, &Target::of(&sd)).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["id"], "c");
    }

    #[test]
    fn list_shows_every_container() {
        let w = World::new(FakeHost::user());
        w.rt.add("a", Status::Running);
        w.rt.add("b", Status::Created);
        let out = String::from_utf8(list(&w.rt).unwrap().stdout).unwrap();
        let ids: Vec<&str> = out.lines().filter_map(|l| l.split(' ').next()).collect();
        assert_eq!(ids, ["ID", "a", "b"], "{out}");
    }

    #[test]
    fn list_tries_again_after_racing_a_deletion() {
        let w = World::new(FakeHost::user());
        w.rt.add("a", Status::Running);
        let raced = "stat /run/singularity-oci/b: no such file or directory";
        w.rt.fail_next("list", raced);
        w.rt.fail_next("list", raced);
        let out = String::from_utf8(list(&w.rt).unwrap().stdout).unwrap();
        assert!(out.lines().nth(1).unwrap().starts_with("a "), "{out}");
        // Any other failure is reported at once.
        w.rt.fail_next("list", "open /run/x: permission denied");
        let e = list(&w.rt).unwrap_err().to_string();
        assert!(e.contains("permission denied"), "{e}");
        assert_eq!(w.rt.ops().iter().filter(|o| *o == "list").count(), 4);
    }

    #[test]
    fn list_table_aligns_columns_under_runcs_headings() {
        let row = |id: &str, owner: &str| {
            [id, "12", "running", "/tmp/b", "2026-01-01T00:00:00Z", owner].map(String::from)
        };
        let t = list_table(&[row("a-long-id", "sioci-tester"), row("b", "root")]);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[0].starts_with("ID          PID   STATUS    BUNDLE"));
        assert!(lines[1].ends_with("sioci-tester") && lines[2].ends_with("root"));
        assert_eq!(lines[1].find("12"), lines[0].find("PID"));
        assert_eq!(
            list_table(&[]),
            "ID   PID   STATUS   BUNDLE   CREATED   OWNER\n"
        );
    }

    #[test]
    fn status_of_garbage() {
        assert_eq!(status_of(&Output::default()), None);
    }
}
