//! The data blocks of large files, inflated on worker threads and handed back in order.
//!
//! Inflating is the longest part of a SIF unpack and squashfs compresses every data block on
//! its own, so a file of several blocks is inflated by one worker per core, the way unsquashfs
//! does it; the walk keeps a window of blocks in flight and writes them in file order. Each
//! worker reads through its own descriptor of the image file with the same checks as the walk
//! (a block's position and size inside the image, its output no larger than the block size),
//! and a failure ends the walk with that block's error. Memory stays bounded by the window:
//! at most `window()` blocks of at most the block size are out at once.

use super::codec::Codec;
use super::{BlockSource, read_block};
use anyhow::{Result, anyhow};
use std::collections::HashMap;
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// Workers at most (more than the cores only adds switching).
const MAX_WORKERS: usize = 4;

struct Job {
    seq: u64,
    pos: u64,
    word: u32,
    out: Vec<u8>,
}

pub struct Inflaters {
    jobs: Option<Sender<Job>>,
    done: Receiver<(u64, Result<Vec<u8>>)>,
    workers: Vec<JoinHandle<()>>,
    next: u64,
    /// Blocks finished before their turn.
    early: HashMap<u64, Result<Vec<u8>>>,
    spare: Vec<Vec<u8>>,
}

impl Inflaters {
    /// Start the workers: one per core, at least two, at most `MAX_WORKERS`.
    pub fn start(src: &BlockSource, compression: u16, block_size: usize) -> Result<Inflaters> {
        let n = std::thread::available_parallelism()
            .map_or(2, |n| n.get())
            .clamp(2, MAX_WORKERS);
        let (jobs, rx) = channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        let (tx_done, done) = channel();
        let mut workers = Vec::with_capacity(n);
        for i in 0..n {
            let src = src.try_clone()?;
            let mut codec = Codec::new(compression, block_size)?;
            let rx = rx.clone();
            let tx_done = tx_done.clone();
            let h = std::thread::Builder::new()
                .name(format!("inflate-{i}"))
                .spawn(move || {
                    loop {
                        let job = match rx.lock() {
                            Ok(r) => r.recv(),
                            Err(_) => return,
                        };
                        let Ok(mut job) = job else { return };
                        let r = read_block(&src, &mut codec, job.pos, job.word, &mut job.out)
                            .map(|()| job.out);
                        if tx_done.send((job.seq, r)).is_err() {
                            return;
                        }
                    }
                })?;
            workers.push(h);
        }
        Ok(Inflaters {
            jobs: Some(jobs),
            done,
            workers,
            next: 0,
            early: HashMap::new(),
            spare: Vec::new(),
        })
    }

    /// Blocks to keep in flight: enough to keep every worker busy while the walk writes.
    pub fn window(&self) -> usize {
        2 * self.workers.len()
    }

    /// Queue the block stored at `pos` with size word `word`; returns its ticket.
    pub fn submit(&mut self, pos: u64, word: u32, limit: usize) -> Result<u64> {
        let mut out = self.spare.pop().unwrap_or_default();
        out.resize(limit, 0);
        let seq = self.next;
        self.next += 1;
        self.jobs
            .as_ref()
            .ok_or_else(|| anyhow!("the inflate workers stopped"))?
            .send(Job {
                seq,
                pos,
                word,
                out,
            })
            .map_err(|_| anyhow!("the inflate workers stopped"))?;
        Ok(seq)
    }

    /// The inflated block of ticket `seq` (waiting for it).
    pub fn take(&mut self, seq: u64) -> Result<Vec<u8>> {
        loop {
            if let Some(r) = self.early.remove(&seq) {
                return r;
            }
            let (s, r) = self
                .done
                .recv()
                .map_err(|_| anyhow!("the inflate workers stopped"))?;
            if s == seq {
                return r;
            }
            self.early.insert(s, r);
        }
    }

    /// Hand a block's buffer back for the next one.
    pub fn recycle(&mut self, buf: Vec<u8>) {
        if self.spare.len() < self.window() {
            self.spare.push(buf);
        }
    }
}

impl Drop for Inflaters {
    fn drop(&mut self) {
        drop(self.jobs.take());
        for h in self.workers.drain(..) {
            let _ = h.join();
        }
    }
}
