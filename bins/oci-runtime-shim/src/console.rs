//! `run` of a bundle whose process has a terminal: the shim holds the pty master and relays it.
//!
//! Left to themselves, `crun run` and `runc run` make the container's pty with no size (`stty
//! size` printed `0 0`) and do not follow resizes. So, as conmon and podman do, the shim runs
//! `RUNTIME create --console-socket S`, receives the master over S, gives it the caller's window
//! size *before* `RUNTIME start` (so the command never sees 0x0), puts the caller's terminal in
//! raw mode, and relays bytes both ways until the container ends, copying the size again on every
//! SIGWINCH. The shim is the child subreaper, so the container process (whose parent, the
//! runtime, exits after `create`) becomes its child and its exit status comes from `wait`.
//!
//! Signals stay blocked in the shim and arrive on a signalfd: SIGWINCH resizes, SIGCHLD reaps,
//! every other one is sent to the container process. The shim therefore never dies of a signal
//! in raw mode (only SIGKILL can do that); raw mode is undone on every return path by the guard.
//!
//! Without a terminal none of this runs: `run` stays a single `RUNTIME run` with the caller's
//! descriptors, no relay and no extra process.

use anyhow::{Context, Result, bail};
use common::lifecycle::process::{Call, Program, Runtime};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::SigSet;
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;
use std::ffi::OsString;
use std::io::{IoSliceMut, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Does the bundle's process ask for a terminal (`process.terminal` in config.json)?
pub fn wants_terminal(bundle: &Path) -> Result<bool> {
    let text = std::fs::read(bundle.join("config.json"))
        .with_context(|| format!("cannot read {}/config.json", bundle.display()))?;
    let v: serde_json::Value = serde_json::from_slice(&text)
        .with_context(|| format!("{}/config.json is not valid JSON", bundle.display()))?;
    Ok(v["process"]["terminal"].as_bool() == Some(true))
}

/// The container's files; the runtime sends the master to `SOCKET` in its private state dir.
pub struct Paths<'a> {
    pub bundle: &'a Path,
    pub pid_file: &'a Path,
    pub state_dir: &'a Path,
    pub id: &'a str,
}

/// The console socket's name in the state dir.
const SOCKET: &str = "console.sock";

/// A socket address may be 107 bytes long, and a state dir below a deep `$TMPDIR` is longer:
/// the runtime then gets the path relative to the bundle (crun and runc both work in the bundle
/// directory), which is short when the two are near each other, as they are under one TMPDIR.
fn socket_arg(state_dir: &Path, bundle: &Path) -> Result<PathBuf> {
    let absolute = state_dir.join(SOCKET);
    let relative = relative_to(&absolute, bundle);
    let shortest = [absolute.clone(), relative]
        .into_iter()
        .min_by_key(|p| p.as_os_str().len())
        .expect("two candidates");
    if shortest.as_os_str().len() > 107 {
        bail!(
            "the console socket path {} is too long for a socket address (use a shorter $TMPDIR or --root)",
            absolute.display()
        );
    }
    Ok(shortest)
}

/// `path` relative to the directory `from` (both absolute and without `..`).
fn relative_to(path: &Path, from: &Path) -> PathBuf {
    let (p, f): (Vec<_>, Vec<_>) = (path.components().collect(), from.components().collect());
    let common = p.iter().zip(&f).take_while(|(a, b)| a == b).count();
    let mut r = PathBuf::new();
    for _ in common..f.len() {
        r.push("..");
    }
    for c in &p[common..] {
        r.push(c);
    }
    r
}

/// Listen on `dir/SOCKET`, reached through a descriptor of `dir` so the address stays short.
fn listen_in(dir: &Path) -> Result<UnixListener> {
    let d = std::fs::File::open(dir).with_context(|| format!("cannot open {}", dir.display()))?;
    let short = format!("/proc/self/fd/{}/{SOCKET}", d.as_raw_fd());
    UnixListener::bind(&short)
        .with_context(|| format!("cannot listen on {}/{SOCKET}", dir.display()))
}

