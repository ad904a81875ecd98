//! Putting verified blobs into the cache layout.
//!
//! Every blob is streamed into `CACHE/tmp/blob-<hex>.partial` while it is hashed, and renamed to
//! `layout/blobs/sha256/<hex>` only when its size and digest match and its data is on the disk
//! (fdatasync before the rename). The per-blob lock
//! (`locks/blob-<hex>.lock`) makes concurrent fetchers of one image download each blob once: the
//! second waits, re-checks, and finds the blob present. A blob present in the layout was verified
//! on the way in, so the warm path only `stat`s layers and never re-hashes them.
//!
//! The partial file has a fixed name because only the lock holder touches it; after a crash or
//! a kill it is the starting point of an HTTP Range resume (its bytes are re-hashed first).

use crate::media::RawDescriptor;
use crate::progress::Progress;
use anyhow::{Context, Result, bail};
use common::cache::Cache;
use common::digest::Digest;
use common::fsutil::LockFile;
use sha2::{Digest as _, Sha256};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, mpsc};
use std::time::Duration;

/// Where blobs come from.
pub trait BlobSource: Sync {
    /// Open the blob at byte `offset` if the source can, else at 0. Returns the reader and the
    /// offset it really starts at.
    fn open(&self, desc: &RawDescriptor, offset: u64) -> Result<(Box<dyn Read + Send + '_>, u64)>;

    /// Whether a failure while reading is worth a retry (network sources).
    fn retryable(&self) -> bool {
        false
    }
}

/// An error worth retrying (5xx, connection reset, timeout, short read from the network).
#[derive(Debug)]
pub struct Transient(pub String);

impl std::fmt::Display for Transient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for Transient {}

pub fn is_transient(e: &anyhow::Error) -> bool {
    e.chain().any(|c| c.downcast_ref::<Transient>().is_some())
}

/// Bounded retries with exponential backoff: 0.5, 1, 2, 4 s.
pub const RETRIES: u32 = 4;
pub fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(500 << attempt.min(6))
}

const BUF: usize = 256 << 10;

/// Written bytes are handed to the kernel's writeback every this many bytes, so the fdatasync
/// that makes a finished blob durable only waits for the tail (see `start_writeback`).
const WRITEBACK_CHUNK: u64 = 8 << 20;

/// Start (do not wait for) writeback of `len` bytes at `offset`: the disk works while the
/// download goes on, instead of all at once in the final fdatasync.
fn start_writeback(f: &File, offset: u64, len: u64) {
    use std::os::fd::AsRawFd;
    // SAFETY: a plain syscall on an open descriptor; failure only loses the head start.
    unsafe {
        libc::sync_file_range(
            f.as_raw_fd(),
            offset as libc::off64_t,
            len as libc::off64_t,
            libc::SYNC_FILE_RANGE_WRITE,
        );
    }
}

pub struct Store {
    cache: Cache,
}

impl Store {
    pub fn new(cache: Cache) -> Store {
        Store { cache }
    }

    pub fn cache(&self) -> &Cache {
        &self.cache
    }

    pub fn layout(&self) -> PathBuf {
        self.cache.layout()
    }

    pub fn path(&self, d: &Digest) -> PathBuf {
        self.cache.blob_path(d)
    }

    pub fn has(&self, d: &Digest) -> bool {
        self.path(d).is_file()
    }

