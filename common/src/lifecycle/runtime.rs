//! Choosing the low-level OCI runtime: crun preferred, runc as the fallback.
//!
//! A new container uses `--runtime`, else `$SINGULARITY_OCI_RUNTIME`, else crun, else runc. An
//! existing container uses the runtime recorded in its state directory unless the caller names
//! one explicitly (a runc container is unknown to crun).

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

/// The chosen runtime executable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeBinary {
    pub path: PathBuf,
    pub kind: RuntimeKind,
}

impl RuntimeBinary {
    /// The file name, for messages.
    pub fn name(&self) -> String {
        self.path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    }
}

/// crun or runc by name (`crun-1.8` is crun), else another runtime.
pub fn kind_of(path: &Path) -> RuntimeKind {
    match path.file_name().and_then(|n| n.to_str()) {
        Some(n) if n.starts_with("crun") => RuntimeKind::Crun,
        Some(n) if n.starts_with("runc") => RuntimeKind::Runc,
        _ => RuntimeKind::Other,
    }
}

/// The runtime an operation on an existing container asks for: the caller's explicit choice
/// (`--runtime`, or `$SINGULARITY_OCI_RUNTIME`), else the one recorded at create.
pub fn wanted_for_existing(
    flag: Option<&str>,
    env: Option<&str>,
    recorded: Option<&str>,
) -> Option<String> {
    match (flag, env.filter(|v| !v.is_empty())) {
        (Some(f), _) => Some(f.to_string()),
        (None, Some(_)) => None,
        (None, None) => recorded.map(str::to_string),
    }
}

/// Select the runtime: `requested` (from `--runtime` or the state directory), else
/// `$SINGULARITY_OCI_RUNTIME`, else crun, else runc.
pub fn select(requested: Option<&str>) -> Result<RuntimeBinary> {
    let env = std::env::var(ENV_RUNTIME).ok();
    select_with(
        requested,
        env.as_deref(),
        &|n| crate::runtime::which(n),
        &|p| std::fs::canonicalize(p).ok(),
    )
}

