//! Process capabilities: SingularityCE's OCI defaults (none for a user, the runtime's default
//! set for root), `--keep-privs`, `--no-privs`, `--add-caps` and `--drop-caps`. The tests pin
//! the five `/proc/self/status` masks SingularityCE's own capability tests expect.

use oci_spec::runtime::{Capabilities, Capability, LinuxCapabilities};

/// Capability names by bit number (linux/capability.h, up to CAP_CHECKPOINT_RESTORE = 40).
pub const CAP_NAMES: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

/// The OCI default set Singularity starts from (mask 0x20a80425fb).
pub const DEFAULT_CAPS: &[&str] = &[
    "CAP_NET_RAW",
    "CAP_NET_BIND_SERVICE",
    "CAP_AUDIT_READ",
    "CAP_AUDIT_WRITE",
    "CAP_DAC_OVERRIDE",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_MKNOD",
    "CAP_CHOWN",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SYS_CHROOT",
];

/// Capability names present in a `/proc/<pid>/status` hex mask.
pub fn names_from_mask(mask: u64) -> Vec<String> {
    CAP_NAMES
        .iter()
        .enumerate()
        .filter(|(bit, _)| mask & (1u64 << bit) != 0)
        .map(|(_, n)| n.to_string())
        .collect()
}

/// The bit mask of a set of names.
#[cfg(test)]
pub fn mask_of(names: &[String]) -> u64 {
    names
        .iter()
        .filter_map(|n| CAP_NAMES.iter().position(|c| c == n))
        .fold(0, |m, b| m | (1u64 << b))
}

/// Normalise a user-given name: case-insensitive, `CAP_` optional. `None` when unknown.
pub fn normalise(name: &str) -> Option<String> {
    let up = name.trim().to_ascii_uppercase();
    let full = if up.starts_with("CAP_") {
        up
    } else {
        format!("CAP_{up}")
    };
    CAP_NAMES.contains(&full.as_str()).then_some(full)
}

/// Parse a comma list for `--add-caps`/`--drop-caps`; unknown names are returned separately
/// (Singularity warns and ignores them). `all` means every capability.
pub fn parse_list(list: Option<&str>) -> (Vec<String>, Vec<String>) {
    let mut known = Vec::new();
    let mut unknown = Vec::new();
    for item in list
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        if item.eq_ignore_ascii_case("all") {
            known.extend(CAP_NAMES.iter().map(|s| s.to_string()));
        } else if let Some(n) = normalise(item) {
            known.push(n);
        } else {
            unknown.push(item.to_string());
        }
    }
    (known, unknown)
}

pub struct CapInputs<'a> {
    pub target_uid: u32,
    pub no_privs: bool,
    pub keep_privs: bool,
    /// The set `--keep-privs` keeps: the effective set the container's creator holds.
    pub current: &'a [String],
    pub add: &'a [String],
    pub drop: &'a [String],
}

fn dedup(v: impl IntoIterator<Item = String>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for s in v {
        if !out.contains(&s) {
            out.push(s);
        }
    }
    out
}

/// The typed capability of a name of [`CAP_NAMES`] (oci-spec knows every one of them; a unit
/// test checks it).
fn capability(name: &str) -> Capability {
    serde_json::from_value(serde_json::Value::String(name.to_string()))
        .unwrap_or_else(|_| panic!("{name} is not a capability oci-spec knows"))
}

fn set_of(names: &[String]) -> Capabilities {
    names.iter().map(|n| capability(n)).collect()
}

/// Where a capability goes in config.json's lists. oci-spec keeps them as sets, so order means
/// nothing to a runtime; a fixed order makes the same inputs give the same bytes: the default
/// set first in SingularityCE's order, then the others by bit number.
pub fn listing_rank(name: &str) -> usize {
    DEFAULT_CAPS
        .iter()
        .position(|c| *c == name)
        .or_else(|| {
            CAP_NAMES
                .iter()
                .position(|c| *c == name)
                .map(|bit| DEFAULT_CAPS.len() + bit)
        })
        .unwrap_or(usize::MAX)
}

