//! oci-mkspec as a library: the spec builder and its parsers, shared by the executable, the
//! tests and the fuzz targets.

pub mod binds;
pub mod bundle;
pub mod caps;
pub mod cdi;
pub mod cgroups;
pub mod env;
pub mod etcfiles;
pub mod gpu;
pub mod host;
pub mod image;
pub mod init;
pub mod launch;
pub mod mounts;
pub mod options;
pub mod process;
pub use common::rootdir as rootfs;
pub mod singularity_d;
pub mod spec;
#[cfg(test)]
mod spec_tests;