/// Create, relay, start, wait, delete. Returns the container's exit code (128+N for signal N).
pub fn run(ctx: &Program, p: &Paths) -> Result<i32> {
    // SAFETY: prctl with integer arguments only.
    if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) } != 0 {
        return Err(std::io::Error::last_os_error()).context("cannot become a child subreaper");
    }
    let listener = listen_in(p.state_dir)?;
    listener.set_nonblocking(true)?;

    // Block every signal before the container exists, so none is lost; they are read from the
    // signalfd once the relay runs.
    let all = SigSet::all();
    let old = all.thread_swap_mask(nix::sys::signal::SigmaskHow::SIG_BLOCK)?;
    let result = create_and_relay(ctx, p, &listener);
    let _ = old.thread_set_mask();
    result
}

fn create_and_relay(ctx: &Program, p: &Paths, listener: &UnixListener) -> Result<i32> {
    let words: Vec<OsString> = vec![
        "create".into(),
        "--bundle".into(),
        p.bundle.into(),
        "--pid-file".into(),
        p.pid_file.into(),
        "--console-socket".into(),
        socket_arg(p.state_dir, p.bundle)?.into(),
        p.id.into(),
    ];
    quiet_runtime(ctx, "create", words, Some(p.bundle)).inspect_err(|_| ctx.force_delete(p.id))?;
    let started = (|| -> Result<(OwnedFd, Pid)> {
        let master = receive_master(listener)?;
        let pid = read_pid(p.pid_file)?;
        Ok((master, pid))
    })();
    let (master, pid) = match started {
        Ok(v) => v,
        Err(e) => {
            ctx.force_delete(p.id);
            return Err(e);
        }
    };
    // The caller's size before the command runs; with no terminal of our own, a usual default.
    let (rows, cols) = caller_size().unwrap_or((24, 80));
    let _ = common::term::set_window_size(master.as_raw_fd(), rows, cols);
    let raw = if common::term::stdin_is_tty() {
        Some(common::term::RawMode::enter()?)
    } else {
        None
    };
    if let Err(e) = quiet_runtime(ctx, "start", vec!["start".into(), p.id.into()], None) {
        drop(raw);
        ctx.force_delete(p.id);
        return Err(e);
    }
    let status = Relay::new(master, pid, raw.is_some())?.run();
    drop(raw);
    // The container has ended (or the relay failed): the runtime forgets it either way.
    ctx.force_delete(p.id);
    status
}

/// Run a short runtime operation with its output captured: a failure becomes one error with
/// the runtime's own last words.
fn quiet_runtime(
    ctx: &Program,
    what: &str,
    words: Vec<OsString>,
    cwd: Option<&Path>,
) -> Result<()> {
    let mut call = Call::new(words);
    call.cwd = cwd.map(Path::to_path_buf);
    common::lifecycle::ops::checked(ctx, what, &call, "").map(|_| ())
}

fn caller_size() -> Option<(u16, u16)> {
    common::term::window_size_of(libc::STDIN_FILENO)
        .or_else(|| common::term::window_size_of(libc::STDOUT_FILENO))
}

/// Take the runtime's connection (made during `create`, so already queued) and the master fd
/// it sent with SCM_RIGHTS.
fn receive_master(listener: &UnixListener) -> Result<OwnedFd> {
    let (conn, _) = listener
        .accept()
        .context("the runtime did not send the terminal (no connection on the console socket)")?;
    conn.set_nonblocking(false)?;
    let mut buf = [0u8; 4096];
    let mut iov = [IoSliceMut::new(&mut buf)];
    let mut space = nix::cmsg_space!([std::os::fd::RawFd; 1]);
    let msg = recvmsg::<()>(
        conn.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .context("cannot receive the terminal from the runtime")?;
    for c in msg
        .cmsgs()
        .context("bad control message from the runtime")?
    {
        if let ControlMessageOwned::ScmRights(fds) = c
            && let Some(&fd) = fds.first()
        {
            // SAFETY: the kernel just installed this descriptor for us.
            return Ok(unsafe { OwnedFd::from_raw_fd(fd) });
        }
    }
    bail!("the runtime's console message carried no terminal")
}

fn read_pid(path: &Path) -> Result<Pid> {
    let text = std::fs::read_to_string(path).context("the runtime wrote no pid file")?;
    let n: i32 = text
        .trim()
        .parse()
        .with_context(|| format!("bad pid file {}", path.display()))?;
    if n <= 0 {
        bail!("bad pid {n} in {}", path.display());
    }
    Ok(Pid::from_raw(n))
}

/// The byte-moving loop between the caller's stdio and the pty master.
struct Relay {
    master: OwnedFd,
    pid: Pid,
    sigfd: SignalFd,
    caller_tty: bool,
    /// Input read from stdin that the container has not taken yet.
    to_master: Vec<u8>,
    stdin_open: bool,
    master_open: bool,
    status: Option<i32>,
}

fn stdin() -> BorrowedFd<'static> {
    // SAFETY: fd 0 stays open for the life of the process.
    unsafe { BorrowedFd::borrow_raw(libc::STDIN_FILENO) }
}

