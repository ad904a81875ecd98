//! Images built by Singularity itself (native SIF files, sandbox directories) bring their own
//! action semantics in `/.singularity.d`: the scripts in `env/*.sh` are sourced, in lexical
//! order, before every action; `run` executes `runscript` and `test` executes `test`, with the
//! arguments, their status passed through. The container process is a small `/bin/sh` script
//! that does exactly that, as SingularityCE's own `actions/*` scripts do.
//!
//! The user's variables (`SINGULARITYENV_*`, `--env-file`, `--env`) win over what the image's
//! scripts set, as in SingularityCE, which binds a generated `98-singularityenv.sh` among
//! them: here the script keeps the values it was started with and sets them again at that
//! place in the order (after the scripts up to `98-*`, before `99-*`). Only the variables'
//! names travel in the environment (`USER_ENV_KEYS`), never on a command line. The host's
//! variables that pass come last, where that script's second half puts them: held aside
//! while the image's scripts run, exported after the user's variables where still unset
//! (`HOST_ENV_KEYS`). PATH is built
//! the same way: the image's scripts set it, then the user's `PATH`, `APPEND_PATH` and
//! `PREPEND_PATH` (as `SING_USER_DEFINED_*`) are applied as SingularityCE's
//! `99-runtimevars.sh` does, and `/.singularity.d/libs` is added to LD_LIBRARY_PATH as its
//! `99-base.sh` does; both only when the image's own scripts have not already done it.

use crate::env::{DEFAULT_PATH, EnvList, LIBS_DIR, is_name};
use crate::options::Action;
use crate::process::SHELL_SCRIPT;
use anyhow::{Result, bail};

/// Names the user's variables for the action script (removed from the environment by it).
pub const USER_ENV_KEYS: &str = "_SINGULARITY_OCI_USER_ENV";

/// Set (to 1) when the user's values are evaluated by the shell as they are set again, as
/// SingularityCE's `98-singularityenv.sh` does with `--no-compat` without `--no-eval` (it
/// writes `K="VALUE"` with only `"` escaped); otherwise they are set literally.
pub const USER_ENV_EVAL: &str = "_SINGULARITY_OCI_USER_ENV_EVAL";

/// Names the host variables that pass into the container (`--no-compat`: nearly all; else
/// `TERM`, the proxies and the batch system's wiring): they are held back while the image's
/// scripts run and exported after the user's variables, each only if still unset then, as the
/// host block at the end of SingularityCE's `98-singularityenv.sh` does.
pub const HOST_ENV_KEYS: &str = "_SINGULARITY_OCI_HOST_ENV";

/// Sets the user's variables again (after the app's environment, once): literally, or with
/// `_sioci_eval` as `eval K="VALUE"`, `"` in VALUE escaped. Then the held-back host variables
/// that nothing has set by now.
const REAPPLY: &str = r#"_sioci_user() { _sioci_app; _sioci_app() { :; }; for _sioci_k in $_sioci_keys; do eval "_sioci_r=\$_sioci_v_$_sioci_k"; unset _sioci_v_$_sioci_k; if [ -n "$_sioci_eval" ]; then _sioci_o=; while :; do case $_sioci_r in *\"*) _sioci_p=${_sioci_r%%\"*}; _sioci_o=$_sioci_o$_sioci_p\\\"; _sioci_r=${_sioci_r#*\"} ;; *) break ;; esac; done; eval "$_sioci_k=\"$_sioci_o$_sioci_r\""; else eval "$_sioci_k=\$_sioci_r"; fi; export $_sioci_k; done; _sioci_keys=; for _sioci_k in $_sioci_hkeys; do eval "_sioci_r=\${$_sioci_k+1}"; if [ -z "$_sioci_r" ]; then eval "$_sioci_k=\$_sioci_h_$_sioci_k"; export $_sioci_k; fi; unset _sioci_h_$_sioci_k; done; _sioci_hkeys=; }; "#;

