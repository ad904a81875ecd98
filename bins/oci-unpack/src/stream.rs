//! Layer blobs to tar bytes, on a thread of their own.
//!
//! One producer thread reads each blob in order, hashes the compressed bytes (the layer digest),
//! decompresses (gzip through zlib-rs, zstd through libzstd) and hands fixed-size chunks to the
//! applier through a small bounded channel. On two cores the inflate runs beside the applier's
//! system calls, and the producer runs ahead into the next layer while the applier finishes the
//! current one. Nothing is held whole in memory: the channel holds at most `DEPTH` chunks.
//!
//! The uncompressed stream's hash (the diff_id) is taken on the applier's side, as each chunk
//! arrives: inflating is the longest part of a cold unpack and the producer thread its critical
//! path, while the applier thread (which hands file contents on to the file writer) has room.
//!
//! At the end of each layer the producer drains the decompressor and the blob to EOF (trailing
//! tar padding counts for the diff_id) and sends its verdict on the blob's digest; the
//! [`LayerReader`] then checks the diff_id.

use anyhow::{Context, Result, anyhow, bail};
use common::cache::blob_path_in;
use common::digest::{Digest, HashingReader, HashingWriter};
use common::progress::{Counting, Progress};
use common::record::ImageRecord;
use std::fs::File;
use std::io::{self, BufReader, Read, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};

const CHUNK: usize = 256 << 10;
const DEPTH: usize = 8;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

/// The compression a layer media type names (OCI and Docker spellings).
pub fn compression_of(media_type: &str) -> Result<Compression> {
    Ok(match media_type {
        "application/vnd.oci.image.layer.v1.tar"
        | "application/vnd.oci.image.layer.nondistributable.v1.tar"
        | "application/vnd.docker.image.rootfs.diff.tar" => Compression::None,
        "application/vnd.oci.image.layer.v1.tar+gzip"
        | "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
        | "application/vnd.docker.image.rootfs.diff.tar.gzip"
        | "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip" => Compression::Gzip,
        "application/vnd.oci.image.layer.v1.tar+zstd"
        | "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd"
        | "application/vnd.docker.image.rootfs.diff.tar.zstd" => Compression::Zstd,
        other => bail!("unsupported layer media type '{other}'"),
    })
}

/// One layer to stream: where its blob is and what it must hash to.
#[derive(Debug, Clone)]
pub struct LayerSpec {
    pub index: usize,
    pub path: PathBuf,
    pub compression: Compression,
    pub digest: Digest,
    pub size: u64,
    pub diff_id: Digest,
}

impl LayerSpec {
    pub fn describe(&self) -> String {
        format!("layer {} ({})", self.index + 1, self.digest)
    }
}

/// The layers of an image record, checked against the config's `rootfs.diff_ids`.
pub fn layer_specs(record: &ImageRecord) -> Result<Vec<LayerSpec>> {
    let diff_ids: Vec<&str> = record
        .image_config
        .pointer("/rootfs/diff_ids")
        .and_then(|v| v.as_array())
        .ok_or_else(|| anyhow!("image config has no rootfs.diff_ids"))?
        .iter()
        .map(|v| {
            v.as_str()
                .ok_or_else(|| anyhow!("rootfs.diff_ids holds a non-string"))
        })
        .collect::<Result<_>>()?;
    if diff_ids.len() != record.layers.len() {
        bail!(
            "image config lists {} diff_ids for {} layers",
            diff_ids.len(),
            record.layers.len()
        );
    }
    record
        .layers
        .iter()
        .zip(diff_ids)
        .enumerate()
        .map(|(index, (d, diff))| {
            let digest = Digest::parse(&d.digest)?;
            Ok(LayerSpec {
                index,
                path: blob_path_in(&record.layout, &digest),
                compression: compression_of(&d.media_type)
                    .with_context(|| format!("layer {}", index + 1))?,
                digest,
                size: d.size,
                diff_id: Digest::parse(diff).context("bad diff_id in image config")?,
            })
        })
        .collect()
}

