//! `process.args`, `process.cwd` and the container user, from the action (`exec`, `run`,
//! `shell`, `test`), the image's ENTRYPOINT, CMD, WORKDIR and USER, and the caller's options.

use crate::etcfiles;
use crate::image::ImageFacts;
use crate::options::Action;
use anyhow::{Result, bail};

pub const SHELL_SCRIPT: &str =
    "export PS1='Singularity> '; test -x /bin/bash && exec /bin/bash --norc || exec /bin/sh";

/// The argv for an action. `command` is everything after `--`.
pub fn args(
    action: Action,
    app: Option<&str>,
    image: &ImageFacts,
    command: &[String],
    warn: &mut dyn FnMut(String),
) -> Result<Vec<String>> {
    if image.singularity_d {
        return crate::singularity_d::args(action, app, command);
    }
    if let Some(app) = app {
        // Docker-style SCIF: ENTRYPOINT+CMD names the scif binary.
        let spec: Vec<String> = image.entrypoint.iter().chain(&image.cmd).cloned().collect();
        let Some(first) = spec.first() else {
            bail!("could not determine executable for container");
        };
        if std::path::Path::new(first)
            .file_name()
            .is_none_or(|b| b != "scif")
        {
            warn(format!(
                "--app {app}: the image's ENTRYPOINT/CMD ({first}) is not scif"
            ));
        }
        let verb = match action {
            Action::Run | Action::Test | Action::Start => "run",
            Action::Exec => "exec",
            Action::Shell => "shell",
        };
        let mut v = vec![first.clone(), verb.to_string(), app.to_string()];
        v.extend(spec[1..].iter().cloned());
        v.extend(command.iter().cloned());
        return Ok(v);
    }
    match action {
        Action::Shell => Ok(vec!["/bin/sh".into(), "-c".into(), SHELL_SCRIPT.into()]),
        Action::Exec => {
            if command.is_empty() {
                bail!("exec needs a command: oci-mkspec --action exec ... -- CMD [ARG...]");
            }
            Ok(command.to_vec())
        }
        Action::Run | Action::Test | Action::Start => {
            let mut v = image.entrypoint.clone();
            if command.is_empty() {
                v.extend(image.cmd.iter().cloned());
            } else {
                v.extend(command.iter().cloned());
            }
            if v.is_empty() {
                bail!(
                    "could not determine executable for container: the image has no ENTRYPOINT or CMD and no command was given"
                );
            }
            Ok(v)
        }
    }
}

/// A stand-in argument, to see where an action puts the user's arguments.
const MARK: &str = "\u{1}sioci-argument-mark";

/// How each action of an image turns arguments into argv, for `exec`/`run`/`shell`/`test` in a
/// running instance (written beside its config.json, read by `oci-instance exec`): per action,
/// `noArgs` is the argv without arguments (null: the action needs some) and `beforeArgs` the
/// argv the arguments are appended to (null: the action takes none). No init: a process joined
/// to a running container is never its PID 1.
pub fn instance_actions(app: Option<&str>, image: &ImageFacts) -> serde_json::Value {
    let mut quiet = |_| {};
    let mut out = serde_json::Map::new();
    for (name, action) in [
        ("exec", Action::Exec),
        ("run", Action::Run),
        ("shell", Action::Shell),
        ("test", Action::Test),
    ] {
        let no_args = args(action, app, image, &[], &mut quiet).ok();
        let before_args = args(action, app, image, &[MARK.to_string()], &mut quiet)
            .ok()
            .and_then(|mut v| {
                (v.last().map(String::as_str) == Some(MARK)).then(|| {
                    v.pop();
                    v
                })
            });
        out.insert(
            name.to_string(),
            serde_json::json!({"noArgs": no_args, "beforeArgs": before_args}),
        );
    }
    serde_json::Value::Object(out)
}

/// The container user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub uid: u32,
    pub gid: u32,
    /// The image's USER decides the identity (no generated passwd/group, HOME from the image).
    pub container_user: bool,
    /// HOME of the image USER (from the container's passwd).
    pub user_home: Option<String>,
}

