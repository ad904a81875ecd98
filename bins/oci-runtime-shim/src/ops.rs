//! The operations. Each one is a thin wrapper: find the container's state, enter the right
//! namespaces, build the runtime's argv, run it.
//!
//! Namespaces, per caller (see oci-runtime-shim(1), NAMESPACES):
//! * host root: the runtime runs where the shim runs (crun gets the hybrid-cgroup fix in a private
//!   mount namespace for `run` and `create`).
//! * unprivileged, `run`/`create`: the shim must already be inside the outer user namespace made
//!   by `oci-userns-starter` (it is root there, so it can make the crun fix's mount namespace).
//! * unprivileged, every later operation: run the shim from the host user namespace. It joins the
//!   container's *outer* user namespace (found from the container pid: the namespace just below
//!   ours on the path to the container's) with setns, keeping its credentials, and runs the
//!   runtime there. `exec` needs that (the runtime's setns into the container needs
//!   CAP_SYS_ADMIN over it); the others do it too, so every operation sees the container as its
//!   creator did. A stopped container has no process to join: those operations run in place.

use crate::args::{Global, Op};
use crate::proxy;
use crate::state::StateDir;
use anyhow::{Context, Result, bail};
use common::runtime::{Runtime, RuntimeKind};
use std::ffi::OsString;
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

pub struct Ctx {
    pub rt: Runtime,
    pub root: PathBuf,
    pub debug: bool,
}

/// The runtime's argv after the binary: global `--root`, then the operation's words.
pub fn runtime_argv(root: &Path, words: Vec<OsString>) -> Vec<OsString> {
    let mut v = vec![OsString::from("--root"), root.into()];
    v.extend(words);
    v
}

fn os<S: AsRef<std::ffi::OsStr>>(s: S) -> OsString {
    s.as_ref().to_os_string()
}

impl Ctx {
    pub(crate) fn command(&self, words: Vec<OsString>) -> Command {
        let argv = runtime_argv(&self.root, words);
        if self.debug {
            let shown: Vec<String> = argv.iter().map(|a| a.to_string_lossy().into()).collect();
            eprintln!(
                "DEBUG: {}: runtime argv: {} {}",
                common::cli::program(),
                self.rt.path.display(),
                shown.join(" ")
            );
        }
        let mut c = Command::new(&self.rt.path);
        c.args(argv);
        proxy::reset_mask_in_child(&mut c);
        c
    }

    /// Does the runtime know container `id` (under `root`)?
    fn knows(&self, root: &Path, id: &str) -> bool {
        runtime_knows(&self.rt.path, root, id)
    }

    /// Is the holder of a bundle lock still a container? Asked of the runtime that created it
    /// (recorded in its state dir): a runc container is unknown to crun, and must not look stale.
    fn holder_alive(&self, h: &common::bundlelock::Holder) -> bool {
        let recorded = StateDir::path(&h.root, &h.id)
            .ok()
            .and_then(|d| std::fs::read_to_string(d.join("runtime")).ok())
            .filter(|s| !s.is_empty())
            .map(PathBuf::from);
        let rt = recorded.unwrap_or_else(|| self.rt.path.clone());
        runtime_knows(&rt, &h.root, &h.id)
    }

    /// Run the runtime; on failure, one FATAL-ready error with its last stderr line.
    fn checked(&self, what: &str, words: Vec<OsString>, hint: &str) -> Result<()> {
        let out = self
            .command(words)
            .stdout(Stdio::inherit())
            .stderr(Stdio::piped())
            .output()
            .with_context(|| format!("cannot run {}", self.rt.path.display()))?;
        let err = String::from_utf8_lossy(&out.stderr);
        if out.status.success() {
            // runc's `list` trips over the shim's own `containers/` directory under the same
            // root; that one line is noise, not news.
            for l in err
                .lines()
                .filter(|l| !l.contains("load container containers:"))
            {
                eprintln!("{l}");
            }
            return Ok(());
        }
        bail!(
            "{}{hint}",
            runtime_error(self, what, &out.stderr, out.status)
        )
    }