/// Variables a POSIX shell owns or that the script's own word splitting needs: never set again.
const NOT_REAPPLIED: &[&str] = &[
    "PATH",
    "LD_LIBRARY_PATH",
    "APPEND_PATH",
    "PREPEND_PATH",
    "IFS",
    "PPID",
    "PWD",
    "OPTIND",
    "UID",
    "EUID",
    "GID",
];

/// Whether the script can keep a variable aside and set it again: a name the shell accepts,
/// not one it owns, not one of the script's own.
pub fn can_hold(k: &str) -> bool {
    is_name(k) && !NOT_REAPPLIED.contains(&k) && !k.starts_with("_sioci_")
}

/// Names the host variables of `host` that the script holds back (see `HOST_ENV_KEYS`); they
/// stay in the environment, under their own names, until the script takes them aside.
pub fn hold_host_vars<'a>(env: &mut EnvList, host: impl Iterator<Item = &'a str>) {
    let mut held: Vec<&str> = Vec::new();
    for k in host {
        if can_hold(k) && !held.contains(&k) {
            held.push(k);
        }
    }
    if !held.is_empty() {
        env.set(HOST_ENV_KEYS, &held.join(" "));
    }
}

/// The environment of a Singularity-built image, after the user's variables went into `env`:
/// PATH starts from the default (the image's scripts set their own), the user's PATH pieces
/// wait in `SING_USER_DEFINED_*`, LD_LIBRARY_PATH is the user's if given, and the names of the
/// user's variables go to the script.
pub fn native_env(
    env: &mut EnvList,
    user: &EnvList,
    path: Option<String>,
    append: Option<String>,
    prepend: Option<String>,
    ld_library_path: Option<String>,
    evaluate: bool,
) {
    env.set("PATH", DEFAULT_PATH);
    for (k, v) in [
        ("SING_USER_DEFINED_PATH", path),
        ("SING_USER_DEFINED_APPEND_PATH", append),
        ("SING_USER_DEFINED_PREPEND_PATH", prepend),
    ] {
        if let Some(v) = v {
            env.set(k, &v);
        }
    }
    if let Some(l) = ld_library_path {
        env.set("LD_LIBRARY_PATH", &l);
    }
    let keys: Vec<&str> = user
        .0
        .iter()
        .map(|(k, _)| k.as_str())
        .filter(|k| can_hold(k))
        .collect();
    if !keys.is_empty() {
        env.set(USER_ENV_KEYS, &keys.join(" "));
        if evaluate {
            env.set(USER_ENV_EVAL, "1");
        }
    }
}

/// The script's part before the action: keep the user's values, source the env scripts in
/// lexical order setting the user's values again before the first script after `98-*` (an
/// image's own `98-singularityenv.sh` is replaced by that, as SingularityCE's bind mount
/// replaces it), then PATH and LD_LIBRARY_PATH as described above.
fn prologue() -> String {
    format!(
        "_sioci_keys=${{{USER_ENV_KEYS}-}}; _sioci_hkeys=${{{HOST_ENV_KEYS}-}}; _sioci_eval=${{{USER_ENV_EVAL}-}}; unset {USER_ENV_KEYS} {HOST_ENV_KEYS} {USER_ENV_EVAL}; \
for _sioci_k in $_sioci_keys; do eval \"_sioci_v_$_sioci_k=\\${{$_sioci_k}}\"; done; \
for _sioci_k in $_sioci_hkeys; do eval \"_sioci_h_$_sioci_k=\\${{$_sioci_k}}\"; unset $_sioci_k; done; \
{REAPPLY}\
for _sioci_f in /.singularity.d/env/*.sh; do _sioci_appat \"${{_sioci_f##*/}}\"; \
case ${{_sioci_f##*/}} in 98-singularityenv.sh) _sioci_user; continue ;; [0-8]* | 9[0-8]*) ;; *) _sioci_user ;; esac; \
if [ -f \"$_sioci_f\" ]; then . \"$_sioci_f\"; fi; done; _sioci_user; \
if [ -n \"${{SING_USER_DEFINED_PREPEND_PATH:-}}\" ]; then PATH=\"$SING_USER_DEFINED_PREPEND_PATH:$PATH\"; fi; \
if [ -n \"${{SING_USER_DEFINED_APPEND_PATH:-}}\" ]; then PATH=\"$PATH:$SING_USER_DEFINED_APPEND_PATH\"; fi; \
if [ -n \"${{SING_USER_DEFINED_PATH:-}}\" ]; then PATH=\"$SING_USER_DEFINED_PATH\"; fi; \
unset SING_USER_DEFINED_PREPEND_PATH SING_USER_DEFINED_APPEND_PATH SING_USER_DEFINED_PATH; export PATH; \
case \":${{LD_LIBRARY_PATH:-}}:\" in *:{LIBS_DIR}:*) ;; ::) LD_LIBRARY_PATH={LIBS_DIR} ;; *) LD_LIBRARY_PATH=\"$LD_LIBRARY_PATH:{LIBS_DIR}\" ;; esac; \
export LD_LIBRARY_PATH; unset _sioci_f _sioci_k _sioci_keys _sioci_hkeys _sioci_eval _sioci_r _sioci_o _sioci_p; unset -f _sioci_user _sioci_app _sioci_appat _sioci_appfire; "
    )
}

