//! The `layered` fixture's expectations (`$SIOCI_FIXTURES/layered.expected.json`, written by
//! `scripts/mkimages`), checked either on an unpacked tree on the host or inside a container.

use crate::Ctx;
use serde_json::Value;
use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// What must and must not exist after an unpack. Paths are absolute inside the rootfs.
#[derive(Debug, Clone)]
pub struct TreeExpectation {
    /// `(path, expectation)`; see [`Present`].
    pub present: Vec<Present>,
    pub absent: Vec<String>,
    /// Each group must be one inode.
    pub hardlinks: Vec<Vec<String>>,
}

/// One path that must exist.
#[derive(Debug, Clone)]
pub struct Present {
    pub path: String,
    /// `file`, `dir` or `symlink` (a symlink is never followed).
    pub kind: String,
    /// Exact contents of a file, when given.
    pub content: Option<String>,
    /// Exact sorted listing of a directory, when given.
    pub entries: Option<Vec<String>>,
    /// Exact target of a symlink, when given.
    pub target: Option<String>,
}

/// Parse `$SIOCI_FIXTURES/layered.expected.json`.
pub fn layered_expected() -> TreeExpectation {
    let dir = crate::fixture("layered");
    let file = dir.parent().unwrap().join("layered.expected.json");
    let text = std::fs::read_to_string(&file)
        .unwrap_or_else(|e| panic!("{}: {e} (scripts/mkimages writes it)", file.display()));
    let v: Value = serde_json::from_str(&text).expect("layered.expected.json is JSON");
    let strs = |v: &Value| -> Vec<String> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap().to_string())
            .collect()
    };
    TreeExpectation {
        present: v["present"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| Present {
                path: p["path"].as_str().unwrap().into(),
                kind: p["type"].as_str().unwrap().into(),
                content: p.get("content").and_then(Value::as_str).map(Into::into),
                entries: p.get("entries").map(strs),
                target: p.get("target").and_then(Value::as_str).map(Into::into),
            })
            .collect(),
        absent: strs(&v["absent"]),
        hardlinks: v["hardlinks"]
            .as_array()
            .unwrap()
            .iter()
            .map(strs)
            .collect(),
    }
}

/// What one path turned out to be.
#[derive(Debug, Default, Clone)]
struct Seen {
    kind: String,
    target: String,
    entries: Vec<String>,
    content: Option<Vec<u8>>,
    inode: Option<u64>,
}

impl TreeExpectation {
    /// Every path to look at, once each, with whether its contents are needed.
    fn all_paths(&self) -> Vec<(String, bool)> {
        let mut want: BTreeMap<String, bool> = BTreeMap::new();
        for p in &self.present {
            *want.entry(p.path.clone()).or_default() |= p.content.is_some();
        }
        for p in self.absent.iter().chain(self.hardlinks.iter().flatten()) {
            want.entry(p.clone()).or_default();
        }
        want.into_iter().collect()
    }

    fn compare(&self, seen: &BTreeMap<String, Seen>) -> Vec<String> {
        let mut errs = Vec::new();
        let get = |p: &str| seen.get(p).cloned().unwrap_or_default();
        for p in &self.present {
            let s = get(&p.path);
            if s.kind != p.kind {
                errs.push(format!(
                    "{}: expected a {}, found {:?}",
                    p.path, p.kind, s.kind
                ));
                continue;
            }
            if let Some(c) = &p.content
                && s.content.as_deref() != Some(c.as_bytes())
            {
                errs.push(format!(
                    "{}: expected content {c:?}, found {:?}",
                    p.path,
                    s.content.map(|b| String::from_utf8_lossy(&b).into_owned())
                ));
            }
            if let Some(e) = &p.entries
                && &s.entries != e
            {
                errs.push(format!(
                    "{}: expected entries {e:?}, found {:?}",
                    p.path, s.entries
                ));
            }
            if let Some(t) = &p.target
                && &s.target != t
            {
                errs.push(format!(
                    "{}: expected target {t:?}, found {:?}",
                    p.path, s.target
                ));
            }
        }
        for a in &self.absent {
            let s = get(a);
            if s.kind != "absent" {
                errs.push(format!("{a}: must not exist, found a {}", s.kind));
            }
        }
        for group in &self.hardlinks {
            let inodes: Vec<Option<u64>> = group.iter().map(|p| get(p).inode).collect();
            if inodes.iter().any(Option::is_none) || inodes.windows(2).any(|w| w[0] != w[1]) {
                errs.push(format!(
                    "{group:?}: expected one inode (hard links), found {inodes:?}"
                ));
            }
        }
        errs
    }
}

