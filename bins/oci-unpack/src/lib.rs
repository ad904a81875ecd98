//! oci-unpack as a library: the layer applier and the rootfs cache, so tests (and a fuzz target)
//! can drive the extractor without the command line.

pub mod apply;
pub mod cache;
pub mod ownership;
pub mod sif;
pub mod squashfs;
pub mod stream;
pub mod unpack;
pub mod userns;
