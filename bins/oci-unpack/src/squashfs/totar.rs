//! A squashfs tree as a tar stream, for the layer applier.
//!
//! The walk emits the tree depth first (a directory before what it holds), hard-linked inodes
//! once with their data and then as tar hard links to the first path, extended attributes as
//! PAX `SCHILY.xattr.*` records. Names are checked here as unsquashfs checks them (no empty
//! names, `.`, `..`, `/` or NUL); a directory inode reached twice is a hard-link cycle and is
//! refused. Everything else a name or link can do is the applier's business, exactly as for a
//! tar layer.
//!
//! The squashfs layers of an OCI-SIF carry OverlayFS whiteouts (SingularityCE converts a
//! layer's AUFS markers when it keeps several layers): a 0/0 character device deletes the name
//! below, a directory with `trusted.overlay.opaque=y` hides everything below it. With
//! [`Walk::overlay_whiteouts`] they become the OCI (AUFS) markers the applier knows, `.wh.NAME`
//! and `DIR/.wh..wh..opq`; the plain `.wh.` markers of a layer made from a tar as it is pass
//! through unchanged either way.

use super::inflate::Inflaters;
use super::inode::{self, Inode, Kind, NO_FRAGMENT};
use super::{Image, MetaPos};
use anyhow::{Context, Result, bail};
use std::collections::{HashMap, HashSet};
use std::io::Write;
use tar::{EntryType, Header};

/// Longest path the walk builds (the applier's own limit).
const MAX_PATH: usize = 4096;
const TAR_NAME_LEN: usize = 100;
/// Deepest directory nesting the walk follows (the applier's own limit).
const MAX_DEPTH: usize = 256;
/// OverlayFS's opaque-directory attribute, and the OCI markers the walk turns whiteouts into.
const OVERLAY_OPAQUE: &[u8] = b"trusted.overlay.opaque";
const WHITEOUT_PREFIX: &[u8] = b".wh.";
const OPAQUE_MARKER: &[u8] = b".wh..wh..opq";

pub struct Walk<'a, W: Write> {
    img: &'a mut Image,
    out: W,
    max_bytes: u64,
    bytes: u64,
    /// First path of every inode with several names, by its inode reference.
    linked: HashMap<u64, Vec<u8>>,
    dirs_seen: HashSet<u64>,
    block: Vec<u8>,
    /// The fragment block decompressed last (files sharing one are usually neighbours).
    fragment: Option<(u32, Vec<u8>)>,
    /// Workers inflating the blocks of files of several blocks, started at the first one.
    inflaters: Option<Inflaters>,
    /// Sockets cannot travel in tar (nor in OCI layers); they are left out.
    sockets: u64,
    /// Turn OverlayFS whiteouts into OCI markers (OCI-SIF layers).
    overlay_whiteouts: bool,
    /// The directory whose header was just written is OverlayFS-opaque.
    opaque: bool,
}