const RUN: &str = "if [ -x /.singularity.d/runscript ]; then exec /.singularity.d/runscript \"$@\"; fi; \
     echo 'No Singularity runscript found, executing /bin/sh' >&2; exec /bin/sh \"$@\"";

const TEST: &str = "if [ -x /.singularity.d/test ]; then exec /.singularity.d/test \"$@\"; fi; \
     echo 'No test script found in container, exiting' >&2; exit 0";

/// `instance start`: the startscript with the arguments, then the instance stays up, as a
/// SingularityCE instance outlives its startscript (a startscript commonly starts a daemon in
/// the background and returns). Waiting needs no program from the image: `read` on a pipe that
/// the shell itself holds open for writing (reopened read-write through /proc) never returns.
const START: &str = "if [ -x /.singularity.d/startscript ]; then /.singularity.d/startscript \"$@\"; fi; \
     : | { exec 3<>/proc/self/fd/0; read -r _ <&3; }";

/// What SingularityCE's `95-apps.sh` does for the app `--app` names, for images that lack it:
/// the app's environment (`SCIF_APPROOT`, its `bin` first on PATH, its `lib` on
/// LD_LIBRARY_PATH, its `env/01-base.sh` and `env/90-environment.sh`). Runs where that script
/// would be sourced (`APP_POSITION`), or before the user's variables are set again when no
/// script sorts after it.
const APP_ENV: &str = "_sioci_app() { [ -n \"${SINGULARITY_APPNAME:-}\" ] && [ ! -f /.singularity.d/env/95-apps.sh ] || return 0; \
_a=/scif/apps/$SINGULARITY_APPNAME; \
if [ ! -d \"$_a\" ]; then echo \"Could not locate the container application: $SINGULARITY_APPNAME\" >&2; exit 1; fi; \
SCIF_APPS=/scif/apps; SCIF_APPROOT=$_a; export SCIF_APPS SCIF_APPROOT; PATH=\"$_a:$PATH\"; \
if [ -d \"$_a/bin\" ]; then PATH=\"$_a/bin:$PATH\"; fi; \
if [ -d \"$_a/lib\" ]; then LD_LIBRARY_PATH=\"$_a/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}\"; export LD_LIBRARY_PATH; fi; \
for _f in \"$_a/scif/env/01-base.sh\" \"$_a/scif/env/90-environment.sh\"; do if [ -f \"$_f\" ]; then . \"$_f\"; fi; done; \
export PATH; unset _a _f; }; ";

