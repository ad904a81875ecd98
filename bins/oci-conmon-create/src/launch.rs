//! Driving conmon (API version 1) through one container create.
//!
//! 1. Two `SOCK_SEQPACKET` socketpairs: *sync* (conmon -> us) and *start* (us -> conmon), whose
//!    child ends become conmon's fds 3 and 4 (`_OCI_SYNCPIPE=3`, `_OCI_STARTPIPE=4`).
//! 2. conmon blocks reading the start socket; one byte lets it go on. It double-forks: the first
//!    process writes `conmon.pid` and exits 0; the monitor detaches its stdio, runs
//!    `RUNTIME [--runtime-arg..] create --bundle B --pid-file P [--console-socket S] ID` and sends
//!    `{"data": PID}\n` on the sync socket, or `{"data": -1, "message": "<runtime stderr>"}\n`.
//! 3. We read that one line, under a deadline.
//!
//! conmon gets a minimal environment of its own (not the caller's, not the empty one of
//! SingularityCE): what conmon, the runtime and our exit command need, nothing else.

use anyhow::{Context, Result, bail};
use common::lifecycle::runtime::{RuntimeBinary, RuntimeKind};
use common::lifecycle::statedir as files;
use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Everything one create needs to know.
pub struct Plan {
    pub conmon: PathBuf,
    pub runtime: RuntimeBinary,
    pub root: PathBuf,
    pub id: String,
    pub bundle: PathBuf,
    pub state_dir: PathBuf,
    pub log_path: PathBuf,
    /// The container's stdout and stderr files: conmon's `passthrough` driver hands them to
    /// the container itself (no k8s-file log, no attach socket, no relay through conmon).
    pub passthrough: Option<(std::fs::File, std::fs::File)>,
    pub terminal: bool,
    pub timeout: Duration,
    pub helpers: Helpers,
}

pub struct Created {
    pub pid: i32,
    pub conmon_pid: i32,
}

/// conmon's fds for the two sockets, fixed by the protocol's environment variables.
const SYNC_FD: RawFd = 3;
const START_FD: RawFd = 4;

/// Variables passed through to conmon (and so to the runtime and the exit command) when set.
const PASSED_ENV: [&str; 12] = [
    "HOME",
    "TMPDIR",
    "XDG_RUNTIME_DIR",
    "LANG",
    "LC_ALL",
    common::identity::ENV_ROOTLESS_UID,
    common::identity::ENV_ROOTLESS_GID,
    common::lifecycle::root::ENV_STATE_ROOT,
    common::lifecycle::runtime::ENV_RUNTIME,
    "SINGULARITY_DEBUG",
    "SINGULARITY_QUIET",
    "SINGULARITY_OCI_SINGLE_ID",
];
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The programs conmon calls back, found beside this one (as the front finds its stages).
pub struct Helpers {
    /// `oci-cgroup-fix`, when crun needs the hybrid-cgroup fix on this host.
    pub cgroup_fix: Option<PathBuf>,
    /// `oci-runtime-shim`, for the exit command.
    pub shim: PathBuf,
}

impl Helpers {
    pub fn find(runtime: &RuntimeBinary) -> Result<Helpers> {
        let fix_needed =
            runtime.kind == RuntimeKind::Crun && common::lifecycle::cgroupfix::host_needs_fix();
        Ok(Helpers {
            cgroup_fix: fix_needed
                .then(|| common::runtime::sibling("oci-cgroup-fix"))
                .transpose()?,
            shim: common::runtime::sibling("oci-runtime-shim")?,
        })
    }
}

/// The runtime as conmon must call it: crun on a hybrid-cgroup host goes through the
/// `oci-cgroup-fix` chain-loader, which hides the cgroup2 controllers in a private mount
/// namespace before exec'ing crun.
fn runtime_argv(plan: &Plan) -> (PathBuf, Vec<String>) {
    let mut args = Vec::new();
    let program = match &plan.helpers.cgroup_fix {
        Some(fix) => {
            args.push("--".to_string());
            args.push(plan.runtime.path.to_string_lossy().into_owned());
            fix.clone()
        }
        None => plan.runtime.path.clone(),
    };
    args.push(format!("--root={}", plan.root.display()));
    (program, args)
}

