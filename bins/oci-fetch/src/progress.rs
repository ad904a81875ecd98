//! Per-blob progress bars on stderr, drawn only when stderr is a terminal.
//!
//! One line per blob in flight; lines are redrawn in place (cursor up, clear line) at most ten
//! times a second, so a fast loopback pull does not spend its time writing to the terminal.

use std::io::Write;
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub struct Progress {
    enabled: bool,
    state: Mutex<State>,
}

struct State {
    bars: Vec<Bar>,
    drawn: usize,
    last: Option<Instant>,
}

struct Bar {
    name: String,
    done: u64,
    total: u64,
    finished: bool,
}

impl Progress {
    pub fn new(quiet: bool) -> Progress {
        // SAFETY: isatty only inspects the descriptor.
        let tty = unsafe { libc::isatty(2) == 1 };
        Progress {
            enabled: tty && !quiet,
            state: Mutex::new(State {
                bars: Vec::new(),
                drawn: 0,
                last: None,
            }),
        }
    }

    pub fn start(&self, name: &str, total: u64) -> usize {
        if !self.enabled {
            return 0;
        }
        let mut s = self.state.lock().unwrap();
        s.bars.push(Bar {
            name: name.chars().take(19).collect(),
            done: 0,
            total,
            finished: false,
        });
        s.bars.len() - 1
    }

    pub fn set(&self, id: usize, done: u64) {
        if !self.enabled {
            return;
        }
        let mut s = self.state.lock().unwrap();
        if let Some(b) = s.bars.get_mut(id) {
            b.done = done;
        }
        let due = s
            .last
            .is_none_or(|t| t.elapsed() >= Duration::from_millis(100));
        if due {
            s.draw();
        }
    }

    pub fn finish(&self, id: usize) {
        if !self.enabled {
            return;
        }
        let mut s = self.state.lock().unwrap();
        if let Some(b) = s.bars.get_mut(id) {
            b.done = b.total;
            b.finished = true;
        }
        s.draw();
    }
}

impl State {
    fn draw(&mut self) {
        let mut out = String::new();
        if self.drawn > 0 {
            out.push_str(&format!("\x1b[{}A", self.drawn));
        }
        for b in &self.bars {
            let frac = if b.total == 0 {
                1.0
            } else {
                (b.done as f64 / b.total as f64).min(1.0)
            };
            let width = 30;
            let fill = (frac * width as f64) as usize;
            out.push_str(&format!(
                "\r\x1b[K{:<19} [{}{}] {:>9} / {:<9}{}\n",
                b.name,
                "=".repeat(fill),
                " ".repeat(width - fill),
                human(b.done),
                human(b.total),
                if b.finished { " done" } else { "" }
            ));
        }
        self.drawn = self.bars.len();
        self.last = Some(Instant::now());
        let _ = std::io::stderr().write_all(out.as_bytes());
    }
}

fn human(n: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn human_sizes() {
        assert_eq!(super::human(512), "512 B");
        assert_eq!(super::human(1536), "1.5 KiB");
        assert_eq!(super::human(100 << 20), "100.0 MiB");
    }
}
