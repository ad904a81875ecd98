//! SIF, the Singularity Image Format (as sylabs/sif defines it): a 128-byte global header, a
//! table of 585-byte descriptors, then the data objects they point at.
//!
//! Only what the launcher needs is read: the header, the descriptor table, and which object is
//! the root filesystem (native SIF) or the OCI root index and blobs (OCI-SIF). Every offset and
//! size is checked against the file's real length before anything uses it, so a truncated or
//! crafted file is refused here with a message, never read past its end.

use anyhow::{Context, Result, bail};
use std::fs::File;
use std::os::unix::fs::FileExt;

pub const MAGIC: &[u8; 10] = b"SIF_MAGIC\0";
pub const HEADER_LEN: u64 = 128;
pub const DESCRIPTOR_LEN: u64 = 585;
/// Offset of the magic inside the header (after the 32-byte launch script).
pub const MAGIC_AT: usize = 32;
/// Group IDs are stored with this mask set; the group number is the rest.
pub const GROUP_MASK: u32 = 0xf000_0000;
/// More descriptors than any real image has; a bound on what a crafted header can make us read.
const MAX_DESCRIPTORS: i64 = 1 << 16;

/// Data object types.
pub const DATA_DEFFILE: i32 = 0x4001;
pub const DATA_ENVVAR: i32 = 0x4002;
pub const DATA_LABELS: i32 = 0x4003;
pub const DATA_PARTITION: i32 = 0x4004;
pub const DATA_SIGNATURE: i32 = 0x4005;
pub const DATA_OCI_ROOT_INDEX: i32 = 0x400A;
pub const DATA_OCI_BLOB: i32 = 0x400B;

/// Partition filesystem types.
pub const FS_SQUASH: i32 = 1;
pub const FS_EXT3: i32 = 2;
pub const FS_IMMUTABLE: i32 = 3;
pub const FS_RAW: i32 = 4;
pub const FS_ENCRYPTED_SQUASH: i32 = 5;

/// Partition types.
pub const PART_SYSTEM: i32 = 1;
pub const PART_PRIMARY_SYSTEM: i32 = 2;
pub const PART_DATA: i32 = 3;
pub const PART_OVERLAY: i32 = 4;

/// SIF architecture codes and the Go/OCI architecture names they stand for.
const ARCHES: &[(&[u8; 2], &str)] = &[
    (b"01", "386"),
    (b"02", "amd64"),
    (b"03", "arm"),
    (b"04", "arm64"),
    (b"05", "ppc64"),
    (b"06", "ppc64le"),
    (b"07", "mips"),
    (b"08", "mipsle"),
    (b"09", "mips64"),
    (b"10", "mips64le"),
    (b"11", "s390x"),
    (b"12", "riscv64"),
    (b"13", "loong64"),
];

/// The OCI name of a SIF architecture code (`02` -> `amd64`), `unknown` when not one of ours.
pub fn arch_name(code: &[u8]) -> &'static str {
    let code = &code[..code.len().min(2)];
    ARCHES
        .iter()
        .find(|(c, _)| c.as_slice() == code)
        .map(|(_, n)| *n)
        .unwrap_or("unknown")
}

/// True when the first bytes of a file are a SIF header (the launch script, then the magic).
pub fn has_magic(head: &[u8]) -> bool {
    head.len() >= MAGIC_AT + MAGIC.len() && &head[MAGIC_AT..MAGIC_AT + MAGIC.len()] == MAGIC
}

/// True when the file at `path` starts with a SIF header (false when unreadable or short).
pub fn is_sif_file(path: &std::path::Path) -> bool {
    let Ok(f) = File::open(path) else {
        return false;
    };
    let mut head = [0u8; MAGIC_AT + 10];
    f.read_exact_at(&mut head, 0).is_ok() && has_magic(&head)
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub version: String,
    pub arch: String,
    pub descriptors_total: i64,
    pub descriptors_offset: i64,
    pub data_offset: i64,
    pub data_size: i64,
}

/// One used descriptor of the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Descriptor {
    pub data_type: i32,
    pub id: u32,
    /// Group number (the stored mask removed); 0 when the object is in no group.
    pub group: u32,
    pub link: u32,
    pub offset: u64,
    pub size: u64,
    pub name: String,
    pub extra: Vec<u8>,
}

