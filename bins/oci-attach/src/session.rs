//! One attach session: conmon's SEQPACKET socket on one side, our stdio on the other.
//!
//! * conmon -> us: each packet is one byte of stream id (2 stdout, 3 stderr) and the payload
//!   (at most 8192 bytes). End of stream means conmon closed its readers: the container exited.
//! * us -> conmon: raw stdin bytes; conmon writes them to the container's stdin (the pty master
//!   in terminal mode). Our stdin's end becomes `shutdown(SHUT_WR)`.
//! * signals arrive through a signalfd in the same poll loop: SIGWINCH sends the new size to the
//!   `ctl` FIFO; SIGINT/SIGTERM/SIGHUP/SIGQUIT end the session (the terminal is restored first).

use crate::detach::Matcher;
use crate::term;
use anyhow::{Context, Result};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::socket::{MsgFlags, Shutdown, recv, send, shutdown};
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::Path;

/// conmon's packets carry at most STDIO_BUF_SIZE (8192) bytes plus the stream id.
const PACKET_MAX: usize = 8193;
/// We read stdin in chunks of this size.
const STDIN_CHUNK: usize = 32 * 1024;
/// conmon receives client packets into a 32768-byte buffer less one byte; a longer SEQPACKET
/// message would be cut, so input goes out in packets no larger than this.
const SEND_MAX: usize = 32 * 1024 - 1;

const STREAM_STDOUT: u8 = 2;
const STREAM_STDERR: u8 = 3;

pub use common::lifecycle::ops::attach::Ending;

pub struct Session {
    pub sock: OwnedFd,
    /// `ctl` FIFO, when we have a terminal to report sizes for.
    pub ctl: Option<std::fs::File>,
    /// Detach keys, when stdin is a terminal.
    pub matcher: Option<Matcher>,
}

fn stdin() -> BorrowedFd<'static> {
    // SAFETY: fd 0 stays open for the life of the process.
    unsafe { BorrowedFd::borrow_raw(libc::STDIN_FILENO) }
}

