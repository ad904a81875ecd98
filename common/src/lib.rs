//! Shared library of the singularity-oci stages.
//!
//! Every executable is a thin `main` over this crate plus its own modules. What lives here is what
//! more than one stage needs: the JSON records that flow between stages, the CLI conventions
//! (`--help`, `--version`, `FATAL:` lines and exit codes), digests, the cache layout and its locks,
//! the caller's identity and subordinate IDs, and the runtime state directory rules.

pub mod bundleremoval;
pub mod bundlesweep;
pub mod cache;
pub mod cachelist;
pub mod chain;
pub mod cli;
pub mod digest;
pub mod fds;
pub mod fsutil;
pub mod identity;
pub mod inspect;
pub mod instance;
pub mod lifecycle;
pub mod mountns;
pub mod overlay;
pub mod pax;
pub mod process;
pub mod progress;
pub mod record;
pub mod removal;
pub mod rootdir;
pub mod runtime;
pub mod sandbox;
pub mod sif;
pub mod subid;
pub mod term;
pub mod trusted;
pub mod userenv;