/// `process.capabilities` per Singularity's getProcessCapabilities.
pub fn process_caps(i: &CapInputs) -> LinuxCapabilities {
    let base: Vec<String> = if i.no_privs {
        vec![]
    } else if i.keep_privs {
        i.current.to_vec()
    } else {
        DEFAULT_CAPS.iter().map(|s| s.to_string()).collect()
    };
    let caps: Vec<String> = dedup(base.into_iter().chain(i.add.iter().cloned()))
        .into_iter()
        .filter(|c| !i.drop.contains(c))
        .collect();
    let mut out = LinuxCapabilities::default();
    out.set_bounding(Some(set_of(&caps)));
    let (held, inherited) = if i.target_uid == 0 {
        (caps, Vec::new())
    } else {
        let added: Vec<String> = dedup(i.add.iter().cloned())
            .into_iter()
            .filter(|c| !i.drop.contains(c))
            .collect();
        (added.clone(), added)
    };
    out.set_permitted(Some(set_of(&held)))
        .set_effective(Some(set_of(&held)))
        .set_inheritable(Some(set_of(&inherited)))
        .set_ambient(Some(set_of(&inherited)));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    #[test]
    fn oci_spec_knows_every_capability_name() {
        for n in CAP_NAMES {
            assert_eq!(serde_json::to_value(capability(n)).unwrap(), *n);
        }
    }

    #[test]
    fn listing_puts_the_default_set_first() {
        let mut all: Vec<&str> = CAP_NAMES.to_vec();
        all.sort_by_key(|n| listing_rank(n));
        assert_eq!(&all[..DEFAULT_CAPS.len()], DEFAULT_CAPS);
        assert_eq!(all[DEFAULT_CAPS.len()], "CAP_DAC_READ_SEARCH");
    }

    fn names(v: &Value) -> Vec<String> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap().to_string())
            .collect()
    }
    fn masks(v: &Value) -> [u64; 5] {
        [
            "inheritable",
            "permitted",
            "effective",
            "ambient",
            "bounding",
        ]
        .map(|k| mask_of(&names(&v[k])))
    }
    const DEFAULT: u64 = 0x20a80425fb;
    const SYS_ADMIN: u64 = 0x200000;
    fn full() -> Vec<String> {
        names_from_mask((1u64 << 41) - 1)
    }
    fn run(uid: u32, no_privs: bool, keep: bool, add: &str, drop: &str) -> [u64; 5] {
        let cur = full();
        let (a, _) = parse_list(Some(add));
        let (d, _) = parse_list(Some(drop));
        let caps = process_caps(&CapInputs {
            target_uid: uid,
            no_privs,
            keep_privs: keep,
            current: &cur,
            add: &a,
            drop: &d,
        });
        masks(&serde_json::to_value(caps).unwrap())
    }

    #[test]
    fn default_mask_value() {
        let d: Vec<String> = DEFAULT_CAPS.iter().map(|s| s.to_string()).collect();
        assert_eq!(mask_of(&d), DEFAULT);
    }

    // The masks SingularityCE's ociCapabilities tests read from /proc/self/status, per case:
    // [Inh, Prm, Eff, Amb, Bnd].
    #[test]
    fn e2e_masks() {
        let f = (1u64 << 41) - 1;
        assert_eq!(run(1000, false, false, "", ""), [0, 0, 0, 0, DEFAULT]); // DefaultUser
        assert_eq!(
            run(0, false, false, "", ""),
            [0, DEFAULT, DEFAULT, 0, DEFAULT]
        ); // DefaultRoot
        assert_eq!(run(1000, true, false, "", ""), [0; 5]); // NoPrivs user
        assert_eq!(run(0, true, false, "", ""), [0; 5]); // NoPrivs root
        assert_eq!(run(1000, false, true, "", ""), [0, 0, 0, 0, f]); // KeepPrivsUser
        assert_eq!(run(0, false, true, "", ""), [0, f, f, 0, f]); // KeepPrivsRoot
        assert_eq!(
            run(1000, false, false, "", "CAP_CHOWN"),
            [0, 0, 0, 0, DEFAULT - 1]
        );
        assert_eq!(
            run(0, false, false, "", "chown"),
            [0, DEFAULT - 1, DEFAULT - 1, 0, DEFAULT - 1]
        );
        assert_eq!(
            run(1000, false, false, "CAP_SYS_ADMIN", ""),
            [
                SYS_ADMIN,
                SYS_ADMIN,
                SYS_ADMIN,
                SYS_ADMIN,
                DEFAULT | SYS_ADMIN
            ]
        );
        let r = DEFAULT | SYS_ADMIN;
        assert_eq!(run(0, false, false, "sys_admin", ""), [0, r, r, 0, r]);
    }

    #[test]
    fn unknown_names_are_reported() {
        let (k, u) = parse_list(Some("CAP_CHOWN, bogus ,net_raw"));
        assert_eq!(k, vec!["CAP_CHOWN", "CAP_NET_RAW"]);
        assert_eq!(u, vec!["bogus"]);
    }

    #[test]
    fn mask_round_trip() {
        assert_eq!(mask_of(&names_from_mask(0x1fffeffffff)), 0x1fffeffffff);
    }
}