impl<'a, W: Write> Walk<'a, W> {
    pub fn new(img: &'a mut Image, out: W, max_bytes: u64) -> Walk<'a, W> {
        Walk {
            img,
            out,
            max_bytes,
            bytes: 0,
            linked: HashMap::new(),
            dirs_seen: HashSet::new(),
            block: Vec::new(),
            fragment: None,
            inflaters: None,
            sockets: 0,
            overlay_whiteouts: false,
            opaque: false,
        }
    }

    /// Read OverlayFS whiteouts as OCI whiteouts (see the module comment).
    pub fn overlay_whiteouts(mut self) -> Self {
        self.overlay_whiteouts = true;
        self
    }

    /// Write the whole tree, then the end-of-archive marker; returns the output and how many
    /// sockets were left out.
    pub fn run(mut self) -> Result<(W, u64)> {
        let root_ref = self.img.sb.root_inode;
        let root = inode::read_inode(self.img, inode::inode_pos(self.img, root_ref))
            .context("cannot read the squashfs root inode")?;
        let Kind::Dir { listing, size } = root.kind.clone() else {
            bail!("the squashfs root inode is not a directory");
        };
        self.dirs_seen.insert(root_ref);
        self.header(b"./", &root, EntryType::Directory, 0, None)?;
        // Depth-first with an explicit stack: a deep crafted tree cannot exhaust the call stack.
        let mut stack = vec![(Vec::new(), self.listing(listing, size)?.into_iter())];
        while let Some((dir, entries)) = stack.last_mut() {
            let Some(e) = entries.next() else {
                stack.pop();
                continue;
            };
            check_name(&e.name, dir)?;
            let mut path = dir.clone();
            if !path.is_empty() {
                path.push(b'/');
            }
            path.extend_from_slice(&e.name);
            if path.len() > MAX_PATH {
                bail!("squashfs path longer than {MAX_PATH} bytes");
            }
            let pos = inode::inode_pos(self.img, e.inode_ref);
            let ino = inode::read_inode(self.img, pos)
                .with_context(|| format!("cannot read the inode of {}", show(&path)))?;
            if let Kind::Dir { listing, size } = ino.kind {
                if !self.dirs_seen.insert(e.inode_ref) {
                    bail!(
                        "refusing squashfs directory {}: its inode is reached twice (a hard-link cycle)",
                        show(&path)
                    );
                }
                if stack.len() > MAX_DEPTH {
                    bail!("squashfs tree deeper than {MAX_DEPTH} levels");
                }
                self.header(&path, &ino, EntryType::Directory, 0, None)?;
                if std::mem::take(&mut self.opaque) {
                    let mut marker = path.clone();
                    marker.push(b'/');
                    marker.extend_from_slice(OPAQUE_MARKER);
                    self.marker(&marker, &ino)?;
                }
                let children = self.listing(listing, size)?;
                stack.push((path, children.into_iter()));
                continue;
            }
            if self.overlay_whiteouts && matches!(ino.kind, Kind::Char(0)) {
                let mut marker = dir.clone();
                if !marker.is_empty() {
                    marker.push(b'/');
                }
                marker.extend_from_slice(WHITEOUT_PREFIX);
                marker.extend_from_slice(&e.name);
                self.marker(&marker, &ino)?;
                continue;
            }
            if ino.nlink > 1 {
                if let Some(first) = self.linked.get(&e.inode_ref) {
                    let first = first.clone();
                    self.link(&path, &ino, &first)?;
                    continue;
                }
                self.linked.insert(e.inode_ref, path.clone());
            }
            self.leaf(&path, &ino)
                .with_context(|| format!("squashfs entry {}", show(&path)))?;
        }
        self.out.write_all(&[0u8; 1024])?;
        self.out.flush()?;
        Ok((self.out, self.sockets))
    }

    fn listing(&mut self, at: MetaPos, size: u32) -> Result<Vec<inode::Entry>> {
        inode::read_dir(self.img, at, size).context("cannot read a squashfs directory")
    }

    fn leaf(&mut self, path: &[u8], ino: &Inode) -> Result<()> {
        match &ino.kind {
            Kind::File {
                start,
                size,
                fragment,
                frag_offset,
                blocks,
            } => {
                self.header(path, ino, EntryType::Regular, *size, None)?;
                self.file_data(*start, *size, *fragment, *frag_offset, *blocks)?;
                pad(&mut self.out, *size)
            }
            Kind::Symlink(target) => {
                let target = target.clone();
                self.header(path, ino, EntryType::Symlink, 0, Some(&target))
            }
            Kind::Block(_) => self.header(path, ino, EntryType::Block, 0, None),
            Kind::Char(_) => self.header(path, ino, EntryType::Char, 0, None),
            Kind::Fifo => self.header(path, ino, EntryType::Fifo, 0, None),
            Kind::Socket => {
                self.sockets += 1;
                Ok(())
            }
            Kind::Dir { .. } => unreachable!("directories are walked, not emitted as leaves"),
        }
    }

    /// An empty regular file standing for a whiteout, with the owner and time of `like`.
    fn marker(&mut self, path: &[u8], like: &Inode) -> Result<()> {
        if path.len() > MAX_PATH {
            bail!("squashfs path longer than {MAX_PATH} bytes");
        }
        let ino = Inode {
            kind: Kind::Fifo,
            mode: 0o600,
            xattr: inode::NO_XATTR,
            nlink: 1,
            ..like.clone()
        };
        self.header(path, &ino, EntryType::Regular, 0, None)
    }

    fn link(&mut self, path: &[u8], ino: &Inode, first: &[u8]) -> Result<()> {
        self.header(path, ino, EntryType::Link, 0, Some(first))
    }

    /// One tar header (after a PAX header when a name is long or there are xattrs).
    fn header(
        &mut self,
        path: &[u8],
        ino: &Inode,
        kind: EntryType,
        size: u64,
        link: Option<&[u8]>,
    ) -> Result<()> {
        let mut pax: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        if path.len() > TAR_NAME_LEN {
            pax.push((b"path".to_vec(), path.to_vec()));
        }
        if let Some(l) = link
            && l.len() > TAR_NAME_LEN
        {
            pax.push((b"linkpath".to_vec(), l.to_vec()));
        }
        if ino.has_xattrs() && kind != EntryType::Link {
            for (k, v) in inode::read_xattrs(self.img, ino.xattr)? {
                if self.overlay_whiteouts && k == OVERLAY_OPAQUE {
                    self.opaque = kind == EntryType::Directory && v == b"y";
                    continue;
                }
                if k.contains(&b'=') || k.contains(&0) {
                    bail!(
                        "squashfs xattr name '{}' cannot be represented",
                        String::from_utf8_lossy(&k)
                    );
                }
                let mut key = b"SCHILY.xattr.".to_vec();
                key.extend_from_slice(&k);
                pax.push((key, v));
            }
        }
        if !pax.is_empty() {
            let body = common::pax::body(&pax);
            let mut h = Header::new_ustar();
            h.set_entry_type(EntryType::XHeader);
            set_bytes(&mut h.as_old_mut().name, b"././@PaxHeader");
            h.set_mode(0o644);
            h.set_size(body.len() as u64);
            h.set_cksum();
            self.out.write_all(h.as_bytes())?;
            self.out.write_all(&body)?;
            pad(&mut self.out, body.len() as u64)?;
        }
        let mut h = Header::new_gnu();
        h.set_entry_type(kind);
        if path.len() <= TAR_NAME_LEN {
            set_bytes(&mut h.as_old_mut().name, path);
        }
        if let Some(l) = link
            && l.len() <= TAR_NAME_LEN
        {
            set_bytes(&mut h.as_old_mut().linkname, l);
        }
        h.set_mode(ino.mode as u32);
        h.set_uid(ino.uid as u64);
        h.set_gid(ino.gid as u64);
        h.set_mtime(ino.mtime as u64);
        h.set_size(size);
        if let Kind::Block(rdev) | Kind::Char(rdev) = ino.kind {
            let major = (rdev >> 8) & 0xfff;
            let minor = (rdev & 0xff) | ((rdev >> 12) & 0xfff00);
            h.set_device_major(major)?;
            h.set_device_minor(minor)?;
        }
        h.set_cksum();
        self.out.write_all(h.as_bytes())?;
        Ok(())
    }

    fn count(&mut self, n: u64) -> Result<()> {
        self.bytes += n;
        if self.max_bytes != 0 && self.bytes > self.max_bytes {
            bail!(
                "the squashfs image expands beyond the --max-size limit of {} bytes",
                self.max_bytes
            );
        }
        Ok(())
    }

    fn file_data(
        &mut self,
        start: u64,
        size: u64,
        fragment: u32,
        frag_offset: u32,
        mut words: MetaPos,
    ) -> Result<()> {
        let bs = self.img.sb.block_size as u64;
        let has_tail = fragment != NO_FRAGMENT;
        let full = if has_tail {
            size / bs
        } else {
            size.div_ceil(bs)
        };
        let mut pos = start;
        let mut left = size;
        // A file of several blocks goes to the inflate workers; one block is not worth the
        // hand-over.
        let one_by_one = if full >= 2 {
            (pos, left) = self.blocks_in_parallel(full, pos, left, &mut words)?;
            0
        } else {
            full
        };
        for _ in 0..one_by_one {
            let want = left.min(bs);
            // Checked before the work: a crafted size cannot make us produce its bytes first.
            self.count(want)?;
            let word = self.img.meta_u32(&mut words)?;
            let stored = (word & 0x00ff_ffff) as u64;
            let mut block = std::mem::take(&mut self.block);
            if stored == 0 {
                // A sparse block: zeros.
                block.clear();
                block.resize(want as usize, 0);
            } else {
                self.img.data_block(pos, word, &mut block, bs as usize)?;
            }
            let r = if block.len() as u64 != want {
                Err(anyhow::anyhow!(
                    "a data block holds {} bytes where {want} were expected",
                    block.len()
                ))
            } else {
                self.out.write_all(&block).map_err(Into::into)
            };
            self.block = block;
            r?;
            pos = pos.saturating_add(stored);
            left -= want;
        }
        if has_tail && left > 0 {
            self.count(left)?;
            if self.fragment.as_ref().is_none_or(|(i, _)| *i != fragment) {
                let (fpos, word) = self.img.fragment(fragment)?;
                let mut buf = self.fragment.take().map(|(_, b)| b).unwrap_or_default();
                self.img.data_block(fpos, word, &mut buf, bs as usize)?;
                self.fragment = Some((fragment, buf));
            }
            let data = &self.fragment.as_ref().unwrap().1;
            let from = frag_offset as usize;
            let Some(tail) = from
                .checked_add(left as usize)
                .and_then(|end| data.get(from..end))
            else {
                bail!("the file's tail lies outside its fragment block");
            };
            self.out.write_all(tail)?;
        } else if left > 0 {
            bail!("the file's blocks end before its size");
        }
        Ok(())
    }
}

impl<W: Write> Walk<'_, W> {
    /// The `full` whole blocks of a file, inflated by the workers and written in order; the
    /// position and bytes left after them. Same checks, in the same order, as one at a time.
    fn blocks_in_parallel(
        &mut self,
        full: u64,
        mut pos: u64,
        mut left: u64,
        words: &mut MetaPos,
    ) -> Result<(u64, u64)> {
        let bs = self.img.sb.block_size as u64;
        if self.inflaters.is_none() {
            self.inflaters = Some(self.img.inflaters()?);
        }
        // In flight, in file order: a ticket (None for a sparse block) and the size it must be.
        let mut queue = std::collections::VecDeque::new();
        for _ in 0..full {
            let want = left.min(bs);
            // Checked before the work: a crafted size cannot make us produce its bytes first.
            self.count(want)?;
            let word = self.img.meta_u32(words)?;
            let stored = (word & 0x00ff_ffff) as u64;
            let pool = self.inflaters.as_mut().expect("started above");
            let ticket = if stored == 0 {
                None
            } else {
                self.img.note_read(stored);
                Some(pool.submit(pos, word, bs as usize)?)
            };
            queue.push_back((ticket, want));
            if queue.len() >= pool.window() {
                let (t, w) = queue.pop_front().expect("not empty");
                self.emit_block(t, w)?;
            }
            pos = pos.saturating_add(stored);
            left -= want;
        }
        while let Some((t, w)) = queue.pop_front() {
            self.emit_block(t, w)?;
        }
        Ok((pos, left))
    }

