//! Finding and joining a container's *outer* user namespace.
//!
//! An unprivileged container lives in the outer user namespace made by `oci-userns-starter`
//! (host uid -> 0, subordinate ids -> 1..N), and by default in an inner namespace below it that
//! the runtime created from `config.json`. That outer namespace outlives the invocation that made
//! it: it is kept alive by the container (or its conmon). A later invocation of the same user
//! that wants to `exec` into the container must run the runtime *inside that same* outer
//! namespace: the runtime's `setns` into the container's namespaces needs CAP_SYS_ADMIN over
//! them, which only the outer namespace's root has (a fresh starter namespace is a sibling and
//! gets EPERM).
//!
//! From the host (initial) user namespace, the owner of the outer namespace (our host uid) has
//! every capability in it, so `setns(CLONE_NEWUSER)` works without privileges. Credentials are
//! kept as they are (like `nsenter --preserve-credentials`): our host uid simply *is* uid 0
//! there, and calling setgroups would fail where the starter denied it (single-ID map).
//!
//! Whether to join is decided by [`decide`], a pure function of what the caller is and where
//! the container's namespace sits, so the rule is tested without namespaces; [`enter`] applies
//! it.

use anyhow::{Context, Result, bail};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;

/// `ioctl_ns(2)`: `_IO(0xb7, 0x2)`, the parent of a user namespace.
const NS_GET_PARENT: libc::c_ulong = 0xb702;
/// `ioctl_ns(2)`: `_IO(0xb7, 0x4)`, the owner uid of a user namespace.
const NS_GET_OWNER_UID: libc::c_ulong = 0xb704;

/// True when this process is in the host's initial user namespace (its uid_map is the identity
/// map of all 2^32-1 ids). `/proc/1/ns/user` cannot be read by unprivileged users, so compare
/// the map rather than the namespace inode.
pub fn in_initial_userns() -> bool {
    std::fs::read_to_string("/proc/self/uid_map").is_ok_and(|m| is_identity_map(&m))
}

fn is_identity_map(m: &str) -> bool {
    let f: Vec<&str> = m.split_whitespace().collect();
    f == ["0", "0", "4294967295"]
}

fn ns_id(fd: &OwnedFd) -> Result<(u64, u64)> {
    let m = std::fs::File::from(fd.try_clone()?).metadata()?;
    Ok((m.dev(), m.ino()))
}

fn open_ns(path: &str) -> Result<OwnedFd> {
    let f = std::fs::File::open(path).with_context(|| format!("cannot open {path}"))?;
    Ok(OwnedFd::from(f))
}

fn ioctl_fd(fd: &OwnedFd, req: libc::c_ulong) -> std::io::Result<OwnedFd> {
    // SAFETY: NS_GET_PARENT takes no argument and returns a new fd or -1.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), req as _) };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the kernel just gave us this fd.
    Ok(unsafe { OwnedFd::from_raw_fd(r) })
}

fn owner_uid(fd: &OwnedFd) -> std::io::Result<u32> {
    let mut uid: libc::uid_t = 0;
    // SAFETY: NS_GET_OWNER_UID writes one uid_t through the pointer.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), NS_GET_OWNER_UID as _, &mut uid) };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(uid)
}

/// Where the user namespace of process `pid` sits relative to ours.
pub enum Outer {
    /// The process shares our user namespace: nothing to join.
    Same,
    /// The namespace directly below ours on the path to the process (its outer namespace).
    Below(OwnedFd),
    /// The process is not below our user namespace (e.g. we run inside a *different* starter
    /// namespace): it cannot be joined from here.
    Unreachable,
}

/// Find the outer user namespace of process `pid`: walk up from its namespace to the one whose
/// parent is ours.
pub fn outer_userns_of(pid: i32) -> Result<Outer> {
    let ours = open_ns("/proc/self/ns/user")?;
    let ours_id = ns_id(&ours)?;
    let mut cur = open_ns(&format!("/proc/{pid}/ns/user"))?;
    if ns_id(&cur)? == ours_id {
        return Ok(Outer::Same);
    }
    // A chain deeper than the kernel's limit of 32 nested user namespaces cannot exist.
    for _ in 0..33 {
        let parent = match ioctl_fd(&cur, NS_GET_PARENT) {
            Ok(p) => p,
            Err(e) if e.raw_os_error() == Some(libc::EPERM) => return Ok(Outer::Unreachable),
            Err(e) => return Err(e).context("NS_GET_PARENT on a user namespace failed"),
        };
        if ns_id(&parent)? == ours_id {
            return Ok(Outer::Below(cur));
        }
        cur = parent;
    }
    Ok(Outer::Unreachable)
}

/// Join the user namespace `ns` keeping our credentials. Must be called while the process is
/// single-threaded (the kernel refuses setns(CLONE_NEWUSER) otherwise).
pub fn join(ns: &OwnedFd) -> Result<()> {
    let euid = nix::unistd::geteuid().as_raw();
    let owner = owner_uid(ns).context("cannot read the owner of the container's user namespace")?;
    if owner != euid {
        bail!("the container's user namespace belongs to uid {owner}, not to you (uid {euid})");
    }
    nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWUSER)
        .context("cannot join the container's user namespace")
}