const CHUNK: usize = 64 * 1024;
/// Once the container has ended, how long to wait for the rest of its output.
const DRAIN_IDLE: Duration = Duration::from_millis(200);

impl Relay {
    fn new(master: OwnedFd, pid: Pid, caller_tty: bool) -> Result<Relay> {
        let sigfd = SignalFd::with_flags(&SigSet::all(), SfdFlags::SFD_CLOEXEC)
            .context("cannot create a signalfd")?;
        nix::fcntl::fcntl(
            &master,
            nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
        )?;
        Ok(Relay {
            master,
            pid,
            sigfd,
            caller_tty,
            to_master: Vec::new(),
            stdin_open: true,
            master_open: true,
            status: None,
        })
    }

    fn run(mut self) -> Result<i32> {
        let mut buf = vec![0u8; CHUNK];
        loop {
            if let Some(code) = self.status
                && !self.master_open
            {
                return Ok(code);
            }
            let mut master_events = PollFlags::empty();
            if self.master_open {
                master_events |= PollFlags::POLLIN;
                if !self.to_master.is_empty() {
                    master_events |= PollFlags::POLLOUT;
                }
            }
            let mut fds = vec![
                PollFd::new(self.sigfd.as_fd(), PollFlags::POLLIN),
                PollFd::new(self.master.as_fd(), master_events),
            ];
            let read_stdin = self.stdin_open && self.to_master.is_empty() && self.master_open;
            if read_stdin {
                fds.push(PollFd::new(stdin(), PollFlags::POLLIN));
            }
            // After the container's end, output still in the pty comes at once: stop when it
            // goes quiet (a background process with --no-pid may keep the terminal open).
            let timeout = if self.status.is_some() {
                PollTimeout::try_from(DRAIN_IDLE).unwrap_or(PollTimeout::MAX)
            } else {
                PollTimeout::NONE
            };
            let n = match poll(&mut fds, timeout) {
                Ok(n) => n,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(e).context("poll"),
            };
            if n == 0 {
                self.master_open = false;
                continue;
            }
            let ev = |f: &PollFd| f.revents().unwrap_or(PollFlags::empty());
            let (sig_ev, master_ev) = (ev(&fds[0]), ev(&fds[1]));
            let stdin_ev = if read_stdin {
                ev(&fds[2])
            } else {
                PollFlags::empty()
            };
            drop(fds);
            if !sig_ev.is_empty() {
                self.on_signal()?;
            }
            if master_ev.intersects(PollFlags::POLLIN | PollFlags::POLLHUP | PollFlags::POLLERR) {
                self.copy_output(&mut buf);
            }
            if master_ev.contains(PollFlags::POLLOUT) {
                self.flush_input();
            }
            if !stdin_ev.is_empty() {
                self.read_input(&mut buf);
            }
        }
    }

    fn on_signal(&mut self) -> Result<()> {
        let Some(info) = self
            .sigfd
            .read_signal()
            .context("cannot read the signalfd")?
        else {
            return Ok(());
        };
        let signo = info.ssi_signo as i32;
        match signo {
            libc::SIGWINCH => {
                if let Some((rows, cols)) = caller_size() {
                    let _ = common::term::set_window_size(self.master.as_raw_fd(), rows, cols);
                }
            }
            libc::SIGCHLD => self.reap(),
            // The runtime would not forward this one either (it is for Go's runtime).
            libc::SIGURG => {}
            _ => {
                // SAFETY: kill(2) of the container process, our child until we reap it.
                unsafe {
                    libc::kill(self.pid.as_raw(), signo);
                }
            }
        }
        Ok(())
    }

