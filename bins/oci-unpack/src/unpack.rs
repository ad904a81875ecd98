//! Apply all layers of an image record into a fresh directory.

use crate::apply::{Applier, Stats};
use crate::ownership::Ownership;
use crate::stream::{self, LayerSpec};
use anyhow::{Context, Result};
use common::progress::Progress;
use common::record::ImageRecord;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Default bound on the total uncompressed size of an image's layers (`--max-size`).
pub const DEFAULT_MAX_SIZE: u64 = 64 << 30;

/// Unpack every layer of `record` into `root`, which must exist and be empty.
pub fn unpack_into(
    record: &ImageRecord,
    root: &Path,
    ownership: Ownership,
    max_bytes: u64,
) -> Result<Stats> {
    if let Some(src) = &record.sif {
        return crate::sif::unpack_into(record, src, root, ownership, max_bytes);
    }
    let specs = stream::layer_specs(record)?;
    // Fail before starting the pipeline when a blob is plainly missing or unreadable.
    for s in &specs {
        std::fs::File::open(&s.path).with_context(|| {
            format!(
                "cannot open blob of {}: {} (was the image fetched into this layout?)",
                s.describe(),
                s.path.display()
            )
        })?;
    }
    apply_specs(specs, root, ownership, max_bytes)
}

pub fn apply_specs(
    specs: Vec<LayerSpec>,
    root: &Path,
    ownership: Ownership,
    max_bytes: u64,
) -> Result<Stats> {
    let mut applier = Applier::new(root, ownership)?;
    // Bar i is layer i: bytes of its compressed blob read, and the total under them.
    let progress = Arc::new(Progress::new(false).with_total());
    for s in &specs {
        progress.start(&format!("layer {}/{}", s.index + 1, specs.len()), s.size);
    }
    let mut feed = stream::spawn(specs.clone(), max_bytes, progress);
    for spec in &specs {
        let mut layer = feed.layer(spec);
        if let Err(e) = applier.apply_layer(&mut layer) {
            // A corrupt stream surfaces in the tar parser as a short read; say what really
            // went wrong.
            return Err(match layer.stream_error() {
                Some(stream_err) => stream_err,
                None => e.context(spec.describe()),
            });
        }
        layer.finish()?;
    }
    drop(feed);
    let stats = applier.finish()?;
    warn_skipped(&stats);
    Ok(stats)
}

pub fn warn_skipped(stats: &Stats) {
    let s = &stats.skipped;
    if s.devices > 0 {
        common::cli::warn(format!(
            "skipped {} device node(s): creating them needs real root (the runtime provides /dev)",
            s.devices
        ));
    }
    if s.xattrs > 0 {
        common::cli::warn(format!(
            "skipped {} extended attribute(s) this user or filesystem may not set (security.*, trusted.*)",
            s.xattrs
        ));
    }
    if s.unknown_types > 0 {
        common::cli::warn(format!(
            "skipped {} tar entr(ies) of unknown type",
            s.unknown_types
        ));
    }
}

/// A directory being built, removed on drop unless committed.
pub struct TempTree {
    path: PathBuf,
    armed: bool,
}

impl TempTree {
    /// Create `path` (mode 0700; it must not exist).
    pub fn create(path: PathBuf) -> Result<TempTree> {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&path)
            .with_context(|| format!("cannot create {}", path.display()))?;
        Ok(TempTree { path, armed: true })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Keep the tree (it has been renamed into place).
    pub fn disarm(mut self) {
        self.armed = false;
    }
}

impl Drop for TempTree {
    fn drop(&mut self) {
        if self.armed
            && let Err(e) = crate::apply::remove::remove_tree(&self.path)
        {
            common::cli::warn(format!(
                "cannot remove partial tree {}: {e}",
                self.path.display()
            ));
        }
    }
}
