//! A pseudo-terminal for tests of interactive programs (`oci-attach`, `shell`): the program runs
//! as the context's user with the pty's slave as its controlling terminal and stdio; the test
//! types into the master, waits for text, resizes the window, and collects the exit status.
//!
//! ```no_run
//! # let ctx: e2e::Ctx = unimplemented!();
//! let mut t = e2e::pty::Pty::spawn(&ctx, &ctx.bin("oci-attach"), &["c1"]);
//! t.send("hostname\r");
//! t.expect("myhost");
//! t.resize(50, 120);
//! t.send("exit\r");
//! assert_eq!(t.wait(), 0);
//! ```

use crate::Ctx;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

/// How long [`Pty::expect`] waits by default.
pub const EXPECT_TIMEOUT: Duration = Duration::from_secs(20);

pub struct Pty {
    master: OwnedFd,
    child: Child,
    /// Everything read from the terminal so far.
    seen: Vec<u8>,
    /// Position in `seen` after the last successful expect.
    cursor: usize,
    argv: String,
}

fn set_size(fd: i32, rows: u16, cols: u16) {
    let ws = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads a winsize struct we own.
    let r = unsafe { libc::ioctl(fd, libc::TIOCSWINSZ, &ws) };
    assert_eq!(r, 0, "TIOCSWINSZ: {}", std::io::Error::last_os_error());
}

impl Pty {
    /// Start `program args...` on a new 24x80 terminal, as `ctx`'s user, with `ctx`'s
    /// environment plus `TERM=xterm`.
    pub fn spawn(ctx: &Ctx, program: &str, args: &[&str]) -> Pty {
        Self::spawn_env(ctx, program, args, &[])
    }

