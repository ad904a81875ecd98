//! The bundle as oci-conmon-create sees it.

use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};

pub struct Bundle {
    /// Absolute path (symlinks resolved: conmon and the runtime get exactly this).
    pub path: PathBuf,
    /// `process.terminal` of config.json: conmon runs in terminal mode exactly when it is true,
    /// otherwise the runtime fails with "Runtime did not set up terminal" (or the reverse).
    pub terminal: bool,
}

impl Bundle {
    pub fn open(p: &Path) -> Result<Bundle> {
        let path = std::fs::canonicalize(p)
            .with_context(|| format!("bundle {} not found", p.display()))?;
        if !path.is_dir() {
            bail!("bundle {} is not a directory", path.display());
        }
        let cfg = path.join("config.json");
        let text = std::fs::read_to_string(&cfg)
            .with_context(|| format!("cannot read {}", cfg.display()))?;
        let v: serde_json::Value = serde_json::from_str(&text)
            .with_context(|| format!("{} is not valid JSON", cfg.display()))?;
        let Some(process) = v.get("process") else {
            bail!("{} has no 'process' to run", cfg.display());
        };
        let terminal = match process.get("terminal") {
            None | Some(serde_json::Value::Null) => false,
            Some(serde_json::Value::Bool(b)) => *b,
            Some(_) => bail!("{}: process.terminal must be true or false", cfg.display()),
        };
        Ok(Bundle { path, terminal })
    }
}
