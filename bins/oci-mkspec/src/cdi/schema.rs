//! A CDI specification file (`cdiVersion`, `kind`, `devices`, spec-wide `containerEdits`) as
//! read from JSON or YAML, and its validation: the version range this launcher reads, the
//! fields each version introduced, the names, and every edit. Unknown fields are errors, as in
//! the reference implementation's strict parsing.

use super::names;
use anyhow::{Context, Result, bail};
use serde::{Deserialize, Deserializer};
use std::collections::BTreeMap;

/// A JSON `null` reads as the empty value (Go's nil slice or map).
fn nullable<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    #[serde(rename = "cdiVersion")]
    pub version: String,
    pub kind: String,
    #[serde(default, deserialize_with = "nullable")]
    pub annotations: BTreeMap<String, String>,
    #[serde(default, deserialize_with = "nullable")]
    pub devices: Vec<Device>,
    #[serde(default, rename = "containerEdits", deserialize_with = "nullable")]
    pub container_edits: ContainerEdits,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Device {
    pub name: String,
    #[serde(default, deserialize_with = "nullable")]
    pub annotations: BTreeMap<String, String>,
    #[serde(default, rename = "containerEdits", deserialize_with = "nullable")]
    pub container_edits: ContainerEdits,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ContainerEdits {
    #[serde(default, deserialize_with = "nullable")]
    pub env: Vec<String>,
    #[serde(default, deserialize_with = "nullable")]
    pub device_nodes: Vec<DeviceNode>,
    #[serde(default, deserialize_with = "nullable")]
    pub hooks: Vec<Hook>,
    #[serde(default, deserialize_with = "nullable")]
    pub mounts: Vec<Mount>,
    #[serde(default)]
    pub intel_rdt: Option<IntelRdt>,
    /// SPEC.md spells it `additionalGIDs`; the reference parser matches either.
    #[serde(default, alias = "additionalGIDs", deserialize_with = "nullable")]
    pub additional_gids: Vec<u32>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct DeviceNode {
    pub path: String,
    #[serde(default, deserialize_with = "nullable")]
    pub host_path: String,
    #[serde(default, rename = "type", deserialize_with = "nullable")]
    pub typ: String,
    #[serde(default, deserialize_with = "nullable")]
    pub major: i64,
    #[serde(default, deserialize_with = "nullable")]
    pub minor: i64,
    #[serde(default)]
    pub file_mode: Option<u32>,
    #[serde(default, deserialize_with = "nullable")]
    pub permissions: String,
    #[serde(default)]
    pub uid: Option<u32>,
    #[serde(default)]
    pub gid: Option<u32>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Mount {
    pub host_path: String,
    pub container_path: String,
    #[serde(default, deserialize_with = "nullable")]
    pub options: Vec<String>,
    #[serde(default, rename = "type", deserialize_with = "nullable")]
    pub typ: String,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Hook {
    pub hook_name: String,
    pub path: String,
    #[serde(default, deserialize_with = "nullable")]
    pub args: Vec<String>,
    #[serde(default, deserialize_with = "nullable")]
    pub env: Vec<String>,
    #[serde(default)]
    pub timeout: Option<i64>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct IntelRdt {
    #[serde(default, rename = "closID", deserialize_with = "nullable")]
    pub clos_id: String,
    #[serde(default, rename = "l3CacheSchema", deserialize_with = "nullable")]
    pub l3_cache_schema: String,
    #[serde(default, rename = "memBwSchema", deserialize_with = "nullable")]
    pub mem_bw_schema: String,
    #[serde(default, rename = "enableCMT", deserialize_with = "nullable")]
    pub enable_cmt: bool,
    #[serde(default, rename = "enableMBM", deserialize_with = "nullable")]
    pub enable_mbm: bool,
}

/// The versions read here, oldest first. 0.8.0 and 1.0.0 changed only the reference
/// implementation's API, not the format; 1.1.0 added network devices, which an unprivileged
/// launcher sharing the host network cannot move.
const VERSIONS: [&str; 7] = [
    "0.3.0", "0.4.0", "0.5.0", "0.6.0", "0.7.0", "0.8.0", "1.0.0",
];

/// The hook names of the runtime spec (CDI passes them through).
pub const HOOK_NAMES: [&str; 6] = [
    "prestart",
    "createRuntime",
    "createContainer",
    "startContainer",
    "poststart",
    "poststop",
];

fn version_rank(v: &str) -> Option<usize> {
    VERSIONS
        .iter()
        .position(|k| *k == v.strip_prefix('v').unwrap_or(v))
}

impl Spec {
    fn all_edits(&self) -> impl Iterator<Item = &ContainerEdits> {
        std::iter::once(&self.container_edits)
            .chain(self.devices.iter().map(|d| &d.container_edits))
    }

    /// The oldest version whose fields this spec uses.
    fn required_version(&self) -> &'static str {
        let edits: Vec<&ContainerEdits> = self.all_edits().collect();
        if edits
            .iter()
            .any(|e| e.intel_rdt.is_some() || !e.additional_gids.is_empty())
        {
            return "0.7.0";
        }
        let class_has_dot = self
            .kind
            .split_once('/')
            .is_some_and(|(_, c)| c.contains('.'));
        if !self.annotations.is_empty()
            || self.devices.iter().any(|d| !d.annotations.is_empty())
            || class_has_dot
        {
            return "0.6.0";
        }
        if self
            .devices
            .iter()
            .any(|d| d.name.starts_with(|c: char| c.is_ascii_digit()))
            || edits
                .iter()
                .any(|e| e.device_nodes.iter().any(|n| !n.host_path.is_empty()))
        {
            return "0.5.0";
        }
        if edits
            .iter()
            .any(|e| e.mounts.iter().any(|m| !m.typ.is_empty()))
        {
            return "0.4.0";
        }
        "0.3.0"
    }

    /// Check everything the reference implementation checks when it loads a spec; the vendor
    /// and class come back.
    pub fn validate(&self) -> Result<(String, String)> {
        let Some(rank) = version_rank(&self.version) else {
            bail!(
                "unsupported cdiVersion {:?} (this launcher reads {} to {})",
                self.version,
                VERSIONS[0],
                VERSIONS[VERSIONS.len() - 1]
            );
        };
        let required = self.required_version();
        if version_rank(required).unwrap_or(0) > rank {
            bail!(
                "cdiVersion {} is too old for the fields it uses: the spec version must be at least v{required}",
                self.version
            );
        }
        let (vendor, class) = names::parse_kind(&self.kind)?;
        self.container_edits
            .validate()
            .context("spec-wide containerEdits")?;
        if self.devices.is_empty() {
            bail!("invalid spec, no devices");
        }
        let mut seen = std::collections::HashSet::new();
        for d in &self.devices {
            names::check_device_name(&d.name).with_context(|| format!("device {:?}", d.name))?;
            if !seen.insert(d.name.as_str()) {
                bail!("invalid spec, multiple device {:?}", d.name);
            }
            if d.container_edits == ContainerEdits::default() {
                bail!("invalid device {:?}: empty device edits", d.name);
            }
            d.container_edits
                .validate()
                .with_context(|| format!("invalid device {:?}", d.name))?;
        }
        Ok((vendor, class))
    }
}

fn check_env(env: &[String]) -> Result<()> {
    for v in env {
        if v.find('=').is_none_or(|i| i == 0) {
            bail!("invalid environment variable {v:?}");
        }
    }
    Ok(())
}

impl ContainerEdits {
    fn validate(&self) -> Result<()> {
        check_env(&self.env)?;
        for d in &self.device_nodes {
            if d.path.is_empty() {
                bail!("invalid (empty) device path");
            }
            if !["", "b", "c", "u", "p"].contains(&d.typ.as_str()) {
                bail!("device {:?}: invalid type {:?}", d.path, d.typ);
            }
            let p = d.permissions.as_str();
            if !p.is_empty() && p != "none" && !p.chars().all(|c| "rwm".contains(c)) {
                bail!("device {:?}: invalid permissions {p:?}", d.path);
            }
        }
        for h in &self.hooks {
            if !HOOK_NAMES.contains(&h.hook_name.as_str()) {
                bail!("invalid hook name {:?}", h.hook_name);
            }
            if h.path.is_empty() {
                bail!("invalid hook {:?} with empty path", h.hook_name);
            }
            check_env(&h.env).with_context(|| format!("invalid hook {:?}", h.hook_name))?;
        }
        for m in &self.mounts {
            if m.host_path.is_empty() {
                bail!("invalid mount, empty host path");
            }
            if m.container_path.is_empty() {
                bail!("invalid mount, empty container path");
            }
        }
        if let Some(r) = &self.intel_rdt {
            let c = r.clos_id.as_str();
            if c != "/" && (c.len() >= 4096 || c == "." || c == ".." || c.contains(['/', '\n'])) {
                bail!("invalid intelRdt closID {c:?}");
            }
        }
        Ok(())
    }

    /// Add `other` after these edits (the reference implementation's `Append`).
    pub fn append(&mut self, other: &ContainerEdits) {
        self.env.extend(other.env.iter().cloned());
        self.device_nodes.extend(other.device_nodes.iter().cloned());
        self.hooks.extend(other.hooks.iter().cloned());
        self.mounts.extend(other.mounts.iter().cloned());
        if other.intel_rdt.is_some() {
            self.intel_rdt = other.intel_rdt.clone();
        }
        self.additional_gids
            .extend(other.additional_gids.iter().copied());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(json: &str) -> Result<(String, String)> {
        let s: Spec = serde_json::from_str(json)?;
        s.validate()
    }

    #[test]
    fn minimal_spec_is_valid() {
        let r = spec(
            r#"{"cdiVersion":"0.3.0","kind":"vendor.com/device","devices":[{"name":"d","containerEdits":{"env":["A=1"]}}]}"#,
        )
        .unwrap();
        assert_eq!(r, ("vendor.com".into(), "device".into()));
    }

    #[test]
    fn nulls_read_as_empty() {
        spec(r#"{"cdiVersion":"0.3.0","kind":"v.com/c","containerEdits":null,"devices":[{"name":"d","containerEdits":{"env":["A=1"],"mounts":null}}]}"#).unwrap();
    }

    #[test]
    fn versions_and_the_fields_they_need() {
        let with = |v: &str, edits: &str| {
            spec(&format!(
                r#"{{"cdiVersion":"{v}","kind":"v.com/c","devices":[{{"name":"d","containerEdits":{edits}}}]}}"#
            ))
        };
        for v in VERSIONS {
            with(v, r#"{"env":["A=1"]}"#).unwrap();
        }
        with("v0.5.0", r#"{"env":["A=1"]}"#).unwrap();
        for v in ["0.2.0", "1.1.0", "0.9.0", "", "latest"] {
            let e = with(v, r#"{"env":["A=1"]}"#).unwrap_err().to_string();
            assert!(e.contains("unsupported cdiVersion"), "{e}");
        }
        let e = with(
            "0.3.0",
            r#"{"mounts":[{"hostPath":"/a","containerPath":"/b","type":"bind"}]}"#,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("at least v0.4.0"), "{e}");
        with(
            "0.4.0",
            r#"{"mounts":[{"hostPath":"/a","containerPath":"/b","type":"bind"}]}"#,
        )
        .unwrap();
        let e = with(
            "0.4.0",
            r#"{"deviceNodes":[{"path":"/dev/x","hostPath":"/dev/null"}]}"#,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("at least v0.5.0"), "{e}");
        let e = with("0.6.0", r#"{"additionalGids":[5]}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("at least v0.7.0"), "{e}");
        with("0.7.0", r#"{"additionalGIDs":[5]}"#).unwrap();
        let e = spec(r#"{"cdiVersion":"0.5.0","kind":"v.com/c.x","devices":[{"name":"d","containerEdits":{"env":["A=1"]}}]}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("at least v0.6.0"), "{e}");
    }

    #[test]
    fn broken_specs() {
        for (json, want) in [
            (
                r#"{"cdiVersion":"0.3.0","kind":"vendor","devices":[{"name":"d","containerEdits":{"env":["A=1"]}}]}"#,
                "invalid kind",
            ),
            (
                r#"{"cdiVersion":"0.3.0","kind":"v.com/c","devices":[]}"#,
                "no devices",
            ),
            (
                r#"{"cdiVersion":"0.3.0","kind":"v.com/c","devices":[{"name":"d","containerEdits":{}}]}"#,
                "empty device edits",
            ),
            (
                r#"{"cdiVersion":"0.3.0","kind":"v.com/c","devices":[{"name":"-d","containerEdits":{"env":["A=1"]}}]}"#,
                "should start",
            ),
            (
                r#"{"cdiVersion":"0.3.0","kind":"v.com/c","devices":[{"name":"d","containerEdits":{"env":["A=1"]}},{"name":"d","containerEdits":{"env":["A=1"]}}]}"#,
                "multiple device",
            ),
            (
                r#"{"cdiVersion":"0.3.0","kind":"v.com/c","devices":[{"name":"d","containerEdits":{"env":["=1"]}}]}"#,
                "invalid environment",
            ),
            (
                r#"{"cdiVersion":"0.3.0","kind":"v.com/c","devices":[{"name":"d","containerEdits":{"deviceNodes":[{"path":"/dev/x","type":"z"}]}}]}"#,
                "invalid type",
            ),
            (
                r#"{"cdiVersion":"0.3.0","kind":"v.com/c","devices":[{"name":"d","containerEdits":{"deviceNodes":[{"path":"/dev/x","permissions":"rwx"}]}}]}"#,
                "invalid permissions",
            ),
            (
                r#"{"cdiVersion":"0.3.0","kind":"v.com/c","devices":[{"name":"d","containerEdits":{"hooks":[{"hookName":"later","path":"/bin/true"}]}}]}"#,
                "invalid hook name",
            ),
            (
                r#"{"cdiVersion":"0.3.0","kind":"v.com/c","devices":[{"name":"d","containerEdits":{"mounts":[{"hostPath":"","containerPath":"/x"}]}}]}"#,
                "empty host path",
            ),
            (
                r#"{"cdiVersion":"0.3.0","kind":"v.com/c","containerEdits":{"env":["bad"]},"devices":[{"name":"d","containerEdits":{"env":["A=1"]}}]}"#,
                "spec-wide",
            ),
        ] {
            let e = format!("{:#}", spec(json).unwrap_err());
            assert!(e.contains(want), "{json}: {e}");
        }
        let e = serde_json::from_str::<Spec>(
            r#"{"cdiVersion":"0.3.0","kind":"v.com/c","devices":[],"extra":1}"#,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("unknown field"), "{e}");
    }
}