    /// Write one block of `want` bytes: the inflated block of `ticket`, or zeros (sparse).
    fn emit_block(&mut self, ticket: Option<u64>, want: u64) -> Result<()> {
        let pool = self.inflaters.as_mut().expect("started");
        let block = match ticket {
            Some(t) => pool.take(t)?,
            None => vec![0; want as usize],
        };
        if block.len() as u64 != want {
            bail!(
                "a data block holds {} bytes where {want} were expected",
                block.len()
            );
        }
        self.out.write_all(&block)?;
        pool.recycle(block);
        Ok(())
    }
}

fn check_name(name: &[u8], dir: &[u8]) -> Result<()> {
    if name.is_empty() || name == b"." || name == b".." || name.contains(&b'/') || name.contains(&0)
    {
        bail!(
            "refusing squashfs entry '{}' in {}: not a valid file name",
            String::from_utf8_lossy(name).escape_debug(),
            show(if dir.is_empty() { b"/" } else { dir })
        );
    }
    Ok(())
}

fn show(p: &[u8]) -> String {
    String::from_utf8_lossy(p).escape_debug().to_string()
}

fn set_bytes(field: &mut [u8], v: &[u8]) {
    field.fill(0);
    field[..v.len()].copy_from_slice(v);
}

fn pad<W: Write>(out: &mut W, len: u64) -> Result<()> {
    let rem = (len % 512) as usize;
    if rem != 0 {
        out.write_all(&[0u8; 512][..512 - rem])?;
    }
    Ok(())
}
