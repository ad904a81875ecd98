//! `run --remove-bundle` and `remove-bundle`: the removal itself is shared with oci-mkspec's
//! sweep of killed launchers' bundles (`common::bundleremoval`).

pub use common::bundleremoval::{parse_dev_ino, remove_bundle};