/// What a partition descriptor's extra bytes say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Partition {
    pub fs_type: i32,
    pub part_type: i32,
    pub arch: &'static str,
}

impl Descriptor {
    pub fn partition(&self) -> Option<Partition> {
        if self.data_type != DATA_PARTITION || self.extra.len() < 11 {
            return None;
        }
        let i32_at = |o: usize| i32::from_le_bytes(self.extra[o..o + 4].try_into().unwrap());
        Some(Partition {
            fs_type: i32_at(0),
            part_type: i32_at(4),
            arch: arch_name(&self.extra[8..11]),
        })
    }

    /// The digest an OCI blob descriptor records (`sha256:<hex>`), NUL padding removed.
    pub fn oci_digest(&self) -> Option<String> {
        let end = self
            .extra
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(self.extra.len());
        let s = std::str::from_utf8(&self.extra[..end]).ok()?;
        (!s.is_empty()).then(|| s.to_string())
    }
}

/// A SIF's header and used descriptors, checked against the file's length.
#[derive(Debug, Clone)]
pub struct Sif {
    pub header: Header,
    pub descriptors: Vec<Descriptor>,
    pub file_len: u64,
}

fn le_i64(b: &[u8], at: usize) -> i64 {
    i64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}
fn le_i32(b: &[u8], at: usize) -> i32 {
    i32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}
fn le_u32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}

fn cstr(b: &[u8]) -> String {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).into_owned()
}

impl Sif {
    /// Read and check the header and the descriptor table of an open SIF.
    pub fn read(file: &File) -> Result<Sif> {
        let file_len = file.metadata().context("cannot stat the SIF")?.len();
        let mut h = [0u8; HEADER_LEN as usize];
        file.read_exact_at(&mut h, 0).map_err(|_| {
            anyhow::anyhow!("the SIF is truncated: its global header is incomplete")
        })?;
        if !has_magic(&h) {
            bail!("not a SIF file (no SIF_MAGIC in its header)");
        }
        let version = cstr(&h[42..45]);
        if version != "01" {
            bail!("unsupported SIF version '{version}' (this launcher reads version 01)");
        }
        let header = Header {
            version,
            arch: arch_name(&h[45..48]).to_string(),
            descriptors_total: le_i64(&h, 88),
            descriptors_offset: le_i64(&h, 96),
            data_offset: le_i64(&h, 112),
            data_size: le_i64(&h, 120),
        };
        let total = header.descriptors_total;
        if !(0..=MAX_DESCRIPTORS).contains(&total) {
            bail!("the SIF header claims {total} descriptors: corrupt header");
        }
        let table_len = total as u64 * DESCRIPTOR_LEN;
        let table_at = u64::try_from(header.descriptors_offset)
            .ok()
            .filter(|&o| o >= HEADER_LEN)
            .with_context(|| {
                format!(
                    "the SIF header puts its descriptors at offset {}: corrupt header",
                    header.descriptors_offset
                )
            })?;
        if table_at.checked_add(table_len).is_none_or(|e| e > file_len) {
            bail!(
                "the SIF is truncated: its descriptor table ends past the end of the file ({file_len} bytes)"
            );
        }
        let mut table = vec![0u8; table_len as usize];
        file.read_exact_at(&mut table, table_at)
            .context("cannot read the SIF descriptor table")?;
        let mut descriptors = Vec::new();
        for raw in table.chunks_exact(DESCRIPTOR_LEN as usize) {
            if raw[4] == 0 {
                continue; // unused slot
            }
            let (offset, size) = (le_i64(raw, 17), le_i64(raw, 25));
            let group = le_u32(raw, 9);
            let d = Descriptor {
                data_type: le_i32(raw, 0),
                id: le_u32(raw, 5),
                group: if group & GROUP_MASK == GROUP_MASK {
                    group & !GROUP_MASK
                } else {
                    0
                },
                link: le_u32(raw, 13),
                offset: u64::try_from(offset).unwrap_or(u64::MAX),
                size: u64::try_from(size).unwrap_or(u64::MAX),
                name: cstr(&raw[73..201]),
                extra: raw[201..585].to_vec(),
            };
            if d.offset.checked_add(d.size).is_none_or(|e| e > file_len) {
                bail!(
                    "the SIF is truncated: object {} ({}) ends past the end of the file ({file_len} bytes)",
                    d.id,
                    type_name(d.data_type)
                );
            }
            descriptors.push(d);
        }
        Ok(Sif {
            header,
            descriptors,
            file_len,
        })
    }