fn conmon_args(plan: &Plan) -> Vec<String> {
    let sd = &plan.state_dir;
    let p = |name: &str| sd.join(name).to_string_lossy().into_owned();
    let (runtime, runtime_args) = runtime_argv(plan);
    let mut a: Vec<String> = vec![
        "--api-version".into(),
        "1".into(),
        "--cid".into(),
        plan.id.clone(),
        "--name".into(),
        plan.id.clone(),
        "--cuuid".into(),
        uuid_v4(),
        "--runtime".into(),
        runtime.to_string_lossy().into_owned(),
    ];
    for ra in runtime_args {
        a.push(format!("--runtime-arg={ra}"));
    }
    if plan.passthrough.is_some() {
        // The runtime's stderr is the container's file then: its own words also go to its log,
        // read back when conmon reports a failure without them.
        a.push(format!("--runtime-arg=--log={}", p(files::RUNTIME_LOG)));
    }
    a.extend([
        "--bundle".into(),
        plan.bundle.to_string_lossy().into_owned(),
        "--full-attach".into(),
        "--conmon-pidfile".into(),
        p(files::CONMON_PID),
        "--container-pidfile".into(),
        p(files::CONTAINER_PID),
        "--persist-dir".into(),
        sd.to_string_lossy().into_owned(),
        "--log-path".into(),
        if plan.passthrough.is_some() {
            "passthrough".into()
        } else {
            format!("k8s-file:{}", plan.log_path.display())
        },
        "--exit-command".into(),
        plan.helpers.shim.to_string_lossy().into_owned(),
    ]);
    // oci-runtime-shim --root ROOT conmon-exited --bundle BUNDLE ID
    for arg in [
        "--root".to_string(),
        plan.root.to_string_lossy().into_owned(),
        "conmon-exited".into(),
        "--bundle".into(),
        plan.bundle.to_string_lossy().into_owned(),
        plan.id.clone(),
    ] {
        a.extend(["--exit-command-arg".into(), arg]);
    }
    // A terminal is a console socket handed to the runtime; otherwise stdout/stderr are pipes
    // and stdin is kept open for oci-attach (passthrough: the container's stdin is /dev/null).
    if plan.terminal {
        a.push("--terminal".into());
    } else if plan.passthrough.is_none() {
        a.push("--stdin".into());
    }
    a
}

fn conmon_env() -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = vec![
        (
            "PATH".into(),
            std::env::var("PATH")
                .ok()
                .filter(|p| !p.is_empty())
                .unwrap_or_else(|| DEFAULT_PATH.into()),
        ),
        ("_OCI_SYNCPIPE".into(), SYNC_FD.to_string()),
        ("_OCI_STARTPIPE".into(), START_FD.to_string()),
    ];
    for k in PASSED_ENV {
        if let Ok(v) = std::env::var(k) {
            env.push((k.into(), v));
        }
    }
    env
}

/// A random version-4 UUID from the kernel's generator.
fn uuid_v4() -> String {
    let mut b = [0u8; 16];
    if std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .is_err()
    {
        let s = common::fsutil::unique_suffix();
        for (i, c) in s.bytes().enumerate() {
            b[i % 16] ^= c;
        }
    }
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

fn seqpacket_pair() -> Result<(OwnedFd, OwnedFd)> {
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, socketpair};
    socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .context("cannot create a socketpair for conmon")
}

/// Move `fd` above the fds the child will use, so the dup2s in the child cannot clobber it.
fn high_fd(fd: OwnedFd) -> Result<OwnedFd> {
    // SAFETY: F_DUPFD_CLOEXEC returns a new fd we then own.
    let n = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 10) };
    if n < 0 {
        return Err(std::io::Error::last_os_error()).context("cannot duplicate a socket");
    }
    // SAFETY: n is a fresh, valid descriptor.
    Ok(unsafe { OwnedFd::from_raw_fd(n) })
}

