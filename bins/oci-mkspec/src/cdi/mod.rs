//! Container Device Interface devices (`--device VENDOR/CLASS=NAME`, `--cdi-dirs`): the specs
//! are read from the spec directories only when a device is asked for (the warm start without
//! one parses nothing), the requested devices resolved, their device nodes completed from the
//! host, and the edits handed to the pure spec builder (`apply`).

pub mod apply;
pub mod names;
pub mod registry;
pub mod schema;
pub mod yaml;

use anyhow::{Context, Result, bail};
use registry::Registry;
use rustix::fs::FileType;
pub use schema::ContainerEdits;

/// The spec directories: `--cdi-dirs` when given, else the defaults.
pub fn spec_dirs(cdi_dirs: &[String]) -> Vec<String> {
    if cdi_dirs.is_empty() {
        registry::DEFAULT_DIRS
            .iter()
            .map(|d| d.to_string())
            .collect()
    } else {
        cdi_dirs.to_vec()
    }
}

/// Read the spec directories (errors in SingularityCE's words).
pub fn load(cdi_dirs: &[String]) -> Result<Registry> {
    Registry::load(&spec_dirs(cdi_dirs)).context("error refreshing CDI cache")
}

/// The edits for the requested devices, device nodes completed from the host.
/// `need_host_nodes`: the nodes will be bind mounted, so each host node must exist.
pub fn edits_for(
    registry: &Registry,
    requested: &[names::Qualified],
    need_host_nodes: bool,
) -> Result<ContainerEdits> {
    let mut edits = registry
        .edits_for(requested)
        .context("while setting up CDI devices")?;
    for d in &mut edits.device_nodes {
        fill_from_host(d, need_host_nodes).context("while setting up CDI devices")?;
    }
    Ok(edits)
}

/// The type letter of a device node (or FIFO) on the host.
fn node_type(ft: FileType) -> Option<&'static str> {
    match ft {
        FileType::BlockDevice => Some("b"),
        FileType::CharacterDevice => Some("c"),
        FileType::Fifo => Some("p"),
        _ => None,
    }
}

/// Complete a device node from its host node, as the reference implementation does: the host
/// path defaults to the container path; type, major and minor come from the host unless the
/// spec gives a type and a major (a FIFO needs no major); the file mode always does when the
/// spec has none. The host node is looked at with `lstat` (a link is not a device).
fn fill_from_host(d: &mut schema::DeviceNode, need_host: bool) -> Result<()> {
    let minimal = !d.typ.is_empty() && (d.major != 0 || d.typ == "p");
    if d.host_path.is_empty() {
        d.host_path = d.path.clone();
    }
    let found = rustix::fs::lstat(d.host_path.as_str())
        .map_err(anyhow::Error::from)
        .and_then(|st| {
            let ft = FileType::from_raw_mode(st.st_mode);
            match node_type(ft) {
                Some(t) => Ok((t, st)),
                None => bail!("not a device node"),
            }
        });
    let (host_type, st) = match found {
        Ok(x) => x,
        Err(e) if need_host => bail!(
            "device node {}: host node {}: {e} (without host root a device node is a bind of the host's)",
            d.path,
            d.host_path
        ),
        Err(e) if !minimal => bail!("failed to stat CDI host device {:?}: {e}", d.host_path),
        Err(_) => return Ok(()),
    };
    if d.file_mode.is_none() {
        d.file_mode = Some(st.st_mode & 0o7777);
    }
    if minimal {
        return Ok(());
    }
    if d.typ.is_empty() {
        d.typ = host_type.to_string();
    }
    if d.typ != host_type {
        bail!(
            "CDI device ({:?}, {:?}), host type mismatch ({}, {host_type})",
            d.path,
            d.host_path,
            d.typ
        );
    }
    if d.typ != "p" && d.major == 0 {
        d.major = i64::from(rustix::fs::major(st.st_rdev));
        d.minor = i64::from(rustix::fs::minor(st.st_rdev));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use schema::DeviceNode;

    fn node(path: &str, host: &str) -> DeviceNode {
        DeviceNode {
            path: path.into(),
            host_path: host.into(),
            ..DeviceNode::default()
        }
    }

    #[test]
    fn nodes_are_completed_from_the_host() {
        let mut d = node("/dev/vendor0", "/dev/zero");
        fill_from_host(&mut d, false).unwrap();
        assert_eq!((d.typ.as_str(), d.major, d.minor), ("c", 1, 5));
        assert_eq!(d.file_mode, Some(0o666));
        let mut d = node("/dev/null", "");
        fill_from_host(&mut d, true).unwrap();
        assert_eq!(
            (d.host_path.as_str(), d.major, d.minor),
            ("/dev/null", 1, 3)
        );
        // A fully specified node needs no host node, unless it is to be bound.
        let mut d = DeviceNode {
            typ: "c".into(),
            major: 10,
            minor: 200,
            ..node("/dev/net/tun0", "/nonexistent/tun")
        };
        fill_from_host(&mut d, false).unwrap();
        assert_eq!((d.major, d.minor), (10, 200));
        let e = fill_from_host(&mut d, true).unwrap_err().to_string();
        assert!(e.contains("/nonexistent/tun"), "{e}");
        let e = fill_from_host(&mut node("/dev/x", "/nonexistent"), false)
            .unwrap_err()
            .to_string();
        assert!(e.contains("failed to stat CDI host device"), "{e}");
        let e = fill_from_host(&mut node("/dev/x", "/etc/passwd"), false)
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a device node"), "{e}");
        let mut d = DeviceNode {
            typ: "b".into(),
            ..node("/dev/x", "/dev/zero")
        };
        let e = fill_from_host(&mut d, false).unwrap_err().to_string();
        assert!(e.contains("host type mismatch"), "{e}");
    }
}
