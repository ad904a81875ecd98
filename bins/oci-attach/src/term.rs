//! The local terminal: raw mode that is always undone, and its window size.
//!
//! Raw mode is restored by the guard's `Drop` (normal returns and errors), by a panic hook (the
//! release profile aborts on panic, so no unwinding would run `Drop`), and the session restores
//! it before exiting on a terminating signal.

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
    // SAFETY: isatty on a plain fd number.
    unsafe { libc::isatty(libc::STDIN_FILENO) == 1 }
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
    let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
    // SAFETY: TIOCGWINSZ fills a winsize struct we own.
    let r = unsafe { libc::ioctl(libc::STDIN_FILENO, libc::TIOCGWINSZ, &mut ws) };
    (r == 0 && ws.ws_row > 0 && ws.ws_col > 0).then_some((ws.ws_row, ws.ws_col))
}

/// conmon's control message for a resize: type 1, then height and width.
pub fn resize_message(rows: u16, cols: u16) -> String {
    format!("1 {rows} {cols}\n")
}

#[cfg(test)]
mod tests {
    #[test]
    fn resize_message_is_conmons_format() {
        assert_eq!(super::resize_message(50, 120), "1 50 120\n");
    }
}