    /// [`Pty::spawn`] with extra environment variables.
    pub fn spawn_env(ctx: &Ctx, program: &str, args: &[&str], env: &[(&str, &str)]) -> Pty {
        let (mut m, mut s) = (0, 0);
        // SAFETY: openpty fills two fds; null name/termios/winsize are allowed.
        let r = unsafe {
            libc::openpty(
                &mut m,
                &mut s,
                std::ptr::null_mut(),
                std::ptr::null(),
                std::ptr::null(),
            )
        };
        assert_eq!(r, 0, "openpty: {}", std::io::Error::last_os_error());
        // SAFETY: openpty returned two fresh fds that we now own.
        let (master, slave) = unsafe { (OwnedFd::from_raw_fd(m), OwnedFd::from_raw_fd(s)) };
        // SAFETY: FD_CLOEXEC on our own fd, so the program does not inherit the master.
        unsafe { libc::fcntl(master.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC) };
        set_size(master.as_raw_fd(), 24, 80);

        let mut cmd = ctx.command(program);
        let stdio = |fd: &OwnedFd| Stdio::from(fd.try_clone().expect("dup pty slave"));
        cmd.args(args)
            .env("TERM", "xterm")
            .envs(env.iter().copied())
            .stdin(stdio(&slave))
            .stdout(stdio(&slave))
            .stderr(stdio(&slave));
        // SAFETY: setsid and ioctl are async-signal-safe; they make the slave (now fd 0) the
        // controlling terminal of a new session, as a login would.
        unsafe {
            cmd.pre_exec(|| {
                if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let argv = format!("[{}] {program} {}", ctx.name, args.join(" "));
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {argv} on a pty: {e}"));
        drop(slave);
        Pty {
            master,
            child,
            seen: Vec::new(),
            cursor: 0,
            argv,
        }
    }

    /// Type `text`.
    pub fn send(&mut self, text: impl AsRef<[u8]>) {
        let mut data = text.as_ref();
        while !data.is_empty() {
            match nix_write(&self.master, data) {
                Ok(n) => data = &data[n..],
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => panic!("{}: cannot type into the terminal: {e}", self.argv),
            }
        }
    }

    /// Read what is available within `wait`; false at end of file (the program and everything
    /// holding the terminal are gone).
    fn pump(&mut self, wait: Duration) -> bool {
        let mut pfd = libc::pollfd {
            fd: self.master.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = wait.as_millis().min(i32::MAX as u128) as i32;
        // SAFETY: poll on one pollfd we own.
        let r = unsafe { libc::poll(&mut pfd, 1, ms) };
        if r <= 0 {
            return true;
        }
        let mut buf = [0u8; 4096];
        // SAFETY: read into a buffer we own.
        let n = unsafe { libc::read(self.master.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if n <= 0 {
            // EIO: the slave side is closed everywhere.
            return false;
        }
        self.seen.extend_from_slice(&buf[..n as usize]);
        true
    }

    /// Wait until `needle` appears after the previous match; return the text up to and
    /// including it. Panics with the whole transcript on timeout.
    pub fn expect(&mut self, needle: &str) -> String {
        self.expect_within(needle, EXPECT_TIMEOUT)
    }

    pub fn expect_within(&mut self, needle: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(i) = find(&self.seen[self.cursor..], needle.as_bytes()) {
                let end = self.cursor + i + needle.len();
                let got = String::from_utf8_lossy(&self.seen[self.cursor..end]).into_owned();
                self.cursor = end;
                return got;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || !self.pump(left.min(Duration::from_millis(100))) {
                if let Some(i) = find(&self.seen[self.cursor..], needle.as_bytes()) {
                    let end = self.cursor + i + needle.len();
                    let got = String::from_utf8_lossy(&self.seen[self.cursor..end]).into_owned();
                    self.cursor = end;
                    return got;
                }
                panic!(
                    "{}: did not see {needle:?} within {timeout:?}\n--- terminal ---\n{}",
                    self.argv,
                    self.transcript()
                );
            }
        }
    }

    /// Change the window size (the kernel sends SIGWINCH to the terminal's foreground group).
    pub fn resize(&self, rows: u16, cols: u16) {
        set_size(self.master.as_raw_fd(), rows, cols);
    }

    /// Resize the window to `rows` x `cols`, give the program time to get its SIGWINCH, then
    /// type `input`, which must make it print `stty size`, and wait for the new size.
    pub fn resize_and_expect_size(&mut self, rows: u16, cols: u16, input: &str) {
        self.resize(rows, cols);
        std::thread::sleep(Duration::from_millis(300));
        self.send(input);
        self.expect(&format!("{rows} {cols}\r\n"));
    }

    /// Everything the terminal showed so far.
    pub fn transcript(&self) -> String {
        String::from_utf8_lossy(&self.seen).into_owned()
    }

    /// Wait for the program to exit (at most `timeout`; then it is killed and the test panics)
    /// and return its exit status (128+N for signal N). Output is collected meanwhile.
    pub fn wait_within(&mut self, timeout: Duration) -> i32 {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(st) = self.child.try_wait().expect("waitpid") {
                // Collect what is still buffered.
                while self.pump(Duration::from_millis(20)) {
                    if Instant::now() > deadline {
                        break;
                    }
                    if !has_input(&self.master) {
                        break;
                    }
                }
                return st.code().unwrap_or_else(|| 128 + st.signal().unwrap_or(0));
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "{}: still running after {timeout:?}\n--- terminal ---\n{}",
                    self.argv,
                    self.transcript()
                );
            }
            self.pump(Duration::from_millis(20));
        }
    }

    pub fn wait(&mut self) -> i32 {
        self.wait_within(Duration::from_secs(60))
    }
}

impl Drop for Pty {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn has_input(fd: &OwnedFd) -> bool {
    let mut pfd = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: a zero-timeout poll on one pollfd we own.
    unsafe { libc::poll(&mut pfd, 1, 0) > 0 }
}

fn nix_write(fd: &OwnedFd, data: &[u8]) -> std::io::Result<usize> {
    // SAFETY: write from a buffer we own.
    let n = unsafe { libc::write(fd.as_raw_fd(), data.as_ptr().cast(), data.len()) };
    if n < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() {
        return Some(0);
    }
    hay.windows(needle.len()).position(|w| w == needle)
}
