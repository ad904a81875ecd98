//! Progress bars on stderr (oci-fetch's downloads, oci-unpack's layers and SIF partitions),
//! drawn only when stderr is a terminal and nobody asked for quiet (`--quiet`, or
//! `SINGULARITY_QUIET`, which the front exports for its `-q`/`--quiet`/`--silent`).
//!
//! One line per item in flight, and optionally a total line; lines are redrawn in place (cursor
//! up, clear line) at most ten times a second, so a fast loopback pull does not spend its time
//! writing to the terminal.

use std::io::{Read, Write};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

pub struct Progress {
    enabled: bool,
    state: Mutex<State>,
}

struct State {
    bars: Vec<Bar>,
    drawn: usize,
    last: Option<Instant>,
    /// Draw a last line summing every bar.
    total: bool,
}

/// Set by a stage's `--quiet`: no bars in this process, whatever its caller asks.
static QUIET: AtomicBool = AtomicBool::new(false);

/// No progress bars in this process (a stage's `--quiet`).
pub fn set_quiet() {
    QUIET.store(true, Ordering::Relaxed);
}

/// Has this process been asked to be quiet (`--quiet` or `SINGULARITY_QUIET`)?
pub fn quiet() -> bool {
    QUIET.load(Ordering::Relaxed) || std::env::var_os("SINGULARITY_QUIET").is_some()
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
            enabled: tty && !quiet && !self::quiet(),
            state: Mutex::new(State {
                bars: Vec::new(),
                drawn: 0,
                last: None,
                total: false,
            }),
        }
    }

    /// Also draw a total line under the bars.
    pub fn with_total(self) -> Progress {
        if let Ok(mut s) = self.state.lock() {
            s.total = true;
        }
        self
    }

    /// Whether anything is drawn at all.
    pub fn enabled(&self) -> bool {
        self.enabled
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
        let sum = self.total.then(|| Bar {
            name: "total".into(),
            done: self.bars.iter().map(|b| b.done).sum(),
            total: self.bars.iter().map(|b| b.total).sum(),
            finished: self.bars.iter().all(|b| b.finished),
        });
        for b in self.bars.iter().chain(sum.as_ref()) {
            out.push_str(&b.line());
        }
        self.drawn = self.bars.len() + usize::from(sum.is_some());
        self.last = Some(Instant::now());
        let _ = std::io::stderr().write_all(out.as_bytes());
    }
}

impl Bar {
    fn line(&self) -> String {
        let frac = if self.total == 0 {
            1.0
        } else {
            (self.done as f64 / self.total as f64).min(1.0)
        };
        let width = 30;
        let fill = (frac * width as f64) as usize;
        format!(
            "\r\x1b[K{:<19} [{}{}] {:>9} / {:<9}{}\n",
            self.name,
            "=".repeat(fill),
            " ".repeat(width - fill),
            human(self.done),
            human(self.total),
            if self.finished { " done" } else { "" }
        )
    }
}

/// A reader that reports the bytes read through it to bar `id` of `progress`.
pub struct Counting<'a, R> {
    inner: R,
    progress: &'a Progress,
    id: usize,
    done: u64,
}

impl<'a, R: Read> Counting<'a, R> {
    pub fn new(inner: R, progress: &'a Progress, id: usize) -> Self {
        Counting {
            inner,
            progress,
            id,
            done: 0,
        }
    }
}

impl<R: Read> Read for Counting<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.done += n as u64;
        self.progress.set(self.id, self.done);
        Ok(n)
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

    #[test]
    fn the_total_line_sums_the_bars() {
        let mut s = super::State {
            bars: vec![],
            drawn: 0,
            last: None,
            total: true,
        };
        for (done, total) in [(512, 1024), (1024, 1024)] {
            s.bars.push(super::Bar {
                name: "l".into(),
                done,
                total,
                finished: done == total,
            });
        }
        s.draw();
        assert_eq!(s.drawn, 3);
    }
}