/// Start conmon, let it go, and wait for its report. On any failure the partial container is
/// torn down (conmon killed, runtime state deleted) before the error is returned.
pub fn run(plan: &Plan) -> Result<Created> {
    let (sync_parent, sync_child) = seqpacket_pair()?;
    let (start_parent, start_child) = seqpacket_pair()?;
    let sync_child = high_fd(sync_child)?;
    let start_child = high_fd(start_child)?;
    let args = conmon_args(plan);
    common::cli::debug(format!("{} {}", plan.conmon.display(), args.join(" ")));

    let (stdout, stderr) = match &plan.passthrough {
        Some((out, err)) => (
            Stdio::from(out.try_clone().context("cannot pass the stdout file")?),
            Stdio::from(err.try_clone().context("cannot pass the stderr file")?),
        ),
        None => (Stdio::null(), Stdio::piped()),
    };
    let mut cmd = Command::new(&plan.conmon);
    cmd.args(&args)
        .env_clear()
        .envs(conmon_env())
        .current_dir(&plan.bundle)
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr)
        // Its own process group: a ^C meant for the caller must not reach conmon before it
        // has detached into its own session.
        .process_group(0);
    let (sc, st) = (sync_child.as_raw_fd(), start_child.as_raw_fd());
    // SAFETY: only async-signal-safe calls (dup2, close_range) between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if libc::dup2(sc, SYNC_FD) < 0 || libc::dup2(st, START_FD) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            // conmon outlives the caller: it gets its two pipes and stdio, nothing else the
            // caller had open.
            common::fds::cloexec_from(START_FD + 1)
        });
    }
    let started = Instant::now();
    let mut child = cmd
        .spawn()
        .with_context(|| format!("while starting conmon ({})", plan.conmon.display()))?;
    drop(sync_child);
    drop(start_child);
    let stderr = child.stderr.take().map(OwnedFd::from);

    let outcome = (|| -> Result<Created> {
        nix::unistd::write(&start_parent, b"0").context("cannot signal conmon to start")?;
        drop(start_parent);
        let deadline = started + plan.timeout;
        let report = read_report(&sync_parent, stderr, deadline, plan)?;
        // The first conmon process exits right after forking the monitor (before the runtime
        // even starts), so this wait does not block.
        let status = child.wait().context("cannot wait for conmon")?;
        if !status.success() {
            bail!("while starting conmon: it exited with {status}");
        }
        let pid = report?;
        let conmon_pid = files::read_pid(&plan.state_dir.join(files::CONMON_PID))?;
        Ok(Created { pid, conmon_pid })
    })();
    if outcome.is_err() {
        teardown(plan, &mut child);
    }
    outcome
}

