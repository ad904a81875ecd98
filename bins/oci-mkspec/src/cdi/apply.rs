//! Apply resolved CDI edits to config.json (pure): the reference implementation's
//! `ContainerEdits.Apply`, with one difference for containers that are not made by host root.
//!
//! * `env`: replaces a variable of the same name, else is appended.
//! * `deviceNodes`: for host root, a `linux.devices` entry (replacing one of the same path;
//!   owner defaulting to the process user when that is not root) and, for block and character
//!   devices, a device-cgroup rule allowing its `permissions` (`rwm` when empty, none for
//!   `none`), after a deny-all rule when the spec has none yet (`spec::build` gives root's
//!   containers one; without it crun leaves the cgroup open to every device, and an allow
//!   adds nothing). In a user namespace nobody may `mknod` and the device cgroup is not ours, so the
//!   host node (`hostPath`) is bind mounted at `path` instead (podman does the same for rootless
//!   containers; crun and runc's own fallback would bind the container path from the host, the
//!   wrong node when they differ). `permissions` cannot be enforced there: a read-only mount
//!   does not stop writes to a device node, and only the device cgroup could.
//! * `mounts`: replace a mount of the same destination, else are appended; then all mounts are
//!   ordered by depth (stable), so a mount never hides one below it. No `idmap` option is
//!   added in a user namespace as the reference does: the inner namespace here gives back the
//!   host's IDs, and runc 1.1 cannot make idmapped mounts.
//! * `hooks`: appended to the hook list of their name; `intelRdt` sets `linux.intelRdt`;
//!   `additionalGids` (0 ignored) join `process.user.additionalGids` once each.

use super::schema::{ContainerEdits, DeviceNode};
use anyhow::Result;
use oci_spec::runtime::Spec;
use serde_json::{Map, Value, json};

fn obj<'a>(v: &'a mut Value, key: &str) -> &'a mut Map<String, Value> {
    let m = v.as_object_mut().expect("a JSON object");
    let e = m.entry(key.to_string()).or_insert_with(|| json!({}));
    if !e.is_object() {
        *e = json!({});
    }
    e.as_object_mut().expect("just made an object")
}

fn arr<'a>(m: &'a mut Map<String, Value>, key: &str) -> &'a mut Vec<Value> {
    let e = m.entry(key.to_string()).or_insert_with(|| json!([]));
    if !e.is_array() {
        *e = json!([]);
    }
    e.as_array_mut().expect("just made an array")
}

fn set_env(config: &mut Value, vars: &[String]) {
    let env = arr(obj(config, "process"), "env");
    for var in vars {
        let key = var.split_once('=').map_or(var.as_str(), |(k, _)| k);
        let same = env.iter_mut().find(|e| {
            e.as_str()
                .is_some_and(|s| s.split_once('=').map_or(s, |(k, _)| k) == key)
        });
        match same {
            Some(e) => *e = json!(var),
            None => env.push(json!(var)),
        }
    }
}

fn process_id(config: &Value, which: &str) -> Option<u32> {
    config["process"]["user"][which]
        .as_u64()
        .and_then(|v| u32::try_from(v).ok())
        .filter(|v| *v > 0)
}

/// A device node for host root: `linux.devices` and the cgroup rule.
fn add_node(config: &mut Value, d: &DeviceNode) {
    let uid = d.uid.or_else(|| process_id(config, "uid"));
    let gid = d.gid.or_else(|| process_id(config, "gid"));
    let mut dev = json!({"path": d.path, "type": d.typ, "major": d.major, "minor": d.minor});
    for (k, v) in [("fileMode", d.file_mode), ("uid", uid), ("gid", gid)] {
        if let Some(v) = v {
            dev[k] = json!(v);
        }
    }
    let linux = obj(config, "linux");
    let devices = arr(linux, "devices");
    devices.retain(|x| x["path"] != json!(d.path));
    devices.push(dev);
    if d.typ == "b" || d.typ == "c" {
        let access = match d.permissions.as_str() {
            "" => "rwm",
            "none" => "",
            p => p,
        };
        let resources = linux
            .entry("resources".to_string())
            .or_insert_with(|| json!({}));
        if !resources.is_object() {
            *resources = json!({});
        }
        let rules = arr(resources.as_object_mut().expect("an object"), "devices");
        if rules.is_empty() {
            rules.push(json!({"allow": false, "access": "rwm"}));
        }
        rules.push(json!({"allow": true, "type": d.typ, "major": d.major, "minor": d.minor, "access": access}));
    }
}

