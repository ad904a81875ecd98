//! Private mount namespaces.

use anyhow::{Context, Result};
use nix::mount::{MsFlags, mount};
use std::path::PathBuf;

/// Make every mount of a new mount namespace private, so nothing mounted in it propagates back
/// to the host (and nothing from the host propagates in later).
pub fn make_root_private() -> Result<()> {
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .context("cannot make / recursively private in the new mount namespace")
}

/// The mount points of this process's mount namespace, from `/proc/self/mountinfo`.
pub fn mount_points() -> Result<Vec<PathBuf>> {
    let text = std::fs::read_to_string("/proc/self/mountinfo")
        .context("cannot read /proc/self/mountinfo")?;
    Ok(parse_mount_points(&text))
}

/// The mount point (fifth field) of every mountinfo line, with the kernel's octal escapes
/// (`\040` for a space, and so on) decoded.
pub fn parse_mount_points(mountinfo: &str) -> Vec<PathBuf> {
    mountinfo
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|f| PathBuf::from(unescape_octal(f)))
        .collect()
}

fn unescape_octal(field: &str) -> std::ffi::OsString {
    use std::os::unix::ffi::OsStringExt;
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = b
            .get(i + 1..i + 4)
            .filter(|d| d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match (b[i], octal) {
            (b'\\', Some(d)) => {
                out.push((d[0] - b'0') * 64 + (d[1] - b'0') * 8 + (d[2] - b'0'));
                i += 4;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    std::ffi::OsString::from_vec(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_points_are_unescaped() {
        let info = "22 1 0:21 / / rw - ext4 /dev/vda rw\n\
                    90 22 0:50 / /tmp/b\\040x/rootfs rw - overlay overlay rw\n\
                    91 22 0:51 / /tmp/back\\134slash rw - tmpfs tmpfs rw\n\
                    92 22 0:52 / /tmp/end\\040 rw - tmpfs tmpfs rw\n";
        assert_eq!(
            parse_mount_points(info),
            vec![
                PathBuf::from("/"),
                PathBuf::from("/tmp/b x/rootfs"),
                PathBuf::from("/tmp/back\\slash"),
                PathBuf::from("/tmp/end "),
            ]
        );
    }
}
