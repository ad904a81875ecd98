//! A squashfs (version 4.0) reader: just what extraction needs, read with `pread` from a region
//! of a file (a SIF partition or a whole `.sqfs`).
//!
//! Nothing here trusts the image. Positions built from its fields saturate instead of wrapping,
//! and every position is checked against the region before it is read, metadata blocks are at most 8 KiB once decompressed and data blocks at most the block
//! size, tables are read only as far as their entry counts say, and a block that decompresses to
//! more than it may is refused. Memory stays bounded: metadata blocks are cached up to a fixed
//! budget, data is streamed a block at a time.
//!
//! The tree itself is handed to the tar applier (see `totar`), so what a hostile image can do to
//! the target directory is exactly what a hostile tar layer can do: nothing outside it.

pub mod codec;
pub mod inflate;
pub mod inode;
pub mod totar;

use anyhow::{Context, Result, bail};
use codec::Codec;
use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::rc::Rc;

pub const MAGIC: u32 = 0x7371_7368; // "hsqs"
const SUPERBLOCK_LEN: u64 = 96;
/// A metadata block holds at most this much once decompressed.
pub const METADATA_SIZE: usize = 8192;
/// Decompressed metadata kept in memory at most (blocks are re-read beyond that).
const METADATA_CACHE_BUDGET: usize = 4096;
const NO_TABLE: u64 = u64::MAX;

#[derive(Debug, Clone)]
pub struct Superblock {
    pub inode_count: u32,
    pub block_size: u32,
    pub fragment_count: u32,
    pub compression: u16,
    pub flags: u16,
    pub id_count: u16,
    pub root_inode: u64,
    pub bytes_used: u64,
    pub id_table: u64,
    pub xattr_table: u64,
    pub inode_table: u64,
    pub directory_table: u64,
    pub fragment_table: u64,
}

impl Superblock {
    fn parse(b: &[u8]) -> Result<Superblock> {
        let u16_at = |o: usize| u16::from_le_bytes([b[o], b[o + 1]]);
        let u32_at = |o: usize| u32::from_le_bytes(b[o..o + 4].try_into().unwrap());
        let u64_at = |o: usize| u64::from_le_bytes(b[o..o + 8].try_into().unwrap());
        if u32_at(0) != MAGIC {
            bail!("not a squashfs filesystem (bad magic)");
        }
        let (major, minor) = (u16_at(28), u16_at(30));
        if (major, minor) != (4, 0) {
            bail!("unsupported squashfs version {major}.{minor} (only 4.0 is read)");
        }
        let sb = Superblock {
            inode_count: u32_at(4),
            block_size: u32_at(12),
            fragment_count: u32_at(16),
            compression: u16_at(20),
            flags: u16_at(24),
            id_count: u16_at(26),
            root_inode: u64_at(32),
            bytes_used: u64_at(40),
            id_table: u64_at(48),
            xattr_table: u64_at(56),
            inode_table: u64_at(64),
            directory_table: u64_at(72),
            fragment_table: u64_at(80),
        };
        let log = u16_at(22);
        if !(4096..=1 << 20).contains(&sb.block_size)
            || !sb.block_size.is_power_of_two()
            || 1u32.checked_shl(log as u32) != Some(sb.block_size)
        {
            bail!(
                "squashfs block size {} (log {log}) is invalid",
                sb.block_size
            );
        }
        Ok(sb)
    }
}

/// Where an image's bytes are: `[base, base + len)` of a file.
pub struct BlockSource {
    file: File,
    base: u64,
    len: u64,
    block_size: usize,
}

impl BlockSource {
    /// The same region through a descriptor of its own (for another thread).
    pub fn try_clone(&self) -> Result<BlockSource> {
        Ok(BlockSource {
            file: self.file.try_clone()?,
            ..*self
        })
    }

    /// `pread` exactly `buf.len()` bytes at `pos` (relative to the image), refusing anything
    /// outside it.
    fn read_at(&self, buf: &mut [u8], pos: u64) -> Result<()> {
        if pos
            .checked_add(buf.len() as u64)
            .is_none_or(|e| e > self.len)
        {
            bail!(
                "squashfs image is truncated or corrupt: a read of {} bytes at {pos} runs past its end ({} bytes)",
                buf.len(),
                self.len
            );
        }
        self.file
            .read_exact_at(buf, self.base + pos)
            .with_context(|| format!("cannot read the squashfs image at {pos}"))
    }
}

/// Read and decompress the data block stored at `pos` (`word` is its stored size word) into
/// `out`, whose length on entry is the most it may hold once decompressed (the block size).
pub fn read_block(
    src: &BlockSource,
    codec: &mut Codec,
    pos: u64,
    word: u32,
    out: &mut Vec<u8>,
) -> Result<()> {
    let size = (word & 0x00ff_ffff) as usize;
    if size > src.block_size {
        bail!("squashfs data block at {pos} claims {size} bytes, more than the block size");
    }
    if word & (1 << 24) != 0 {
        out.resize(size, 0);
        return src.read_at(out, pos);
    }
    let mut raw = std::mem::take(&mut codec.scratch);
    raw.resize(size, 0);
    let r = src.read_at(&mut raw, pos).and_then(|()| {
        codec
            .decompress(&raw, out)
            .with_context(|| format!("squashfs data block at {pos} is corrupt"))
    });
    codec.scratch = raw;
    out.truncate(r?);
    Ok(())
}