    pub fn of_type(&self, data_type: i32) -> impl Iterator<Item = &Descriptor> {
        self.descriptors
            .iter()
            .filter(move |d| d.data_type == data_type)
    }

    /// True when this SIF holds an OCI image (OCI-SIF) rather than a native root filesystem.
    pub fn is_oci_sif(&self) -> bool {
        self.of_type(DATA_OCI_ROOT_INDEX).next().is_some()
    }

    /// The OCI root index object of an OCI-SIF (there is exactly one).
    pub fn oci_root_index(&self) -> Result<&Descriptor> {
        let mut it = self.of_type(DATA_OCI_ROOT_INDEX);
        match (it.next(), it.next()) {
            (Some(d), None) => Ok(d),
            (None, _) => bail!("the SIF holds no OCI root index"),
            (Some(_), Some(_)) => bail!("the SIF holds more than one OCI root index"),
        }
    }

    /// The OCI blob object whose descriptor records `digest` (`sha256:<hex>`).
    pub fn oci_blob(&self, digest: &str) -> Option<&Descriptor> {
        self.of_type(DATA_OCI_BLOB)
            .find(|d| d.oci_digest().as_deref() == Some(digest))
    }

    /// The root filesystem of a native SIF for architecture `arch`: the primary system
    /// partition, which must be a plain squashfs. Everything else is refused with the reason.
    pub fn root_partition(&self, arch: &str) -> Result<&Descriptor> {
        let primaries: Vec<(&Descriptor, Partition)> = self
            .of_type(DATA_PARTITION)
            .filter_map(|d| d.partition().map(|p| (d, p)))
            .filter(|(_, p)| p.part_type == PART_PRIMARY_SYSTEM)
            .collect();
        if primaries.is_empty() {
            bail!("the SIF has no root filesystem (no primary system partition)");
        }
        let Some((d, p)) = primaries.iter().find(|(_, p)| p.arch == arch) else {
            let theirs: Vec<&str> = primaries.iter().map(|(_, p)| p.arch).collect();
            bail!(
                "the SIF's root filesystem is built for {} and this host runs {arch}",
                theirs.join(", ")
            );
        };
        match p.fs_type {
            FS_SQUASH => Ok(d),
            FS_ENCRYPTED_SQUASH => bail!(
                "the SIF's root filesystem is an encrypted squashfs partition, which this launcher cannot run"
            ),
            FS_EXT3 => bail!(
                "the SIF's root filesystem is an ext3 partition; only squashfs root filesystems are supported"
            ),
            other => bail!(
                "the SIF's root filesystem is a {} partition; only squashfs root filesystems are supported",
                fs_name(other)
            ),
        }
    }
}

pub fn type_name(t: i32) -> &'static str {
    match t {
        DATA_DEFFILE => "Def.FILE",
        DATA_ENVVAR => "Env.Vars",
        DATA_LABELS => "JSON.Labels",
        DATA_PARTITION => "FS",
        DATA_SIGNATURE => "Signature",
        0x4006 => "JSON.Generic",
        0x4007 => "Generic/Raw",
        0x4008 => "Cryptographic Message",
        0x4009 => "SBOM",
        DATA_OCI_ROOT_INDEX => "OCI.RootIndex",
        DATA_OCI_BLOB => "OCI.Blob",
        _ => "Unknown",
    }
}

pub fn fs_name(t: i32) -> &'static str {
    match t {
        FS_SQUASH => "squashfs",
        FS_EXT3 => "ext3",
        FS_IMMUTABLE => "immutable object archive",
        FS_RAW => "raw",
        FS_ENCRYPTED_SQUASH => "encrypted squashfs",
        _ => "unknown",
    }
}

