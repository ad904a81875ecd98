//! Subordinate IDs (`/etc/subuid`, `/etc/subgid`) and the ID maps built from them.
//!
//! The outer user namespace (made by `oci-userns-starter`) maps the host user to 0 and, when the
//! user has subordinate ranges, those ranges to 1..N. `oci-mkspec` then asks the runtime for an
//! inner namespace with the *reverse* map so the container process is the host uid again. Both
//! stages call [`outer_plan`] so they always agree on which of the two shapes is in use.

use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};

/// One `start:count` range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdRange {
    pub start: u32,
    pub count: u32,
}

/// One `container host size` line of a uid_map or gid_map.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdMapEntry {
    pub container: u32,
    pub host: u32,
    pub size: u32,
}

/// Which shape the outer user namespace has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OuterPlan {
    /// Host uid/gid -> 0 only. Used when the user has no subordinate ranges.
    Single,
    /// Host uid/gid -> 0, and subordinate ranges -> 1..N (through newuidmap/newgidmap).
    Subids {
        uids: IdRange,
        gids: IdRange,
        newuidmap: PathBuf,
        newgidmap: PathBuf,
    },
}

/// Set to `1` to force the single-ID map even when subordinate IDs exist.
pub const ENV_FORCE_SINGLE: &str = "SINGULARITY_OCI_SINGLE_ID";

pub const SUBUID_FILE: &str = "/etc/subuid";
pub const SUBGID_FILE: &str = "/etc/subgid";

/// Find the first range for `name` or `uid` in a subuid/subgid file's contents.
/// A malformed line is an error naming the file and line: silently skipping it would make the
/// launcher fall back to a single-ID map for reasons nobody can see.
pub fn find_range(contents: &str, file: &str, name: &str, id: u32) -> Result<Option<IdRange>> {
    let id_str = id.to_string();
    for (n, raw) in contents.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let f: Vec<&str> = line.split(':').collect();
        let parsed = (f.len() == 3)
            .then(|| Some((f[0], f[1].parse::<u32>().ok()?, f[2].parse::<u32>().ok()?)))
            .flatten();
        let Some((owner, start, count)) = parsed else {
            bail!(
                "{file} line {} is malformed: '{line}' (expected NAME:START:COUNT)",
                n + 1
            );
        };
        if start.checked_add(count).is_none() {
            bail!(
                "{file} line {} is malformed: '{line}' (the range runs past the largest ID)",
                n + 1
            );
        }
        if owner == name || owner == id_str {
            if count == 0 {
                continue;
            }
            return Ok(Some(IdRange { start, count }));
        }
    }
    Ok(None)
}

fn read_range(file: &str, name: &str, id: u32) -> Result<Option<IdRange>> {
    match std::fs::read_to_string(file) {
        Ok(s) => find_range(&s, file, name, id),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("cannot read {file}")),
    }
}

/// Locate a setuid helper such as `newuidmap` on PATH (then the system directories), and check
/// that it can actually do its job: it must be setuid root or carry file capabilities.
pub fn find_map_helper(name: &str) -> Result<PathBuf> {
    let Some(p) = crate::runtime::which(name) else {
        bail!(
            "{name} not found: install the 'uidmap' package (needed for the subordinate ID ranges in /etc/subuid)"
        );
    };
    check_privileged_helper(&p)?;
    Ok(p)
}

fn check_privileged_helper(p: &Path) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(p).with_context(|| format!("cannot stat {}", p.display()))?;
    let setuid_root = m.mode() & 0o4000 != 0 && m.uid() == 0;
    let has_caps = xattr_present(p, "security.capability");
    if !setuid_root && !has_caps {
        bail!(
            "{} is neither setuid root nor has file capabilities, so it cannot write ID maps (reinstall the 'uidmap' package)",
            p.display()
        );
    }
    Ok(())
}

fn xattr_present(p: &Path, name: &str) -> bool {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let (Ok(cp), Ok(cn)) = (CString::new(p.as_os_str().as_bytes()), CString::new(name)) else {
        return false;
    };
    // SAFETY: a size query with a null buffer; both strings are NUL-terminated.
    unsafe { libc::getxattr(cp.as_ptr(), cn.as_ptr(), std::ptr::null_mut(), 0) > 0 }
}

/// Decide the outer map for host user `name`/`uid` (gid ranges are keyed by the same user).
pub fn outer_plan(name: &str, uid: u32) -> Result<OuterPlan> {
    if std::env::var(ENV_FORCE_SINGLE).is_ok_and(|v| v == "1") {
        return Ok(OuterPlan::Single);
    }
    let uids = read_range(SUBUID_FILE, name, uid)?;
    let gids = read_range(SUBGID_FILE, name, uid)?;
    match (uids, gids) {
        (Some(uids), Some(gids)) => Ok(OuterPlan::Subids {
            uids,
            gids,
            newuidmap: find_map_helper("newuidmap")?,
            newgidmap: find_map_helper("newgidmap")?,
        }),
        _ => Ok(OuterPlan::Single),
    }
}

