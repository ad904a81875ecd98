//! The bundle as oci-conmon-create sees it, and the state that a create owns until it succeeds.

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

/// The state directory and the bundle lock of a create in progress. Dropped without
/// [`Prepared::keep`], it releases the lock, removes the conmon files from the bundle and
/// removes the state directory, so a failed create leaves nothing behind.
pub struct Prepared {
    bundle: PathBuf,
    id: String,
    state_dir: PathBuf,
    locked: bool,
    keep: bool,
}

impl Prepared {
    pub fn new(bundle: &Bundle, id: &str, root: &Path, state_dir: &Path) -> Result<Prepared> {
        if let Some(parent) = state_dir.parent() {
            common::fsutil::private_dir(parent)?;
        }
        // create_dir (not create_dir_all): losing a race with another create of the same id must
        // fail here rather than share the directory.
        std::fs::create_dir(state_dir).with_context(|| {
            format!("cannot create the state directory {}", state_dir.display())
        })?;
        let mut p = Prepared {
            bundle: bundle.path.clone(),
            id: id.to_string(),
            state_dir: state_dir.to_path_buf(),
            locked: false,
            keep: false,
        };
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(state_dir, std::fs::Permissions::from_mode(0o700))?;
        common::bundlelock::lock(&bundle.path, id, root, common::bundlelock::state_dir_exists)?;
        p.locked = true;
        Ok(p)
    }

    pub fn keep(&mut self) {
        self.keep = true;
    }
}

impl Drop for Prepared {
    fn drop(&mut self) {
        if self.keep {
            return;
        }
        common::conmon::remove_bundle_leftovers(&self.bundle);
        if self.locked
            && let Err(e) = common::bundlelock::release(&self.bundle, &self.id)
        {
            common::cli::warn(format!("{e:#}"));
        }
        if let Err(e) = std::fs::remove_dir_all(&self.state_dir) {
            common::cli::warn(format!("cannot remove {}: {e}", self.state_dir.display()));
        }
    }
}