/// [`select`] with the environment and the lookups given.
pub fn select_with(
    requested: Option<&str>,
    env: Option<&str>,
    which: &dyn Fn(&str) -> Option<PathBuf>,
    canonical: &dyn Fn(&Path) -> Option<PathBuf>,
) -> Result<RuntimeBinary> {
    let wanted = requested
        .map(str::to_string)
        .or_else(|| env.filter(|v| !v.is_empty()).map(str::to_string));
    if let Some(w) = wanted {
        return match which(&w) {
            Some(p) => {
                let path = canonical(&p).unwrap_or(p);
                // The name asked for decides (a `crun` link to a versioned binary is crun);
                // an unknown name is judged by where it leads.
                let kind = match kind_of(Path::new(&w)) {
                    RuntimeKind::Other => kind_of(&path),
                    k => k,
                };
                Ok(RuntimeBinary { path, kind })
            }
            None => bail!("OCI runtime '{w}' not found{}", install_hint(&w)),
        };
    }
    for name in ["crun", "runc"] {
        if let Some(p) = which(name) {
            let kind = kind_of(Path::new(name));
            return Ok(RuntimeBinary { path: p, kind });
        }
    }
    bail!("no OCI runtime found: install the 'crun' package (or 'runc')")
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

    fn only(names: &'static [&'static str]) -> impl Fn(&str) -> Option<PathBuf> {
        move |n: &str| {
            let base = Path::new(n).file_name()?.to_str()?;
            names
                .contains(&base)
                .then(|| Path::new("/usr/bin").join(base))
        }
    }
    fn same(p: &Path) -> Option<PathBuf> {
        Some(p.to_path_buf())
    }

    #[test]
    fn kinds() {
        assert_eq!(kind_of(Path::new("/usr/bin/crun")), RuntimeKind::Crun);
        assert_eq!(kind_of(Path::new("runc")), RuntimeKind::Runc);
        assert_eq!(kind_of(Path::new("crun-1.8")), RuntimeKind::Crun);
        assert_eq!(kind_of(Path::new("youki")), RuntimeKind::Other);
        assert_eq!(kind_of(Path::new("/")), RuntimeKind::Other);
    }

    #[test]
    fn crun_is_preferred() {
        let r = select_with(None, None, &only(&["crun", "runc"]), &same).unwrap();
        assert_eq!(r.kind, RuntimeKind::Crun);
        assert_eq!(r.name(), "crun");
    }

    #[test]
    fn runc_is_the_fallback() {
        let r = select_with(None, None, &only(&["runc"]), &same).unwrap();
        assert_eq!(r.kind, RuntimeKind::Runc);
        assert_eq!(r.path, PathBuf::from("/usr/bin/runc"));
    }

    #[test]
    fn no_runtime_at_all() {
        let e = select_with(None, None, &only(&[]), &same).unwrap_err();
        assert_eq!(
            e.to_string(),
            "no OCI runtime found: install the 'crun' package (or 'runc')"
        );
    }

    #[test]
    fn environment_names_the_runtime() {
        let r = select_with(None, Some("runc"), &only(&["crun", "runc"]), &same).unwrap();
        assert_eq!(r.kind, RuntimeKind::Runc);
    }

    #[test]
    fn empty_environment_is_unset() {
        let r = select_with(None, Some(""), &only(&["crun", "runc"]), &same).unwrap();
        assert_eq!(r.kind, RuntimeKind::Crun);
    }

    #[test]
    fn flag_beats_environment() {
        let r = select_with(Some("crun"), Some("runc"), &only(&["crun", "runc"]), &same).unwrap();
        assert_eq!(r.kind, RuntimeKind::Crun);
    }

    #[test]
    fn missing_runtime_names_package() {
        let e = select_with(Some("/nonexistent/crun"), None, &only(&[]), &same).unwrap_err();
        assert_eq!(
            e.to_string(),
            "OCI runtime '/nonexistent/crun' not found: install the 'crun' package"
        );
        let e = select_with(Some("runc"), None, &only(&[]), &same).unwrap_err();
        assert!(e.to_string().ends_with("install the 'runc' package"), "{e}");
        let e = select_with(Some("youki"), None, &only(&[]), &same).unwrap_err();
        assert_eq!(e.to_string(), "OCI runtime 'youki' not found");
    }

    #[test]
    fn a_link_named_crun_stays_crun() {
        let canon = |_: &Path| Some(PathBuf::from("/opt/rt/runtime-1.8"));
        let r = select_with(Some("crun"), None, &only(&["crun"]), &canon).unwrap();
        assert_eq!(r.kind, RuntimeKind::Crun);
        assert_eq!(r.path, PathBuf::from("/opt/rt/runtime-1.8"));
    }

    #[test]
    fn an_unknown_name_is_judged_by_its_target() {
        let which = |_: &str| Some(PathBuf::from("/usr/local/bin/oci"));
        let canon = |_: &Path| Some(PathBuf::from("/usr/bin/runc"));
        let r = select_with(Some("oci"), None, &which, &canon).unwrap();
        assert_eq!(r.kind, RuntimeKind::Runc);
    }

    #[test]
    fn existing_containers_keep_their_runtime() {
        assert_eq!(
            wanted_for_existing(None, None, Some("/usr/bin/runc")).as_deref(),
            Some("/usr/bin/runc")
        );
        assert_eq!(wanted_for_existing(None, None, None), None);
    }

    #[test]
    fn an_explicit_choice_overrides_the_record() {
        assert_eq!(
            wanted_for_existing(Some("crun"), None, Some("/usr/bin/runc")).as_deref(),
            Some("crun")
        );
        // The environment is read by select itself.
        assert_eq!(
            wanted_for_existing(None, Some("crun"), Some("/usr/bin/runc")),
            None
        );
        assert_eq!(
            wanted_for_existing(None, Some(""), Some("/usr/bin/runc")).as_deref(),
            Some("/usr/bin/runc")
        );
    }
}
