//! oci-runtime-shim: thin wrappers around crun/runc operations, with the state directory, the
//! bundle lock, the signal proxy of `run` and the rootless lifecycle across invocations.

mod args;
mod cleanup;
mod console;
mod escapees;
mod launcher;
mod ops;
mod proxy;
mod run;

use common::cli::Tool;

const TOOL: Tool = Tool {
    name: "oci-runtime-shim",
    help: "\
Usage: oci-runtime-shim [--runtime NAME|PATH] [--root DIR] [--debug] OPERATION [ARGS...]

Thin wrappers around crun (preferred) or runc.

Operations:
  run -b BUNDLE [--pid-file F] [--remove-bundle [--bundle-inode DEV:INO]] [ID]
                                      run in the foreground (signals forwarded, exit status
                                      passed through, 128+N on signal N); ID generated if absent;
                                      --remove-bundle: remove BUNDLE when the run ends, only if
                                      it is still the directory DEV:INO (the bundle record's
                                      bundleInode; without it: a directory of yours)
  remove-bundle -b BUNDLE [--bundle-inode DEV:INO]
                                      remove a bundle whose run never started, the same way
  create -b BUNDLE [--pid-file F] ID  create a container (no conmon; output to its state dir)
  start ID | state ID | list | pause ID | resume ID
  kill [-s SIG] [-f] ID [SIG]         send SIG (default TERM; -f: KILL)
  delete [-f|--force] ID              delete the container, its state dir and its bundle lock
  exec [-t] [-e|--env K=V]... [--cwd DIR] ID [--] CMD [ARGS...]
                                      run CMD in the container; its exit status passes through
  update -f FILE|- ID                 update resources from FILE or stdin
  conmon-exited -b BUNDLE ID          conmon's exit command (oci-conmon-create sets it): remove
                                      conmon's FIFOs and socket from BUNDLE once the container
                                      has exited

Options:
  --runtime NAME|PATH   runtime to use (default: $SINGULARITY_OCI_RUNTIME, then crun, then runc;
                        existing containers use the runtime that created them)
  --root DIR            runtime state root (default: /run/singularity-oci for root, else
                        $XDG_RUNTIME_DIR/singularity-oci, /run/user/UID/singularity-oci or
                        $TMPDIR/singularity-oci-UID; $SINGULARITY_OCI_STATE_ROOT overrides)
  --debug               print the runtime argv on stderr (also SINGULARITY_DEBUG=1)
  -h, --help            print this help
  --version             print the version

Unprivileged: run and create inside oci-userns-starter; run every later operation outside it
(the shim joins the container's user namespace). See oci-runtime-shim(1).
",
};

fn main() {
    TOOL.main(|a| {
        let had = a.has_command;
        let raw: Vec<String> = a
            .opts
            .finish()
            .into_iter()
            .map(|s| {
                s.into_string()
                    .map_err(|s| anyhow::anyhow!("argument is not valid UTF-8: {s:?}"))
            })
            .collect::<anyhow::Result<_>>()?;
        let (g, op) = args::parse(raw, a.command, had)?;
        common::cli::debug(format!("operation {}", op.name()));
        ops::dispatch(g, op)
    })
}
