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

/// Find an executable by name on PATH, plus the sbin directories PATH often lacks.
pub fn which(name: &str) -> Option<PathBuf> {
    if name.contains('/') {
        let p = PathBuf::from(name);
        return is_executable(&p).then_some(p);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(
            [
                "/usr/local/sbin",
                "/usr/local/bin",
                "/usr/sbin",
                "/usr/bin",
                "/sbin",
                "/bin",
            ]
            .map(PathBuf::from),
        )
        .map(|d| d.join(name))
        .find(|p| is_executable(p))
}

/// Find an executable by name in the directories of a PATH-style list only. Empty entries
/// (which a shell reads as the current directory) are skipped: nothing is run from wherever the
/// caller happens to be.
pub fn which_in(name: &str, path: &std::ffi::OsStr) -> Option<PathBuf> {
    std::env::split_paths(path)
        .filter(|d| !d.as_os_str().is_empty())
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

    #[test]
    fn missing_runtime_names_package() {
        let e = select(Some("/nonexistent/crun")).unwrap_err();
        assert!(e.to_string().contains("install the 'crun' package"), "{e}");
    }
}
