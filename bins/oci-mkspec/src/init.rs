//! A minimal init as the container's PID 1.
//!
//! In a new PID namespace the command is PID 1, and the kernel delivers to PID 1 only the
//! signals it has a handler for: `sleep 1000` ignored Ctrl-C and SIGTERM, and nothing reaped
//! orphaned zombies. So by default the process is `INIT -- CMD ARGS...`, where INIT is a small
//! static init packaged by the distribution (`tini-static`, else `catatonit`), bind-mounted
//! read-only from the host: it forwards every signal to the command, reaps zombies, and exits
//! with the command's status (128+N when the command died of signal N). A static binary works in
//! any image, costs one `exec` (about 0.5 ms) on a container start, and any user can bind it.
//!
//! No init runs with `--no-init`, or without a PID namespace (`--no-pid`, MPI ranks): there the
//! command is not PID 1 and signals reach it as on the host.

use anyhow::{Result, bail};
use oci_spec::runtime::Mount;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Where the init appears inside the container.
pub const CONTAINER_PATH: &str = "/.singularity-oci-init";

/// Static inits packaged by Debian (and most distributions), in order of preference: `tini`
/// from `tini-static` starts fastest here; `catatonit` is podman's.
const CANDIDATES: &[&str] = &[
    "/usr/bin/tini-static",
    "/usr/bin/catatonit",
    "/usr/libexec/podman/catatonit",
];

/// Environment variable naming the init binary to use instead (empty: none).
pub const ENV_INIT: &str = "SINGULARITY_OCI_INIT";

/// The host init to bind: `$SINGULARITY_OCI_INIT` if set (empty means none), else the first
/// candidate that exists. A binary that someone other than root or the caller could replace is
/// refused: it runs inside every container.
pub fn find(env_value: Option<&str>, caller_uid: u32) -> Result<Option<PathBuf>> {
    let chosen = match env_value {
        Some("") => return Ok(None),
        Some(p) => PathBuf::from(p),
        None => match CANDIDATES.iter().map(Path::new).find(|p| p.is_file()) {
            Some(p) => p.to_path_buf(),
            None => return Ok(None),
        },
    };
    let path = std::fs::canonicalize(&chosen)
        .map_err(|e| anyhow::anyhow!("cannot resolve the init {}: {e}", chosen.display()))?;
    let md = std::fs::metadata(&path)?;
    if !md.is_file() || md.permissions().mode() & 0o111 == 0 {
        bail!("the init {} is not an executable file", path.display());
    }
    if (md.uid() != 0 && md.uid() != caller_uid) || md.permissions().mode() & 0o022 != 0 {
        bail!(
            "the init {} could be replaced by another user (owner uid {}, mode {:o}): refusing it",
            path.display(),
            md.uid(),
            md.permissions().mode() & 0o7777
        );
    }
    Ok(Some(path))
}

/// The process arguments with the init in front.
pub fn wrap_args(args: &[String]) -> Vec<String> {
    let mut v = Vec::with_capacity(args.len() + 2);
    v.push(CONTAINER_PATH.to_string());
    v.push("--".to_string());
    v.extend(args.iter().cloned());
    v
}

/// The read-only bind mount of the host init.
pub fn mount(host_path: &str) -> Mount {
    let options = ["rbind", "ro", "nosuid", "nodev"]
        .map(String::from)
        .to_vec();
    crate::mounts::m(CONTAINER_PATH, "bind", host_path, options)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_variable_means_no_init_and_a_writable_binary_is_refused() {
        assert_eq!(find(Some(""), 0).unwrap(), None);
        let t = tempfile::tempdir().unwrap();
        let f = t.path().join("init");
        std::fs::write(&f, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o777)).unwrap();
        let uid = std::fs::metadata(&f).unwrap().uid();
        assert!(find(Some(f.to_str().unwrap()), uid).is_err());
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(
            find(Some(f.to_str().unwrap()), uid).unwrap(),
            Some(f.clone())
        );
        assert!(find(Some(f.to_str().unwrap()), uid.wrapping_add(1)).is_err() || uid == 0);
    }

    #[test]
    fn args_are_wrapped_after_a_double_dash() {
        let a = vec!["sleep".to_string(), "--".to_string()];
        assert_eq!(
            wrap_args(&a),
            vec![CONTAINER_PATH, "--", "sleep", "--"]
                .into_iter()
                .map(String::from)
                .collect::<Vec<_>>()
        );
    }
}