/// [`outer_plan`] for the calling process's real uid, named as the password database names it.
pub fn outer_plan_for_caller() -> Result<(String, OuterPlan)> {
    let uid = nix::unistd::getuid().as_raw();
    let name = crate::identity::host_user(uid)?
        .map(|u| u.name)
        .unwrap_or_else(|| uid.to_string());
    let plan = outer_plan(&name, uid)?;
    Ok((name, plan))
}

/// The one-line notice printed when the single-ID fallback is used.
pub fn single_id_notice(name: &str) -> String {
    format!(
        "no subordinate IDs for '{name}' in {SUBUID_FILE} and {SUBGID_FILE}: using a single-ID user namespace (files owned by other users in the image appear as yours)"
    )
}

/// Outer map lines (container, host, size) for the starter: host id -> 0, range -> 1..N.
pub fn outer_map(host_id: u32, range: Option<IdRange>) -> Vec<IdMapEntry> {
    let mut v = vec![IdMapEntry {
        container: 0,
        host: host_id,
        size: 1,
    }];
    if let Some(r) = range {
        v.push(IdMapEntry {
            container: 1,
            host: r.start,
            size: r.count,
        });
    }
    v
}

/// Smallest subordinate range the reverse map accepts, as in SingularityCE.
pub const MIN_REVERSE_RANGE: u32 = 65536;

/// The inner (runtime) map that undoes the outer map so container id `target` is the host user.
///
/// IDs on the right are *outer* IDs: outer 0 is the host user, outer 1..=S the subordinate range.
/// `range_size` is `None` for the single-ID outer map.
pub fn reverse_map(target: u32, range_size: Option<u32>, what: &str) -> Result<Vec<IdMapEntry>> {
    let Some(s) = range_size else {
        return Ok(vec![IdMapEntry {
            container: target,
            host: 0,
            size: 1,
        }]);
    };
    if s < MIN_REVERSE_RANGE {
        bail!(
            "{what} range size ({s}) must be at least {MIN_REVERSE_RANGE}: ask your administrator for a larger /etc/sub{what} entry"
        );
    }
    let mut v = Vec::with_capacity(3);
    if target < s {
        if target > 0 {
            v.push(IdMapEntry {
                container: 0,
                host: 1,
                size: target,
            });
        }
        v.push(IdMapEntry {
            container: target,
            host: 0,
            size: 1,
        });
        if s > target {
            v.push(IdMapEntry {
                container: target + 1,
                host: target + 1,
                size: s - target,
            });
        }
    } else {
        v.push(IdMapEntry {
            container: 0,
            host: 1,
            size: s,
        });
        v.push(IdMapEntry {
            container: target,
            host: 0,
            size: 1,
        });
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_by_name_or_uid() {
        let f = "# c\nbob:200000:65536\n1001:100000:65536\n";
        assert_eq!(
            find_range(f, "f", "alice", 1001).unwrap(),
            Some(IdRange {
                start: 100000,
                count: 65536
            })
        );
        assert_eq!(
            find_range(f, "f", "bob", 5).unwrap(),
            Some(IdRange {
                start: 200000,
                count: 65536
            })
        );
        assert_eq!(find_range(f, "f", "carol", 7).unwrap(), None);
    }

    #[test]
    fn malformed_line_names_file_and_line() {
        let e = find_range("ok:1:2\nbad line\n", "/etc/subuid", "x", 1).unwrap_err();
        assert!(e.to_string().contains("/etc/subuid line 2"), "{e}");
    }

    #[test]
    fn range_past_the_largest_id_is_malformed() {
        assert!(find_range("u:4294967295:2\n", "f", "u", 1).is_err());
        assert!(find_range("u:4294967294:1\n", "f", "u", 1).is_ok());
    }

    #[test]
    fn reverse_map_three_entries_when_uid_inside_range() {
        let m = reverse_map(1000, Some(65536), "uid").unwrap();
        assert_eq!(
            m,
            vec![
                IdMapEntry {
                    container: 0,
                    host: 1,
                    size: 1000
                },
                IdMapEntry {
                    container: 1000,
                    host: 0,
                    size: 1
                },
                IdMapEntry {
                    container: 1001,
                    host: 1001,
                    size: 64536
                },
            ]
        );
    }

    #[test]
    fn reverse_map_two_entries_when_uid_beyond_range() {
        let m = reverse_map(70000, Some(65536), "uid").unwrap();
        assert_eq!(
            m,
            vec![
                IdMapEntry {
                    container: 0,
                    host: 1,
                    size: 65536
                },
                IdMapEntry {
                    container: 70000,
                    host: 0,
                    size: 1
                },
            ]
        );
    }

    #[test]
    fn reverse_map_small_range_is_refused_with_its_own_name() {
        let e = reverse_map(1000, Some(1000), "gid").unwrap_err();
        assert!(e.to_string().starts_with("gid range size (1000)"), "{e}");
    }

    #[test]
    fn single_map() {
        assert_eq!(
            reverse_map(1234, None, "uid").unwrap(),
            vec![IdMapEntry {
                container: 1234,
                host: 0,
                size: 1
            }]
        );
    }
}
