//! Signal names and numbers.
//!
//! `kill` checks the signal itself and hands the runtime a number, so a bad name is our one-line
//! FATAL (exit 255, nothing sent) rather than a runtime error after the lookup of the container.

use anyhow::{Result, bail};

const NAMES: &[(&str, i32)] = &[
    ("HUP", libc::SIGHUP),
    ("INT", libc::SIGINT),
    ("QUIT", libc::SIGQUIT),
    ("ILL", libc::SIGILL),
    ("TRAP", libc::SIGTRAP),
    ("ABRT", libc::SIGABRT),
    ("IOT", libc::SIGIOT),
    ("BUS", libc::SIGBUS),
    ("FPE", libc::SIGFPE),
    ("KILL", libc::SIGKILL),
    ("USR1", libc::SIGUSR1),
    ("SEGV", libc::SIGSEGV),
    ("USR2", libc::SIGUSR2),
    ("PIPE", libc::SIGPIPE),
    ("ALRM", libc::SIGALRM),
    ("TERM", libc::SIGTERM),
    ("STKFLT", libc::SIGSTKFLT),
    ("CHLD", libc::SIGCHLD),
    ("CONT", libc::SIGCONT),
    ("STOP", libc::SIGSTOP),
    ("TSTP", libc::SIGTSTP),
    ("TTIN", libc::SIGTTIN),
    ("TTOU", libc::SIGTTOU),
    ("URG", libc::SIGURG),
    ("XCPU", libc::SIGXCPU),
    ("XFSZ", libc::SIGXFSZ),
    ("VTALRM", libc::SIGVTALRM),
    ("PROF", libc::SIGPROF),
    ("WINCH", libc::SIGWINCH),
    ("IO", libc::SIGIO),
    ("POLL", libc::SIGPOLL),
    ("PWR", libc::SIGPWR),
    ("SYS", libc::SIGSYS),
];

/// Parse `KILL`, `SIGKILL`, `kill`, `9`, `RTMIN+2`, `SIGRTMAX-1` into a signal number.
pub fn parse(s: &str) -> Result<i32> {
    let bad = || {
        anyhow::anyhow!("invalid signal '{s}' (use a name such as TERM or KILL, or a number 1-64)")
    };
    if let Ok(n) = s.parse::<i32>() {
        return if (1..=libc::SIGRTMAX()).contains(&n) {
            Ok(n)
        } else {
            Err(bad())
        };
    }
    let up = s.to_ascii_uppercase();
    let name = up.strip_prefix("SIG").unwrap_or(&up);
    if let Some(&(_, n)) = NAMES.iter().find(|(nm, _)| *nm == name) {
        return Ok(n);
    }
    let rt = |base: i32, rest: &str, sign: i32| -> Result<i32> {
        let off: i32 = if rest.is_empty() {
            0
        } else {
            rest.parse().map_err(|_| bad())?
        };
        let n = base + sign * off;
        if (libc::SIGRTMIN()..=libc::SIGRTMAX()).contains(&n) {
            Ok(n)
        } else {
            Err(bad())
        }
    };
    if let Some(r) = name.strip_prefix("RTMIN") {
        return match r.strip_prefix('+') {
            Some(x) => rt(libc::SIGRTMIN(), x, 1),
            None if r.is_empty() => rt(libc::SIGRTMIN(), "", 1),
            None => Err(bad()),
        };
    }
    if let Some(r) = name.strip_prefix("RTMAX") {
        return match r.strip_prefix('-') {
            Some(x) => rt(libc::SIGRTMAX(), x, -1),
            None if r.is_empty() => rt(libc::SIGRTMAX(), "", 1),
            None => Err(bad()),
        };
    }
    if s.is_empty() {
        bail!("empty signal name");
    }
    Err(bad())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_names() {
        assert_eq!(parse("KILL").unwrap(), 9);
        assert_eq!(parse("TERM").unwrap(), 15);
        assert_eq!(parse("HUP").unwrap(), 1);
        assert_eq!(parse("USR1").unwrap(), libc::SIGUSR1);
    }

    #[test]
    fn sig_prefix_and_case() {
        assert_eq!(parse("SIGKILL").unwrap(), 9);
        assert_eq!(parse("term").unwrap(), 15);
        assert_eq!(parse("sigint").unwrap(), 2);
        assert_eq!(parse("SigWinch").unwrap(), libc::SIGWINCH);
    }

    #[test]
    fn every_table_name_parses_to_its_number() {
        for (name, n) in NAMES {
            assert_eq!(parse(name).unwrap(), *n, "{name}");
            assert_eq!(parse(&format!("SIG{name}")).unwrap(), *n, "SIG{name}");
        }
    }

    #[test]
    fn numbers() {
        assert_eq!(parse("9").unwrap(), 9);
        assert_eq!(parse("1").unwrap(), 1);
        assert_eq!(
            parse(&libc::SIGRTMAX().to_string()).unwrap(),
            libc::SIGRTMAX()
        );
    }

    #[test]
    fn numbers_out_of_range() {
        for bad in ["0", "65", "-3", "99999999999"] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn realtime_signals() {
        assert_eq!(parse("RTMIN").unwrap(), libc::SIGRTMIN());
        assert_eq!(parse("RTMIN+2").unwrap(), libc::SIGRTMIN() + 2);
        assert_eq!(parse("SIGRTMAX-1").unwrap(), libc::SIGRTMAX() - 1);
        assert_eq!(parse("RTMAX").unwrap(), libc::SIGRTMAX());
    }

    #[test]
    fn realtime_signals_out_of_range() {
        for bad in [
            "RTMIN+99", "RTMAX-99", "RTMINX", "RTMIN-1", "RTMAX+1", "RTMIN+x",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn unknown_names_say_what_to_use() {
        let e = parse("NOPE").unwrap_err().to_string();
        assert_eq!(
            e,
            "invalid signal 'NOPE' (use a name such as TERM or KILL, or a number 1-64)"
        );
        assert!(parse("SIGFOO").is_err());
        assert_eq!(parse("").unwrap_err().to_string(), "empty signal name");
    }
}
