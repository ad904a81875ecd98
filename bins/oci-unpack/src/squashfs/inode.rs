//! Squashfs inodes, directory listings and extended attributes.

use super::{Image, METADATA_SIZE, MetaPos};
use anyhow::{Context, Result, bail};

pub const NO_FRAGMENT: u32 = u32::MAX;
pub const NO_XATTR: u32 = u32::MAX;
/// Longest name a directory entry may carry (as in the kernel).
const MAX_NAME: usize = 256;
/// Longest symlink target (as in the kernel: one page).
const MAX_TARGET: usize = 4096;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    Dir {
        /// Where the listing starts in the directory table, and its length in bytes.
        listing: MetaPos,
        size: u32,
    },
    File {
        start: u64,
        size: u64,
        fragment: u32,
        frag_offset: u32,
        /// Where the block size words start in the inode table.
        blocks: MetaPos,
    },
    Symlink(Vec<u8>),
    Block(u32),
    Char(u32),
    Fifo,
    Socket,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inode {
    pub kind: Kind,
    pub mode: u16,
    pub uid: u32,
    pub gid: u32,
    pub mtime: u32,
    pub number: u32,
    pub nlink: u32,
    pub xattr: u32,
}

impl Inode {
    pub fn has_xattrs(&self) -> bool {
        self.xattr != NO_XATTR
    }
}

/// The inode table position an inode reference (`block << 16 | offset`) names.
pub fn inode_pos(img: &Image, reference: u64) -> MetaPos {
    MetaPos {
        block: img.sb.inode_table.saturating_add(reference >> 16),
        offset: (reference & 0xffff) as usize,
    }
}

pub fn read_inode(img: &mut Image, mut at: MetaPos) -> Result<Inode> {
    if at.offset >= METADATA_SIZE {
        bail!(
            "squashfs inode reference has offset {} beyond a block",
            at.offset
        );
    }
    let p = &mut at;
    let kind = img.meta_u16(p)?;
    let mode = img.meta_u16(p)?;
    let uid_index = img.meta_u16(p)?;
    let gid_index = img.meta_u16(p)?;
    let (uid, gid) = (img.id(uid_index)?, img.id(gid_index)?);
    let mtime = img.meta_u32(p)?;
    let number = img.meta_u32(p)?;
    let mut nlink = 1;
    let mut xattr = NO_XATTR;
    let dir_table = img.sb.directory_table;
    let kind = match kind {
        1 => {
            let start = img.meta_u32(p)?;
            nlink = img.meta_u32(p)?;
            let size = img.meta_u16(p)? as u32;
            let offset = img.meta_u16(p)? as usize;
            let _parent = img.meta_u32(p)?;
            Kind::Dir {
                listing: MetaPos {
                    block: dir_table.saturating_add(start as u64),
                    offset,
                },
                size,
            }
        }
        8 => {
            nlink = img.meta_u32(p)?;
            let size = img.meta_u32(p)?;
            let start = img.meta_u32(p)?;
            let _parent = img.meta_u32(p)?;
            let _index_count = img.meta_u16(p)?;
            let offset = img.meta_u16(p)? as usize;
            xattr = img.meta_u32(p)?;
            Kind::Dir {
                listing: MetaPos {
                    block: dir_table.saturating_add(start as u64),
                    offset,
                },
                size,
            }
        }
        2 => {
            let start = img.meta_u32(p)? as u64;
            let fragment = img.meta_u32(p)?;
            let frag_offset = img.meta_u32(p)?;
            let size = img.meta_u32(p)? as u64;
            Kind::File {
                start,
                size,
                fragment,
                frag_offset,
                blocks: *p,
            }
        }
        9 => {
            let start = img.meta_u64(p)?;
            let size = img.meta_u64(p)?;
            let _sparse = img.meta_u64(p)?;
            nlink = img.meta_u32(p)?;
            let fragment = img.meta_u32(p)?;
            let frag_offset = img.meta_u32(p)?;
            xattr = img.meta_u32(p)?;
            Kind::File {
                start,
                size,
                fragment,
                frag_offset,
                blocks: *p,
            }
        }
        3 | 10 => {
            nlink = img.meta_u32(p)?;
            let len = img.meta_u32(p)? as usize;
            if len == 0 || len > MAX_TARGET {
                bail!("squashfs symlink target of {len} bytes");
            }
            let mut target = vec![0u8; len];
            img.read_meta(p, &mut target)?;
            if kind == 10 {
                xattr = img.meta_u32(p)?;
            }
            Kind::Symlink(target)
        }
        4 | 5 | 11 | 12 => {
            nlink = img.meta_u32(p)?;
            let rdev = img.meta_u32(p)?;
            if kind > 10 {
                xattr = img.meta_u32(p)?;
            }
            if kind == 4 || kind == 11 {
                Kind::Block(rdev)
            } else {
                Kind::Char(rdev)
            }
        }
        6 | 7 | 13 | 14 => {
            nlink = img.meta_u32(p)?;
            if kind > 10 {
                xattr = img.meta_u32(p)?;
            }
            if kind == 6 || kind == 13 {
                Kind::Fifo
            } else {
                Kind::Socket
            }
        }
        other => bail!("squashfs inode of unknown type {other}"),
    };
    Ok(Inode {
        kind,
        mode: mode & 0o7777,
        uid,
        gid,
        mtime,
        number,
        nlink,
        xattr,
    })
}

