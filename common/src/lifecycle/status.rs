//! Exit statuses: what the launcher's own exit code is for every way a container or the runtime
//! can end.
//!
//! | how it ended | our exit code |
//! |---|---|
//! | exit N | N |
//! | killed by signal S | 128 + S |
//! | conmon killed it for `--timeout` (exit file `-1`) | 255 |
//! | nothing known | 255 (a launcher error) |

use anyhow::{Result, bail};

/// Exit code for an `exit N` or a death by signal `S` (as `wait` reports them).
pub fn code_of(code: Option<i32>, signal: Option<i32>) -> i32 {
    match (code, signal) {
        (Some(c), _) => c,
        (None, Some(s)) => 128 + s,
        _ => crate::cli::EXIT_FATAL,
    }
}

/// Exit code of a finished child: N for exit N, 128+S for death by signal S.
pub fn exit_code(status: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    code_of(status.code(), status.signal())
}

/// The container's status from the text of conmon's exit file: `None` while it is empty (conmon
/// has not written it yet). conmon writes `-1` when it killed the container for `--timeout`;
/// that, and anything else outside 0..=255, is reported as 255.
pub fn from_exit_file(text: &str) -> Result<Option<i32>> {
    let t = text.trim();
    if t.is_empty() {
        return Ok(None);
    }
    match t.parse::<i64>() {
        Ok(c) if (0..=255).contains(&c) => Ok(Some(c as i32)),
        Ok(_) => Ok(Some(crate::cli::EXIT_FATAL)),
        Err(_) => bail!("'{t}' is not an exit status"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;

    #[test]
    fn exit_codes_pass_through() {
        for c in [0, 1, 42, 127, 254, 255] {
            assert_eq!(code_of(Some(c), None), c);
        }
    }

    #[test]
    fn signals_are_128_plus() {
        assert_eq!(code_of(None, Some(libc::SIGTERM)), 143);
        assert_eq!(code_of(None, Some(libc::SIGINT)), 130);
        assert_eq!(code_of(None, Some(libc::SIGKILL)), 137);
    }

    #[test]
    fn nothing_known_is_a_launcher_error() {
        assert_eq!(code_of(None, None), 255);
    }

    #[test]
    fn wait_statuses() {
        // Raw wait(2) statuses: exit N is N << 8, death by S is S.
        assert_eq!(exit_code(std::process::ExitStatus::from_raw(42 << 8)), 42);
        assert_eq!(exit_code(std::process::ExitStatus::from_raw(0)), 0);
        assert_eq!(exit_code(std::process::ExitStatus::from_raw(9)), 137);
        assert_eq!(exit_code(std::process::ExitStatus::from_raw(15)), 143);
    }

    #[test]
    fn exit_file_values() {
        assert_eq!(from_exit_file("0").unwrap(), Some(0));
        assert_eq!(from_exit_file("137\n").unwrap(), Some(137));
        assert_eq!(from_exit_file(" 3 ").unwrap(), Some(3));
    }

    #[test]
    fn exit_file_timeout_and_out_of_range() {
        assert_eq!(from_exit_file("-1").unwrap(), Some(255));
        assert_eq!(from_exit_file("256").unwrap(), Some(255));
        assert_eq!(from_exit_file("99999999999").unwrap(), Some(255));
    }

    #[test]
    fn exit_file_not_yet_written() {
        assert_eq!(from_exit_file("").unwrap(), None);
        assert_eq!(from_exit_file(" \n").unwrap(), None);
    }

    #[test]
    fn exit_file_garbage() {
        let e = from_exit_file("x").unwrap_err().to_string();
        assert_eq!(e, "'x' is not an exit status");
    }
}
