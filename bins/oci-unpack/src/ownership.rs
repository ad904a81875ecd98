//! How file owners from the layers are applied: `keep` or `flatten`.
//!
//! * `keep`: every entry gets the uid/gid the layer names. Needs uid 0 with more than one ID
//!   mapped: real root, or root of the starter's outer user namespace with the subordinate
//!   ranges mapped (owners then land on the host as the mapped subordinate IDs).
//! * `flatten`: everything is owned by the caller; the owner the layer named, when not `0:0`, is
//!   recorded in the `user.rootlesscontainers` xattr in the protobuf form umoci and the
//!   rootlesscontainers.io convention use, so a later tool can restore it.

use anyhow::{Result, bail};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ownership {
    Keep,
    Flatten,
}

impl Ownership {
    pub fn as_str(self) -> &'static str {
        match self {
            Ownership::Keep => "keep",
            Ownership::Flatten => "flatten",
        }
    }
}

/// Name of the xattr that carries the original owner in a flattened tree.
pub const ROOTLESS_XATTR: &str = "user.rootlesscontainers";

/// Parse `--ownership auto|keep|flatten`; `auto` (or none) detects.
pub fn choose(opt: Option<&str>) -> Result<Ownership> {
    let detected = detect();
    match opt.unwrap_or("auto") {
        "auto" => Ok(detected),
        "flatten" => Ok(Ownership::Flatten),
        "keep" => {
            if detected != Ownership::Keep {
                bail!(
                    "--ownership keep needs root, or uid 0 in a user namespace with subordinate IDs mapped (run under oci-userns-starter); this process can only flatten owners"
                );
            }
            Ok(Ownership::Keep)
        }
        other => bail!("--ownership must be auto, keep or flatten, not '{other}'"),
    }
}

/// Where the chosen ownership is applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    /// In this process.
    Here,
    /// In a user namespace with the caller's subordinate IDs mapped (oci-userns-starter): the
    /// only place an unprivileged caller can keep owners.
    SubidUserns,
}

/// [`choose`] for a tree built in the cache: an unprivileged caller with subordinate IDs keeps
/// owners too, by unpacking as root of the same user namespace the container will run in, so
/// files land on the host as the caller's subordinate IDs (the cache key says `keep`).
pub fn choose_cached(opt: Option<&str>) -> Result<(Ownership, Place)> {
    let wants_keep = matches!(opt.unwrap_or("auto"), "auto" | "keep");
    if wants_keep && !rustix::process::geteuid().is_root() && caller_has_subids()? {
        return Ok((Ownership::Keep, Place::SubidUserns));
    }
    Ok((choose(opt)?, Place::Here))
}

/// Whether oci-userns-starter would map the caller's subordinate ranges (it decides the same
/// way, from the same files and `SINGULARITY_OCI_SINGLE_ID`).
fn caller_has_subids() -> Result<bool> {
    let (_, plan) = common::subid::outer_plan_for_caller()?;
    Ok(matches!(plan, common::subid::OuterPlan::Subids { .. }))
}

/// `keep` when we are uid 0 and both ID maps cover more than one ID, else `flatten`.
pub fn detect() -> Ownership {
    if !rustix::process::geteuid().is_root() {
        return Ownership::Flatten;
    }
    let mapped = |file: &str| {
        std::fs::read_to_string(file)
            .map(|s| mapped_ids(&s))
            .unwrap_or(0)
    };
    if mapped("/proc/self/uid_map") > 1 && mapped("/proc/self/gid_map") > 1 {
        Ownership::Keep
    } else {
        Ownership::Flatten
    }
}

/// Total IDs mapped by a `/proc/PID/uid_map` text.
pub fn mapped_ids(map: &str) -> u64 {
    map.lines()
        .filter_map(|l| l.split_whitespace().nth(2)?.parse::<u64>().ok())
        .sum()
}

/// "Leave this ID as the file's real owner" in the rootlesscontainers protobuf. A flattened
/// file really belongs to the caller, who is uid/gid 0 in the container, so 0 is written as
/// this (proto3 could not tell a literal 0 from an absent field anyway).
const NOOP_ID: u32 = u32::MAX;

/// The `user.rootlesscontainers` payload for an owner: protobuf `Resource { uint32 uid = 1;
/// uint32 gid = 2; }`, byte-for-byte what umoci writes. `None` for `0:0`, which is represented
/// by the xattr's absence.
pub fn rootless_payload(uid: u32, gid: u32) -> Option<Vec<u8>> {
    if uid == 0 && gid == 0 {
        return None;
    }
    let mut out = Vec::with_capacity(12);
    for (tag, v) in [(0x08u8, uid), (0x10u8, gid)] {
        out.push(tag);
        varint(&mut out, if v == 0 { NOOP_ID } else { v });
    }
    Some(out)
}

fn varint(out: &mut Vec<u8>, mut v: u32) {
    while v >= 0x80 {
        out.push((v as u8 & 0x7f) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_mapped_ids() {
        assert_eq!(mapped_ids("         0          0 4294967295\n"), 4294967295);
        assert_eq!(mapped_ids("0 1001 1\n"), 1);
        assert_eq!(mapped_ids("0 1001 1\n1 100000 65536\n"), 65537);
    }

    #[test]
    fn payload_is_protobuf() {
        assert_eq!(rootless_payload(0, 0), None);
        assert_eq!(
            rootless_payload(1000, 0).unwrap(),
            vec![0x08, 0xe8, 0x07, 0x10, 0xff, 0xff, 0xff, 0xff, 0x0f]
        );
        assert_eq!(
            rootless_payload(0, 42).unwrap(),
            vec![0x08, 0xff, 0xff, 0xff, 0xff, 0x0f, 0x10, 42]
        );
        assert_eq!(
            rootless_payload(65534, 65534).unwrap(),
            vec![0x08, 0xfe, 0xff, 0x03, 0x10, 0xfe, 0xff, 0x03]
        );
    }
}
