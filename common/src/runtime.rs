//! Program lookup: the one way every stage finds an executable by name (the OCI runtime
//! itself is chosen in `lifecycle::runtime`).

use std::path::{Path, PathBuf};

/// Directories searched after `$PATH`: the sbin directories a user's PATH often lacks.
pub const FALLBACK_DIRS: [&str; 6] = [
    "/usr/local/sbin",
    "/usr/local/bin",
    "/usr/sbin",
    "/usr/bin",
    "/sbin",
    "/bin",
];

/// Find an executable by name on `$PATH`, then in the sbin directories PATH often lacks. A name
/// with a `/` is taken as the path the caller gave. This is the one program lookup of every
/// stage: see [`which_in`] for the entries it skips.
pub fn which(name: &str) -> Option<PathBuf> {
    if name.contains('/') {
        let p = PathBuf::from(name);
        return is_executable(&p).then_some(p);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    which_in(name, &path).or_else(|| which_in_dirs(name, FALLBACK_DIRS.iter().map(PathBuf::from)))
}

/// Find an executable by name in the directories of a PATH-style list only. Empty entries
/// (which a shell reads as the current directory) and relative ones (`.`, `bin`) are skipped:
/// nothing is run from wherever the caller happens to be, which for root would mean running a
/// `./crun` that anyone who can write the working directory planted.
pub fn which_in(name: &str, path: &std::ffi::OsStr) -> Option<PathBuf> {
    which_in_dirs(name, std::env::split_paths(path))
}

/// A sibling stage of the running executable (as the front finds its stages), else the one
/// `which` finds.
pub fn sibling(name: &str) -> anyhow::Result<PathBuf> {
    let here = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join(name)))
        .filter(|p| p.is_file());
    here.or_else(|| which(name)).ok_or_else(|| {
        anyhow::anyhow!(
            "{name} not found beside {} or on PATH",
            crate::cli::program()
        )
    })
}

fn which_in_dirs(name: &str, dirs: impl Iterator<Item = PathBuf>) -> Option<PathBuf> {
    if name.is_empty() || name.contains('/') {
        return None;
    }
    dirs.filter(|d| d.is_absolute())
        .map(|d| d.join(name))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An executable planted in the working directory is never found through an empty or a
    /// relative PATH entry.
    #[test]
    fn lookup_skips_empty_and_relative_path_entries() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let planted = d.path().join("sioci-planted-tool");
        std::fs::write(&planted, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&planted, std::fs::Permissions::from_mode(0o755)).unwrap();
        let name = "sioci-planted-tool";
        let cwd_like = [":", "", ".", "./", "::/nonexistent"];
        for p in cwd_like {
            assert_eq!(which_in(name, std::ffi::OsStr::new(p)), None, "PATH={p:?}");
        }
        assert_eq!(which_in("", std::ffi::OsStr::new("/bin")), None);
        assert_eq!(which_in("../x", std::ffi::OsStr::new("/bin")), None);
        let abs = std::ffi::OsString::from(format!(":.:{}", d.path().display()));
        assert_eq!(which_in(name, &abs), Some(planted));
    }
}