/// An open squashfs image inside `[base, base + len)` of a file.
pub struct Image {
    src: BlockSource,
    len: u64,
    pub sb: Superblock,
    codec: Codec,
    meta: HashMap<u64, Rc<(Vec<u8>, u64)>>,
    ids: Vec<u32>,
    fragments: Vec<u64>,
    xattrs: Option<inode::XattrTable>,
    /// Bytes of the image read so far, reported to a progress bar when one is set.
    read: std::cell::Cell<u64>,
    progress: Option<(std::sync::Arc<common::progress::Progress>, usize)>,
}

/// A position in a metadata stream: the block's start (relative to the image) and an offset
/// into its decompressed bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MetaPos {
    pub block: u64,
    pub offset: usize,
}

impl Image {
    /// Open the squashfs stored at `base`..`base + len` of `file`.
    pub fn open(file: File, base: u64, len: u64) -> Result<Image> {
        let mut b = [0u8; SUPERBLOCK_LEN as usize];
        if len < SUPERBLOCK_LEN {
            bail!("squashfs image is truncated ({len} bytes, no room for its superblock)");
        }
        file.read_exact_at(&mut b, base)
            .context("cannot read the squashfs superblock")?;
        let sb = Superblock::parse(&b)?;
        if sb.bytes_used > len {
            bail!(
                "squashfs image is truncated: it says it uses {} bytes, the partition has {len}",
                sb.bytes_used
            );
        }
        let codec = Codec::new(sb.compression, sb.block_size as usize)?;
        let mut img = Image {
            src: BlockSource {
                file,
                base,
                len: sb.bytes_used,
                block_size: sb.block_size as usize,
            },
            len: sb.bytes_used,
            sb,
            codec,
            meta: HashMap::new(),
            ids: Vec::new(),
            fragments: Vec::new(),
            xattrs: None,
            read: std::cell::Cell::new(0),
            progress: None,
        };
        img.ids = img.read_u32_table(img.sb.id_table, img.sb.id_count as u64, "id")?;
        img.fragments = img.lookup_table(
            img.sb.fragment_table,
            img.sb.fragment_count as u64,
            16,
            "fragment",
        )?;
        if img.sb.xattr_table != NO_TABLE {
            img.xattrs = Some(inode::XattrTable::read(&mut img)?);
        }
        Ok(img)
    }

    /// Report the bytes read from now on to bar `id` of `progress` (as much as the image's
    /// size at most: a metadata block read twice counts twice).
    pub fn report_to(&mut self, progress: std::sync::Arc<common::progress::Progress>, id: usize) {
        self.progress = Some((progress, id));
    }

    /// `pread` exactly `buf.len()` bytes at `pos` (relative to the image), refusing anything
    /// outside it.
    pub fn read_at(&self, buf: &mut [u8], pos: u64) -> Result<()> {
        self.note_read(buf.len() as u64);
        self.src.read_at(buf, pos)
    }

    /// Count `n` bytes read for the progress bar (reads done elsewhere, such as by the inflate
    /// workers, are counted here too).
    pub fn note_read(&self, n: u64) {
        if let Some((p, id)) = &self.progress {
            self.read.set(self.read.get() + n);
            p.set(*id, self.read.get().min(self.len));
        }
    }

    /// Workers inflating this image's data blocks in parallel (see `inflate`).
    pub fn inflaters(&self) -> Result<inflate::Inflaters> {
        inflate::Inflaters::start(&self.src, self.sb.compression, self.sb.block_size as usize)
    }

    /// The decompressed metadata block at `pos` and the position of the next one.
    pub fn metadata_block(&mut self, pos: u64) -> Result<Rc<(Vec<u8>, u64)>> {
        if let Some(b) = self.meta.get(&pos) {
            return Ok(b.clone());
        }
        let mut h = [0u8; 2];
        self.read_at(&mut h, pos)?;
        let h = u16::from_le_bytes(h);
        let size = (h & 0x7fff) as usize;
        if size == 0 || size > METADATA_SIZE {
            bail!("squashfs metadata block at {pos} has an invalid size {size}");
        }
        let mut raw = vec![0u8; size];
        self.read_at(&mut raw, pos + 2)?;
        let data = if h & 0x8000 != 0 {
            raw
        } else {
            let mut out = vec![0u8; METADATA_SIZE];
            let n = self
                .codec
                .decompress(&raw, &mut out)
                .with_context(|| format!("squashfs metadata block at {pos} is corrupt"))?;
            out.truncate(n);
            out
        };
        if self.meta.len() >= METADATA_CACHE_BUDGET {
            self.meta.clear();
        }
        let b = Rc::new((data, pos + 2 + size as u64));
        self.meta.insert(pos, b.clone());
        Ok(b)
    }