/// Resolve the identity: `--fakeroot` → 0:0; image USER → looked up in the container's passwd;
/// else the host user.
pub fn target(
    fakeroot: bool,
    image_user: &str,
    container_passwd: Option<&str>,
    container_group: Option<&str>,
    host: (u32, u32),
) -> Result<Target> {
    if fakeroot {
        return Ok(Target {
            uid: 0,
            gid: 0,
            container_user: false,
            user_home: None,
        });
    }
    if image_user.is_empty() {
        return Ok(Target {
            uid: host.0,
            gid: host.1,
            container_user: false,
            user_home: None,
        });
    }
    // Beyond Singularity: USER may be `user:group` (Docker syntax).
    let (user, group) = match image_user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (image_user, None),
    };
    let entry = container_passwd.and_then(|p| etcfiles::find_user(p, user));
    let (uid, mut gid, home) = match (entry, user.parse::<u32>()) {
        (Some(e), _) => (e.uid, e.gid, Some(e.home)),
        // A numeric USER without a passwd entry runs with gid 0, as with Docker.
        (None, Ok(uid)) => (uid, 0, None),
        (None, Err(_)) if container_passwd.is_none() => {
            bail!(
                "the image declares USER {image_user}, but cannot access container passwd file /etc/passwd"
            )
        }
        (None, Err(_)) => bail!("the image's USER {user} is not in the container's /etc/passwd"),
    };
    if let Some(g) = group {
        gid = match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) => container_group
                .and_then(|f| {
                    f.lines().find_map(|l| {
                        let f: Vec<&str> = l.split(':').collect();
                        (f.len() >= 3 && f[0] == g)
                            .then(|| f[2].parse().ok())
                            .flatten()
                    })
                })
                .ok_or_else(|| {
                    anyhow::anyhow!(
                        "the image's USER group {g} is not in the container's /etc/group"
                    )
                })?,
        };
    }
    Ok(Target {
        uid,
        gid,
        container_user: true,
        user_home: home.filter(|h| !h.is_empty()),
    })
}