/// Read conmon's one-line report (and, on the side, its stderr). The outer `Result` is a failure
/// of the protocol itself; the inner one is the runtime's verdict.
fn read_report(
    sync: &OwnedFd,
    stderr: Option<OwnedFd>,
    mut deadline: Instant,
    plan: &Plan,
) -> Result<Result<i32>> {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    use std::os::fd::AsFd;
    let mut line: Vec<u8> = Vec::new();
    let mut conmon_err: Vec<u8> = Vec::new();
    let mut stderr = stderr;
    let mut sync_done = false;
    let mut buf = vec![0u8; 65536];
    while !sync_done || stderr.is_some() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            if sync_done {
                break; // conmon's stderr stayed open: irrelevant once we have the report
            }
            bail!(
                "container creation timeout: no report from conmon after {} s",
                plan.timeout.as_secs()
            );
        }
        let ms = left.as_millis().min(i32::MAX as u128) as i32;
        let mut fds = Vec::with_capacity(2);
        if !sync_done {
            fds.push(PollFd::new(sync.as_fd(), PollFlags::POLLIN));
        }
        if let Some(e) = &stderr {
            fds.push(PollFd::new(e.as_fd(), PollFlags::POLLIN));
        }
        match poll(
            &mut fds,
            PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX),
        ) {
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e).context("poll"),
        }
        let ready: Vec<bool> = fds
            .iter()
            .map(|f| f.revents().is_some_and(|r| !r.is_empty()))
            .collect();
        drop(fds);
        let mut i = 0;
        if !sync_done {
            if ready[0] {
                let n = nix::unistd::read(sync, &mut buf).unwrap_or(0);
                line.extend_from_slice(&buf[..n]);
                if n == 0 || line.contains(&b'\n') {
                    sync_done = true;
                    // conmon's monitor detaches its stdio before it even starts the runtime, so
                    // its stderr is closed by now; never let it hold up a finished create.
                    deadline = deadline.min(Instant::now() + Duration::from_secs(1));
                }
            }
            i = 1;
        }
        if let Some(e) = &stderr
            && ready[i]
        {
            let n = nix::unistd::read(e, &mut buf).unwrap_or(0);
            if n == 0 {
                stderr = None;
            } else if conmon_err.len() < 65536 {
                conmon_err.extend_from_slice(&buf[..n]);
            }
        }
    }
    let conmon_err = String::from_utf8_lossy(&conmon_err).trim().to_string();
    if !conmon_err.is_empty() {
        common::cli::debug(format!("conmon stderr: {conmon_err}"));
    }
    Ok(interpret(&line, &conmon_err, plan))
}

/// Turn conmon's report into the container pid or an error in the runtime's own words.
fn interpret(line: &[u8], conmon_err: &str, plan: &Plan) -> Result<i32> {
    let text = String::from_utf8_lossy(line);
    let text = text.trim();
    let rt = plan.runtime.name();
    if text.is_empty() {
        let why = significant_conmon_lines(conmon_err);
        if why.is_empty() {
            if let Some((_, err)) = &plan.passthrough {
                bail!(
                    "container creation failed: conmon exited without a report (its own words are in the stderr file{})",
                    file_name_of(err)
                );
            }
            bail!(
                "container creation failed: conmon exited without a report (is '{rt}' usable here? try SINGULARITY_DEBUG=1)"
            );
        }
        bail!("container creation failed: conmon: {why}");
    }
    let v: serde_json::Value = serde_json::from_str(text)
        .with_context(|| format!("conmon sent an unreadable report: {text}"))?;
    let data = v.get("data").and_then(|d| d.as_i64()).unwrap_or(-1);
    if data > 0 {
        return Ok(data as i32);
    }
    match v.get("message").and_then(|m| m.as_str()) {
        Some(m) if !m.trim().is_empty() => {
            bail!("{rt}: {}", common::lifecycle::error::all_messages(m))
        }
        _ => {
            let logged = std::fs::read_to_string(plan.state_dir.join(files::RUNTIME_LOG))
                .ok()
                .and_then(|t| common::lifecycle::error::last_message(&t));
            match logged {
                Some(m) => bail!("{rt}: {m}"),
                None => bail!("container creation failed ({rt} gave no message)"),
            }
        }
    }
}

/// ` FILE` for an open file, from /proc (empty when unknown).
fn file_name_of(f: &std::fs::File) -> String {
    std::fs::read_link(format!("/proc/self/fd/{}", f.as_raw_fd()))
        .map(|p| format!(" {}", p.display()))
        .unwrap_or_default()
}

/// conmon's own stderr has noise (`oom_score_adj` when CAP_SYS_RESOURCE is missing); keep the
/// errors.
fn significant_conmon_lines(s: &str) -> String {
    s.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.contains("oom_score_adj"))
        .collect::<Vec<_>>()
        .join(" | ")
}

