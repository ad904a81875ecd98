//! The container lifecycle, in one place, in the shape of youki's `libcontainer`: the state
//! layout, the state root, the bundle lock, the runtime and its errors, and one file per
//! operation. `oci-runtime-shim`, `oci-conmon-create`, `oci-attach` and `oci-cgroup-fix`
//! are thin mains over it.
//!
//! * [`root`]: the state root (`--root`, the environment, SingularityCE's rules; always private);
//! * [`statedir`]: `<root>/containers/<id>/` and every file in it;
//! * [`lock`]: the bundle lock and its one staleness rule;
//! * [`runtime`]: which runtime; [`error`]: its messages; [`process`]: the [`process::Runtime`]
//!   trait (argv in; status, stdout, stderr out) with the real program, and [`fake`] for tests;
//! * [`host`]: what the operations ask of the machine (caller, cgroup fix, namespaces), with a
//!   fake; [`userns`]: which user namespace an operation runs in; [`cgroupfix`]: crun's
//!   hybrid-cgroup fix;
//! * [`status`] and [`signals`]: exit statuses and signal names; [`proc`]: `/proc/PID/stat`;
//!   [`monitor`]: conmon as seen from the state directory;
//! * [`ops`]: create, start, state, kill, delete, exec, pause/resume, update, attach.

pub mod cgroupfix;
pub mod error;
pub mod fake;
pub mod host;
pub mod lock;
pub mod monitor;
pub mod ops;
pub mod proc;
pub mod process;
pub mod readonly;
pub mod root;
pub mod runtime;
pub mod signals;
pub mod statedir;
pub mod status;
pub mod userns;
