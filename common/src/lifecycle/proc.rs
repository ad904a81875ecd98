//! What `/proc/PID/stat` says about a process: its name, its state, when it started (the one
//! parser of that file; `common::process` names a process by pid and start time with it).

/// The fields of `/proc/PID/stat` the lifecycle needs.
#[derive(Debug, PartialEq, Eq)]
pub struct Stat {
    /// The command name (field 2, without the parentheses).
    pub comm: String,
    /// The state letter (field 3).
    pub state: char,
    /// Start time in clock ticks since boot (field 22).
    pub start_ticks: u64,
}

impl Stat {
    /// A zombie or a dead process counts as gone: whoever inherited it may take a while to reap.
    pub fn is_gone(&self) -> bool {
        matches!(self.state, 'Z' | 'X' | 'x')
    }
}

/// Parse the text of `/proc/PID/stat`. The command name may hold spaces and parentheses, so
/// the fields after it are found from the last `)`.
pub fn parse_stat(text: &str) -> Option<Stat> {
    let (head, tail) = text.rsplit_once(')')?;
    let comm = head.split_once('(')?.1.to_string();
    let mut fields = tail.split_whitespace();
    let state = fields.next()?.chars().next()?;
    // Field 3 was the state; field 22 is 19 further on.
    let start_ticks = fields.nth(18)?.parse().ok()?;
    Some(Stat {
        comm,
        state,
        start_ticks,
    })
}

/// `/proc/PID/stat` of a process, if it exists.
pub fn stat(pid: i32) -> Option<Stat> {
    if pid <= 0 {
        return None;
    }
    parse_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// The start time of a live (not zombie) process in clock ticks since boot.
pub fn start_ticks(pid: i32) -> Option<u64> {
    stat(pid).filter(|s| !s.is_gone()).map(|s| s.start_ticks)
}

/// When the live process `pid` started, in seconds since the epoch; `None` for a zombie (a
/// container process that was killed but not yet reaped by whoever inherited it is gone).
pub fn start_epoch(pid: i32) -> Option<u64> {
    let ticks = stat(pid).filter(|s| !s.is_gone())?.start_ticks;
    let btime: u64 = std::fs::read_to_string("/proc/stat")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    Some(ticks_to_epoch(btime, ticks, hz))
}

/// Boot time plus ticks at `hz` (100 when the system does not say).
pub fn ticks_to_epoch(btime: u64, ticks: u64, hz: libc::c_long) -> u64 {
    let hz = if hz > 0 { hz as u64 } else { 100 };
    btime + ticks / hz
}

/// True while `pid` is a live process named `comm`.
pub fn is_running(pid: i32, comm: &str) -> bool {
    stat(pid).is_some_and(|s| s.comm == comm && !s.is_gone())
}

#[cfg(test)]
mod tests {
    use super::*;

    const LINE: &str = "4242 (conmon) S 1 4241 4241 0 -1 4194368 100 0 0 0 0 0 0 0 20 0 1 0 987654 1000000 100 18446744073709551615";

    #[test]
    fn a_plain_line() {
        let s = parse_stat(LINE).unwrap();
        assert_eq!(s.comm, "conmon");
        assert_eq!(s.state, 'S');
        assert_eq!(s.start_ticks, 987654);
        assert!(!s.is_gone());
    }

    #[test]
    fn a_name_with_spaces_and_parentheses() {
        let l = LINE.replace("(conmon)", "(a) b (c))");
        let s = parse_stat(&l).unwrap();
        assert_eq!(s.comm, "a) b (c)");
        assert_eq!(s.start_ticks, 987654);
    }

    #[test]
    fn zombies_and_dead_are_gone() {
        for st in ['Z', 'X', 'x'] {
            let l = LINE.replace(") S ", &format!(") {st} "));
            assert!(parse_stat(&l).unwrap().is_gone(), "{st}");
        }
    }

    #[test]
    fn truncated_lines_are_refused() {
        assert_eq!(parse_stat(""), None);
        assert_eq!(parse_stat("12 (x) S 1 2"), None);
        assert_eq!(parse_stat("12 x S"), None);
    }

    #[test]
    fn our_own_process() {
        let me = std::process::id() as i32;
        let s = stat(me).unwrap();
        assert!(!s.is_gone());
        assert_eq!(crate::process::start_ticks(me), Some(s.start_ticks));
        assert!(start_epoch(me).unwrap() > 1_600_000_000);
        assert!(!is_running(me, "certainly-not-our-name"));
        assert!(stat(0).is_none() && stat(-1).is_none());
    }

    #[test]
    fn a_zombie_has_no_start_time() {
        let mut child = std::process::Command::new("/bin/true").spawn().unwrap();
        let pid = child.id() as i32;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !stat(pid).is_some_and(|s| s.is_gone()) && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert!(stat(pid).unwrap().is_gone(), "not a zombie yet");
        assert_eq!(start_epoch(pid), None);
        child.wait().unwrap();
    }

    #[test]
    fn ticks_convert_at_the_clock_rate() {
        assert_eq!(ticks_to_epoch(1000, 250, 100), 1002);
        assert_eq!(ticks_to_epoch(1000, 250, 0), 1002, "unknown rate: 100");
        assert_eq!(ticks_to_epoch(1000, 2500, 1000), 1002);
    }
}
