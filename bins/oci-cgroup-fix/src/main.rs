//! oci-cgroup-fix: a chain-loader in the style of s6. When this host's cgroup layout makes crun
//! refuse to run (hybrid mode with controllers in the unified hierarchy), hide those controllers
//! in a private mount namespace; then exec the rest of argv. conmon can only be given a runtime
//! *path*, so this is how a conmon-driven crun gets the fix the shim applies in-process.

use anyhow::{Context, Result, bail};
use common::cli::Tool;
use std::os::unix::process::CommandExt;

const TOOL: Tool = Tool {
    name: "oci-cgroup-fix",
    help: "\
Usage: oci-cgroup-fix [--force] -- PROG [ARG...]

Chain-loader: when this host needs crun's hybrid-cgroup fix (/sys/fs/cgroup a cgroup v1 tmpfs,
/sys/fs/cgroup/unified a cgroup2 mount with controllers), bind /dev/null over
/sys/fs/cgroup/unified/cgroup.controllers in a new private mount namespace; then execute PROG
with its arguments in place of this process. Nothing changes outside that namespace. Needs
CAP_SYS_ADMIN when the fix applies (root, or root of oci-userns-starter's namespace).

Options:
  --force       apply the fix whatever the host looks like
  -h, --help    print this help
  --version     print the version

Exit status: PROG's own (this program is replaced by it); 255 when the fix or the exec fails.
See oci-cgroup-fix(1).
",
};

fn main() {
    TOOL.main(|mut args| {
        let force = args.opts.contains("--force");
        let rest = common::cli::positionals(args.opts)?;
        if let Some(x) = rest.first() {
            bail!("unexpected argument '{x}' (the program comes after '--')");
        }
        chain(force, &args.command)
    })
}

fn chain(force: bool, command: &[String]) -> Result<i32> {
    let Some((prog, argv)) = command.split_first() else {
        bail!("no program given: oci-cgroup-fix -- PROG [ARG...]");
    };
    // A bare name is looked up on the absolute PATH entries only (never the working directory),
    // before anything is changed.
    let path = common::runtime::which(prog).with_context(|| format!("{prog} not found"))?;
    if force || common::lifecycle::cgroupfix::host_needs_fix() {
        common::lifecycle::cgroupfix::apply().context("cannot apply the crun hybrid-cgroup fix")?;
    }
    let err = std::process::Command::new(&path).args(argv).exec();
    Err(err).with_context(|| format!("cannot execute {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_program_is_an_error_that_says_how() {
        let e = chain(false, &[]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "no program given: oci-cgroup-fix -- PROG [ARG...]"
        );
    }

    #[test]
    fn a_missing_program_is_named() {
        let e = chain(false, &["/nonexistent/crun".to_string()]).unwrap_err();
        assert_eq!(e.to_string(), "/nonexistent/crun not found");
    }
}
