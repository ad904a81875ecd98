//! The block compressors squashfs images use: gzip (zlib streams) and zstd. A block must
//! decompress completely into the room it is given; more output than that is corruption.

use anyhow::{Result, bail};
use flate2::{Decompress, FlushDecompress, Status};

pub const GZIP: u16 = 1;
pub const LZMA: u16 = 2;
pub const LZO: u16 = 3;
pub const XZ: u16 = 4;
pub const LZ4: u16 = 5;
pub const ZSTD: u16 = 6;

pub struct Codec {
    kind: Kind,
    /// Compressed bytes of the block being read (reused).
    pub scratch: Vec<u8>,
}

enum Kind {
    Gzip(Box<Decompress>),
    Zstd(Box<zstd::bulk::Decompressor<'static>>),
}

impl Codec {
    pub fn new(id: u16, block_size: usize) -> Result<Codec> {
        let kind = match id {
            GZIP => Kind::Gzip(Box::new(Decompress::new(true))),
            ZSTD => Kind::Zstd(Box::new(zstd::bulk::Decompressor::new()?)),
            other => bail!(
                "squashfs compressed with {}: only gzip and zstd images are read (rebuild it with mksquashfs -comp gzip or -comp zstd)",
                name(other)
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
            Kind::Zstd(z) => match z.decompress_to_buffer(input, out) {
                Ok(n) => Ok(n),
                Err(e) => bail!("zstd: {e}"),
            },
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
