//! oci-instance: named background containers (SingularityCE's instances) on the lifecycle
//! core: `start` one from a bundle under conmon, `list` them, `stop` them, and `exec` an
//! action in one. See `common::instance` for where an instance keeps what.

mod start;
mod stop;

use anyhow::{Result, bail};
use common::cli::Tool;
use common::lifecycle::host::RealHost;
use common::lifecycle::ops::{Target, exec};
use common::lifecycle::process::Program;
use common::lifecycle::runtime::{self, ENV_RUNTIME};
use common::record::{Instance, InstanceStatus, InstancesRecord};
use std::path::PathBuf;
use std::time::Duration;

const TOOL: Tool = Tool {
    name: "oci-instance",
    help: "\
Usage: oci-instance [--root DIR] [--runtime NAME|PATH] OPERATION [ARGS...]

Named background containers (instances), monitored by conmon.

Operations:
  start --bundle B [--bundle-inode DEV:INO] --image IMAGE NAME
        create and start instance NAME from bundle B (made by oci-mkspec --action start) under
        conmon; its stdout and stderr go to ~/.singularity/instances/logs/HOST/USER/NAME.out
        and .err. Unprivileged: run it inside oci-userns-starter --overlay B.
  check NAME
        succeed when NAME is a valid instance name that is free (the front asks before it
        makes the bundle; start checks again)
  list [PATTERN]
        print one JSON record of your instances (names matching the glob PATTERN)
  stop [--signal SIG] [--timeout SECS] [--force] (--all | NAME|PATTERN...)
        send SIG (default TERM; --force: KILL), after SECS (default 10) KILL, then remove
        the instance's container, state and bundle (the log files stay); a PATTERN (with *
        or ?) stands for every instance it matches
  exec [--action exec|run|shell|test] [--tty] [--env K=V]... [--cwd DIR] NAME [--] [ARG...]
        run the action in the running instance NAME, in its namespaces and root filesystem;
        the exit status passes through

Options:
  --root DIR            runtime state root (default: as oci-runtime-shim(1))
  --runtime NAME|PATH   runtime for start (default: $SINGULARITY_OCI_RUNTIME, crun, runc);
                        the other operations use the one that started the instance
  -h, --help            print this help
  --version             print the version

See oci-instance(1).
",
};

/// What every operation shares.
pub struct Global {
    pub root: Option<PathBuf>,
    pub runtime: Option<String>,
}

fn main() {
    TOOL.main(|mut args| {
        let g = Global {
            root: args.opts.opt_value_from_str("--root")?,
            runtime: args.opts.opt_value_from_str("--runtime")?,
        };
        let op: Option<String> = args.opts.subcommand()?;
        match op.as_deref() {
            Some("start") => start::run(&g, args).map(|()| 0),
            Some("check") => {
                let name = args.single_positional("instance name", "oci-instance check NAME")?;
                common::instance::check_name(&name)?;
                start::refuse_taken(&state_root(&g)?, &name).map(|()| 0)
            }
            Some("list") => list(&g, args).map(|()| 0),
            Some("stop") => stop::run(&g, args),
            Some("exec") => exec_in(&g, args),
            Some(other) => bail!("unknown operation '{other}' (start, check, list, stop or exec)"),
            None => bail!("no operation given (start, check, list, stop or exec; see --help)"),
        }
    })
}

fn state_root(g: &Global) -> Result<PathBuf> {
    common::lifecycle::root::resolve(g.root.as_deref())
}

/// The runtime of an existing instance: the one that made it, unless the caller names one.
pub fn runtime_of(g: &Global, i: &Instance) -> Result<Program> {
    let env = std::env::var(ENV_RUNTIME).ok();
    let recorded = i.runtime.to_string_lossy().into_owned();
    let wanted =
        runtime::wanted_for_existing(g.runtime.as_deref(), env.as_deref(), Some(&recorded));
    Ok(Program {
        bin: runtime::select(wanted.as_deref())?,
        root: i.runtime_root.clone(),
        debug: common::cli::debug_enabled(),
    })
}

fn list(g: &Global, args: common::cli::Args) -> Result<()> {
    let (pos, _) = args.positionals()?;
    if pos.len() > 1 {
        bail!("usage: oci-instance list [PATTERN]");
    }
    let root = state_root(g)?;
    let record = InstancesRecord::new(common::instance::list(
        &root,
        pos.first().map(String::as_str),
    )?);
    common::record::print_record(&record)
}

fn exec_in(g: &Global, mut args: common::cli::Args) -> Result<i32> {
    let action: Option<String> = args.opts.opt_value_from_str("--action")?;
    let tty = args.opts.contains(["-t", "--tty"]);
    // The user's variables from the environment (SINGULARITYENV_NAME), then --env, a later one
    // for the same name winning; each name is given once (a process's own lookup would find the
    // first of two).
    let host_env: Vec<(String, String)> = std::env::vars().collect();
    let mut user = common::userenv::EnvList::default();
    for (k, v) in common::userenv::prefixed(&host_env, &mut |w| common::cli::warn(w)) {
        user.set(&k, &v);
    }
    while let Some(e) = args.opts.opt_value_from_str::<_, String>(["-e", "--env"])? {
        let Some((k, v)) = e.split_once('=') else {
            bail!("--env {e}: expected NAME=VALUE");
        };
        user.set(k, v);
    }
    let env = user.to_strings();
    let cwd: Option<String> = args.opts.opt_value_from_str("--cwd")?;
    let (pos, after) = args.positionals()?;
    let mut pos = pos.into_iter();
    let Some(name) = pos.next() else {
        bail!("usage: oci-instance exec [OPTIONS] NAME [--] [ARG...]");
    };
    let command: Vec<String> = pos.chain(after).collect();
    let action = action.unwrap_or_else(|| "exec".into());
    let root = state_root(g)?;
    let (sd, instance) = common::instance::find(&root, &name)?;
    if let (InstanceStatus::Exited, status) = common::instance::status(&sd) {
        bail!(
            "instance '{name}' has stopped{}: remove it with `singularity-oci instance stop {name}`",
            status
                .map(|s| format!(" (exit status {s})"))
                .unwrap_or_default()
        );
    }
    let argv = common::instance::action_argv(&instance, &action, &command)?;
    let rt = runtime_of(g, &instance)?;
    let req = exec::Request {
        command: &argv,
        tty,
        env: &env,
        cwd: cwd.as_deref(),
    };
    exec::exec(&rt, &RealHost, &Target::of(&sd), &req)
}

/// Parse a whole number of seconds.
pub fn seconds(opt: &str, v: &str) -> Result<Duration> {
    match v.parse::<u64>() {
        Ok(n) => Ok(Duration::from_secs(n)),
        Err(_) => bail!("{opt} needs a whole number of seconds, got '{v}'"),
    }
}
