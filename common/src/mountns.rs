//! Private mount namespaces.

use anyhow::{Context, Result};
use nix::mount::{MsFlags, mount};

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
