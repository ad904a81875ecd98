//! The end-to-end tests: one module a subject, all in one test binary, so the suite links once
//! instead of once a file. `scripts/test -p e2e --test e2e -- MODULE::` runs one module (e.g.
//! `slice::`), `-- NAME` the tests whose path contains NAME. The harness is the `e2e` library
//! (tests/e2e/src); helpers shared by a few modules are the `*_support` modules.

mod actions;
mod attach;
mod cdi;
mod chain;
mod conmon;
mod conmon_support;
mod fetch;
mod fetch_credential_scope;
mod fetch_proxy;
mod fetch_redirect;
mod front;
mod hardening;
mod hostile_neighbour;
mod instance;
mod launcher_death;
mod mkspec;
mod oci_exec;
mod ocisif;
mod overlay;
mod registry_index;
mod registry_selfsigned;
mod reliability_crash;
mod reliability_leaks;
mod reliability_registry;
mod reliability_runtime;
mod reliability_support;
mod rootless_owners;
mod runtime;
mod runtime_support;
mod sandbox;
mod secrets;
mod sif;
mod slice;
mod slurm;
mod starter;
mod terminal;
mod unpack;
mod workflow_clients;