    /// Read `out.len()` bytes of a metadata stream starting at `at`, advancing it.
    pub fn read_meta(&mut self, at: &mut MetaPos, out: &mut [u8]) -> Result<()> {
        let mut done = 0;
        while done < out.len() {
            let blk = self.metadata_block(at.block)?;
            let (data, next) = (&blk.0, blk.1);
            if at.offset >= data.len() {
                if at.offset > data.len() {
                    bail!("squashfs metadata reference points past its block");
                }
                *at = MetaPos {
                    block: next,
                    offset: 0,
                };
                continue;
            }
            let n = (data.len() - at.offset).min(out.len() - done);
            out[done..done + n].copy_from_slice(&data[at.offset..at.offset + n]);
            done += n;
            at.offset += n;
        }
        Ok(())
    }

    pub fn meta_u16(&mut self, at: &mut MetaPos) -> Result<u16> {
        let mut b = [0u8; 2];
        self.read_meta(at, &mut b)?;
        Ok(u16::from_le_bytes(b))
    }
    pub fn meta_u32(&mut self, at: &mut MetaPos) -> Result<u32> {
        let mut b = [0u8; 4];
        self.read_meta(at, &mut b)?;
        Ok(u32::from_le_bytes(b))
    }
    pub fn meta_u64(&mut self, at: &mut MetaPos) -> Result<u64> {
        let mut b = [0u8; 8];
        self.read_meta(at, &mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    /// The block pointers of a table of `count` entries of `entry` bytes kept in metadata
    /// blocks, whose pointer list starts at `at`.
    fn lookup_table(&self, at: u64, count: u64, entry: u64, what: &str) -> Result<Vec<u64>> {
        if count == 0 {
            return Ok(Vec::new());
        }
        let blocks = (count * entry).div_ceil(METADATA_SIZE as u64);
        let mut raw = vec![0u8; (blocks * 8) as usize];
        self.read_at(&mut raw, at)
            .with_context(|| format!("cannot read the squashfs {what} table"))?;
        Ok(raw
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().unwrap()))
            .collect())
    }

    fn read_u32_table(&mut self, at: u64, count: u64, what: &str) -> Result<Vec<u32>> {
        let ptrs = self.lookup_table(at, count, 4, what)?;
        let mut out = Vec::with_capacity(count as usize);
        let Some(&first) = ptrs.first() else {
            return Ok(out);
        };
        let mut pos = MetaPos {
            block: first,
            offset: 0,
        };
        for _ in 0..count {
            out.push(self.meta_u32(&mut pos)?);
        }
        Ok(out)
    }

    /// The uid or gid stored at index `i` of the id table.
    pub fn id(&self, i: u16) -> Result<u32> {
        self.ids.get(i as usize).copied().with_context(|| {
            format!(
                "squashfs inode names owner index {i}, the id table has {}",
                self.ids.len()
            )
        })
    }

    /// Where fragment `index` lives and its stored size word.
    pub fn fragment(&mut self, index: u32) -> Result<(u64, u32)> {
        if index >= self.sb.fragment_count {
            bail!(
                "squashfs file names fragment {index}, the image has {}",
                self.sb.fragment_count
            );
        }
        let per_block = (METADATA_SIZE / 16) as u32;
        let block = self.fragments[(index / per_block) as usize];
        let mut pos = MetaPos {
            block,
            offset: ((index % per_block) * 16) as usize,
        };
        let start = self.meta_u64(&mut pos)?;
        let size = self.meta_u32(&mut pos)?;
        Ok((start, size))
    }

    /// Read and decompress one data block (`word` is its stored size word) into `out`,
    /// which must be `expect` bytes once decompressed (only the last block of a file is short).
    pub fn data_block(
        &mut self,
        pos: u64,
        word: u32,
        out: &mut Vec<u8>,
        limit: usize,
    ) -> Result<()> {
        self.note_read((word & 0x00ff_ffff) as u64);
        out.resize(limit, 0);
        read_block(&self.src, &mut self.codec, pos, word, out)
    }

    pub fn xattrs(&self) -> Option<&inode::XattrTable> {
        self.xattrs.as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::{Image, totar::Walk};
    use std::io::Write;

    /// Inputs the fuzzer found (fuzz/corpus/squashfs_image/regress-*): each must be refused with
    /// an error, never a panic (tests build with overflow checks).
    #[test]
    fn fuzzer_findings_are_refused() {
        let cases: [&[u8]; 1] = [include_bytes!(
            "../../../../fuzz/corpus/squashfs_image/regress-dir-start-overflow"
        )];
        for data in cases {
            let mut f = tempfile::tempfile().unwrap();
            f.write_all(data).unwrap();
            let r = Image::open(f, 0, data.len() as u64).and_then(|mut img| {
                Walk::new(&mut img, std::io::sink(), 1 << 20)
                    .run()
                    .map(drop)
            });
            assert!(r.is_err());
        }
    }
}