/// Best-effort removal of a half-made container: conmon's monitor, then the runtime's state.
fn teardown(plan: &Plan, child: &mut std::process::Child) {
    let _ = child.kill();
    let _ = child.wait();
    if let Ok(pid) = files::read_pid(&plan.state_dir.join(files::CONMON_PID)) {
        // SAFETY: plain kill(2) of the monitor we started.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
    if plan.root.join(&plan.id).exists() {
        let (program, mut args) = runtime_argv(plan);
        args.extend(["delete".into(), "--force".into(), plan.id.clone()]);
        let child = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        // A runtime that hung on create may hang on delete too: bound the wait.
        if let Ok(mut c) = child {
            let deadline = Instant::now() + Duration::from_secs(10);
            while matches!(c.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(cgroup_fix: Option<&str>) -> Plan {
        Plan {
            conmon: "/usr/bin/conmon".into(),
            runtime: RuntimeBinary {
                path: "/usr/bin/crun".into(),
                kind: RuntimeKind::Crun,
            },
            root: "/run/r".into(),
            id: "c1".into(),
            bundle: "/b".into(),
            state_dir: "/run/r/containers/c1".into(),
            log_path: "/l".into(),
            passthrough: None,
            terminal: false,
            timeout: Duration::from_secs(1),
            helpers: Helpers {
                cgroup_fix: cgroup_fix.map(PathBuf::from),
                shim: "/p/bin/oci-runtime-shim".into(),
            },
        }
    }

    /// The values of every `--opt VALUE` pair named `opt`.
    fn values<'a>(a: &'a [String], opt: &str) -> Vec<&'a str> {
        a.windows(2)
            .filter(|w| w[0] == opt)
            .map(|w| w[1].as_str())
            .collect()
    }

    #[test]
    fn crun_needing_the_fix_runs_through_the_chain_loader() {
        let a = conmon_args(&plan(Some("/p/bin/oci-cgroup-fix")));
        assert_eq!(values(&a, "--runtime"), ["/p/bin/oci-cgroup-fix"]);
        let ra: Vec<&str> = a
            .iter()
            .filter_map(|x| x.strip_prefix("--runtime-arg="))
            .collect();
        assert_eq!(ra, ["--", "/usr/bin/crun", "--root=/run/r"]);
    }

    #[test]
    fn otherwise_conmon_runs_the_runtime_itself() {
        let a = conmon_args(&plan(None));
        assert_eq!(values(&a, "--runtime"), ["/usr/bin/crun"]);
        let ra: Vec<&str> = a
            .iter()
            .filter_map(|x| x.strip_prefix("--runtime-arg="))
            .collect();
        assert_eq!(ra, ["--root=/run/r"]);
    }

    #[test]
    fn the_exit_command_is_the_shims_documented_operation() {
        let a = conmon_args(&plan(None));
        assert_eq!(values(&a, "--exit-command"), ["/p/bin/oci-runtime-shim"]);
        assert_eq!(
            values(&a, "--exit-command-arg"),
            ["--root", "/run/r", "conmon-exited", "--bundle", "/b", "c1"]
        );
    }

    #[test]
    fn passthrough_hands_over_the_files_and_logs_the_runtime() {
        let d = tempfile::tempdir().unwrap();
        let f = || std::fs::File::create(d.path().join("f")).unwrap();
        let mut p = plan(None);
        p.passthrough = Some((f(), f()));
        let a = conmon_args(&p);
        assert_eq!(values(&a, "--log-path"), ["passthrough"]);
        assert!(!a.iter().any(|x| x == "--stdin"));
        assert!(a.contains(&"--runtime-arg=--log=/run/r/containers/c1/runtime.log".to_string()));
        let a = conmon_args(&plan(None));
        assert_eq!(values(&a, "--log-path"), ["k8s-file:/l"]);
        assert!(a.iter().any(|x| x == "--stdin"));
    }

    #[test]
    fn uuid_shape() {
        let u = uuid_v4();
        assert_eq!(u.len(), 36);
        assert_eq!(&u[14..15], "4");
        assert_ne!(uuid_v4(), u);
    }
}
