//! Instances: named background containers that outlive the command that started them
//! (`singularity-oci instance start/list/stop`, `exec|run|shell instance://NAME`).
//!
//! An instance is a conmon-monitored container whose id is the instance's name, in the
//! caller's own runtime state root (so another user never sees it). Its state directory holds
//! `instance.json` (a [`crate::record::Instance`]) beside the lifecycle core's files, and its
//! bundle holds `instance-actions.json`, written by `oci-mkspec --action start`: how `exec`,
//! `run`, `shell` and `test` turn arguments into argv for this image. Its stdout and stderr go
//! straight into SingularityCE's log files, `~/.singularity/instances/logs/HOST/USER/NAME.out`
//! and `.err`, which stay after the instance is stopped.

use crate::lifecycle::statedir::{self, CONTAINERS, StateDir};
use crate::record::{Instance, InstanceStatus, ListedInstance};
use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};

/// In the bundle: the argv of each action (see `oci-mkspec`'s `instance_actions`).
pub const ACTIONS_FILE: &str = "instance-actions.json";

/// In the state directory: the instance's [`Instance`] record.
pub const RECORD_FILE: &str = "instance.json";

/// An instance name is SingularityCE's (letters, digits, `.`, `_`, `-`) and also a container id.
pub fn check_name(name: &str) -> Result<()> {
    if statedir::check_container_id(name).is_err() {
        bail!(
            "'{name}' is not a valid instance name (letters, digits, '.', '_' and '-', not starting with '.' or '-')"
        );
    }
    Ok(())
}

/// The directory of the caller's instance logs: `HOME/.singularity/instances/logs/HOST/USER`,
/// where SingularityCE keeps them.
pub fn log_dir() -> Result<PathBuf> {
    let home = crate::identity::home_dir()?;
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .context("cannot read the host name")?;
    let host = host.trim();
    let uid = crate::identity::host_uid();
    let user = crate::identity::host_user(uid)?
        .map(|u| u.name)
        .unwrap_or_else(|| uid.to_string());
    for part in [host, user.as_str()] {
        if part.is_empty() || part.contains('/') || part.starts_with('.') {
            bail!("unusable name '{part}' for the instance log directory");
        }
    }
    Ok(home
        .join(".singularity/instances/logs")
        .join(host)
        .join(user))
}

/// `DIR/NAME.out` and `DIR/NAME.err`.
pub fn log_paths(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    (
        dir.join(format!("{name}.out")),
        dir.join(format!("{name}.err")),
    )
}

/// Seconds since the epoch as RFC 3339 UTC (`2026-12-02T14:05:09Z`).
pub fn rfc3339(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's days-to-civil.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3_600,
        rem / 60 % 60,
        rem % 60
    )
}

/// The instance record of a state directory, if it is an instance's.
pub fn read(sd: &StateDir) -> Result<Option<Instance>> {
    let p = sd.file(RECORD_FILE);
    match std::fs::read(&p) {
        Ok(b) => serde_json::from_slice(&b)
            .map(Some)
            .with_context(|| format!("{} is not an instance record", p.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", p.display())),
    }
}

/// Keep the instance record in its (fresh) state directory.
pub fn write(sd: &StateDir, i: &Instance) -> Result<()> {
    sd.write_new(RECORD_FILE, &serde_json::to_vec(i)?)
}

/// Whether the instance still runs, and its exit status once conmon wrote it.
pub fn status(sd: &StateDir) -> (InstanceStatus, Option<i32>) {
    let exit = sd.exit_status().ok().flatten();
    if exit.is_none() && (sd.live_pid().is_some() || crate::lifecycle::monitor::running(sd)) {
        (InstanceStatus::Running, None)
    } else {
        (InstanceStatus::Exited, exit)
    }
}

/// Instance `name` under the state root `root`: its state directory and record, or one error
/// that says there is none.
pub fn find(root: &Path, name: &str) -> Result<(StateDir, Instance)> {
    check_name(name)?;
    if let Some(sd) = StateDir::open(root, name)?
        && let Some(i) = read(&sd)?
    {
        return Ok((sd, i));
    }
    bail!("no instance named '{name}'")
}

/// The instances under `root` whose names match the glob `pattern` (`*` and `?`), by name.
pub fn list(root: &Path, pattern: Option<&str>) -> Result<Vec<ListedInstance>> {
    let dir = root.join(CONTAINERS);
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("cannot list {}", dir.display())),
    };
    let mut out = Vec::new();
    for ent in entries.flatten() {
        let Some(name) = ent.file_name().to_str().map(str::to_string) else {
            continue;
        };
        if check_name(&name).is_err() || pattern.is_some_and(|p| !glob_match(p, &name)) {
            continue;
        }
        let Some(sd) = StateDir::open(root, &name)? else {
            continue;
        };
        // A state directory being made or removed right now may lack its record: not listed.
        let Ok(Some(instance)) = read(&sd) else {
            continue;
        };
        let (status, exit_status) = status(&sd);
        out.push(ListedInstance {
            instance,
            status,
            exit_status,
        });
    }
    out.sort_by(|a, b| a.instance.name.cmp(&b.instance.name));
    Ok(out)
}

