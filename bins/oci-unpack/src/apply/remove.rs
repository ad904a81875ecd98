//! Removing whatever sits at a name, through fds only (shared with the shim's bundle removal).

pub use common::removal::{remove_all, remove_tree};
