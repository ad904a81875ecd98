//! Who the caller is on the host.
//!
//! Inside the outer user namespace every stage runs as uid 0, but paths and ID maps must still be
//! computed for the *host* user. `oci-userns-starter` exports `_CONTAINERS_ROOTLESS_UID` and
//! `_CONTAINERS_ROOTLESS_GID` (the names containers/image and Singularity use) for that.

use anyhow::{Context, Result, bail};
use std::path::PathBuf;

pub const ENV_ROOTLESS_UID: &str = "_CONTAINERS_ROOTLESS_UID";
pub const ENV_ROOTLESS_GID: &str = "_CONTAINERS_ROOTLESS_GID";

fn env_id(name: &str) -> Option<u32> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

/// The host uid: `_CONTAINERS_ROOTLESS_UID` when set, else the effective uid.
pub fn host_uid() -> u32 {
    env_id(ENV_ROOTLESS_UID).unwrap_or_else(|| nix::unistd::geteuid().as_raw())
}

/// The host gid: `_CONTAINERS_ROOTLESS_GID` when set, else the effective gid.
pub fn host_gid() -> u32 {
    env_id(ENV_ROOTLESS_GID).unwrap_or_else(|| nix::unistd::getegid().as_raw())
}

/// True when the caller is root on the host (not merely root inside our user namespace).
pub fn is_host_root() -> bool {
    host_uid() == 0
}

/// A passwd entry of the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasswdEntry {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub gecos: String,
    pub home: String,
    pub shell: String,
}

/// Look up a host user by uid (through NSS).
pub fn host_user(uid: u32) -> Result<Option<PasswdEntry>> {
    let user = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
        .with_context(|| format!("cannot look up uid {uid}"))?;
    Ok(user.map(|u| PasswdEntry {
        name: u.name,
        uid: u.uid.as_raw(),
        gid: u.gid.as_raw(),
        gecos: u.gecos.to_string_lossy().into_owned(),
        home: u.dir.to_string_lossy().into_owned(),
        shell: u.shell.to_string_lossy().into_owned(),
    }))
}

/// Look up a host group name by gid.
pub fn host_group_name(gid: u32) -> Result<Option<String>> {
    let g = nix::unistd::Group::from_gid(nix::unistd::Gid::from_raw(gid))
        .with_context(|| format!("cannot look up gid {gid}"))?;
    Ok(g.map(|g| g.name))
}

/// The caller's home: `$HOME`, else the passwd entry of the host uid.
pub fn home_dir() -> Result<PathBuf> {
    if let Some(h) = std::env::var_os("HOME").filter(|h| !h.is_empty()) {
        return Ok(PathBuf::from(h));
    }
    match host_user(host_uid())? {
        Some(u) if !u.home.is_empty() => Ok(PathBuf::from(u.home)),
        _ => bail!(
            "cannot determine the home directory of uid {} (set HOME)",
            host_uid()
        ),
    }
}

/// Parse one line of a passwd(5) file.
pub fn parse_passwd_line(line: &str) -> Option<PasswdEntry> {
    let f: Vec<&str> = line.split(':').collect();
    if f.len() < 7 {
        return None;
    }
    Some(PasswdEntry {
        name: f[0].to_string(),
        uid: f[2].parse().ok()?,
        gid: f[3].parse().ok()?,
        gecos: f[4].to_string(),
        home: f[5].to_string(),
        shell: f[6].to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwd_line() {
        let e = parse_passwd_line("alice:x:1000:100:Alice A:/home/alice:/bin/sh").unwrap();
        assert_eq!((e.uid, e.gid, e.home.as_str()), (1000, 100, "/home/alice"));
        assert!(parse_passwd_line("broken:x:1").is_none());
    }
}