/// The OCI architecture name of the running host, as SIF and OCI spell it.
pub fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" if cfg!(target_endian = "little") => "ppc64le",
        "powerpc64" => "ppc64",
        "riscv64" => "riscv64",
        "s390x" => "s390x",
        "loongarch64" => "loong64",
        "arm" => "arm",
        _ => "unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// Data type, offset, size, [fs type, partition type], architecture code.
    type Desc<'a> = (i32, u64, u64, [i32; 2], &'a [u8; 2]);

    /// A SIF laid out by hand the way sylabs/sif writes one.
    fn sif_with(descs: &[Desc<'_>], data_len: u64) -> File {
        let mut f = tempfile::tempfile().unwrap();
        let mut h = vec![0u8; 128];
        h[..10].copy_from_slice(b"#!/usr/bin");
        h[32..42].copy_from_slice(MAGIC);
        h[42..44].copy_from_slice(b"01");
        h[45..47].copy_from_slice(b"02");
        h[88..96].copy_from_slice(&(descs.len() as i64).to_le_bytes());
        h[96..104].copy_from_slice(&128i64.to_le_bytes());
        f.write_all(&h).unwrap();
        for (i, (t, off, size, part, arch)) in descs.iter().enumerate() {
            let mut d = vec![0u8; 585];
            d[0..4].copy_from_slice(&t.to_le_bytes());
            d[4] = 1;
            d[5..9].copy_from_slice(&(i as u32 + 1).to_le_bytes());
            d[9..13].copy_from_slice(&(GROUP_MASK | 1).to_le_bytes());
            d[17..25].copy_from_slice(&(*off as i64).to_le_bytes());
            d[25..33].copy_from_slice(&(*size as i64).to_le_bytes());
            d[201..205].copy_from_slice(&part[0].to_le_bytes());
            d[205..209].copy_from_slice(&part[1].to_le_bytes());
            d[209..211].copy_from_slice(*arch);
            f.write_all(&d).unwrap();
        }
        f.write_all(&vec![0u8; data_len as usize]).unwrap();
        f
    }

    #[test]
    fn picks_primary_partition_for_the_arch() {
        let at = 128 + 2 * 585;
        let f = sif_with(
            &[
                (
                    DATA_PARTITION,
                    at,
                    10,
                    [FS_SQUASH, PART_PRIMARY_SYSTEM],
                    b"04",
                ),
                (
                    DATA_PARTITION,
                    at + 10,
                    10,
                    [FS_SQUASH, PART_PRIMARY_SYSTEM],
                    b"02",
                ),
            ],
            20,
        );
        let s = Sif::read(&f).unwrap();
        assert_eq!(s.descriptors.len(), 2);
        assert_eq!(s.descriptors[0].group, 1);
        assert_eq!(s.root_partition("amd64").unwrap().offset, at + 10);
        let e = s.root_partition("riscv64").unwrap_err().to_string();
        assert!(e.contains("arm64, amd64") && e.contains("riscv64"), "{e}");
    }

    #[test]
    fn refuses_what_it_cannot_run() {
        let at = 128 + 585;
        for (fs, word) in [
            (FS_EXT3, "ext3"),
            (FS_ENCRYPTED_SQUASH, "encrypted"),
            (FS_RAW, "raw"),
        ] {
            let f = sif_with(
                &[(DATA_PARTITION, at, 4, [fs, PART_PRIMARY_SYSTEM], b"02")],
                4,
            );
            let e = Sif::read(&f).unwrap().root_partition("amd64").unwrap_err();
            assert!(e.to_string().contains(word), "{e}");
        }
        let f = sif_with(&[(DATA_PARTITION, at, 4, [FS_SQUASH, PART_DATA], b"02")], 4);
        let e = Sif::read(&f).unwrap().root_partition("amd64").unwrap_err();
        assert!(e.to_string().contains("no root filesystem"), "{e}");
    }

    #[test]
    fn refuses_truncated_files() {
        let at = 128 + 585;
        let f = sif_with(
            &[(
                DATA_PARTITION,
                at,
                100,
                [FS_SQUASH, PART_PRIMARY_SYSTEM],
                b"02",
            )],
            50,
        );
        let e = Sif::read(&f).unwrap_err().to_string();
        assert!(e.contains("truncated"), "{e}");
        f.set_len(300).unwrap();
        let e = Sif::read(&f).unwrap_err().to_string();
        assert!(e.contains("truncated"), "{e}");
        f.set_len(60).unwrap();
        let e = Sif::read(&f).unwrap_err().to_string();
        assert!(e.contains("truncated"), "{e}");
    }
}