/// Connect to conmon's attach socket at `path`, however long the path is: `sun_path` holds 108
/// bytes, so we connect through `/proc/self/fd/N` of an `O_PATH` descriptor of the socket file.
pub fn connect(path: &Path) -> Result<OwnedFd> {
    use nix::fcntl::{OFlag, open};
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, UnixAddr, socket};
    let pathfd = open(
        path,
        OFlag::O_PATH | OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .with_context(|| format!("cannot open {}", path.display()))?;
    let sock = socket(
        AddressFamily::Unix,
        SockType::SeqPacket,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .context("cannot create a socket")?;
    let via = format!("/proc/self/fd/{}", pathfd.as_raw_fd());
    let addr = UnixAddr::new(via.as_str()).context("bad socket address")?;
    nix::sys::socket::connect(sock.as_raw_fd(), &addr)
        .with_context(|| format!("cannot connect to {}", path.display()))?;
    Ok(sock)
}

impl Session {
    /// Tell conmon the terminal's current size.
    pub fn send_size(&mut self) {
        let (Some(ctl), Some((rows, cols))) = (self.ctl.as_mut(), term::window_size()) else {
            return;
        };
        if let Err(e) = ctl.write_all(term::resize_message(rows, cols).as_bytes()) {
            common::cli::debug(format!("cannot send the window size to conmon: {e}"));
        }
    }

    pub fn run(&mut self) -> Result<Ending> {
        let mut mask = SigSet::empty();
        for s in [
            Signal::SIGWINCH,
            Signal::SIGINT,
            Signal::SIGTERM,
            Signal::SIGHUP,
            Signal::SIGQUIT,
        ] {
            mask.add(s);
        }
        mask.thread_block().context("cannot block signals")?;
        let sigfd = SignalFd::with_flags(&mask, SfdFlags::SFD_CLOEXEC)
            .context("cannot create a signalfd")?;
        self.send_size();

        let mut out = std::io::stdout().lock();
        let mut err = std::io::stderr().lock();
        let mut packet = vec![0u8; PACKET_MAX];
        let mut input = vec![0u8; STDIN_CHUNK];
        let mut stdin_open = true;
        loop {
            let mut fds = vec![
                PollFd::new(self.sock.as_fd(), PollFlags::POLLIN),
                PollFd::new(sigfd.as_fd(), PollFlags::POLLIN),
            ];
            if stdin_open {
                fds.push(PollFd::new(stdin(), PollFlags::POLLIN));
            }
            match poll(&mut fds, PollTimeout::NONE) {
                Ok(_) => {}
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(e).context("poll"),
            }
            let ready = |f: &PollFd| f.revents().is_some_and(|r| !r.is_empty());
            let (sock_ready, sig_ready) = (ready(&fds[0]), ready(&fds[1]));
            let stdin_ready = stdin_open && ready(&fds[2]);
            drop(fds);

            if sock_ready {
                let n = match recv(self.sock.as_raw_fd(), &mut packet, MsgFlags::empty()) {
                    Ok(n) => n,
                    Err(nix::errno::Errno::EINTR) => continue,
                    Err(nix::errno::Errno::ECONNRESET) => 0,
                    Err(e) => return Err(e).context("cannot read from conmon"),
                };
                if n == 0 {
                    return Ok(Ending::StreamEnded);
                }
                let payload = &packet[1..n];
                let written = match packet[0] {
                    STREAM_STDOUT => out.write_all(payload).and_then(|_| out.flush()),
                    STREAM_STDERR => err.write_all(payload).and_then(|_| err.flush()),
                    other => {
                        common::cli::debug(format!("ignoring a packet for stream {other}"));
                        Ok(())
                    }
                };
                // Our stdout going away (a closed pipe) is no reason to leave the container.
                if let Err(e) = written {
                    common::cli::debug(format!("cannot write the container's output: {e}"));
                }
            }
            if sig_ready && let Ok(Some(info)) = sigfd.read_signal() {
                let signo = info.ssi_signo as i32;
                if signo == libc::SIGWINCH {
                    self.send_size();
                } else {
                    return Ok(Ending::Signalled(signo));
                }
            }
            if stdin_ready {
                let n = match nix::unistd::read(stdin(), &mut input) {
                    Ok(n) => n,
                    Err(nix::errno::Errno::EINTR) | Err(nix::errno::Errno::EAGAIN) => continue,
                    Err(e) => return Err(e).context("cannot read stdin"),
                };
                if n == 0 {
                    // Tell conmon that no more input comes, and keep showing output until the
                    // container ends.
                    stdin_open = false;
                    let _ = shutdown(self.sock.as_raw_fd(), Shutdown::Write);
                    continue;
                }
                let (forward, detach) = match self.matcher.as_mut() {
                    Some(m) => {
                        let f = m.feed(&input[..n]);
                        (f.forward, f.detach)
                    }
                    None => (input[..n].to_vec(), false),
                };
                if !forward.is_empty() && !send_all(&self.sock, &forward)? {
                    // conmon stopped reading (the container is ending): the end of the output
                    // stream follows, and with it the exit status.
                    stdin_open = false;
                }
                if detach {
                    return Ok(Ending::Detached);
                }
            }
        }
    }
}

/// Send `data` in packets conmon can take whole. `Ok(false)` when conmon no longer reads.
fn send_all(sock: &OwnedFd, mut data: &[u8]) -> Result<bool> {
    while !data.is_empty() {
        let piece = &data[..data.len().min(SEND_MAX)];
        match send(sock.as_raw_fd(), piece, MsgFlags::MSG_NOSIGNAL) {
            Ok(n) => data = &data[n..],
            Err(nix::errno::Errno::EINTR) => continue,
            Err(nix::errno::Errno::EPIPE) | Err(nix::errno::Errno::ECONNRESET) => {
                return Ok(false);
            }
            Err(e) => return Err(e).context("cannot send input to conmon"),
        }
    }
    Ok(true)
}