/// What travels from the producer to the applier.
pub enum Msg {
    Data(Vec<u8>),
    /// End of one layer: the blob's digest checked (or why it failed).
    End(Result<()>),
}

/// The applier's end of the pipe.
pub struct Feed {
    rx: Receiver<Msg>,
    recycle: SyncSender<Vec<u8>>,
    handle: Option<std::thread::JoinHandle<()>>,
}

/// Start streaming `layers`; `max_bytes` bounds the total uncompressed size (0 = unbounded).
/// The compressed bytes read of layer `i` go to bar `i` of `progress`.
pub fn spawn(layers: Vec<LayerSpec>, max_bytes: u64, progress: Arc<Progress>) -> Feed {
    let (tx, rx) = sync_channel(DEPTH);
    let (recycle, spare) = sync_channel::<Vec<u8>>(DEPTH + 2);
    let handle = std::thread::Builder::new()
        .name("layer-stream".into())
        .spawn(move || produce(layers, max_bytes, tx, spare, &progress))
        .expect("cannot spawn the layer-stream thread");
    Feed {
        rx,
        recycle,
        handle: Some(handle),
    }
}

impl Feed {
    /// A reader over the next layer's tar bytes; `spec` is that layer (its diff_id is checked).
    pub fn layer(&mut self, spec: &LayerSpec) -> LayerReader<'_> {
        LayerReader {
            feed: self,
            cur: Vec::new(),
            pos: 0,
            end: None,
            diff: Some(HashingWriter::new(io::sink())),
            diff_id: spec.diff_id.clone(),
            describe: spec.describe(),
        }
    }
}

impl Drop for Feed {
    fn drop(&mut self) {
        // Hang up first so a producer blocked on a full channel wakes and stops.
        let (_, dead) = sync_channel(1);
        drop(std::mem::replace(&mut self.rx, dead));
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

pub struct LayerReader<'a> {
    feed: &'a mut Feed,
    cur: Vec<u8>,
    pos: usize,
    /// Set once the layer's end (with its verdict) arrived.
    end: Option<Result<()>>,
    /// Hash of the tar bytes received so far (taken when the end arrives).
    diff: Option<HashingWriter<io::Sink>>,
    diff_id: Digest,
    describe: String,
}

impl LayerReader<'_> {
    /// Why the stream failed, if it did (corrupt data, digest mismatch, size limit). Takes
    /// precedence over whatever error the tar parser made of the truncated stream.
    pub fn stream_error(&mut self) -> Option<anyhow::Error> {
        match self.end.take() {
            Some(Err(e)) => Some(e),
            other => {
                self.end = other;
                None
            }
        }
    }

    /// Read to the end of the layer and return the producer's verdict on its digests.
    pub fn finish(mut self) -> Result<()> {
        io::copy(&mut self, &mut io::sink()).ok();
        match self.end.take() {
            Some(r) => r,
            None => bail!("layer stream ended early"),
        }
    }
}

impl Read for LayerReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if self.pos < self.cur.len() {
                let n = buf.len().min(self.cur.len() - self.pos);
                buf[..n].copy_from_slice(&self.cur[self.pos..self.pos + n]);
                self.pos += n;
                return Ok(n);
            }
            if let Some(end) = &self.end {
                return match end {
                    Ok(()) => Ok(0),
                    Err(e) => Err(io::Error::other(format!("{e:#}"))),
                };
            }
            match self.feed.rx.recv() {
                Ok(Msg::Data(v)) => {
                    if let Some(h) = &mut self.diff {
                        h.write_all(&v)?;
                    }
                    let old = std::mem::replace(&mut self.cur, v);
                    let _ = self.feed.recycle.try_send(old);
                    self.pos = 0;
                }
                Ok(Msg::End(r)) => self.end = Some(r.and_then(|()| self.check_diff_id())),
                Err(_) => self.end = Some(Err(anyhow!("layer stream stopped"))),
            }
        }
    }
}