/// Where a container's user namespace sits, without the descriptor (what [`decide`] needs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Relation {
    Same,
    Below,
    Unreachable,
}

impl Outer {
    pub fn relation(&self) -> Relation {
        match self {
            Outer::Same => Relation::Same,
            Outer::Below(_) => Relation::Below,
            Outer::Unreachable => Relation::Unreachable,
        }
    }
}

/// What an operation on an existing container does about namespaces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Run the runtime where we are.
    Stay,
    /// Join the outer user namespace of this container process first.
    Join(i32),
}

/// The rule. `privileged`: host root in the initial user namespace, which sees every container
/// as its creator did. `pid`: the container's live process, if any (a stopped container has
/// nothing to join). `relation`: where that process's user namespace sits. `strict`: the
/// operation cannot work without joining (`exec`); the others run in place when joining is
/// impossible, and the runtime then says what it can.
pub fn decide(
    privileged: bool,
    pid: Option<i32>,
    relation: impl FnOnce(i32) -> Result<Relation>,
    strict: bool,
) -> Result<Decision> {
    if privileged {
        return Ok(Decision::Stay);
    }
    let Some(pid) = pid else {
        return Ok(Decision::Stay);
    };
    let found = relation(pid).and_then(|r| match r {
        Relation::Same => Ok(Decision::Stay),
        Relation::Below => Ok(Decision::Join(pid)),
        Relation::Unreachable => Err(unreachable_error(pid)),
    });
    match found {
        Ok(d) => Ok(d),
        Err(e) if strict => Err(e),
        Err(e) => {
            crate::cli::debug(format!("not joining the container's namespace: {e:#}"));
            Ok(Decision::Stay)
        }
    }
}

fn unreachable_error(pid: i32) -> anyhow::Error {
    anyhow::anyhow!(
        "process {pid} lives in a user namespace that cannot be joined from here: run this command outside oci-userns-starter"
    )
}

/// Find the outer user namespace of process `pid` and join it, when it is below ours.
pub fn join_outer_of(pid: i32) -> Result<()> {
    match outer_userns_of(pid)? {
        Outer::Same => Ok(()),
        Outer::Below(ns) => join(&ns),
        Outer::Unreachable => Err(unreachable_error(pid)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_map_detection() {
        assert!(is_identity_map("         0          0 4294967295\n"));
        assert!(!is_identity_map("0 1001 1\n"));
        assert!(!is_identity_map("0 1001 1\n1 100000 65536\n"));
    }

    #[test]
    fn own_process_is_in_the_same_namespace() {
        let pid = std::process::id() as i32;
        assert!(matches!(outer_userns_of(pid).unwrap(), Outer::Same));
        assert_eq!(outer_userns_of(pid).unwrap().relation(), Relation::Same);
    }

    fn rel(r: Relation) -> impl FnOnce(i32) -> Result<Relation> {
        move |_| Ok(r)
    }

    #[test]
    fn host_root_never_joins() {
        for r in [Relation::Same, Relation::Below, Relation::Unreachable] {
            for strict in [false, true] {
                assert_eq!(
                    decide(true, Some(42), rel(r), strict).unwrap(),
                    Decision::Stay
                );
            }
        }
    }

    #[test]
    fn a_stopped_container_has_nothing_to_join() {
        let never = |_: i32| -> Result<Relation> { panic!("no pid, no lookup") };
        assert_eq!(decide(false, None, never, true).unwrap(), Decision::Stay);
    }

    #[test]
    fn same_namespace_stays() {
        assert_eq!(
            decide(false, Some(7), rel(Relation::Same), true).unwrap(),
            Decision::Stay
        );
    }

    #[test]
    fn a_namespace_below_ours_is_joined() {
        for strict in [false, true] {
            assert_eq!(
                decide(false, Some(7), rel(Relation::Below), strict).unwrap(),
                Decision::Join(7)
            );
        }
    }

    #[test]
    fn unreachable_fails_only_when_strict() {
        let e = decide(false, Some(7), rel(Relation::Unreachable), true).unwrap_err();
        assert_eq!(
            e.to_string(),
            "process 7 lives in a user namespace that cannot be joined from here: run this command outside oci-userns-starter"
        );
        assert_eq!(
            decide(false, Some(7), rel(Relation::Unreachable), false).unwrap(),
            Decision::Stay
        );
    }

    #[test]
    fn lookup_errors_fail_only_when_strict() {
        let broken =
            || |_: i32| -> Result<Relation> { anyhow::bail!("cannot open /proc/7/ns/user") };
        assert!(decide(false, Some(7), broken(), true).is_err());
        assert_eq!(
            decide(false, Some(7), broken(), false).unwrap(),
            Decision::Stay
        );
    }

    #[test]
    fn the_pid_asked_about_is_the_containers() {
        let mut seen = None;
        let d = decide(
            false,
            Some(99),
            |p| {
                seen = Some(p);
                Ok(Relation::Below)
            },
            false,
        )
        .unwrap();
        assert_eq!((seen, d), (Some(99), Decision::Join(99)));
    }
}
