//! Descriptors a long-lived child must not inherit.
//!
//! A process that outlives its caller (conmon monitors a container for its whole life) would
//! otherwise keep every descriptor the caller happened to have open: a `exec 7</etc/shadow` in a
//! root shell stays open in the monitor, readable through `/proc/PID/fd/7` by anything that can
//! ptrace it.

use std::os::fd::RawFd;

/// Mark every descriptor from `first` upwards close-on-exec, in one `close_range(2)` call.
///
/// Close-on-exec rather than closed: a descriptor the child needs is dup2()'d below `first`
/// beforehand, and the standard library's own exec-error pipe must stay usable until the exec.
/// Async-signal-safe (one system call, no allocation), so it may run between fork and exec.
pub fn cloexec_from(first: RawFd) -> std::io::Result<()> {
    // SAFETY: close_range only changes descriptor flags; no memory is passed.
    let r = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            first as libc::c_uint,
            libc::c_uint::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    #[test]
    fn descriptors_above_the_floor_do_not_survive_exec() {
        let f = std::fs::File::open("/proc/self/status").unwrap();
        // A high descriptor without close-on-exec, as a shell's `exec 7<file` leaves one.
        // SAFETY: dup(2) of a descriptor we own; the result is closed below.
        let high = unsafe { libc::fcntl(f.as_raw_fd(), libc::F_DUPFD, 40) };
        assert!(high >= 40);
        let mut cmd = std::process::Command::new("/bin/sh");
        cmd.args([
            "-c",
            &format!("test -e /proc/self/fd/{high} && echo open || echo closed"),
        ]);
        // SAFETY: cloexec_from is async-signal-safe.
        unsafe {
            use std::os::unix::process::CommandExt;
            cmd.pre_exec(|| cloexec_from(3));
        }
        let out = cmd.output().unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "closed");
        // Without the call the descriptor is inherited (the test proves something).
        let out = std::process::Command::new("/bin/sh")
            .args([
                "-c",
                &format!("test -e /proc/self/fd/{high} && echo open || echo closed"),
            ])
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "open");
        // SAFETY: closing the descriptor dup'ed above.
        unsafe { libc::close(high) };
    }
}
