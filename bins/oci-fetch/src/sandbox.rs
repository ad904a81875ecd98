//! Sandbox directories (a tree with `/.singularity.d`) as images: checked here, never copied.
//! The record has no layers; `oci-unpack` hands the directory itself on as the read-only root
//! filesystem (see `common::sandbox` for what is trusted and why).

use anyhow::Result;
use common::record::ImageRecord;
use std::path::{Path, PathBuf};

/// A bare reference that names a sandbox directory.
pub fn sandbox_path(reference: &str) -> Option<PathBuf> {
    if reference.contains("://") {
        return None;
    }
    let p = Path::new(reference);
    common::sandbox::looks_like_sandbox(p).then(|| p.to_path_buf())
}

/// The image record of the sandbox at `path`, for architecture `arch` (a sandbox does not say
/// which it was built for). Its digest depends on the directory's real path, so two sandboxes
/// never share an image identity.
pub fn record(reference: &str, path: &Path, arch: &str) -> Result<ImageRecord> {
    let src = common::sandbox::open(path)?;
    let image_config = serde_json::json!({
        "architecture": arch,
        "os": "linux",
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": []},
    });
    let annotations = serde_json::json!({
        "org.sylabs.singularity-oci.sandbox": src.path.to_string_lossy(),
    });
    let rec = crate::sif::synthesized(
        reference,
        "sandbox",
        Vec::new(),
        image_config,
        src.path.clone(),
        Some(annotations),
    )?;
    Ok(rec.with_sandbox(src))
}