/// `_sioci_appat NAME`, called with every env script's name before it is sourced: runs the
/// app's environment (once) before the first script that sorts after `95-apps.sh`, byte by
/// byte as the shell's glob sorts them, without a fork (a character's rank is its place in
/// the printable ASCII run; anything else ranks after it).
const APP_POSITION: &str = r##"_sioci_ord=' !"#$%&'\''()*+,-./0123456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[\]^_`abcdefghijklmnopqrstuvwxyz{|}~'; _sioci_appat() { _sioci_x=$1; _sioci_y=95-apps.sh; while :; do if [ -z "$_sioci_y" ]; then if [ -n "$_sioci_x" ]; then _sioci_appfire; fi; return 0; fi; [ -n "$_sioci_x" ] || return 0; _sioci_cx=${_sioci_x%"${_sioci_x#?}"}; _sioci_cy=${_sioci_y%"${_sioci_y#?}"}; if [ "$_sioci_cx" != "$_sioci_cy" ]; then _sioci_p=${_sioci_ord%%"$_sioci_cx"*}; _sioci_q=${_sioci_ord%%"$_sioci_cy"*}; if [ ${#_sioci_p} -gt ${#_sioci_q} ]; then _sioci_appfire; fi; return 0; fi; _sioci_x=${_sioci_x#?}; _sioci_y=${_sioci_y#?}; done; }; _sioci_appfire() { _sioci_app; _sioci_app() { :; }; _sioci_appat() { :; }; unset _sioci_ord _sioci_x _sioci_y _sioci_cx _sioci_cy _sioci_p _sioci_q; }; "##;

/// `run` and `test` of an app: its `scif/runscript` or `scif/test`, or an error.
fn app_body(action: Action) -> Option<&'static str> {
    match action {
        Action::Run => Some(
            "if [ -x \"/scif/apps/$SINGULARITY_APPNAME/scif/runscript\" ]; then exec \"/scif/apps/$SINGULARITY_APPNAME/scif/runscript\" \"$@\"; fi; \
             echo \"No Singularity runscript for contained app: $SINGULARITY_APPNAME\" >&2; exit 1",
        ),
        Action::Test => Some(
            "if [ -x \"/scif/apps/$SINGULARITY_APPNAME/scif/test\" ]; then exec \"/scif/apps/$SINGULARITY_APPNAME/scif/test\" \"$@\"; fi; \
             echo \"No tests for contained app: $SINGULARITY_APPNAME\" >&2; exit 1",
        ),
        Action::Start => Some(
            "if [ -x \"/scif/apps/$SINGULARITY_APPNAME/scif/startscript\" ]; then \"/scif/apps/$SINGULARITY_APPNAME/scif/startscript\" \"$@\"; \
             else echo \"No startscript for contained app: $SINGULARITY_APPNAME\" >&2; exit 1; fi; \
             : | { exec 3<>/proc/self/fd/0; read -r _ <&3; }",
        ),
        Action::Exec | Action::Shell => None,
    }
}