    /// Reap every child that has ended (as subreaper we inherit the runtime's leftovers too);
    /// note the container's status.
    fn reap(&mut self) {
        loop {
            match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) if pid == self.pid => self.status = Some(code),
                Ok(WaitStatus::Signaled(pid, sig, _)) if pid == self.pid => {
                    self.status = Some(128 + sig as i32)
                }
                Ok(WaitStatus::StillAlive) | Err(_) => return,
                Ok(_) => {}
            }
        }
    }

    fn copy_output(&mut self, buf: &mut [u8]) {
        match nix::unistd::read(&self.master, buf) {
            Ok(0) => self.master_open = false,
            Ok(n) => {
                let mut out = std::io::stdout().lock();
                // The caller's stdout going away is no reason to stop the container.
                let _ = out.write_all(&buf[..n]).and_then(|_| out.flush());
            }
            Err(nix::errno::Errno::EAGAIN) | Err(nix::errno::Errno::EINTR) => {}
            // EIO: no process holds the terminal any more.
            Err(_) => self.master_open = false,
        }
    }

    fn read_input(&mut self, buf: &mut [u8]) {
        match nix::unistd::read(stdin(), buf) {
            Ok(0) | Err(nix::errno::Errno::EBADF) | Err(nix::errno::Errno::EIO) => {
                self.stdin_open = false;
                if !self.caller_tty {
                    // Input from a file or pipe has ended: tell the container's terminal as a
                    // typed end-of-file would.
                    self.to_master.push(eof_char(&self.master));
                    self.flush_input();
                }
            }
            Ok(n) => {
                self.to_master.extend_from_slice(&buf[..n]);
                self.flush_input();
            }
            Err(_) => {}
        }
    }

    fn flush_input(&mut self) {
        while !self.to_master.is_empty() {
            match nix::unistd::write(&self.master, &self.to_master) {
                Ok(n) => {
                    self.to_master.drain(..n);
                }
                Err(nix::errno::Errno::EINTR) => {}
                Err(nix::errno::Errno::EAGAIN) => return,
                Err(_) => {
                    self.to_master.clear();
                    return;
                }
            }
        }
    }
}

/// The terminal's end-of-file character (normally ^D).
fn eof_char(master: &OwnedFd) -> u8 {
    nix::sys::termios::tcgetattr(master)
        .map(|t| t.control_chars[nix::sys::termios::SpecialCharacterIndices::VEOF as usize])
        .unwrap_or(4)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_path_relative_to_the_bundle_when_shorter() {
        let deep = format!("/tmp/{}/t", "x".repeat(90));
        let state = PathBuf::from(format!("{deep}/singularity-oci-1001/containers/c1"));
        let bundle = PathBuf::from(format!("{deep}/singularity-oci.abc"));
        assert_eq!(
            socket_arg(&state, &bundle).unwrap(),
            Path::new("../singularity-oci-1001/containers/c1/console.sock")
        );
        assert_eq!(
            socket_arg(Path::new("/run/s/containers/c1"), &bundle).unwrap(),
            Path::new("/run/s/containers/c1/console.sock")
        );
        let far = PathBuf::from(format!("/var/{}", "y".repeat(100)));
        assert!(socket_arg(&far, &bundle).is_err());
    }

    #[test]
    fn terminal_flag_is_read_from_the_config() {
        let t = tempfile::tempdir().unwrap();
        std::fs::write(
            t.path().join("config.json"),
            r#"{"process":{"terminal":true}}"#,
        )
        .unwrap();
        assert!(wants_terminal(t.path()).unwrap());
        std::fs::write(t.path().join("config.json"), r#"{"process":{}}"#).unwrap();
        assert!(!wants_terminal(t.path()).unwrap());
    }
}
