//! Naming one process over time: a pid and its start time, so a reused pid is not mistaken for
//! the process that once had it.

/// The start time of process `pid` in clock ticks since boot (field 22 of /proc/PID/stat).
/// A zombie (killed, not yet reaped by whoever inherited it) counts as gone.
pub fn start_ticks(pid: i32) -> Option<u64> {
    crate::lifecycle::proc::stat(pid)
        .filter(|s| !s.is_gone())
        .map(|s| s.start_ticks)
}

/// Is the process that had `pid` and started at `ticks` still running?
pub fn alive(pid: i32, ticks: u64) -> bool {
    start_ticks(pid) == Some(ticks)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_lives_and_a_wrong_start_time_does_not() {
        let me = std::process::id() as i32;
        let t = start_ticks(me).expect("our own start time");
        assert!(alive(me, t));
        assert!(!alive(me, t + 1));
        assert!(!alive(0, t));
    }
}
