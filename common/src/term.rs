//! The caller's terminal: raw mode that is always undone, and window sizes.
//!
//! Raw mode is restored by the guard's `Drop` (normal returns and errors) and by a panic hook
//! (the release profile aborts on panic, so no unwinding would run `Drop`); a program that can
//! die of a signal while in raw mode restores it before exiting (`oci-attach`) or blocks the
//! signals and forwards them (`oci-runtime-shim`).

use anyhow::{Context, Result};
use nix::sys::termios::{self, SetArg, Termios};
use std::os::fd::BorrowedFd;
use std::sync::Mutex;

/// The settings to put back, shared with the panic hook.
static SAVED: Mutex<Option<Termios>> = Mutex::new(None);

fn stdin_fd() -> BorrowedFd<'static> {
    // SAFETY: fd 0 stays open for the life of the process.
    unsafe { BorrowedFd::borrow_raw(libc::STDIN_FILENO) }
}

pub fn stdin_is_tty() -> bool {
    is_tty(libc::STDIN_FILENO)
}

/// Puts the terminal on stdin into raw mode until dropped.
pub struct RawMode(());

impl RawMode {
    pub fn enter() -> Result<RawMode> {
        let saved = termios::tcgetattr(stdin_fd()).context("cannot read the terminal settings")?;
        let mut raw = saved.clone();
        termios::cfmakeraw(&mut raw);
        *SAVED.lock().unwrap_or_else(|e| e.into_inner()) = Some(saved);
        let hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            restore();
            hook(info);
        }));
        termios::tcsetattr(stdin_fd(), SetArg::TCSANOW, &raw)
            .context("cannot put the terminal into raw mode")?;
        Ok(RawMode(()))
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        restore();
    }
}

/// Put the saved settings back (idempotent; a no-op when raw mode was never entered).
pub fn restore() {
    let saved = SAVED.lock().unwrap_or_else(|e| e.into_inner()).take();
    if let Some(t) = saved {
        // TCSADRAIN: let pending output reach the screen in raw mode first.
        let _ = termios::tcsetattr(stdin_fd(), SetArg::TCSADRAIN, &t);
    }
}

/// (rows, cols) of the terminal on stdin.
pub fn window_size() -> Option<(u16, u16)> {
    window_size_of(libc::STDIN_FILENO)
}

/// (rows, cols) of the terminal on `fd`; `None` when it is not a terminal or has no size.
pub fn window_size_of(fd: libc::c_int) -> Option<(u16, u16)> {
    // SAFETY: a zeroed winsize is a valid value of this plain C struct.
    let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
    // SAFETY: TIOCGWINSZ fills a winsize struct we own.
    let r = unsafe { libc::ioctl(fd, libc::TIOCGWINSZ, &mut ws) };
    (r == 0 && ws.ws_row > 0 && ws.ws_col > 0).then_some((ws.ws_row, ws.ws_col))
}

/// Give the terminal on `fd` (a pty master or slave) the size `rows` x `cols`; the kernel sends
/// SIGWINCH to its foreground process group when the size changes.
pub fn set_window_size(fd: libc::c_int, rows: u16, cols: u16) -> std::io::Result<()> {
    let ws = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads a winsize struct we own.
    if unsafe { libc::ioctl(fd, libc::TIOCSWINSZ, &ws) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

pub fn is_tty(fd: libc::c_int) -> bool {
    // SAFETY: isatty on a plain fd number.
    unsafe { libc::isatty(fd) == 1 }
}