impl LayerReader<'_> {
    /// The whole uncompressed stream arrived: it must hash to the config's diff_id.
    fn check_diff_id(&mut self) -> Result<()> {
        let Some(h) = self.diff.take() else {
            bail!("{}: the layer's end arrived twice", self.describe);
        };
        let (_, got, _) = h.finish();
        if got != self.diff_id {
            bail!(
                "{} uncompresses to {got}, but the image config's rootfs.diff_ids says {}",
                self.describe,
                self.diff_id
            );
        }
        Ok(())
    }
}

enum Decoder<R: Read> {
    Plain(R),
    Gzip(Box<flate2::read::MultiGzDecoder<R>>),
    Zstd(Box<zstd::Decoder<'static, BufReader<R>>>),
}

impl<R: Read> Decoder<R> {
    fn new(c: Compression, r: R) -> io::Result<Self> {
        Ok(match c {
            Compression::None => Decoder::Plain(r),
            Compression::Gzip => Decoder::Gzip(Box::new(flate2::read::MultiGzDecoder::new(r))),
            Compression::Zstd => Decoder::Zstd(Box::new(zstd::Decoder::new(r)?)),
        })
    }
}

impl<R: Read> Read for Decoder<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Decoder::Plain(r) => r.read(buf),
            Decoder::Gzip(d) => d.read(buf),
            Decoder::Zstd(d) => d.read(buf),
        }
    }
}

fn produce(
    layers: Vec<LayerSpec>,
    max_bytes: u64,
    tx: SyncSender<Msg>,
    spare: Receiver<Vec<u8>>,
    progress: &Progress,
) {
    let mut total = 0u64;
    for l in &layers {
        let r = stream_layer(l, max_bytes, &mut total, &tx, &spare, progress);
        if r.is_ok() {
            progress.finish(l.index);
        }
        let failed = r.is_err();
        if tx.send(Msg::End(r)).is_err() || failed {
            return;
        }
    }
}

fn stream_layer(
    l: &LayerSpec,
    max_bytes: u64,
    total: &mut u64,
    tx: &SyncSender<Msg>,
    spare: &Receiver<Vec<u8>>,
    progress: &Progress,
) -> Result<()> {
    let file = File::open(&l.path)
        .with_context(|| format!("cannot open blob of {}: {}", l.describe(), l.path.display()))?;
    let file = Counting::new(file, progress, l.index);
    // The blob hasher is borrowed by the decoder so that, once the decoder is done, the rest of
    // the blob (anything after the compressed stream) can still be drained into the digest.
    let mut blob = HashingReader::new(file);
    let mut dec = Decoder::new(l.compression, &mut blob)
        .with_context(|| format!("cannot start decompressing {}", l.describe()))?;
    loop {
        let mut buf = spare.try_recv().unwrap_or_default();
        buf.resize(CHUNK, 0);
        let mut filled = 0;
        while filled < CHUNK {
            match dec.read(&mut buf[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    return Err(anyhow::Error::new(e)).with_context(|| {
                        format!("{} is corrupt (cannot decompress it)", l.describe())
                    });
                }
            }
        }
        buf.truncate(filled);
        *total += filled as u64;
        if max_bytes > 0 && *total > max_bytes {
            bail!(
                "the layers expand to more than the size limit of {max_bytes} bytes (at {}); raise it with --max-size if this image is genuine",
                l.describe()
            );
        }
        if filled == 0 {
            break;
        }
        if tx.send(Msg::Data(buf)).is_err() {
            bail!("applier stopped");
        }
    }
    // The decoder returned EOF: every byte of the tar stream, padding included, was sent (the
    // applier's side hashes them for the diff_id).
    drop(dec);
    let (blob_got, blob_size) = blob
        .finish()
        .with_context(|| format!("cannot read blob of {}", l.describe()))?;
    common::digest::check_stream(&l.digest, Some(l.size), &blob_got, blob_size, &l.describe())
}
