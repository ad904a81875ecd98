//! oci-fetch as a library: reference parsing, manifests, sources and the blob store, shared by
//! the executable, the tests and the fuzz targets.

pub mod archive;
pub mod image;
pub mod inspect;
pub mod layout;
pub mod media;
pub mod ocisif;
pub use common::progress;
pub mod reference;
pub mod registry;
pub mod sandbox;
pub mod save;
pub mod sif;
pub mod sifwrite;
pub mod squash;
pub mod store;