    /// Best-effort `delete --force`, for cleaning up after a failure.
    pub(crate) fn force_delete(&self, id: &str) {
        let _ = Command::new(&self.rt.path)
            .args(runtime_argv(
                &self.root,
                vec![os("delete"), os("--force"), os(id)],
            ))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// `WHAT failed: <the runtime's last words>` (or its exit status when it said nothing).
pub(crate) fn runtime_error(
    ctx: &Ctx,
    what: &str,
    stderr: &[u8],
    status: std::process::ExitStatus,
) -> String {
    let said = last_line(&String::from_utf8_lossy(stderr))
        .unwrap_or_else(|| format!("{} exited with {}", ctx.rt.name(), proxy::exit_code(status)));
    format!("{what} failed: {said}")
}

fn runtime_knows(runtime: &Path, root: &Path, id: &str) -> bool {
    Command::new(runtime)
        .args(runtime_argv(root, vec![os("state"), os(id)]))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The last non-empty line of a runtime's stderr, reduced to its message: runc logs
/// `time="..." level=error msg="..."`, crun plain text.
fn last_line(s: &str) -> Option<String> {
    let line = s.lines().rev().map(str::trim).find(|l| !l.is_empty())?;
    Some(logfmt_msg(line).unwrap_or_else(|| line.to_string()))
}

fn logfmt_msg(line: &str) -> Option<String> {
    let rest = &line[line.find(" msg=\"")? + 6..];
    let mut msg = String::new();
    let mut chars = rest.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => msg.push(chars.next()?),
            '"' => return Some(msg),
            c => msg.push(c),
        }
    }
    None
}

/// Build the context: the runtime (recorded at create for existing containers) and the root.
fn context(g: &Global, recorded: Option<String>) -> Result<Ctx> {
    let explicit = g.runtime.is_some()
        || std::env::var(common::runtime::ENV_RUNTIME).is_ok_and(|v| !v.is_empty());
    let wanted = if explicit {
        g.runtime.clone()
    } else {
        recorded
    };
    let rt = common::runtime::select(wanted.as_deref())?;
    let root = match &g.root {
        Some(r) => {
            let r = common::fsutil::absolute(r)?;
            common::fsutil::private_dir(&r)?;
            r
        }
        None => common::statedir::runtime_state_root()?,
    };
    Ok(Ctx {
        rt,
        root,
        debug: g.debug || common::cli::debug_enabled(),
    })
}

fn host_root_in_initial_ns() -> bool {
    nix::unistd::geteuid().is_root() && common::userns::in_initial_userns()
}

/// For `run` and `create`: the crun hybrid-cgroup fix, which needs CAP_SYS_ADMIN.
fn prepare_for_new_container(ctx: &Ctx) -> Result<()> {
    if !nix::unistd::geteuid().is_root() {
        if ctx.rt.kind == RuntimeKind::Crun && common::cgroupfix::host_needs_fix() {
            bail!(
                "crun needs the hybrid-cgroup workaround here, which needs the outer user namespace: run 'oci-userns-starter -- oci-runtime-shim ...'"
            );
        }
        return Ok(());
    }
    if ctx.rt.kind == RuntimeKind::Crun && common::cgroupfix::host_needs_fix() {
        common::cgroupfix::apply()?;
    }
    Ok(())
}

/// For operations on an existing container: join its outer user namespace when needed.
fn enter_container_ns(sd: Option<&StateDir>, strict: bool) -> Result<()> {
    if host_root_in_initial_ns() {
        return Ok(());
    }
    let Some(pid) = sd.and_then(StateDir::live_pid) else {
        return Ok(());
    };
    match common::userns::join_outer_of(pid) {
        Ok(_) => Ok(()),
        Err(e) if strict => Err(e),
        Err(e) => {
            common::cli::debug(format!("not joining the container's namespace: {e:#}"));
            Ok(())
        }
    }
}

fn check_bundle(bundle: &Path) -> Result<PathBuf> {
    let b = common::fsutil::absolute(bundle)?;
    if !b.is_dir() {
        bail!(
            "bundle {} does not exist or is not a directory",
            b.display()
        );
    }
    if !b.join("config.json").is_file() {
        bail!("bundle {} has no config.json", b.display());
    }
    Ok(b)
}

/// An existing container: its state dir (if ours) and a context using its recorded runtime.
fn existing(g: &Global, id: &str) -> Result<(Ctx, Option<StateDir>)> {
    common::statedir::check_container_id(id)?;
    let root_guess = match &g.root {
        Some(r) => common::fsutil::absolute(r)?,
        None => common::statedir::runtime_state_root()?,
    };
    let sd = StateDir::open(&root_guess, id)?;
    let ctx = context(g, sd.as_ref().and_then(StateDir::runtime))?;
    if sd.is_none() && !ctx.knows(&ctx.root, id) {
        bail!(
            "no such container '{id}' (state root {})",
            ctx.root.display()
        );
    }
    Ok((ctx, sd))
}

/// Removes a half-made state dir unless disarmed.
struct SdGuard(Option<StateDir>);
impl Drop for SdGuard {
    fn drop(&mut self) {
        if let Some(sd) = self.0.take() {
            let _ = sd.remove();
        }
    }
}

pub fn dispatch(g: Global, op: Op) -> Result<i32> {
    match op {
        Op::Run {
            bundle,
            pid_file,
            id,
            remove_bundle,
            bundle_inode,
        } => {
            let removal = remove_bundle.then_some(bundle_inode);
            run(&g, &bundle, pid_file, id, removal)
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
        } => create(&g, &bundle, pid_file, &id),
        Op::Start(id) => simple(&g, &id, "start", vec![], ""),
        Op::State(id) => simple(&g, &id, "state", vec![], ""),
        Op::List => {
            let ctx = context(&g, None)?;
            ctx.checked("list", vec![os("list")], "")?;
            Ok(0)
        }
        Op::Kill { id, signal } => {
            let n = crate::signals::parse(&signal)?;
            simple(&g, &id, "kill", vec![os(n.to_string())], "")
        }
        Op::Delete { id, force } => delete(&g, &id, force),
        Op::Exec {
            id,
            tty,
            env,
            cwd,
            command,
        } => exec(&g, &id, tty, env, cwd, command),
        Op::Pause(id) => simple(&g, &id, "pause", vec![], FREEZER_HINT),
        Op::Resume(id) => simple(&g, &id, "resume", vec![], FREEZER_HINT),
        Op::Update { id, from } => update(&g, &id, &from),
    }
}

const FREEZER_HINT: &str = " (pause and resume need the cgroup freezer; rootless containers on hosts without cgroup delegation have none)";

/// `OP ID` and `kill ID SIG`: join the container's namespace, run the runtime, FATAL on error.
fn simple(g: &Global, id: &str, op: &str, extra: Vec<OsString>, hint: &str) -> Result<i32> {
    let (ctx, sd) = existing(g, id)?;
    enter_container_ns(sd.as_ref(), false)?;
    let mut words = vec![os(op), os(id)];
    words.extend(extra);
    let hint = if nix::unistd::geteuid().is_root() && common::userns::in_initial_userns() {
        ""
    } else {
        hint
    };
    ctx.checked(op, words, hint)?;
    Ok(0)
}

fn run(
    g: &Global,
    bundle: &Path,
    pid_file: Option<PathBuf>,
    id: Option<String>,
    remove_bundle: Option<Option<(u64, u64)>>,
) -> Result<i32> {
    let bundle = check_bundle(bundle)?;
    let id = id.unwrap_or_else(|| format!("sioci-{}", common::fsutil::unique_suffix()));
    common::statedir::check_container_id(&id)?;
    let watchdog = match tie_to_launcher(g, &bundle, &id, remove_bundle) {
        Ok(w) => w,
        Err(e) => {
            // Nobody else will remove a throwaway bundle whose launcher is gone.
            if let Some(expected) = remove_bundle {
                let _ = crate::cleanup::remove_bundle(&bundle, expected);
            }
            return Err(e);
        }
    };
    let outcome = run_in(g, &bundle, pid_file, id, (&watchdog, remove_bundle));
    if let Some(expected) = remove_bundle {
        // Whatever the outcome: the bundle was made for this run only. A failure here must not
        // hide the container's exit status.
        if let Err(e) = crate::cleanup::remove_bundle(&bundle, expected) {
            common::cli::warn(format!(
                "cannot remove bundle {}: {}",
                bundle.display(),
                common::cli::format_chain(&e)
            ));
        }
    }
    watchdog.finish();
    outcome
}

/// The container must not outlive its launcher: see launcher.rs. The watchdog undoes what this
/// run made (container, state directory, and the bundle with `--remove-bundle`) if the shim is
/// killed.
fn tie_to_launcher(
    g: &Global,
    bundle: &Path,
    id: &str,
    remove_bundle: Option<Option<(u64, u64)>>,
) -> Result<crate::launcher::Watchdog> {
    crate::launcher::die_with_parent()?;
    let ctx = context(g, None)?;
    crate::launcher::Watchdog::start(|| {
        ctx.force_delete(id);
        if let Ok(Some(sd)) = StateDir::open(&ctx.root, id) {
            let _ = sd.remove();
        }
        if let Some(expected) = remove_bundle
            && let Err(e) = crate::cleanup::remove_bundle(bundle, expected)
        {
            common::cli::warn(format!(
                "cannot remove bundle {}: {}",
                bundle.display(),
                common::cli::format_chain(&e)
            ));
        }
    })
}

/// Remove what earlier runs left when their shim and watchdog were both killed: the container
/// (through the runtime that made it), its bundle when that run owned it, its state.
fn sweep_orphans(ctx: &Ctx) {
    for o in crate::launcher::orphans(&ctx.root) {
        let rt = o.runtime.as_deref().map(PathBuf::from);
        let _ = Command::new(rt.as_deref().unwrap_or(&ctx.rt.path))
            .args(runtime_argv(
                &ctx.root,
                vec![os("delete"), os("--force"), os(&o.id)],
            ))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        // A bundle that is gone, or is not a directory any more, is not touched.
        if let Some(b) = &o.bundle
            && std::fs::symlink_metadata(b).is_ok_and(|m| m.is_dir())
            && let Err(e) = crate::cleanup::remove_bundle(b, o.bundle_inode)
        {
            common::cli::warn(format!(
                "cannot remove bundle {} of killed container {}: {}",
                b.display(),
                o.id,
                common::cli::format_chain(&e)
            ));
        }
        common::cli::debug(format!("swept container {} of a killed launcher", o.id));
        o.forget();
    }
}

fn run_in(
    g: &Global,
    bundle: &Path,
    pid_file: Option<PathBuf>,
    id: String,
    launcher: (&crate::launcher::Watchdog, Option<Option<(u64, u64)>>),
) -> Result<i32> {
    let ctx = context(g, None)?;
    sweep_orphans(&ctx);
    prepare_for_new_container(&ctx)?;
    let sd = SdGuard(Some(StateDir::create(&ctx.root, &id)?));
    let dir = sd.0.as_ref().expect("state dir");
    dir.record(bundle, &ctx.rt.path)?;
    crate::launcher::record(&dir.dir, launcher.0, launcher.1)?;
    let pid_file = match pid_file {
        Some(p) => {
            let p = common::fsutil::absolute(&p)?;
            std::os::unix::fs::symlink(&p, dir.pid_file()).context("cannot link the pid file")?;
            p
        }
        None => dir.pid_file(),
    };
    if crate::console::wants_terminal(bundle)? {
        return crate::console::run(
            &ctx,
            &crate::console::Paths {
                bundle,
                pid_file: &pid_file,
                state_dir: &dir.dir,
                id: &id,
            },
        );
    }
    // The container's stdio is the runtime's, so the runtime's stderr cannot be captured here:
    // its own words also go to its `--log`, read back when the container never started.
    let mut cmd = ctx.command(vec![
        os("--log"),
        os(dir.runtime_log()),
        os("run"),
        os("--bundle"),
        os(bundle),
        os("--pid-file"),
        os(&pid_file),
        os(&id),
    ]);
    cmd.current_dir(bundle);
    crate::launcher::kill_with_shim(&mut cmd);
    let before = pid_file_identity(&pid_file);
    let gate = proxy::StartGate::new(&pid_file, bundle);
    let outcome = proxy::run_with_proxy(&mut cmd, Some(gate))?;
    if outcome.killed {
        // The runtime died before it could remove its state: do it for it.
        ctx.force_delete(&id);
    } else if outcome.code != 0 && pid_file_identity(&pid_file) == before {
        // crun and runc write the pid file only once the container's process has been set up
        // (mounts, devices, the command found): without it the status is the runtime's, not the
        // container's, and the failure is the launcher's.
        ctx.force_delete(&id);
        let said = std::fs::read_to_string(dir.runtime_log())
            .ok()
            .and_then(|t| last_line(&t))
            .unwrap_or_else(|| format!("{} exited with {}", ctx.rt.name(), outcome.code));
        bail!("the container did not start: {said}");
    }
    Ok(outcome.code)
}

/// What tells a pid file the runtime wrote during this run from one that was there before
/// (a `--pid-file` the caller reuses): device, inode and modification time.
fn pid_file_identity(p: &Path) -> Option<(u64, u64, i64, i64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(p)
        .ok()
        .map(|m| (m.dev(), m.ino(), m.mtime(), m.mtime_nsec()))
}

fn create(g: &Global, bundle: &Path, pid_file: Option<PathBuf>, id: &str) -> Result<i32> {
    let bundle = check_bundle(bundle)?;
    common::statedir::check_container_id(id)?;
    let ctx = context(g, None)?;
    let mut guard = SdGuard(Some(StateDir::create(&ctx.root, id)?));
    let sd = guard.0.as_ref().expect("state dir");
    sd.record(&bundle, &ctx.rt.path)?;
    common::bundlelock::lock(&bundle, id, &ctx.root, |h| ctx.holder_alive(h))?;
    let made = (|| -> Result<()> {
        prepare_for_new_container(&ctx)?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(sd.container_log())
            .context("cannot open the container log")?;
        let mut cmd = ctx.command(vec![
            os("--log"),
            os(sd.runtime_log()),
            os("create"),
            os("--bundle"),
            os(&bundle),
            os("--pid-file"),
            os(sd.pid_file()),
            os(id),
        ]);
        // `--log` is a global runtime option: runtime_argv keeps it before the operation.
        cmd.current_dir(&bundle)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        let st = cmd.status().context("cannot start the runtime")?;
        if !st.success() {
            let msg = [sd.runtime_log(), sd.container_log()]
                .iter()
                .filter_map(|p| std::fs::read_to_string(p).ok())
                .filter_map(|t| last_line(&t))
                .next()
                .unwrap_or_else(|| {
                    format!("{} exited with {}", ctx.rt.name(), proxy::exit_code(st))
                });
            bail!("create failed: {msg}");
        }
        Ok(())
    })();
    if let Err(e) = made {
        ctx.force_delete(id);
        let _ = common::bundlelock::release(&bundle, id);
        return Err(e);
    }
    if let Some(p) = pid_file {
        let pid = std::fs::read(sd.pid_file()).context("the runtime wrote no pid file")?;
        common::fsutil::atomic_write(&common::fsutil::absolute(&p)?, &pid, 0o644)?;
    }
    guard.0 = None;
    Ok(0)
}

fn delete(g: &Global, id: &str, force: bool) -> Result<i32> {
    let (ctx, sd) = existing(g, id)?;
    enter_container_ns(sd.as_ref(), false)?;
    let mut words = vec![os("delete")];
    if force {
        words.push(os("--force"));
    }
    words.push(os(id));
    if let Err(e) = ctx.checked("delete", words, "") {
        if ctx.knows(&ctx.root, id) || sd.is_none() {
            return Err(e);
        }
        common::cli::warn(format!(
            "the runtime no longer knows container '{id}'; removing its leftover state"
        ));
    }
    if let Some(sd) = sd {
        // A conmon-created container: after the container exits its conmon still writes the
        // exit file into the state dir and runs the exit command, so wait for it before
        // removing the dir (removing it under conmon's feet made `delete --force` fail).
        if !common::conmon::wait_monitor_gone(&sd.dir, std::time::Duration::from_secs(5)) {
            common::cli::warn(format!(
                "conmon of container '{id}' is still running after 5 s"
            ));
        }
        if let Some(b) = sd.bundle() {
            common::conmon::remove_bundle_leftovers(&b);
            common::bundlelock::release(&b, id)?;
        }
        sd.remove()?;
    }
    Ok(0)
}

fn exec(
    g: &Global,
    id: &str,
    tty: bool,
    env: Vec<String>,
    cwd: Option<String>,
    command: Vec<String>,
) -> Result<i32> {
    let (ctx, sd) = existing(g, id)?;
    enter_container_ns(sd.as_ref(), true)?;
    // crun: the container's own process with the request applied, as runc does (execproc.rs).
    let base = (ctx.rt.kind == RuntimeKind::Crun)
        .then(|| sd.as_ref().and_then(StateDir::bundle))
        .flatten()
        .and_then(|b| crate::execproc::container_process(&b));
    if let Some(base) = base {
        let process = crate::execproc::exec_process(
            base,
            &crate::execproc::Request {
                command: &command,
                tty,
                env: &env,
                cwd: cwd.as_deref(),
            },
        );
        let (_keep_open_until_exec, path) = crate::execproc::process_file(&process)?;
        let words = vec![os("exec"), os("--process"), os(path), os(id)];
        let err = ctx.command(words).exec();
        return Err(err).with_context(|| format!("cannot execute {}", ctx.rt.path.display()));
    }
    let mut words = vec![os("exec")];
    if tty {
        words.push(os("--tty"));
    }
    for e in env {
        words.extend([os("--env"), os(e)]);
    }
    if let Some(c) = cwd {
        words.extend([os("--cwd"), os(c)]);
    }
    words.push(os(id));
    words.extend(command.into_iter().map(os));
    // Replace the shim with the runtime: its exit status (the command's) and signals pass
    // through untouched, with no proxy.
    let err = ctx.command(words).exec();
    Err(err).with_context(|| format!("cannot execute {}", ctx.rt.path.display()))
}

/// `base` with `extra` applied on top: a NAME in `extra` replaces the same NAME in `base`.
pub fn merge_env(base: Vec<String>, extra: Vec<String>) -> Vec<String> {
    let name = |kv: &str| kv.split_once('=').map_or(kv, |(k, _)| k).to_string();
    let overridden: std::collections::HashSet<String> = extra.iter().map(|e| name(e)).collect();
    base.into_iter()
        .filter(|e| !overridden.contains(&name(e)))
        .chain(extra)
        .collect()
}

fn update(g: &Global, id: &str, from: &str) -> Result<i32> {
    let (ctx, sd) = existing(g, id)?;
    let mut tmp = None;
    let file = if from == "-" {
        // The runtime's stdin is not the user's in every runtime (SingularityCE never passes
        // it, so its `update -f -` reads nothing): copy stdin to a private file and hand the
        // runtime that.
        let dir = sd
            .as_ref()
            .map(|s| s.dir.clone())
            .unwrap_or_else(|| ctx.root.clone());
        let p = dir.join(format!(".update-{}.json", common::fsutil::unique_suffix()));
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&p)
            .with_context(|| format!("cannot create {}", p.display()))?;
        tmp = Some(p.clone());
        let copied = std::io::copy(&mut std::io::stdin().lock().take(16 << 20), &mut f);
        if let Err(e) = copied {
            let _ = std::fs::remove_file(&p);
            return Err(e).context("cannot read the resources from stdin");
        }
        p
    } else {
        let p = common::fsutil::absolute(Path::new(from))?;
        if !p.is_file() {
            bail!("resources file {} does not exist", p.display());
        }
        p
    };
    let result = (|| {
        enter_container_ns(sd.as_ref(), false)?;
        ctx.checked(
            "update",
            vec![os("update"), os("--resources"), os(&file), os(id)],
            "",
        )
    })();
    if let Some(t) = tmp {
        let _ = std::fs::remove_file(t);
    }
    result.map(|()| 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_comes_first_and_log_before_the_operation() {
        let v = runtime_argv(
            Path::new("/run/x"),
            vec![os("--log"), os("/l"), os("create"), os("c")],
        );
        let s: Vec<_> = v.iter().map(|a| a.to_str().unwrap()).collect();
        assert_eq!(s, ["--root", "/run/x", "--log", "/l", "create", "c"]);
    }

    #[test]
    fn user_env_overrides_the_container_env() {
        let v = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            merge_env(v(&["PATH=/bin", "A=1", "B=2"]), v(&["A=x y", "C=3"])),
            v(&["PATH=/bin", "B=2", "A=x y", "C=3"])
        );
    }

    #[test]
    fn last_line_skips_blank_tail() {
        assert_eq!(last_line("a\nb\n\n  \n").as_deref(), Some("b"));
        assert_eq!(last_line(""), None);
        let runc = r#"time="2026-11-29T04:15:04Z" level=error msg="cannot start \"x\" container""#;
        assert_eq!(
            last_line(runc).as_deref(),
            Some(r#"cannot start "x" container"#)
        );
    }
}