/// Check an unpacked tree on the host (e.g. `oci-unpack` output); returns the errors.
pub fn check_tree_host(root: &Path, exp: &TreeExpectation) -> Vec<String> {
    let mut seen = BTreeMap::new();
    for (p, want_content) in exp.all_paths() {
        let full = root.join(p.trim_start_matches('/'));
        let s = match std::fs::symlink_metadata(&full) {
            Err(_) => Seen {
                kind: "absent".into(),
                ..Default::default()
            },
            Ok(m) if m.file_type().is_symlink() => Seen {
                kind: "symlink".into(),
                target: std::fs::read_link(&full)
                    .map(|t| t.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                inode: Some(m.ino()),
                ..Default::default()
            },
            Ok(m) if m.is_dir() => {
                let mut entries: Vec<String> = std::fs::read_dir(&full)
                    .map(|rd| {
                        rd.flatten()
                            .map(|e| e.file_name().to_string_lossy().into_owned())
                            .collect()
                    })
                    .unwrap_or_default();
                entries.sort();
                Seen {
                    kind: "dir".into(),
                    entries,
                    inode: Some(m.ino()),
                    ..Default::default()
                }
            }
            Ok(m) if m.is_file() => Seen {
                kind: "file".into(),
                content: want_content.then(|| std::fs::read(&full).unwrap_or_default()),
                inode: Some(m.ino()),
                ..Default::default()
            },
            Ok(m) => Seen {
                kind: "other".into(),
                inode: Some(m.ino()),
                ..Default::default()
            },
        };
        seen.insert(p, s);
    }
    exp.compare(&seen)
}

/// Busybox sh: one line `path|kind|detail|inode` per argument; an argument `c:PATH` also
/// wants the contents (hex) of a regular file.
const PROBE: &str = r#"for a in "$@"; do
  p=${a#c:}
  if [ -L "$p" ]; then echo "$p|symlink|$(readlink "$p")|$(stat -c %i "$p")"
  elif [ -d "$p" ]; then echo "$p|dir|$(ls -A "$p" | tr '\n' ',')|$(stat -c %i "$p")"
  elif [ -f "$p" ]; then
    if [ "$a" != "$p" ]; then c=$(od -An -tx1 -v "$p" | tr -d ' \n'); else c=-; fi
    echo "$p|file|$c|$(stat -c %i "$p")"
  elif [ -e "$p" ]; then echo "$p|other||"
  else echo "$p|absent||"; fi
done"#;

/// Run the checks inside a container of `image_ref` (through `ctx.front(exec ...)`); returns
/// the errors (empty: everything holds). Panics if the container itself fails.
pub fn layered_in_container_errors(
    ctx: &Ctx,
    image_ref: &str,
    exp: &TreeExpectation,
) -> Vec<String> {
    let mut args: Vec<String> = vec![
        "exec".into(),
        image_ref.into(),
        "sh".into(),
        "-c".into(),
        PROBE.into(),
        "probe".into(),
    ];
    for (p, want_content) in exp.all_paths() {
        args.push(if want_content { format!("c:{p}") } else { p });
    }
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = ctx.front(&argv);
    out.assert_code(0);
    let mut seen = BTreeMap::new();
    for line in out.stdout.lines() {
        let f: Vec<&str> = line.splitn(4, '|').collect();
        if f.len() != 4 {
            out.fail(&format!("unexpected probe line {line:?}"));
        }
        let (kind, detail) = (f[1].to_string(), f[2]);
        let mut s = Seen {
            kind: kind.clone(),
            inode: f[3].trim().parse().ok(),
            ..Default::default()
        };
        match kind.as_str() {
            "symlink" => s.target = detail.into(),
            "dir" => {
                s.entries = detail
                    .split(',')
                    .filter(|e| !e.is_empty())
                    .map(Into::into)
                    .collect();
                s.entries.sort();
            }
            "file" if detail != "-" => s.content = Some(unhex(detail)),
            _ => {}
        }
        seen.insert(f[0].to_string(), s);
    }
    exp.compare(&seen)
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len() / 2)
        .filter_map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok())
        .collect()
}

/// `check_tree_host`, except that its `all_paths` lists hard-link members a second time without
/// their content, so for those it reports "found None": their contents are checked here
/// directly instead (reported to the harness owner).
pub fn layered_errors(root: &Path, exp: &TreeExpectation) -> Vec<String> {
    let linked: Vec<&String> = exp.hardlinks.iter().flatten().collect();
    let mut errs: Vec<String> = check_tree_host(root, exp)
        .into_iter()
        .filter(|e| {
            !(e.ends_with("found None") && linked.iter().any(|l| e.starts_with(&format!("{l}:"))))
        })
        .collect();
    for p in exp.present.iter().filter(|p| linked.contains(&&p.path)) {
        if let Some(want) = &p.content {
            let got = std::fs::read(root.join(p.path.trim_start_matches('/'))).unwrap_or_default();
            if got != want.as_bytes() {
                errs.push(format!(
                    "{}: content {:?}, expected {want:?}",
                    p.path,
                    String::from_utf8_lossy(&got)
                ));
            }
        }
    }
    errs
}
