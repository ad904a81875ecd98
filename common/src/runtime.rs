//! Choosing the low-level OCI runtime: crun preferred, runc as the fallback.

use anyhow::{Result, bail};
use std::path::{Path, PathBuf};

/// Environment variable naming the runtime (a name on PATH or a path).
pub const ENV_RUNTIME: &str = "SINGULARITY_OCI_RUNTIME";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuntimeKind {
    Crun,
    Runc,
    /// Another runc-compatible runtime (youki, ...): no runtime-specific workarounds.
    Other,
}

#[derive(Debug, Clone)]
pub struct Runtime {
    pub path: PathBuf,
    pub kind: RuntimeKind,
}

impl Runtime {
    pub fn name(&self) -> String {
        self.path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    }
}

fn kind_of(path: &Path) -> RuntimeKind {
    match path.file_name().and_then(|n| n.to_str()) {
        Some(n) if n.starts_with("crun") => RuntimeKind::Crun,
        Some(n) if n.starts_with("runc") => RuntimeKind::Runc,
        _ => RuntimeKind::Other,
    }
}

/// Directories searched after `$PATH`: the sbin directories a user's PATH often lacks.
const FALLBACK_DIRS: [&str; 6] = [
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

/// Select the runtime: `requested` (from `--runtime`), else `$SINGULARITY_OCI_RUNTIME`, else
/// crun, else runc.
pub fn select(requested: Option<&str>) -> Result<Runtime> {
    let wanted = requested
        .map(str::to_string)
        .or_else(|| std::env::var(ENV_RUNTIME).ok().filter(|v| !v.is_empty()));
    if let Some(w) = wanted {
        return match which(&w) {
            Some(p) => {
                let path = std::fs::canonicalize(&p).unwrap_or(p);
                let kind = kind_of(Path::new(&w)).max_known(kind_of(&path));
                Ok(Runtime { path, kind })
            }
            None => bail!("OCI runtime '{w}' not found{}", install_hint(&w)),
        };
    }
    for name in ["crun", "runc"] {
        if let Some(p) = which(name) {
            let kind = kind_of(Path::new(name));
            return Ok(Runtime { path: p, kind });
        }
    }
    bail!("no OCI runtime found: install the 'crun' package (or 'runc')")
}

trait MaxKnown {
    fn max_known(self, other: Self) -> Self;
}
impl MaxKnown for RuntimeKind {
    fn max_known(self, other: Self) -> Self {
        if self == RuntimeKind::Other {
            other
        } else {
            self
        }
    }
}

fn install_hint(name: &str) -> String {
    match Path::new(name).file_name().and_then(|n| n.to_str()) {
        Some("crun") => ": install the 'crun' package".into(),
        Some("runc") => ": install the 'runc' package".into(),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds() {
        assert_eq!(kind_of(Path::new("/usr/bin/crun")), RuntimeKind::Crun);
        assert_eq!(kind_of(Path::new("runc")), RuntimeKind::Runc);
        assert_eq!(kind_of(Path::new("youki")), RuntimeKind::Other);
    }

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

    #[test]
    fn missing_runtime_names_package() {
        let e = select(Some("/nonexistent/crun")).unwrap_err();
        assert!(e.to_string().contains("install the 'crun' package"), "{e}");
    }
}
