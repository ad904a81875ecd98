//! The CDI spec directories, read once: every `*.json` and `*.yaml` file of each directory in
//! name order, later directories overriding earlier ones for a device of the same name, as the
//! reference implementation's cache does. A broken spec anywhere, or the same device defined
//! twice in one directory, is an error, as its refresh reports it.
//!
//! The files decide what reaches the container (device nodes, mounts, hooks run by the
//! runtime), so each directory must be a trusted tree (owned by you or root, writable by nobody
//! else, reached without following a link we did not make) and each file a regular file owned
//! by you or root and writable by nobody else, of bounded size.

use super::names::{self, Qualified};
use super::schema::{ContainerEdits, Spec};
use anyhow::{Context, Result, bail};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// SingularityCE's (and CDI's) default spec directories, lowest priority first.
pub const DEFAULT_DIRS: [&str; 2] = ["/etc/cdi", "/var/run/cdi"];

/// The largest spec file read (an NVIDIA spec for eight GPUs is a few tens of KiB).
pub const MAX_SPEC_BYTES: u64 = 4 << 20;

struct Loaded {
    path: PathBuf,
    priority: usize,
    vendor: String,
    class: String,
    spec: Spec,
}

/// Every spec of the directories, and which spec and device each qualified name resolves to.
pub struct Registry {
    specs: Vec<Loaded>,
    devices: BTreeMap<Qualified, (usize, usize)>,
}

/// Parse one spec file's bytes by its extension.
pub fn parse(name: &str, bytes: &[u8]) -> Result<Spec> {
    if name.ends_with(".yaml") {
        let value = super::yaml::to_json(bytes)?;
        Ok(serde_json::from_value(value)?)
    } else {
        Ok(serde_json::from_slice(bytes)?)
    }
}

impl Registry {
    /// Read the spec directories in `dirs` (lowest priority first); missing ones are skipped.
    pub fn load(dirs: &[String]) -> Result<Registry> {
        let mut reg = Registry {
            specs: Vec::new(),
            devices: BTreeMap::new(),
        };
        for (priority, dir) in dirs.iter().enumerate() {
            let Some(d) = common::trusted::open_dir_if_exists(Path::new(dir))
                .with_context(|| format!("CDI spec directory {dir}"))?
            else {
                continue;
            };
            for (name, is_dir) in d.entries()? {
                let Some(name) = name.to_str().map(str::to_string) else {
                    continue;
                };
                if is_dir || !(name.ends_with(".json") || name.ends_with(".yaml")) {
                    continue;
                }
                let path = d.path().join(&name);
                let loaded = (|| -> Result<Loaded> {
                    let bytes = d.read_file(name.as_ref(), MAX_SPEC_BYTES)?;
                    let spec = parse(&name, &bytes)?;
                    let (vendor, class) = spec.validate()?;
                    Ok(Loaded {
                        path: path.clone(),
                        priority,
                        vendor,
                        class,
                        spec,
                    })
                })()
                .with_context(|| format!("failed to load CDI spec {}", path.display()))?;
                reg.add(loaded)?;
            }
        }
        Ok(reg)
    }

    fn add(&mut self, s: Loaded) -> Result<()> {
        let idx = self.specs.len();
        for (di, d) in s.spec.devices.iter().enumerate() {
            let q = Qualified {
                vendor: s.vendor.clone(),
                class: s.class.clone(),
                name: d.name.clone(),
            };
            if let Some(&(other, _)) = self.devices.get(&q) {
                let o = &self.specs[other];
                if o.priority == s.priority {
                    bail!(
                        "conflicting device {q} (specs {}, {})",
                        s.path.display(),
                        o.path.display()
                    );
                }
            }
            self.devices.insert(q, (idx, di));
        }
        self.specs.push(s);
        Ok(())
    }

    /// The edits for `requested`, in the reference implementation's order: for each device,
    /// its spec's spec-wide edits (once per spec) and then its own. `KIND=all` names the
    /// device `all` when the spec defines one, else every device of the kind.
    pub fn edits_for(&self, requested: &[Qualified]) -> Result<ContainerEdits> {
        let mut picked: Vec<(usize, usize)> = Vec::new();
        let mut unresolved = Vec::new();
        for q in requested {
            match self.devices.get(q) {
                Some(&at) => picked.push(at),
                None if q.name == "all" => {
                    let all: Vec<(usize, usize)> = self
                        .devices
                        .iter()
                        .filter(|(k, _)| k.vendor == q.vendor && k.class == q.class)
                        .map(|(_, &at)| at)
                        .collect();
                    if all.is_empty() {
                        unresolved.push(q.to_string());
                    }
                    picked.extend(all);
                }
                None => unresolved.push(q.to_string()),
            }
        }
        if !unresolved.is_empty() {
            bail!("unresolvable CDI devices {}", unresolved.join(", "));
        }
        let mut edits = ContainerEdits::default();
        let mut specs_done = Vec::new();
        let mut devices_done = Vec::new();
        for (si, di) in picked {
            if devices_done.contains(&(si, di)) {
                continue;
            }
            devices_done.push((si, di));
            let spec = &self.specs[si].spec;
            if !specs_done.contains(&si) {
                specs_done.push(si);
                edits.append(&spec.container_edits);
            }
            edits.append(&spec.devices[di].container_edits);
        }
        Ok(edits)
    }