/// The argv of `action` in an image with `/.singularity.d`, for SCIF app `app` if given.
/// `$0` names the action, as in SingularityCE (`/.singularity.d/actions/run`).
pub fn args(action: Action, app: Option<&str>, command: &[String]) -> Result<Vec<String>> {
    let (name, mut body) = match action {
        Action::Exec => {
            if command.is_empty() {
                bail!("exec needs a command: oci-mkspec --action exec ... -- CMD [ARG...]");
            }
            ("exec", "exec \"$@\"")
        }
        Action::Run => ("run", RUN),
        Action::Test => ("test", TEST),
        Action::Shell => ("shell", SHELL_SCRIPT),
        Action::Start => ("start", START),
    };
    let mut script = String::new();
    if let Some(app) = app {
        if app.is_empty()
            || !app
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
            || app.starts_with('.')
        {
            bail!("--app {app:?}: an app name is letters, digits, '_', '-' and '.'");
        }
        script.push_str(&format!(
            "SINGULARITY_APPNAME={app}; export SINGULARITY_APPNAME; {APP_ENV}{APP_POSITION}"
        ));
        body = app_body(action).unwrap_or(body);
    } else {
        script.push_str("_sioci_app() { :; }; _sioci_appat() { :; }; ");
    }
    script.push_str(&prologue());
    script.push_str(body);
    let mut v = vec![
        "/bin/sh".to_string(),
        "-c".to_string(),
        script,
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
        for a in [
            Action::Exec,
            Action::Run,
            Action::Test,
            Action::Shell,
            Action::Start,
        ] {
            let v = args(a, None, &s(&["x", "y z"])).unwrap();
            assert_eq!(v[0], "/bin/sh");
            assert!(v[2].contains(&prologue()), "{a:?}");
        }
        let v = args(Action::Run, None, &s(&["a", "b"])).unwrap();
        assert_eq!(&v[3..], &s(&["/.singularity.d/actions/run", "a", "b"])[..]);
        assert!(args(Action::Exec, None, &[]).is_err());
        assert_eq!(
            args(Action::Shell, None, &s(&["ignored"])).unwrap().len(),
            4
        );
        let v = args(Action::Test, Some("hello"), &[]).unwrap();
        assert!(v[2].starts_with("SINGULARITY_APPNAME=hello;"), "{}", v[2]);
        assert!(v[2].ends_with("exit 1"), "{}", v[2]);
        for bad in ["", "a b", "../x", "$(id)", ".hidden"] {
            assert!(args(Action::Run, Some(bad), &[]).is_err(), "{bad}");
        }
    }

    /// Runs the prologue with the host's /bin/sh on a scratch env directory (the script's
    /// paths are rewritten to it) and prints what the user's variables and PATH became.
    fn run_prologue(scripts: &[(&str, &str)], env: &[(&str, &str)], show: &str) -> String {
        run_script(None, scripts, &[], env, show)
    }

    /// The same with SCIF app `app` (its env scripts `app_scripts`) when given, the app
    /// directory rewritten to a scratch one too.
    fn run_script(
        app: Option<&str>,
        scripts: &[(&str, &str)],
        app_scripts: &[(&str, &str)],
        env: &[(&str, &str)],
        show: &str,
    ) -> String {
        let d = tempfile::tempdir().unwrap();
        let envdir = d.path().join("env");
        std::fs::create_dir(&envdir).unwrap();
        for (name, body) in scripts {
            std::fs::write(envdir.join(name), body).unwrap();
        }
        let apps = d.path().join("apps");
        if let Some(app) = app {
            let appenv = apps.join(app).join("scif/env");
            std::fs::create_dir_all(&appenv).unwrap();
            for (name, body) in app_scripts {
                std::fs::write(appenv.join(name), body).unwrap();
            }
        }
        let head = match app {
            Some(app) => {
                format!(
                    "SINGULARITY_APPNAME={app}; export SINGULARITY_APPNAME; {APP_ENV}{APP_POSITION}"
                )
            }
            None => "_sioci_app() { :; }; _sioci_appat() { :; }; ".to_string(),
        };
        let script = format!("{head}{}", prologue())
            .replace("/.singularity.d/env", envdir.to_str().unwrap())
            .replace("/scif/apps", apps.to_str().unwrap());
        let out = std::process::Command::new("/bin/sh")
            .arg("-c")
            .arg(format!("{script} {show}"))
            .env_clear()
            .envs(env.iter().copied())
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout).unwrap()
    }

    #[test]
    fn the_users_variables_win_over_the_image_scripts() {
        let scripts = [
            ("10-docker2singularity.sh", "export FOO=docker X=1\n"),
            ("90-environment.sh", "export FOO=image PATH=/img/bin\n"),
            ("98-singularityenv.sh", "export FOO=stale\n"),
            ("99-base.sh", "export LATE=\"$FOO\"\n"),
        ];
        let env = [
            ("PATH", DEFAULT_PATH),
            ("FOO", "user's 'value'\nline two"),
            (USER_ENV_KEYS, "FOO"),
            ("SING_USER_DEFINED_APPEND_PATH", "/extra"),
        ];
        let out = run_prologue(
            &scripts,
            &env,
            "printf '%s|%s|%s|%s|%s|%s' \"$FOO\" \"$X\" \"$LATE\" \"$PATH\" \"$LD_LIBRARY_PATH\" \"${_SINGULARITY_OCI_USER_ENV-unset}\"",
        );
        assert_eq!(
            out,
            "user's 'value'\nline two|1|user's 'value'\nline two|/img/bin:/extra|/.singularity.d/libs|unset"
        );
        // SINGULARITYENV_PATH replaces what the scripts built; PREPEND_PATH goes in front.
        let env = [
            ("PATH", DEFAULT_PATH),
            ("SING_USER_DEFINED_PATH", "/only"),
            ("LD_LIBRARY_PATH", "/mine"),
        ];
        assert_eq!(
            run_prologue(&scripts, &env, "echo \"$PATH $LD_LIBRARY_PATH\""),
            "/only /mine:/.singularity.d/libs\n"
        );
        let env = [
            ("PATH", DEFAULT_PATH),
            ("SING_USER_DEFINED_PREPEND_PATH", "/first"),
        ];
        assert_eq!(
            run_prologue(&[], &env, "echo \"$PATH\""),
            format!("/first:{DEFAULT_PATH}\n")
        );
    }

    /// The host's variables reach the container as SingularityCE's `98-singularityenv.sh`
    /// exports them: after the image's scripts and the user's variables, only where nothing
    /// set them. The image's scripts do not see them, nor does an evaluated user value.
    #[test]
    fn host_variables_come_after_the_image_scripts_and_the_users_variables() {
        let scripts = [
            (
                "90-environment.sh",
                "export CGO=0 SEEN=\"${HOSTV:-unset}\"; unset GONE\n",
            ),
            ("99-base.sh", "export LATE=\"$HOSTV\"\n"),
        ];
        let env = [
            ("HOSTV", "host"),
            ("CGO", "host"),
            ("GONE", "host-gone"),
            ("EMPTY", "host-empty"),
            ("WHO", "[$HOSTV]"),
            (USER_ENV_KEYS, "WHO"),
            (USER_ENV_EVAL, "1"),
            (HOST_ENV_KEYS, "HOSTV CGO GONE"),
        ];
        assert_eq!(
            run_prologue(
                &scripts,
                &env,
                "printf '%s|' \"$HOSTV\" \"$CGO\" \"$SEEN\" \"$GONE\" \"$WHO\" \"$LATE\" \"${_SINGULARITY_OCI_HOST_ENV-unset}\"",
            ),
            "host|0|unset|host-gone|[]|host|unset|"
        );
        // Set but empty counts as set, as `${K+1}` says in SingularityCE's script.
        let scripts = [("90-environment.sh", "export HOSTV=\n")];
        let env = [("HOSTV", "host"), (HOST_ENV_KEYS, "HOSTV")];
        assert_eq!(
            run_prologue(&scripts, &env, "printf '[%s]' \"${HOSTV-unset}\""),
            "[]"
        );
    }

    /// An app's environment is applied where `95-apps.sh` sorts among the image's scripts:
    /// after `90-environment.sh` and `95-a.sh`, before `95-b.sh`, `97-*` and the user's
    /// variables; at the end (still before the user's variables) when nothing sorts after it.
    #[test]
    fn the_app_environment_comes_where_95_apps_sorts() {
        let app_scripts = [("90-environment.sh", "ORDER=$ORDER:app WHO=app\n")];
        let mut scripts = vec![
            ("01-base.sh", "ORDER=$ORDER:01\n"),
            ("90-environment.sh", "ORDER=$ORDER:90\n"),
            ("95-a.sh", "ORDER=$ORDER:95a\n"),
            ("95-b.sh", "ORDER=$ORDER:95b\n"),
            ("97-late.sh", "ORDER=$ORDER:97 WHO=image\n"),
            ("99-base.sh", "ORDER=$ORDER:99\n"),
        ];
        let env = [("WHO", "user"), (USER_ENV_KEYS, "WHO")];
        let show = "printf '%s|%s|%s' \"$ORDER\" \"$WHO\" \"${SCIF_APPROOT##*/}\"";
        assert_eq!(
            run_script(Some("hello"), &scripts, &app_scripts, &env, show),
            ":01:90:95a:app:95b:97:99|user|hello"
        );
        scripts.retain(|(n, _)| n < &"95-apps.sh");
        assert_eq!(
            run_script(Some("hello"), &scripts, &app_scripts, &[], show),
            ":01:90:95a:app|app|hello"
        );
        // An image with its own 95-apps.sh: that script, in its place, and nothing else.
        let scripts = [
            ("90-environment.sh", "ORDER=$ORDER:90\n"),
            ("95-apps.sh", "ORDER=$ORDER:own\n"),
            ("99-base.sh", "ORDER=$ORDER:99\n"),
        ];
        assert_eq!(
            run_script(Some("hello"), &scripts, &app_scripts, &[], show),
            ":90:own:99||"
        );
    }

    #[test]
    fn no_compat_evaluates_the_users_values_as_singularityce_does() {
        let value = r#"$HOME|"$HOME"|'$HOME'|\$HOME|$(echo sub)"#;
        let env = [("HOME", "/h"), ("WHO", value), (USER_ENV_KEYS, "WHO")];
        assert_eq!(run_prologue(&[], &env, "printf %s \"$WHO\""), value);
        let env = [
            ("HOME", "/h"),
            ("WHO", value),
            (USER_ENV_KEYS, "WHO"),
            (USER_ENV_EVAL, "1"),
        ];
        assert_eq!(
            run_prologue(&[], &env, "printf %s \"$WHO\""),
            r#"/h|"/h"|'/h'|$HOME|sub"#
        );
    }

    #[test]
    fn native_env_names_the_users_variables_and_keeps_path_aside() {
        let mut env = EnvList::default();
        env.set("FOO", "bar");
        let mut user = EnvList::default();
        for k in ["FOO", "PATH", "IFS", "BASH_FUNC_ml%%", "HOME"] {
            user.set(k, "x");
        }
        native_env(
            &mut env,
            &user,
            Some("/p".into()),
            None,
            Some("/pre".into()),
            None,
            false,
        );
        assert_eq!(env.get(USER_ENV_KEYS), Some("FOO HOME"));
        assert_eq!(env.get("PATH"), Some(DEFAULT_PATH));
        assert_eq!(env.get("SING_USER_DEFINED_PATH"), Some("/p"));
        assert_eq!(env.get("SING_USER_DEFINED_PREPEND_PATH"), Some("/pre"));
        assert_eq!(env.get("SING_USER_DEFINED_APPEND_PATH"), None);
        assert_eq!(env.get("LD_LIBRARY_PATH"), None);
    }

    /// The start body, run by the host's /bin/sh with the startscript path rewritten to a
    /// scratch one: the startscript gets the arguments, and the shell is still there after it
    /// returned (the instance stays up).
    #[test]
    fn start_runs_the_startscript_and_stays_up() {
        use std::os::unix::fs::PermissionsExt;
        use std::os::unix::process::CommandExt;
        let d = tempfile::tempdir().unwrap();
        let script = d.path().join("startscript");
        let out = d.path().join("out");
        std::fs::write(
            &script,
            format!("#!/bin/sh\necho \"started:$*\" > {}\n", out.display()),
        )
        .unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        let body = START.replace("/.singularity.d/startscript", script.to_str().unwrap());
        // Its own process group, so that the waiting subshell goes with it at the end.
        let mut child = std::process::Command::new("/bin/sh")
            .args(["-c", &body, "start", "a", "b c"])
            .stdin(std::process::Stdio::null())
            .process_group(0)
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !out.exists() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        std::thread::sleep(std::time::Duration::from_millis(300));
        let still_up = child.try_wait().unwrap().is_none();
        // SAFETY: kill(2) of the process group made above.
        unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
        child.wait().unwrap();
        assert_eq!(std::fs::read_to_string(&out).unwrap(), "started:a b c\n");
        assert!(still_up, "the start action ended with its startscript");
    }
}