/// Shell-style matching of `*` (any run) and `?` (one character); everything else literal.
pub fn glob_match(pattern: &str, name: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    let (mut pi, mut ni) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == n[ni]) {
            pi += 1;
            ni += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ni));
            pi += 1;
        } else if let Some((sp, sn)) = star {
            pi = sp + 1;
            ni = sn + 1;
            star = Some((sp, sn + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// The argv of `action` (`exec`, `run`, `shell`, `test`) with `args` in `instance`.
///
/// The actions file is read only from the bundle directory the instance was started with (its
/// `bundleInode`, when recorded), never through a symbolic link, and only when it is a regular
/// file of the caller's: a root container that can write its bundle's parent must not make a
/// later `exec` read another file.
pub fn action_argv(instance: &Instance, action: &str, args: &[String]) -> Result<Vec<String>> {
    let bytes = read_actions(instance)?;
    let all: serde_json::Value = serde_json::from_slice(&bytes).with_context(|| {
        format!(
            "the {ACTIONS_FILE} of instance '{}' is not JSON",
            instance.name
        )
    })?;
    argv_of(&all, action, args).with_context(|| format!("{action} in this instance"))
}

fn read_actions(instance: &Instance) -> Result<Vec<u8>> {
    use rustix::fs::{Mode, OFlags};
    use std::io::Read;
    let bundle = &instance.bundle;
    let dir = rustix::fs::open(
        bundle,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .with_context(|| format!("cannot open the bundle {}", bundle.display()))?;
    let st = rustix::fs::fstat(&dir)?;
    if !instance.bundle_inode.is_empty() {
        let want = crate::bundleremoval::parse_dev_ino(&instance.bundle_inode)?;
        if (st.st_dev, st.st_ino) != want {
            bail!(
                "the bundle {} is not the directory the instance was started with",
                bundle.display()
            );
        }
    }
    let me = rustix::process::geteuid().as_raw();
    let file = rustix::fs::openat(
        &dir,
        ACTIONS_FILE,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .with_context(|| format!("cannot open {}", bundle.join(ACTIONS_FILE).display()))?;
    let fst = rustix::fs::fstat(&file)?;
    if !rustix::fs::FileType::from_raw_mode(fst.st_mode).is_file() || fst.st_uid != me {
        bail!(
            "{} is not a regular file of yours",
            bundle.join(ACTIONS_FILE).display()
        );
    }
    let mut bytes = Vec::new();
    std::fs::File::from(file)
        .take(1 << 20)
        .read_to_end(&mut bytes)?;
    Ok(bytes)
}

fn argv_of(all: &serde_json::Value, action: &str, args: &[String]) -> Result<Vec<String>> {
    let Some(a) = all.get(action) else {
        bail!("unknown action '{action}' (exec, run, shell or test)");
    };
    let strings = |v: &serde_json::Value| -> Option<Vec<String>> {
        v.as_array()?
            .iter()
            .map(|s| s.as_str().map(str::to_string))
            .collect()
    };
    let no_args = strings(&a["noArgs"]);
    let before_args = strings(&a["beforeArgs"]);
    match (args.is_empty(), no_args, before_args) {
        (true, Some(v), _) => Ok(v),
        (false, _, Some(mut v)) => {
            v.extend(args.iter().cloned());
            Ok(v)
        }
        // The action takes no arguments (shell): they are ignored, as by oci-mkspec.
        (false, Some(v), None) => Ok(v),
        (true, None, _) => bail!("a command is needed"),
        (false, None, None) => bail!("the actions file has no argv for it"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn names_are_singularitys() {
        for ok in ["web", "a.b_c-1", "X9"] {
            check_name(ok).unwrap();
        }
        for bad in ["", "a/b", "../x", ".h", "-x", "a b", "containers", "é"] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn rfc3339_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_796_223_909), "2026-12-02T15:05:09Z");
    }

    #[test]
    fn globs() {
        assert!(glob_match("*", "web"));
        assert!(glob_match("w*", "web"));
        assert!(glob_match("w?b", "web"));
        assert!(glob_match("*e*", "web"));
        assert!(glob_match("web", "web"));
        assert!(!glob_match("web", "web2"));
        assert!(!glob_match("w?", "web"));
        assert!(glob_match("a*b*c", "aXbYbc"));
        assert!(!glob_match("a*b", "aXbYc"));
    }

    #[test]
    fn argv_from_the_actions() {
        let all = json!({
            "exec": {"noArgs": null, "beforeArgs": []},
            "run": {"noArgs": ["E", "C"], "beforeArgs": ["E"]},
            "shell": {"noArgs": ["/bin/sh"], "beforeArgs": null},
        });
        assert_eq!(
            argv_of(&all, "exec", &s(&["id", "-u"])).unwrap(),
            s(&["id", "-u"])
        );
        assert!(argv_of(&all, "exec", &[]).is_err());
        assert_eq!(argv_of(&all, "run", &[]).unwrap(), s(&["E", "C"]));
        assert_eq!(argv_of(&all, "run", &s(&["A"])).unwrap(), s(&["E", "A"]));
        assert_eq!(argv_of(&all, "shell", &s(&["x"])).unwrap(), s(&["/bin/sh"]));
        assert!(argv_of(&all, "test", &[]).is_err());
    }

    #[test]
    fn log_files_are_named_after_the_instance() {
        let (o, e) = log_paths(Path::new("/h/.singularity/instances/logs/n/u"), "web");
        assert_eq!(o, Path::new("/h/.singularity/instances/logs/n/u/web.out"));
        assert_eq!(e, Path::new("/h/.singularity/instances/logs/n/u/web.err"));
    }

    fn instance_in(bundle: &Path, inode: String) -> Instance {
        Instance {
            name: "web".into(),
            pid: 1,
            conmon_pid: 1,
            image: "i".into(),
            started: 0,
            start_time: rfc3339(0),
            runtime: "/usr/bin/crun".into(),
            runtime_root: "/r".into(),
            bundle: bundle.to_path_buf(),
            bundle_inode: inode,
            state_dir: "/r/containers/web".into(),
            log_out_path: "/o".into(),
            log_err_path: "/e".into(),
        }
    }

    #[test]
    fn the_actions_file_is_read_only_from_the_instances_own_bundle() {
        use std::os::unix::fs::MetadataExt;
        let d = tempfile::tempdir().unwrap();
        let b = d.path().join("b");
        std::fs::create_dir(&b).unwrap();
        let m = std::fs::metadata(&b).unwrap();
        let inode = format!("{}:{}", m.dev(), m.ino());
        std::fs::write(
            b.join(ACTIONS_FILE),
            r#"{"exec": {"noArgs": null, "beforeArgs": []}}"#,
        )
        .unwrap();
        let i = instance_in(&b, inode.clone());
        assert_eq!(action_argv(&i, "exec", &s(&["id"])).unwrap(), s(&["id"]));
        // Another directory at the bundle's path.
        std::fs::rename(&b, d.path().join("old")).unwrap();
        std::fs::create_dir(&b).unwrap();
        std::fs::copy(
            d.path().join("old").join(ACTIONS_FILE),
            b.join(ACTIONS_FILE),
        )
        .unwrap();
        let e = action_argv(&i, "exec", &s(&["id"])).unwrap_err();
        assert!(e.to_string().contains("not the directory"), "{e}");
        // A symbolic link as the file.
        let c = d.path().join("c");
        std::fs::create_dir(&c).unwrap();
        std::os::unix::fs::symlink(
            d.path().join("old").join(ACTIONS_FILE),
            c.join(ACTIONS_FILE),
        )
        .unwrap();
        assert!(action_argv(&instance_in(&c, String::new()), "exec", &s(&["id"])).is_err());
        // A symbolic link as the bundle.
        std::os::unix::fs::symlink(d.path().join("old"), d.path().join("l")).unwrap();
        assert!(
            action_argv(
                &instance_in(&d.path().join("l"), String::new()),
                "exec",
                &s(&["id"])
            )
            .is_err()
        );
    }
}
