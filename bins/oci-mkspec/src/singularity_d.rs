//! Images built by Singularity itself (native SIF files, sandbox directories) bring their own
//! action semantics in `/.singularity.d`: the scripts in `env/*.sh` are sourced, in lexical
//! order, before every action; `run` executes `runscript` and `test` executes `test`, with the
//! arguments, their status passed through. The container process is a small `/bin/sh` script
//! that does exactly that, as SingularityCE's own `actions/*` scripts do.

use crate::options::Action;
use crate::process::SHELL_SCRIPT;
use anyhow::{Result, bail};

/// Source the environment scripts; the glob expands in lexical order.
const SOURCE_ENV: &str =
    "for f in /.singularity.d/env/*.sh; do if [ -f \"$f\" ]; then . \"$f\"; fi; done; unset f; ";

const RUN: &str = "if [ -x /.singularity.d/runscript ]; then exec /.singularity.d/runscript \"$@\"; fi; \
     echo 'No Singularity runscript found, executing /bin/sh' >&2; exec /bin/sh \"$@\"";

const TEST: &str = "if [ -x /.singularity.d/test ]; then exec /.singularity.d/test \"$@\"; fi; \
     echo 'No test script found in container, exiting' >&2; exit 0";

/// The argv of `action` in an image with `/.singularity.d`. `$0` names the action, as in
/// SingularityCE (`/.singularity.d/actions/run`).
pub fn args(action: Action, command: &[String]) -> Result<Vec<String>> {
    let (name, body) = match action {
        Action::Exec => {
            if command.is_empty() {
                bail!("exec needs a command: oci-mkspec --action exec ... -- CMD [ARG...]");
            }
            ("exec", "exec \"$@\"")
        }
        Action::Run => ("run", RUN),
        Action::Test => ("test", TEST),
        Action::Shell => ("shell", SHELL_SCRIPT),
    };
    let mut v = vec![
        "/bin/sh".to_string(),
        "-c".to_string(),
        format!("{SOURCE_ENV}{body}"),
        format!("/.singularity.d/actions/{name}"),
    ];
    if action != Action::Shell {
        v.extend(command.iter().cloned());
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn every_action_sources_the_env_scripts_first() {
        for a in [Action::Exec, Action::Run, Action::Test, Action::Shell] {
            let v = args(a, &s(&["x", "y z"])).unwrap();
            assert_eq!(v[0], "/bin/sh");
            assert!(v[2].starts_with(SOURCE_ENV), "{a:?}");
        }
        let v = args(Action::Run, &s(&["a", "b"])).unwrap();
        assert_eq!(&v[3..], &s(&["/.singularity.d/actions/run", "a", "b"])[..]);
        assert!(args(Action::Exec, &[]).is_err());
        assert_eq!(args(Action::Shell, &s(&["ignored"])).unwrap().len(), 4);
    }
}
