//! The block compressors squashfs images use: gzip (zlib streams), lzma (the legacy "alone"
//! format), xz, lz4 (LZ4 block format) and zstd, every one Debian's mksquashfs can write but lzo.
//! A block must decompress completely into the room it is given; more output than that is
//! corruption.

use anyhow::{Result, bail};
use flate2::{Decompress, FlushDecompress, Status};
use liblzma::stream::{Action, Status as XzStatus, Stream};

pub const GZIP: u16 = 1;
pub const LZMA: u16 = 2;
pub const LZO: u16 = 3;
pub const XZ: u16 = 4;
pub const LZ4: u16 = 5;
pub const ZSTD: u16 = 6;

/// Memory an lzma or xz decoder may take. A block is at most 1 MiB, so honest images need a
/// dictionary of at most that; a header asking for more is refused rather than obeyed.
const LZMA_MEMLIMIT: u64 = 64 << 20;

pub struct Codec {
    kind: Kind,
    /// Compressed bytes of the block being read (reused).
    pub scratch: Vec<u8>,
}

enum Kind {
    Gzip(Box<Decompress>),
    Lzma,
    Xz,
    Lz4,
    Zstd(Box<zstd::bulk::Decompressor<'static>>),
}

impl Codec {
    pub fn new(id: u16, block_size: usize) -> Result<Codec> {
        let kind = match id {
            GZIP => Kind::Gzip(Box::new(Decompress::new(true))),
            LZMA => Kind::Lzma,
            XZ => Kind::Xz,
            LZ4 => Kind::Lz4,
            ZSTD => Kind::Zstd(Box::new(zstd::bulk::Decompressor::new()?)),
            LZO => bail!(
                "squashfs compressed with lzo, which this launcher does not read (rebuild it with mksquashfs -comp gzip, xz, lz4 or zstd)"
            ),
            other => bail!(
                "squashfs compressed with an unknown compressor (id {other}): gzip, lzma, xz, lz4 and zstd are read"
            ),
        };
        Ok(Codec {
            kind,
            scratch: Vec::with_capacity(block_size),
        })
    }

    /// Decompress one whole block into `out` (its length is the most it may hold); returns the
    /// decompressed length.
    pub fn decompress(&mut self, input: &[u8], out: &mut [u8]) -> Result<usize> {
        match &mut self.kind {
            Kind::Gzip(z) => {
                z.reset(true);
                match z.decompress(input, out, FlushDecompress::Finish) {
                    Ok(Status::StreamEnd) => Ok(z.total_out() as usize),
                    Ok(_) => bail!("the block does not decompress within {} bytes", out.len()),
                    Err(e) => bail!("gzip: {e}"),
                }
            }
            Kind::Lzma => {
                let s = Stream::new_lzma_decoder(LZMA_MEMLIMIT)?;
                finish_stream(s, input, out, "lzma")
            }
            Kind::Xz => {
                // One whole .xz stream per block; its own filters (BCJ and the like) and check
                // are the decoder's business.
                let s = Stream::new_stream_decoder(LZMA_MEMLIMIT, 0)?;
                finish_stream(s, input, out, "xz")
            }
            Kind::Lz4 => match lz4_flex::block::decompress_into(input, out) {
                Ok(n) => Ok(n),
                Err(e) => bail!("lz4: {e}"),
            },
            Kind::Zstd(z) => match z.decompress_to_buffer(input, out) {
                Ok(n) => Ok(n),
                Err(e) => bail!("zstd: {e}"),
            },
        }
    }
}

/// Run a fresh lzma or xz decoder over one whole block; the stream must end within `out`.
/// liblzma stops as soon as the output is full, before it reads the end of the stream, and
/// makes no progress with no room at all: once `out` is full it goes on into a one-byte spare,
/// which must stay empty.
fn finish_stream(mut s: Stream, input: &[u8], out: &mut [u8], what: &str) -> Result<usize> {
    let mut spare = [0u8; 1];
    loop {
        let (read, written) = (s.total_in() as usize, s.total_out() as usize);
        let room = if written < out.len() {
            &mut out[written..]
        } else {
            &mut spare[..]
        };
        match s.process(&input[read..], room, Action::Finish) {
            Ok(_) if s.total_out() as usize > out.len() => {
                bail!("the block does not decompress within {} bytes", out.len())
            }
            Ok(XzStatus::StreamEnd) => return Ok(s.total_out() as usize),
            Ok(_) if (s.total_in() as usize, s.total_out() as usize) != (read, written) => {}
            Ok(_) => bail!("{what}: the block ends before its stream does"),
            Err(e) => bail!("{what}: {e}"),
        }
    }
}

pub fn name(id: u16) -> &'static str {
    match id {
        GZIP => "gzip",
        LZMA => "lzma",
        LZO => "lzo",
        XZ => "xz",
        LZ4 => "lz4",
        ZSTD => "zstd",
        _ => "an unknown compressor",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lzo_and_unknown_compressors_are_named() {
        let e = Codec::new(LZO, 4096).err().unwrap().to_string();
        assert!(e.contains("compressed with lzo"), "{e}");
        let e = Codec::new(99, 4096).err().unwrap().to_string();
        assert!(e.contains("unknown compressor (id 99)"), "{e}");
    }

    #[test]
    fn a_block_may_not_grow_past_its_room() {
        let data = vec![7u8; 8192];
        let packed = lz4_flex::block::compress(&data);
        let mut c = Codec::new(LZ4, 8192).unwrap();
        let mut out = vec![0u8; 8192];
        assert_eq!(c.decompress(&packed, &mut out).unwrap(), 8192);
        let mut small = vec![0u8; 4096];
        assert!(c.decompress(&packed, &mut small).is_err());
        let xz = liblzma::encode_all(&data[..], 6).unwrap();
        let mut c = Codec::new(XZ, 8192).unwrap();
        assert_eq!(c.decompress(&xz, &mut out).unwrap(), 8192);
        let e = c.decompress(&xz, &mut small).unwrap_err().to_string();
        assert!(e.contains("within 4096 bytes"), "{e}");
        assert!(c.decompress(&xz[..xz.len() / 2], &mut out).is_err());
    }
}
