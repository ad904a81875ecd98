//! What the lifecycle asks of the machine it runs on, behind a trait so the operations are
//! tested with [`FakeHost`]: who the caller is, whether crun needs the hybrid-cgroup fix, and
//! the user namespaces of containers.

use super::userns::Relation;
use anyhow::Result;
use std::cell::RefCell;

pub trait Host {
    /// Host root in the initial user namespace: sees every container as its creator did.
    fn privileged(&self) -> bool;
    /// Root where we are (host root, or root of the outer user namespace).
    fn euid_is_root(&self) -> bool;
    /// crun refuses this host's hybrid cgroup layout unless the fix is applied.
    fn cgroup_fix_needed(&self) -> bool;
    /// Move this process into a private mount namespace of its own, for the runtime.
    fn private_mount_namespace(&self) -> Result<()>;
    /// In that namespace: the crun fix (`/dev/null` over `cgroup.controllers`).
    fn hide_cgroup_controllers(&self) -> Result<()>;
    /// In that namespace: the runtime's binary bound read-only onto itself.
    fn read_only_runtime(&self, bin: &std::path::Path) -> Result<()>;
    /// Where the user namespace of process `pid` sits relative to ours.
    fn relation_to(&self, pid: i32) -> Result<Relation>;
    /// Join the outer user namespace of process `pid`.
    fn join_outer_of(&self, pid: i32) -> Result<()>;
}

/// This machine.
pub struct RealHost;

impl Host for RealHost {
    fn privileged(&self) -> bool {
        nix::unistd::geteuid().is_root() && super::userns::in_initial_userns()
    }
    fn euid_is_root(&self) -> bool {
        nix::unistd::geteuid().is_root()
    }
    fn cgroup_fix_needed(&self) -> bool {
        super::cgroupfix::host_needs_fix()
    }
    fn private_mount_namespace(&self) -> Result<()> {
        super::cgroupfix::private_mount_namespace()
    }
    fn hide_cgroup_controllers(&self) -> Result<()> {
        super::cgroupfix::hide_controllers()
    }
    fn read_only_runtime(&self, bin: &std::path::Path) -> Result<()> {
        super::readonly::bind_read_only(bin)
    }
    fn relation_to(&self, pid: i32) -> Result<Relation> {
        super::userns::outer_userns_of(pid).map(|o| o.relation())
    }
    fn join_outer_of(&self, pid: i32) -> Result<()> {
        super::userns::join_outer_of(pid)
    }
}

/// A scripted host for unit tests: records what was applied and joined.
#[derive(Debug, Default)]
pub struct FakeHost {
    pub privileged: bool,
    pub root: bool,
    pub needs_fix: bool,
    /// The private mount namespace cannot be made.
    pub fix_fails: bool,
    /// The read-only bind of the runtime fails.
    pub read_only_fails: bool,
    /// Where every container process's namespace sits (`None`: the lookup fails).
    pub relation: Option<Relation>,
    pub join_fails: bool,
    /// What happened, in order: `mountns`, `fix`, `ro PATH`, `join PID`.
    pub events: RefCell<Vec<String>>,
}

impl FakeHost {
    /// An unprivileged user on a plain host, containers in a namespace below ours.
    pub fn user() -> FakeHost {
        FakeHost {
            relation: Some(Relation::Below),
            ..FakeHost::default()
        }
    }
    /// Host root.
    pub fn host_root() -> FakeHost {
        FakeHost {
            privileged: true,
            root: true,
            relation: Some(Relation::Same),
            ..FakeHost::default()
        }
    }
    /// Root of the outer user namespace (an unprivileged user inside oci-userns-starter).
    pub fn starter_root() -> FakeHost {
        FakeHost {
            root: true,
            relation: Some(Relation::Same),
            ..FakeHost::default()
        }
    }
    pub fn events(&self) -> Vec<String> {
        self.events.borrow().clone()
    }
}

impl Host for FakeHost {
    fn privileged(&self) -> bool {
        self.privileged
    }
    fn euid_is_root(&self) -> bool {
        self.root
    }
    fn cgroup_fix_needed(&self) -> bool {
        self.needs_fix
    }
    fn private_mount_namespace(&self) -> Result<()> {
        if self.fix_fails {
            anyhow::bail!(
                "cannot create a private mount namespace for the runtime: Operation not permitted"
            );
        }
        self.events.borrow_mut().push("mountns".into());
        Ok(())
    }
    fn hide_cgroup_controllers(&self) -> Result<()> {
        self.events.borrow_mut().push("fix".into());
        Ok(())
    }
    fn read_only_runtime(&self, bin: &std::path::Path) -> Result<()> {
        if self.read_only_fails {
            anyhow::bail!(
                "cannot bind {} onto itself: Permission denied",
                bin.display()
            );
        }
        self.events
            .borrow_mut()
            .push(format!("ro {}", bin.display()));
        Ok(())
    }
    fn relation_to(&self, pid: i32) -> Result<Relation> {
        self.relation
            .ok_or_else(|| anyhow::anyhow!("cannot open /proc/{pid}/ns/user"))
    }
    fn join_outer_of(&self, pid: i32) -> Result<()> {
        if self.join_fails {
            anyhow::bail!("cannot join the container's user namespace");
        }
        self.events.borrow_mut().push(format!("join {pid}"));
        Ok(())
    }
}