    /// Whether any spec defines a device of `kind` (`vendor/class`).
    pub fn has_kind(&self, kind: &str) -> bool {
        self.devices.keys().any(|q| q.kind() == kind)
    }
}

/// Parse every `--device` value; the first that is not a fully qualified CDI name is an error
/// in SingularityCE's words.
pub fn parse_requested(values: &[String]) -> Result<Vec<Qualified>> {
    values
        .iter()
        .map(|v| {
            names::parse_qualified(v)
                .with_context(|| format!("string {v:?} does not represent a valid CDI device"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn dir_with(files: &[(&str, &str)]) -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        for (n, text) in files {
            let p = d.path().join(n);
            std::fs::write(&p, text).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        }
        d
    }

    fn spec_json(kind: &str, dev: &str, env: &str) -> String {
        format!(
            r#"{{"cdiVersion":"0.5.0","kind":"{kind}","containerEdits":{{"env":["WIDE={dev}"]}},"devices":[{{"name":"{dev}","containerEdits":{{"env":["{env}"]}}}}]}}"#
        )
    }

    fn q(s: &str) -> Qualified {
        names::parse_qualified(s).unwrap()
    }

    fn dirs(ds: &[&tempfile::TempDir]) -> Vec<String> {
        ds.iter().map(|d| d.path().display().to_string()).collect()
    }

    #[test]
    fn later_directories_override_earlier_ones() {
        let low = dir_with(&[("a.json", &spec_json("v.com/c", "d0", "WHO=low"))]);
        let high = dir_with(&[("b.json", &spec_json("v.com/c", "d0", "WHO=high"))]);
        let reg = Registry::load(&dirs(&[&low, &high])).unwrap();
        let e = reg.edits_for(&[q("v.com/c=d0")]).unwrap();
        assert_eq!(e.env, vec!["WIDE=d0", "WHO=high"]);
        let reg = Registry::load(&dirs(&[&high, &low])).unwrap();
        let e = reg.edits_for(&[q("v.com/c=d0")]).unwrap();
        assert_eq!(e.env, vec!["WIDE=d0", "WHO=low"]);
    }

    #[test]
    fn same_device_twice_in_one_directory_conflicts() {
        let d = dir_with(&[
            ("a.json", &spec_json("v.com/c", "d0", "A=1")),
            ("b.json", &spec_json("v.com/c", "d0", "A=2")),
        ]);
        let e = format!("{:#}", Registry::load(&dirs(&[&d])).err().unwrap());
        assert!(e.contains("conflicting device v.com/c=d0"), "{e}");
    }

    #[test]
    fn unknown_devices_are_named_and_all_expands() {
        let d = dir_with(&[
            ("a.json", &spec_json("v.com/c", "d0", "A=1")),
            ("b.json", &spec_json("v.com/c", "d1", "B=1")),
            ("ignored.txt", "not a spec"),
        ]);
        let reg = Registry::load(&dirs(&[&d])).unwrap();
        let e = reg
            .edits_for(&[q("v.com/c=d0"), q("v.com/c=nope"), q("x.com/y=z")])
            .unwrap_err()
            .to_string();
        assert_eq!(e, "unresolvable CDI devices v.com/c=nope, x.com/y=z");
        let e = reg.edits_for(&[q("v.com/c=all")]).unwrap();
        assert_eq!(e.env, vec!["WIDE=d0", "A=1", "WIDE=d1", "B=1"]);
        // A device asked for twice is applied once.
        let e = reg.edits_for(&[q("v.com/c=d0"), q("v.com/c=d0")]).unwrap();
        assert_eq!(e.env, vec!["WIDE=d0", "A=1"]);
        assert!(reg.has_kind("v.com/c") && !reg.has_kind("v.com/x"));
    }

    #[test]
    fn a_broken_spec_is_named() {
        let d = dir_with(&[
            ("a.json", &spec_json("v.com/c", "d0", "A=1")),
            ("b.json", "{not json"),
        ]);
        let e = format!("{:#}", Registry::load(&dirs(&[&d])).err().unwrap());
        assert!(
            e.contains("failed to load CDI spec") && e.contains("b.json"),
            "{e}"
        );
    }

    #[test]
    fn untrusted_files_and_directories_are_refused() {
        let d = dir_with(&[("a.json", &spec_json("v.com/c", "d0", "A=1"))]);
        std::fs::set_permissions(
            d.path().join("a.json"),
            std::fs::Permissions::from_mode(0o666),
        )
        .unwrap();
        let e = format!("{:#}", Registry::load(&dirs(&[&d])).err().unwrap());
        assert!(e.contains("writable by group or others"), "{e}");
        let d = dir_with(&[("a.json", &spec_json("v.com/c", "d0", "A=1"))]);
        std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        let e = format!("{:#}", Registry::load(&dirs(&[&d])).err().unwrap());
        assert!(
            e.contains("CDI spec directory") && e.contains("writable"),
            "{e}"
        );
        // A missing directory is no error.
        let reg = Registry::load(&["/nonexistent/cdi".to_string()]).unwrap();
        assert!(!reg.has_kind("v.com/c"));
    }

    #[test]
    fn requested_names() {
        assert!(parse_requested(&["v.com/c=d0".into()]).is_ok());
        let e = parse_requested(&["v.com/c=d0".into(), "bogus".into()])
            .unwrap_err()
            .to_string();
        assert_eq!(e, "string \"bogus\" does not represent a valid CDI device");
    }
}
