//! Regular files' contents, metadata and `close`, on a thread of their own.
//!
//! The applier thread parses the stream, resolves parents and creates every entry; a regular
//! file is created there (`openat(O_CREAT|O_EXCL|O_NOFOLLOW)`, so every name is still checked
//! and made in stream order) and its open file, with its contents in chunks, goes to this
//! thread, which writes them, sets owner, special bits, xattrs and times through the fd, and
//! closes it. Copying the data into the page cache is the largest single cost of an unpack here
//! (a third of its CPU on ext4), and on two cores it now runs beside the inode creations
//! instead of after each one; with the decompressing thread the unpack keeps three threads busy,
//! as unsquashfs keeps its readers, inflaters and writer, so a loaded machine does not starve it
//! more than its anchors.
//!
//! This thread never resolves a name: it only touches fds the applier opened, so what a hostile
//! layer can do is decided on the applier's side alone. Memory is bounded: at most `DEPTH`
//! chunks (and as many open files) wait in the channel, and chunk buffers are recycled.

use super::meta::{EntryMeta, MetaWriter, Skipped};
use super::path::show;
use anyhow::{Context, Result, anyhow, bail};
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;

/// Bytes a chunk carries at most.
pub const CHUNK: usize = 256 << 10;
/// Chunks waiting for the writer at most.
const DEPTH: usize = 16;

/// One chunk of a regular file.
struct Job {
    /// Set on a file's first chunk: the file just created and its path (for messages).
    open: Option<(File, Vec<u8>)>,
    /// A `CHUNK`-long buffer, of which the first `len` bytes are data.
    data: Vec<u8>,
    len: usize,
    /// Set on a file's last chunk: its metadata, applied before it is closed.
    last: Option<EntryMeta>,
}

/// The applier's end: hands files over, collects the writer's verdict.
pub struct FileWriter {
    tx: Option<SyncSender<Job>>,
    spare: Receiver<Vec<u8>>,
    handle: Option<JoinHandle<Result<Skipped>>>,
    /// The writer stopped on an error, which a hand-over returned.
    broken: bool,
}

impl FileWriter {
    pub fn spawn(meta: MetaWriter) -> Result<FileWriter> {
        let (tx, rx) = sync_channel(DEPTH);
        let (recycle, spare) = sync_channel(DEPTH + 2);
        let handle = std::thread::Builder::new()
            .name("file-writer".into())
            .spawn(move || run(rx, recycle, meta))
            .context("cannot start the file writer thread")?;
        Ok(FileWriter {
            tx: Some(tx),
            spare,
            handle: Some(handle),
            broken: false,
        })
    }

    /// Copy `size` bytes of `data` into `file` (at `path`), then give it `meta`. Returns the
    /// bytes copied: fewer than `size` when `data` ended early (the file is finished anyway,
    /// the caller reports the truncation).
    pub fn file(
        &mut self,
        file: File,
        path: &[u8],
        meta: EntryMeta,
        size: u64,
        data: &mut impl Read,
    ) -> Result<u64> {
        let mut open = Some((file, path.to_vec()));
        let mut meta = Some(meta);
        let mut copied = 0u64;
        loop {
            let mut buf = self.spare.try_recv().unwrap_or_else(|_| vec![0; CHUNK]);
            let want = (size - copied).min(CHUNK as u64) as usize;
            let len = fill(data, &mut buf[..want]).context("cannot read file data from layer")?;
            copied += len as u64;
            let last = len < want || copied == size;
            self.send(Job {
                open: open.take(),
                data: buf,
                len,
                last: if last { meta.take() } else { None },
            })?;
            if last {
                return Ok(copied);
            }
        }
    }

    fn send(&mut self, job: Job) -> Result<()> {
        let Some(tx) = &self.tx else {
            bail!("the file writer stopped after an earlier error");
        };
        if tx.send(job).is_err() {
            // The writer only stops early on an error: that error is the one to report.
            self.broken = true;
            return Err(self
                .stop()
                .err()
                .unwrap_or_else(|| anyhow!("the file writer stopped")));
        }
        Ok(())
    }

    /// Whether the last error returned was the writer's own (about an earlier file), not one
    /// of the file being handed over.
    pub fn broken(&self) -> bool {
        self.broken
    }

    /// Wait until every file handed over is written, set and closed; what it skipped.
    pub fn finish(&mut self) -> Result<Skipped> {
        self.stop()
    }

    fn stop(&mut self) -> Result<Skipped> {
        drop(self.tx.take());
        match self.handle.take() {
            Some(h) => h
                .join()
                .map_err(|_| anyhow!("the file writer thread panicked"))?,
            None => bail!("the file writer stopped after an earlier error"),
        }
    }
}

impl Drop for FileWriter {
    fn drop(&mut self) {
        // The files still queued are finished (at most DEPTH chunks) before the caller removes
        // or keeps the tree: nothing writes into it after the applier is gone.
        let _ = self.stop();
    }
}

/// Read until `buf` is full or `r` ends; the bytes read.
fn fill(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

fn run(rx: Receiver<Job>, recycle: SyncSender<Vec<u8>>, meta: MetaWriter) -> Result<Skipped> {
    let mut skipped = Skipped::default();
    let mut cur: Option<(File, Vec<u8>)> = None;
    for job in rx {
        if let Some(o) = job.open {
            cur = Some(o);
        }
        let Some((file, path)) = cur.as_mut() else {
            bail!("file data arrived before its file");
        };
        file.write_all(&job.data[..job.len])
            .with_context(|| format!("cannot write file {}", show(path)))?;
        let _ = recycle.try_send(job.data);
        if let Some(m) = job.last {
            let (file, path) = cur.take().expect("checked above");
            let what = || format!("file {}", show(&path));
            meta.apply_fd(file.as_fd(), &m, false, &what, &mut skipped)?;
        }
    }
    Ok(skipped)
}
