//! The operations: each one finds the container, picks its runtime, and hands over to the
//! lifecycle core (`common::lifecycle::ops`), which does the work and says what went wrong.
//!
//! Namespaces, per caller (see oci-runtime-shim(1), NAMESPACES):
//! * host root: the runtime runs where the shim runs (crun gets the hybrid-cgroup fix in a private
//!   mount namespace for `run` and `create`).
//! * unprivileged, `run`/`create`: the shim must already be inside the outer user namespace made
//!   by `oci-userns-starter` (it is root there, so it can make the crun fix's mount namespace).
//! * unprivileged, every later operation: run the shim from the host user namespace. It joins the
//!   container's *outer* user namespace with setns, keeping its credentials, and runs the runtime
//!   there (`common::lifecycle::userns`).

use crate::args::{Global, Op};
use anyhow::Result;
use common::lifecycle::host::RealHost;
use common::lifecycle::ops::{
    self, Target, create, delete, exec, kill, pause, start, state, update,
};
use common::lifecycle::process::{Output, Program};
use common::lifecycle::root;
use common::lifecycle::runtime::{self, ENV_RUNTIME};
use common::lifecycle::statedir::{self, StateDir};
use std::path::Path;

/// The runtime for a new container (or for `list`), under the state root of this command.
pub fn program(g: &Global, wanted: Option<&str>) -> Result<Program> {
    let bin = runtime::select(wanted)?;
    Ok(Program {
        bin,
        root: root::resolve(g.root.as_deref())?,
        debug: g.debug || common::cli::debug_enabled(),
    })
}

/// An existing container: the runtime that made it, and its state directory if ours.
fn existing(g: &Global, id: &str) -> Result<(Program, Option<StateDir>)> {
    statedir::check_container_id(id)?;
    let state_root = root::resolve(g.root.as_deref())?;
    let sd = StateDir::open(&state_root, id)?;
    let env = std::env::var(ENV_RUNTIME).ok();
    let recorded = sd.as_ref().and_then(StateDir::runtime);
    let wanted =
        runtime::wanted_for_existing(g.runtime.as_deref(), env.as_deref(), recorded.as_deref());
    let rt = Program {
        bin: runtime::select(wanted.as_deref())?,
        root: state_root,
        debug: g.debug || common::cli::debug_enabled(),
    };
    ops::require_known(
        &rt,
        &Target {
            id,
            sd: sd.as_ref(),
        },
    )?;
    Ok((rt, sd))
}

/// Run `op` on existing container `id` and pass its output through.
fn on_existing(
    g: &Global,
    id: &str,
    op: impl FnOnce(&Program, &Target) -> Result<Output>,
) -> Result<i32> {
    let (rt, sd) = existing(g, id)?;
    let out = op(
        &rt,
        &Target {
            id,
            sd: sd.as_ref(),
        },
    )?;
    ops::pass_through(&out);
    Ok(0)
}

pub fn dispatch(g: Global, op: Op) -> Result<i32> {
    let host = RealHost;
    match op {
        Op::Run {
            bundle,
            pid_file,
            id,
            remove_bundle,
            bundle_inode,
        } => {
            let removal = remove_bundle.then_some(bundle_inode);
            crate::run::run(&g, &bundle, pid_file, id, removal)
        }
        Op::RemoveBundle {
            bundle,
            bundle_inode,
        } => {
            crate::cleanup::remove_bundle(&bundle, bundle_inode)?;
            Ok(0)
        }
        Op::Create {
            bundle,
            pid_file,
            id,
        } => {
            let bundle = create::check_bundle(&bundle)?;
            statedir::check_container_id(&id)?;
            let rt = program(&g, g.runtime.as_deref())?;
            let req = create::Request {
                bundle: &bundle,
                id: &id,
                pid_file: pid_file.as_deref(),
            };
            create::create(&rt, &host, &req)?;
            Ok(0)
        }
        Op::Start(id) => on_existing(&g, &id, |rt, t| start::start(rt, &host, t)),
        Op::State(id) => on_existing(&g, &id, |rt, t| state::state(rt, &host, t)),
        Op::List => {
            let rt = program(&g, g.runtime.as_deref())?;
            ops::pass_through(&state::list(&rt)?);
            Ok(0)
        }
        Op::Kill { id, signal } => {
            // A bad signal is refused before the container is looked up.
            common::lifecycle::signals::parse(&signal)?;
            on_existing(&g, &id, |rt, t| kill::kill(rt, &host, t, &signal))
        }
        Op::Delete { id, force } => {
            on_existing(&g, &id, |rt, t| delete::delete(rt, &host, t, force))
        }
        Op::Exec {
            id,
            tty,
            env,
            cwd,
            command,
        } => {
            let (rt, sd) = existing(&g, &id)?;
            let req = exec::Request {
                command: &command,
                tty,
                env: &env,
                cwd: cwd.as_deref(),
            };
            exec::exec(
                &rt,
                &host,
                &Target {
                    id: &id,
                    sd: sd.as_ref(),
                },
                &req,
            )
        }
        Op::Pause(id) => on_existing(&g, &id, |rt, t| pause::pause(rt, &host, t)),
        Op::Resume(id) => on_existing(&g, &id, |rt, t| pause::resume(rt, &host, t)),
        Op::ConmonExited { bundle, id } => {
            let sd = statedir::container_dir(&root::resolve(g.root.as_deref())?, &id)?;
            // conmon runs its exit command as its own child.
            let conmon = std::os::unix::process::parent_id() as i32;
            common::lifecycle::monitor::exit_cleanup(&sd, &bundle, conmon);
            Ok(0)
        }
        Op::Update { id, from } => on_existing(&g, &id, |rt, t| {
            let mut stdin = std::io::stdin().lock();
            let from = if from == "-" {
                update::Resources::Stdin(&mut stdin)
            } else {
                update::Resources::File(Path::new(&from))
            };
            update::update(rt, &host, t, from)
        }),
    }
}
