//! Gathering the host facts the builder needs (the impure half of spec building).

use crate::caps;
use crate::spec::Host;
use anyhow::{Context, Result};
use common::identity;
use common::subid::{self, OuterPlan};

fn status_field(name: &str) -> Option<String> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    s.lines().find_map(|l| {
        l.strip_prefix(name)
            .map(|v| v.trim_start_matches(':').trim().to_string())
    })
}

fn cap_mask(field: &str) -> u64 {
    status_field(field)
        .and_then(|v| u64::from_str_radix(&v, 16).ok())
        .unwrap_or(0)
}

fn is_cgroup2(path: &str) -> bool {
    // CGROUP2_SUPER_MAGIC
    rustix::fs::statfs(path).is_ok_and(|s| s.f_type == 0x6367_7270)
}

/// Whether the container should get a terminal when neither --terminal nor --no-terminal says:
/// when the caller's stdin and stdout are both terminals, so that redirected input or output
/// stays a plain, byte-exact stream. When the record itself arrives on stdin (a hand-typed
/// `oci-fetch | oci-unpack | oci-mkspec` pipeline), stdin is that pipe and stdout carries the
/// record, so the terminal the user typed in is looked for on stderr instead.
pub fn terminal_default(record_from_file: bool) -> bool {
    use common::term::is_tty;
    if record_from_file {
        is_tty(0) && is_tty(1)
    } else {
        is_tty(2)
    }
}

/// `need_subids`: the unprivileged default, which needs the outer plan for the reverse map.
/// `terminal`: whether the container gets one (`--terminal`, or [`terminal_default`]).
pub fn gather(need_subids: bool, terminal: bool) -> Result<Host> {
    let uid = identity::host_uid();
    let gid = identity::host_gid();
    let is_root = identity::is_host_root();
    let user = identity::host_user(uid)?;
    let root_user = identity::host_user(0)?;
    let home = match &user {
        Some(u) if !u.home.is_empty() => u.home.clone(),
        _ => identity::home_dir()?.to_string_lossy().into_owned(),
    };
    let cwd = std::env::current_dir()
        .context("cannot determine the current directory")?
        .to_string_lossy()
        .into_owned();
    let umask = status_field("Umask")
        .and_then(|v| u32::from_str_radix(&v, 8).ok())
        .unwrap_or(0o022);
    let tty_gid = nix::unistd::Group::from_name("tty")
        .ok()
        .flatten()
        .map(|g| g.gid.as_raw());
    // --keep-privs keeps what the runtime itself holds: real root's effective set, or inside the
    // outer user namespace the full bounding set.
    let keep_caps = caps::names_from_mask(if is_root {
        cap_mask("CapEff")
    } else {
        cap_mask("CapBnd")
    });
    let resolv_conf = std::fs::read("/etc/resolv.conf").unwrap_or_default();
    let subid_sizes = if need_subids {
        let name = user.as_ref().map(|u| u.name.clone()).unwrap_or_default();
        match subid::outer_plan(&name, uid)? {
            OuterPlan::Single => None,
            OuterPlan::Subids { uids, gids, .. } => Some((uids.count, gids.count)),
        }
    } else {
        None
    };
    Ok(Host {
        uid,
        gid,
        is_root,
        group_name: identity::host_group_name(gid)?,
        root_group_name: identity::host_group_name(0)?,
        user,
        root_user,
        home,
        cwd,
        umask,
        // Variables that are not UTF-8 cannot go into config.json; they are skipped.
        env: std::env::vars_os()
            .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
            .collect(),
        terminal,
        tty_gid,
        ncpus: std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        cgroup_v2: is_cgroup2("/sys/fs/cgroup"),
        keep_caps,
        resolv_conf,
        subid_sizes,
        unique: format!("{}-{}", std::process::id(), common::fsutil::unique_suffix()),
    })
}