    /// Read a small cached blob (manifest, config), re-checking its digest: it costs nothing at
    /// this size and catches a damaged cache before it is trusted.
    pub fn read_small(&self, d: &Digest, limit: u64) -> Result<Option<Vec<u8>>> {
        let p = self.path(d);
        let f = match File::open(&p) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("cannot open {}", p.display())),
        };
        let bytes = read_limited(f, limit, &format!("cached blob {d}"))?;
        if Digest::of_bytes(&bytes) != *d {
            bail!(
                "cached blob {} is damaged (digest mismatch); remove it and fetch again",
                p.display()
            );
        }
        Ok(Some(bytes))
    }

    /// Store bytes already verified against `d` in memory.
    pub fn put_bytes(&self, d: &Digest, bytes: &[u8]) -> Result<()> {
        if self.has(d) {
            return Ok(());
        }
        self.cache
            .write_entry(&self.path(d), bytes, 0o644)
            .with_context(|| format!("cannot store blob {d}"))
    }

    /// [`Store::put_bytes`] under the blob's lock, for callers that do not hold it already:
    /// concurrent fetchers of one image (N tasks of `srun` on a cold cache) write it once.
    pub fn put_bytes_locked(&self, d: &Digest, bytes: &[u8]) -> Result<()> {
        if self.has(d) {
            return Ok(());
        }
        let _lock = self.cache.lock(&format!("blob-{}", d.hex()))?;
        self.put_bytes(d, bytes)
    }

    /// Make sure the blob `desc` is in the layout, copying it from `src` if needed. Returns true
    /// when it was copied by this call.
    pub fn fetch_blob(
        &self,
        desc: &RawDescriptor,
        src: &dyn BlobSource,
        progress: &Progress,
    ) -> Result<bool> {
        match self.download(desc, src, progress)? {
            Some(v) => {
                self.commit(v, progress)?;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Copy the blob into its partial file under the blob's lock and verify its size and
    /// digest. `None` when it is in the layout already (perhaps fetched by another process
    /// while we waited for the lock). The blob is neither durable nor visible yet: see
    /// [`Store::commit`].
    fn download(
        &self,
        desc: &RawDescriptor,
        src: &dyn BlobSource,
        progress: &Progress,
    ) -> Result<Option<Verified>> {
        let d = desc.digest()?;
        let target = self.path(&d);
        if target.is_file() {
            return Ok(None);
        }
        let lock = self.cache.lock(&format!("blob-{}", d.hex()))?;
        if target.is_file() {
            // Another process fetched it while we waited.
            return Ok(None);
        }
        let partial = self
            .cache
            .tmp_dir()
            .join(format!("blob-{}.partial", d.hex()));
        let bar = progress.start(&d.hex()[..12], desc.size);
        let mut attempt = 0;
        let file = loop {
            match self.copy_once(desc, &d, src, &partial, progress, bar) {
                Ok(f) => break f,
                Err(e) if src.retryable() && is_transient(&e) && attempt < RETRIES => {
                    common::cli::debug(format!("retrying blob {d}: {e:#}"));
                    std::thread::sleep(backoff(attempt));
                    attempt += 1;
                }
                Err(e) => {
                    // Keep a network partial for a later resume unless its content is known bad.
                    if !(src.retryable() && is_transient(&e)) {
                        let _ = fs::remove_file(&partial);
                    }
                    return Err(e);
                }
            }
        };
        Ok(Some(Verified {
            file,
            partial,
            target,
            bar,
            _lock: lock,
        }))
    }

    /// Make a verified blob durable, then visible: its data reaches the disk (fdatasync)
    /// before the rename gives it its digest's name, so a blob in the layout is complete even
    /// after a crash (the warm path trusts it with a `stat`), and every blob is durable before
    /// `fetch_all` returns, that is before any record naming it is written or printed. The
    /// blob's lock is held until the rename.
    fn commit(&self, v: Verified, progress: &Progress) -> Result<()> {
        let done = (|| -> Result<()> {
            v.file
                .sync_data()
                .with_context(|| format!("cannot sync {}", v.partial.display()))?;
            v.file.set_permissions(fs::Permissions::from_mode(0o644))?;
            fs::rename(&v.partial, &v.target)
                .with_context(|| format!("cannot rename blob into {}", v.target.display()))
        })();
        if done.is_err() {
            let _ = fs::remove_file(&v.partial);
            return done;
        }
        progress.finish(v.bar);
        Ok(())
    }

    fn copy_once(
        &self,
        desc: &RawDescriptor,
        d: &Digest,
        src: &dyn BlobSource,
        partial: &Path,
        progress: &Progress,
        bar: usize,
    ) -> Result<File> {
        let mut f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(partial)
            .with_context(|| format!("cannot create {}", partial.display()))?;
        let have = f.metadata()?.len();
        let mut hasher = Sha256::new();
        let mut offset = 0;
        if have > 0 && have <= desc.size && src.retryable() {
            // Resume: re-hash what is there, then ask for the rest. A complete partial (the
            // fetch was killed between the download and the commit) needs no request at all.
            let mut buf = vec![0u8; BUF];
            let mut left = have;
            while left > 0 {
                let n = f.read(&mut buf[..BUF.min(left as usize)])?;
                if n == 0 {
                    break;
                }
                hasher.update(&buf[..n]);
                left -= n as u64;
            }
            offset = have - left;
        }
        let (mut reader, start): (Box<dyn Read + Send + '_>, u64) = if offset == desc.size {
            (Box::new(io::empty()), offset)
        } else {
            src.open(desc, offset)?
        };
        if start != offset {
            hasher = Sha256::new();
            offset = 0;
        }
        f.set_len(offset)?;
        f.seek(SeekFrom::Start(offset))?;
        let mut total = offset;
        let mut flushed = offset;
        let mut buf = vec![0u8; BUF];
        loop {
            let n = match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    f.set_len(total).ok();
                    return Err(anyhow::Error::new(Transient(format!(
                        "reading blob {d} failed after {total} bytes: {e}"
                    ))));
                }
            };
            if total + n as u64 > desc.size {
                bail!(
                    "blob {d} is longer than the {} bytes its descriptor declares",
                    desc.size
                );
            }
            hasher.update(&buf[..n]);
            f.write_all(&buf[..n])
                .with_context(|| format!("cannot write {}", partial.display()))?;
            total += n as u64;
            if total - flushed >= WRITEBACK_CHUNK {
                start_writeback(&f, flushed, total - flushed);
                flushed = total;
            }
            progress.set(bar, total);
        }
        if total < desc.size {
            let msg = format!("blob {d} is truncated: got {total} of {} bytes", desc.size);
            if src.retryable() {
                return Err(anyhow::Error::new(Transient(msg)));
            }
            bail!(msg);
        }
        let got = Digest::parse(&format!("sha256:{}", hex::encode(hasher.finalize())))?;
        if got != *d {
            if offset > 0 {
                // The kept bytes were bad (a partial written before a crash need not be what
                // was received): start over from byte 0 on the retry.
                f.set_len(0)?;
                return Err(anyhow::Error::new(Transient(format!(
                    "blob {d} resumed from a partial file does not verify; downloading it again"
                ))));
            }
            bail!("digest mismatch for blob {d}: content hashes to {got}");
        }
        // Start writeback of the tail now, so that the commit's fdatasync mostly finds the data
        // on its way to the disk already.
        start_writeback(&f, flushed, total - flushed);
        Ok(f)
    }

    /// Fetch many blobs, `jobs` downloads at a time, the largest first: the big blobs that
    /// bound the wall time start at once, and the small ones fill the gaps at the end, so the
    /// downloads tend to finish together instead of one long transfer running alone. Finished
    /// blobs are committed ([`Store::commit`]: fdatasync, rename) on a thread of their own, so
    /// a worker starts its next download at once instead of waiting for the disk (a blob's
    /// fdatasync also queues behind the writeback of the others still arriving). The hand-over
    /// is bounded: the downloads run at most `jobs` blobs ahead of the commits. Every blob is
    /// committed before this returns. The first error stops new downloads and is returned;
    /// blobs already verified are still committed. Setting `cancel` stops new downloads too
    /// (the caller failed for another reason).
    pub fn fetch_all(
        &self,
        descs: &[RawDescriptor],
        src: &dyn BlobSource,
        progress: &Progress,
        jobs: usize,
        cancel: &AtomicBool,
    ) -> Result<()> {
        let mut missing: Vec<&RawDescriptor> = descs
            .iter()
            .filter(|d| d.digest().map(|g| !self.has(&g)).unwrap_or(true))
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        missing.sort_by_key(|d| std::cmp::Reverse(d.size));
        let next = AtomicUsize::new(0);
        let stop = AtomicBool::new(false);
        let first_err: Mutex<Option<anyhow::Error>> = Mutex::new(None);
        let fail = |e: anyhow::Error| {
            stop.store(true, Ordering::Relaxed);
            first_err.lock().unwrap().get_or_insert(e);
        };
        let workers = jobs.clamp(1, missing.len());
        std::thread::scope(|s| {
            let (done_tx, done_rx) = mpsc::sync_channel::<Verified>(workers);
            s.spawn(|| {
                for v in done_rx {
                    if let Err(e) = self.commit(v, progress) {
                        fail(e);
                    }
                }
            });
            for _ in 0..workers {
                let done_tx = done_tx.clone();
                let (next, stop, missing, fail) = (&next, &stop, &missing, &fail);
                s.spawn(move || {
                    while !stop.load(Ordering::Relaxed) && !cancel.load(Ordering::Relaxed) {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(desc) = missing.get(i) else { break };
                        match self.download(desc, src, progress) {
                            Ok(Some(v)) => {
                                if done_tx.send(v).is_err() {
                                    break;
                                }
                            }
                            Ok(None) => {}
                            Err(e) => fail(e),
                        }
                    }
                });
            }
        });
        match first_err.into_inner().unwrap() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

/// A blob copied into its partial file and verified, waiting for [`Store::commit`]; it holds
/// the blob's lock.
struct Verified {
    file: File,
    partial: PathBuf,
    target: PathBuf,
    bar: usize,
    _lock: LockFile,
}

/// Read at most `limit` bytes; more is an error (oversize manifest or config).
pub fn read_limited(r: impl Read, limit: u64, what: &str) -> Result<Vec<u8>> {
    let mut bytes = Vec::new();
    if let Err(e) = r.take(limit + 1).read_to_end(&mut bytes) {
        // A broken read is worth a retry when the source is the network; callers decide.
        return Err(anyhow::Error::new(Transient(format!(
            "cannot read {what}: {e}"
        ))));
    }
    if bytes.len() as u64 > limit {
        bail!("{what} is larger than the {limit} byte limit");
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU32;

    struct Mem {
        data: Vec<u8>,
        opens: AtomicU32,
        resumable: bool,
    }

    impl BlobSource for Mem {
        fn open(
            &self,
            _d: &RawDescriptor,
            offset: u64,
        ) -> Result<(Box<dyn Read + Send + '_>, u64)> {
            self.opens.fetch_add(1, Ordering::SeqCst);
            let start = if self.resumable { offset } else { 0 };
            Ok((Box::new(&self.data[start as usize..]), start))
        }
        fn retryable(&self) -> bool {
            self.resumable
        }
    }

    fn desc(data: &[u8]) -> RawDescriptor {
        RawDescriptor {
            media_type: crate::media::OCI_LAYER_TAR.into(),
            digest: Digest::of_bytes(data).to_string(),
            size: data.len() as u64,
            annotations: None,
            platform: None,
            urls: None,
        }
    }

    #[test]
    fn put_bytes_locked_waits_for_the_blob_lock() {
        let (_t, s) = store();
        let data = b"manifest".to_vec();
        let d = Digest::of_bytes(&data);
        let held = s.cache().lock(&format!("blob-{}", d.hex())).unwrap();
        std::thread::scope(|sc| {
            let writer = sc.spawn(|| s.put_bytes_locked(&d, &data));
            std::thread::sleep(Duration::from_millis(200));
            assert!(
                !s.has(&d),
                "written while another process held the blob lock"
            );
            drop(held);
            writer.join().unwrap().unwrap();
        });
        assert_eq!(std::fs::read(s.path(&d)).unwrap(), data);
    }

    fn store() -> (tempfile::TempDir, Store) {
        let t = tempfile::tempdir().unwrap();
        let c = Cache::open(&t.path().join("c")).unwrap();
        (t, Store::new(c))
    }

    #[test]
    fn copies_verifies_and_skips_present() {
        let (_t, s) = store();
        let data = b"hello layer".to_vec();
        let src = Mem {
            data: data.clone(),
            opens: AtomicU32::new(0),
            resumable: false,
        };
        let p = Progress::new(true);
        assert!(s.fetch_blob(&desc(&data), &src, &p).unwrap());
        assert!(!s.fetch_blob(&desc(&data), &src, &p).unwrap());
        assert_eq!(src.opens.load(Ordering::SeqCst), 1);
        assert_eq!(fs::read(s.path(&Digest::of_bytes(&data))).unwrap(), data);
        assert_eq!(fs::read_dir(s.cache().tmp_dir()).unwrap().count(), 0);
    }

    #[test]
    fn mismatch_leaves_nothing() {
        let (_t, s) = store();
        let mut d = desc(b"expected");
        d.size = 8;
        let src = Mem {
            data: b"tampered".to_vec(),
            opens: AtomicU32::new(0),
            resumable: false,
        };
        let e = s
            .fetch_blob(&d, &src, &Progress::new(true))
            .unwrap_err()
            .to_string();
        assert!(e.contains("digest mismatch"), "{e}");
        assert!(!s.has(&d.digest().unwrap()));
        assert_eq!(fs::read_dir(s.cache().tmp_dir()).unwrap().count(), 0);
    }

    #[test]
    fn truncated_and_overlong_are_refused() {
        let (_t, s) = store();
        let data = b"0123456789".to_vec();
        let mut d = desc(&data);
        d.size = 20;
        let src = Mem {
            data: data.clone(),
            opens: AtomicU32::new(0),
            resumable: false,
        };
        let e = s.fetch_blob(&d, &src, &Progress::new(true)).unwrap_err();
        assert!(e.to_string().contains("truncated"), "{e}");
        d.size = 5;
        let e = s.fetch_blob(&d, &src, &Progress::new(true)).unwrap_err();
        assert!(e.to_string().contains("longer than"), "{e}");
        assert_eq!(fs::read_dir(s.cache().tmp_dir()).unwrap().count(), 0);
    }

    #[test]
    fn resumes_from_partial() {
        let (_t, s) = store();
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let d = desc(&data);
        let partial = s
            .cache()
            .tmp_dir()
            .join(format!("blob-{}.partial", d.digest().unwrap().hex()));
        fs::write(&partial, &data[..40_000]).unwrap();
        let src = Mem {
            data: data.clone(),
            opens: AtomicU32::new(0),
            resumable: true,
        };
        s.fetch_blob(&d, &src, &Progress::new(true)).unwrap();
        assert_eq!(fs::read(s.path(&d.digest().unwrap())).unwrap(), data);
        assert!(!partial.exists());
    }

    /// Several blobs of distinct sizes, found by size; records the order they are asked for.
    struct Blobs {
        data: Vec<Vec<u8>>,
        asked: Mutex<Vec<usize>>,
    }

    impl BlobSource for Blobs {
        fn open(
            &self,
            d: &RawDescriptor,
            _offset: u64,
        ) -> Result<(Box<dyn Read + Send + '_>, u64)> {
            let i = self
                .data
                .iter()
                .position(|b| b.len() as u64 == d.size)
                .unwrap();
            self.asked.lock().unwrap().push(i);
            Ok((Box::new(&self.data[i][..]), 0))
        }
    }

    #[test]
    fn fetch_all_goes_largest_first_and_commits_what_it_verified() {
        let (_t, s) = store();
        let data: Vec<Vec<u8>> = [10usize, 3000, 200, 40_000]
            .iter()
            .map(|&n| (0..n).map(|i| (i % 253) as u8).collect())
            .collect();
        let mut descs: Vec<RawDescriptor> = data.iter().map(|b| desc(b)).collect();
        // The smallest blob's content does not match its digest.
        descs[0].digest = Digest::of_bytes(b"something else").to_string();
        let src = Blobs {
            data,
            asked: Mutex::new(Vec::new()),
        };
        let e = s
            .fetch_all(
                &descs,
                &src,
                &Progress::new(true),
                1,
                &AtomicBool::new(false),
            )
            .unwrap_err();
        assert!(e.to_string().contains("digest mismatch"), "{e}");
        assert_eq!(*src.asked.lock().unwrap(), [3, 1, 2, 0]);
        for d in &descs[1..] {
            let d = d.digest().unwrap();
            assert_eq!(
                fs::read(s.path(&d)).map(|b| Digest::of_bytes(&b)).unwrap(),
                d
            );
        }
        assert!(!s.has(&descs[0].digest().unwrap()));
        assert_eq!(fs::read_dir(s.cache().tmp_dir()).unwrap().count(), 0);
        // With several workers every good blob lands too, and a second run asks for nothing.
        let (_t2, s2) = store();
        let fetch_rest = || {
            s2.fetch_all(
                &descs[1..],
                &src,
                &Progress::new(true),
                3,
                &AtomicBool::new(false),
            )
            .unwrap()
        };
        fetch_rest();
        let asked = src.asked.lock().unwrap().len();
        fetch_rest();
        assert_eq!(src.asked.lock().unwrap().len(), asked);
        for d in &descs[1..] {
            assert!(s2.has(&d.digest().unwrap()));
        }
    }

    /// A `.partial` file holding `bytes` for `d`, as a run killed before its commit leaves.
    fn plant_partial(s: &Store, d: &RawDescriptor, bytes: &[u8]) -> std::path::PathBuf {
        let partial = s
            .cache()
            .tmp_dir()
            .join(format!("blob-{}.partial", d.digest().unwrap().hex()));
        fs::write(&partial, bytes).unwrap();
        partial
    }

    fn resumable(data: &[u8]) -> Mem {
        Mem {
            data: data.to_vec(),
            opens: AtomicU32::new(0),
            resumable: true,
        }
    }

    #[test]
    fn a_complete_partial_is_verified_and_committed_without_a_request() {
        let (_t, s) = store();
        let data: Vec<u8> = (0..50_000u32).map(|i| (i % 241) as u8).collect();
        let d = desc(&data);
        plant_partial(&s, &d, &data);
        let src = resumable(&data);
        assert!(s.fetch_blob(&d, &src, &Progress::new(true)).unwrap());
        assert_eq!(src.opens.load(Ordering::SeqCst), 0);
        assert_eq!(fs::read(s.path(&d.digest().unwrap())).unwrap(), data);
        // A complete partial with the wrong content is downloaded again from byte 0.
        let other: Vec<u8> = data.iter().map(|b| b ^ 1).collect();
        let d2 = desc(&other);
        let partial2 = plant_partial(&s, &d2, &data);
        let src2 = resumable(&other);
        assert!(s.fetch_blob(&d2, &src2, &Progress::new(true)).unwrap());
        assert_eq!(src2.opens.load(Ordering::SeqCst), 1);
        assert_eq!(fs::read(s.path(&d2.digest().unwrap())).unwrap(), other);
        assert!(!partial2.exists());
    }

    #[test]
    fn oversize_small_reads_fail() {
        assert!(read_limited(&b"12345"[..], 4, "x").is_err());
        assert_eq!(read_limited(&b"1234"[..], 4, "x").unwrap(), b"1234");
    }
}