/// One directory entry: its name and the inode it references.
#[derive(Debug, Clone)]
pub struct Entry {
    pub name: Vec<u8>,
    pub inode_ref: u64,
}

/// The entries of a directory listing (`size` bytes, as the directory inode says).
pub fn read_dir(img: &mut Image, mut at: MetaPos, size: u32) -> Result<Vec<Entry>> {
    // The stored size counts three bytes for the implicit "." and ".." entries.
    let mut left = (size as i64) - 3;
    let mut out = Vec::new();
    while left > 0 {
        let count = img.meta_u32(&mut at)? as u64 + 1;
        let start = img.meta_u32(&mut at)? as u64;
        let _base_number = img.meta_u32(&mut at)?;
        left -= 12;
        if count > 256 {
            bail!("squashfs directory header claims {count} entries (at most 256)");
        }
        for _ in 0..count {
            let offset = img.meta_u16(&mut at)? as u64;
            let _number_delta = img.meta_u16(&mut at)?;
            let _kind = img.meta_u16(&mut at)?;
            let len = img.meta_u16(&mut at)? as usize + 1;
            if len > MAX_NAME {
                bail!("squashfs directory entry name of {len} bytes");
            }
            let mut name = vec![0u8; len];
            img.read_meta(&mut at, &mut name)?;
            left -= 8 + len as i64;
            out.push(Entry {
                name,
                inode_ref: (start << 16) | offset,
            });
        }
    }
    if left < 0 {
        bail!("squashfs directory listing overruns its stated size");
    }
    Ok(out)
}

/// The extended attribute table: per xattr index, where its key/value pairs are.
pub struct XattrTable {
    kv_start: u64,
    ids: Vec<u64>,
    count: u32,
}

impl XattrTable {
    pub fn read(img: &mut Image) -> Result<XattrTable> {
        let at = img.sb.xattr_table;
        let mut h = [0u8; 16];
        img.read_at(&mut h, at)
            .context("cannot read the squashfs xattr table")?;
        let kv_start = u64::from_le_bytes(h[0..8].try_into().unwrap());
        let count = u32::from_le_bytes(h[8..12].try_into().unwrap());
        let blocks = (count as u64 * 16).div_ceil(METADATA_SIZE as u64);
        let mut raw = vec![0u8; (blocks * 8) as usize];
        img.read_at(&mut raw, at + 16)
            .context("cannot read the squashfs xattr table")?;
        let ids = raw
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().unwrap()))
            .collect();
        Ok(XattrTable {
            kv_start,
            ids,
            count,
        })
    }
}

/// The extended attributes (full names such as `user.x`, and values) of xattr index `index`.
pub fn read_xattrs(img: &mut Image, index: u32) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let Some(t) = img.xattrs() else {
        bail!("squashfs inode has extended attributes but the image has no xattr table");
    };
    if index >= t.count {
        bail!(
            "squashfs inode names xattr set {index}, the image has {}",
            t.count
        );
    }
    let per_block = (METADATA_SIZE / 16) as u32;
    let block = t.ids[(index / per_block) as usize];
    let kv_start = t.kv_start;
    let mut at = MetaPos {
        block,
        offset: ((index % per_block) * 16) as usize,
    };
    let reference = img.meta_u64(&mut at)?;
    let count = img.meta_u32(&mut at)?;
    let _size = img.meta_u32(&mut at)?;
    if count > 65536 {
        bail!("squashfs xattr set {index} claims {count} attributes");
    }
    let mut at = MetaPos {
        block: kv_start.saturating_add(reference >> 16),
        offset: (reference & 0xffff) as usize,
    };
    let mut out = Vec::new();
    for _ in 0..count {
        let kind = img.meta_u16(&mut at)?;
        let name_len = img.meta_u16(&mut at)? as usize;
        let prefix: &[u8] = match kind & 0xff {
            0 => b"user.",
            1 => b"trusted.",
            2 => b"security.",
            other => bail!("squashfs xattr of unknown namespace {other}"),
        };
        let mut name = prefix.to_vec();
        let mut rest = vec![0u8; name_len];
        img.read_meta(&mut at, &mut rest)?;
        name.extend_from_slice(&rest);
        let vlen = img.meta_u32(&mut at)? as usize;
        let value = if kind & 0x100 != 0 {
            // Out of line: the value is stored once elsewhere and referenced.
            if vlen != 8 {
                bail!("squashfs out-of-line xattr reference of {vlen} bytes");
            }
            let r = img.meta_u64(&mut at)?;
            let mut v_at = MetaPos {
                block: kv_start.saturating_add(r >> 16),
                offset: (r & 0xffff) as usize,
            };
            let len = img.meta_u32(&mut v_at)? as usize;
            read_value(img, &mut v_at, len)?
        } else {
            read_value(img, &mut at, vlen)?
        };
        out.push((name, value));
    }
    Ok(out)
}

fn read_value(img: &mut Image, at: &mut MetaPos, len: usize) -> Result<Vec<u8>> {
    // The kernel's limit for one value.
    if len > 65536 {
        bail!("squashfs xattr value of {len} bytes");
    }
    let mut v = vec![0u8; len];
    img.read_meta(at, &mut v)?;
    Ok(v)
}