/// A device node in a user namespace: a bind mount of the host node.
fn node_bind(d: &DeviceNode) -> Value {
    let host = if d.host_path.is_empty() {
        &d.path
    } else {
        &d.host_path
    };
    json!({"destination": d.path, "type": "bind", "source": host, "options": ["bind", "nosuid"]})
}

fn depth(mount: &Value) -> usize {
    let dest = mount["destination"].as_str().unwrap_or_default();
    std::path::Path::new(dest)
        .components()
        .filter(|c| matches!(c, std::path::Component::Normal(_)))
        .count()
}

fn add_mounts(config: &mut Value, new: Vec<Value>) {
    if new.is_empty() {
        return;
    }
    let m = config.as_object_mut().expect("a JSON object");
    let mounts = arr(m, "mounts");
    for mount in new {
        if let Some(i) = mounts
            .iter()
            .position(|x| x["destination"] == mount["destination"])
        {
            mounts.remove(i);
        }
        mounts.push(mount);
    }
    mounts.sort_by_key(depth);
}

/// Apply `edits` to `config`; `bind_nodes`: the container is made in a user namespace.
pub fn apply(config: Spec, edits: &ContainerEdits, bind_nodes: bool) -> Result<Spec> {
    let mut v = serde_json::to_value(&config)?;
    if !edits.env.is_empty() {
        set_env(&mut v, &edits.env);
    }
    let mut mounts = Vec::new();
    for d in &edits.device_nodes {
        if bind_nodes {
            mounts.push(node_bind(d));
        } else {
            add_node(&mut v, d);
        }
    }
    for m in &edits.mounts {
        let mut mount = json!({"destination": m.container_path, "source": m.host_path});
        if !m.typ.is_empty() {
            mount["type"] = json!(m.typ);
        }
        if !m.options.is_empty() {
            mount["options"] = json!(m.options);
        }
        mounts.push(mount);
    }
    add_mounts(&mut v, mounts);
    for h in &edits.hooks {
        let mut hook = json!({"path": h.path});
        if !h.args.is_empty() {
            hook["args"] = json!(h.args);
        }
        if !h.env.is_empty() {
            hook["env"] = json!(h.env);
        }
        if let Some(t) = h.timeout {
            hook["timeout"] = json!(t);
        }
        arr(obj(&mut v, "hooks"), &h.hook_name).push(hook);
    }
    if let Some(r) = &edits.intel_rdt {
        let mut rdt = Map::new();
        for (k, s) in [
            ("closID", &r.clos_id),
            ("l3CacheSchema", &r.l3_cache_schema),
            ("memBwSchema", &r.mem_bw_schema),
        ] {
            if !s.is_empty() {
                rdt.insert(k.into(), json!(s));
            }
        }
        for (k, b) in [("enableCMT", r.enable_cmt), ("enableMBM", r.enable_mbm)] {
            if b {
                rdt.insert(k.into(), json!(true));
            }
        }
        obj(&mut v, "linux").insert("intelRdt".into(), Value::Object(rdt));
    }
    let gids: Vec<u32> = edits
        .additional_gids
        .iter()
        .copied()
        .filter(|g| *g != 0)
        .collect();
    if !gids.is_empty() {
        let process = obj(&mut v, "process");
        let user = process
            .entry("user".to_string())
            .or_insert_with(|| json!({}));
        let list = arr(
            user.as_object_mut().expect("process.user is an object"),
            "additionalGids",
        );
        for g in gids {
            if !list.contains(&json!(g)) {
                list.push(json!(g));
            }
        }
    }
    Ok(serde_json::from_value(v)?)
}