/// `process.cwd`: `--cwd`, else (--no-compat) the host cwd, else the image WORKDIR, else the home
/// destination. Beyond Singularity (#2289): when that home is not mounted and does not exist in
/// the image, `/` is used instead of failing in chdir.
pub fn cwd(
    opt: Option<&str>,
    no_compat: bool,
    host_cwd: &str,
    workdir: &str,
    home_dest: &str,
    home_mounted: bool,
    exists_in_image: &dyn Fn(&str) -> bool,
) -> Result<String> {
    if let Some(c) = opt {
        if !c.starts_with('/') {
            bail!("--cwd/--pwd {c} must be an absolute path");
        }
        return Ok(c.to_string());
    }
    if no_compat {
        return Ok(host_cwd.to_string());
    }
    if !workdir.is_empty() {
        return Ok(if workdir.starts_with('/') {
            workdir.to_string()
        } else {
            format!("/{workdir}")
        });
    }
    if home_mounted || exists_in_image(home_dest) {
        Ok(home_dest.to_string())
    } else {
        Ok("/".to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn img(ep: &[&str], cmd: &[&str]) -> ImageFacts {
        ImageFacts {
            entrypoint: ep.iter().map(|s| s.to_string()).collect(),
            cmd: cmd.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }
    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }
    fn run(ep: &[&str], cmd: &[&str], args_: &[&str]) -> Vec<String> {
        args(Action::Run, None, &img(ep, cmd), &s(args_), &mut |_| {}).unwrap()
    }

    // How `run` combines ENTRYPOINT, CMD and the user's arguments (Docker's rules, which
    // SingularityCE follows), for the combinations of the three that differ.
    #[test]
    fn entrypoint_cmd_table() {
        assert_eq!(run(&["E"], &[], &[]), s(&["E"]));
        assert_eq!(run(&[], &["C"], &[]), s(&["C"]));
        assert_eq!(run(&["E"], &["C"], &[]), s(&["E", "C"]));
        assert_eq!(run(&[], &["C"], &["A"]), s(&["A"]));
        assert_eq!(run(&["E"], &["C"], &["A"]), s(&["E", "A"]));
        let e = |p: &[&str]| {
            args(Action::Exec, None, &img(&["E"], &["C"]), &s(p), &mut |_| {}).unwrap()
        };
        assert_eq!(e(&["P"]), s(&["P"]));
        assert_eq!(e(&["P", "A"]), s(&["P", "A"]));
        assert!(args(Action::Exec, None, &img(&["E"], &["C"]), &[], &mut |_| {}).is_err());
        assert!(args(Action::Run, None, &img(&[], &[]), &[], &mut |_| {}).is_err());
    }

    #[test]
    fn instance_actions_of_an_oci_image() {
        let a = instance_actions(None, &img(&["E"], &["C"]));
        assert_eq!(a["run"]["noArgs"], serde_json::json!(["E", "C"]));
        assert_eq!(a["run"]["beforeArgs"], serde_json::json!(["E"]));
        assert_eq!(a["exec"]["noArgs"], serde_json::Value::Null);
        assert_eq!(a["exec"]["beforeArgs"], serde_json::json!([]));
        assert_eq!(a["shell"]["beforeArgs"], serde_json::Value::Null);
        assert_eq!(a["shell"]["noArgs"][0], "/bin/sh");
        // start is run's argv for an OCI image
        assert_eq!(
            args(
                Action::Start,
                None,
                &img(&["E"], &["C"]),
                &s(&["A"]),
                &mut |_| {}
            )
            .unwrap(),
            s(&["E", "A"])
        );
    }

    #[test]
    fn shell_ignores_args() {
        let v = args(
            Action::Shell,
            None,
            &img(&["E"], &[]),
            &s(&["x"]),
            &mut |_| {},
        )
        .unwrap();
        assert_eq!(v, s(&["/bin/sh", "-c", SHELL_SCRIPT]));
    }

    #[test]
    fn scif_app() {
        let i = img(&["/usr/local/bin/scif"], &["--quiet"]);
        let v = args(
            Action::Exec,
            Some("hello"),
            &i,
            &s(&["echo", "x"]),
            &mut |_| {},
        )
        .unwrap();
        assert_eq!(
            v,
            s(&[
                "/usr/local/bin/scif",
                "exec",
                "hello",
                "--quiet",
                "echo",
                "x"
            ])
        );
        let mut warned = false;
        args(
            Action::Run,
            Some("a"),
            &img(&["/bin/sh"], &[]),
            &[],
            &mut |_| warned = true,
        )
        .unwrap();
        assert!(warned);
        assert!(args(Action::Run, Some("a"), &img(&[], &[]), &[], &mut |_| {}).is_err());
    }

    #[test]
    fn user_resolution() {
        let p = "root:x:0:0::/root:/bin/sh\ntestuser:x:2000:2000::/home/testuser:/bin/sh\n";
        let g = "root:x:0:\ntestgroup:x:2000:\nother:x:3000:\n";
        let t = target(false, "testuser", Some(p), Some(g), (1000, 1000)).unwrap();
        assert_eq!((t.uid, t.gid, t.container_user), (2000, 2000, true));
        assert_eq!(t.user_home.as_deref(), Some("/home/testuser"));
        assert_eq!(
            target(false, "2000", Some(p), None, (1, 1)).unwrap().uid,
            2000
        );
        assert_eq!(
            target(false, "testuser:other", Some(p), Some(g), (1, 1))
                .unwrap()
                .gid,
            3000
        );
        assert_eq!(target(false, "4242", Some(p), None, (1, 1)).unwrap().gid, 0);
        assert!(target(false, "ghost", Some(p), None, (1, 1)).is_err());
        assert!(
            target(false, "ghost", None, None, (1, 1))
                .unwrap_err()
                .to_string()
                .contains("passwd")
        );
        let f = target(true, "testuser", Some(p), None, (1000, 1000)).unwrap();
        assert_eq!((f.uid, f.gid, f.container_user), (0, 0, false));
        let h = target(false, "", Some(p), None, (1000, 1001)).unwrap();
        assert_eq!((h.uid, h.gid, h.container_user), (1000, 1001, false));
    }

    #[test]
    fn cwd_rules() {
        let no = |_: &str| false;
        assert_eq!(
            cwd(Some("/etc"), true, "/h", "/w", "/home/u", true, &no).unwrap(),
            "/etc"
        );
        assert!(cwd(Some("etc"), false, "/h", "", "/home/u", true, &no).is_err());
        assert_eq!(
            cwd(None, true, "/h", "/w", "/home/u", true, &no).unwrap(),
            "/h"
        );
        assert_eq!(
            cwd(None, false, "/h", "/w", "/home/u", true, &no).unwrap(),
            "/w"
        );
        assert_eq!(
            cwd(None, false, "/h", "", "/home/u", true, &no).unwrap(),
            "/home/u"
        );
        assert_eq!(
            cwd(None, false, "/h", "", "/home/u", false, &no).unwrap(),
            "/"
        );
        assert_eq!(
            cwd(None, false, "/h", "", "/home/u", false, &|_| true).unwrap(),
            "/home/u"
        );
    }
}
