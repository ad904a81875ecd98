//! Native SIF images: the root filesystem partition of a `.sif` file as a one-layer image.
//!
//! The layer is the squashfs partition itself, left in the file (`oci-unpack` reads it from
//! there). Its digest names the image in the rootfs cache; computing it reads the whole
//! partition, so it is done once and remembered in `CACHE/sif/` against the file's identity
//! (device, inode, size, modification and change times). A warm run reads the SIF's header and
//! descriptor table and that small entry, and no image data.

use anyhow::{Context, Result, bail};
use common::cache::Cache;
use common::digest::Digest;
use common::record::{Descriptor, ImageRecord, Platform, SifObject, SifSource};
use common::sif::{self, Sif};
use sha2::{Digest as _, Sha256};
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Media type of a squashfs layer, as SingularityCE's OCI-SIF names it.
pub const SQUASHFS_LAYER: &str = "application/vnd.sylabs.image.layer.v1.squashfs";
const MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// The cache subdirectory of remembered partition digests.
const DIGESTS_DIR: &str = "sif";

/// A reference that names a SIF file: `sif:PATH`, or a plain path to a file with the SIF magic.
pub fn sif_path(reference: &str) -> Option<PathBuf> {
    if let Some(p) = reference
        .strip_prefix("sif:")
        .or_else(|| reference.strip_prefix("oci-sif:"))
    {
        return Some(PathBuf::from(p));
    }
    if reference.contains("://") {
        return None;
    }
    let p = Path::new(reference);
    (p.is_file() && sif::is_sif_file(p)).then(|| p.to_path_buf())
}

/// The file's identity and where it was opened from.
pub struct Opened {
    pub file: File,
    pub path: PathBuf,
    pub meta: std::fs::Metadata,
}

pub fn open(path: &Path) -> Result<Opened> {
    let abs = common::fsutil::absolute(path)?;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_CLOEXEC)
        .open(&abs)
        .with_context(|| format!("cannot open SIF {}", abs.display()))?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        bail!("{} is not a regular file", abs.display());
    }
    Ok(Opened {
        file,
        path: abs,
        meta,
    })
}

pub fn source(o: &Opened, objects: Vec<SifObject>) -> SifSource {
    let m = &o.meta;
    SifSource {
        path: o.path.clone(),
        dev: m.dev(),
        ino: m.ino(),
        size: m.size(),
        mtime_ns: m.mtime() * 1_000_000_000 + m.mtime_nsec(),
        ctime_ns: m.ctime() * 1_000_000_000 + m.ctime_nsec(),
        objects,
    }
}

/// The image record of a native SIF's root filesystem for architecture `arch`.
pub fn native_record(reference: &str, o: &Opened, s: &Sif, arch: &str) -> Result<ImageRecord> {
    let part = s.root_partition(arch)?;
    let object = SifObject {
        offset: part.offset,
        size: part.size,
    };
    let src = source(o, vec![object]);
    let layer_digest = match remembered(&src, object)? {
        Some(d) => d,
        None => {
            let mut magic = [0u8; 4];
            o.file
                .read_exact_at(&mut magic, object.offset)
                .context("cannot read the SIF's root filesystem partition")?;
            if u32::from_le_bytes(magic) != 0x7371_7368 {
                bail!("the SIF's root filesystem partition does not hold a squashfs filesystem");
            }
            let d = hash_object(&o.file, object)?;
            remember(&src, object, &d)?;
            d
        }
    };
    let layer = Descriptor {
        media_type: SQUASHFS_LAYER.into(),
        digest: layer_digest.to_string(),
        size: object.size,
        annotations: None,
    };
    let image_config = serde_json::json!({
        "architecture": arch,
        "os": "linux",
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": [layer_digest.to_string()]},
    });
    synthesized_record(reference, "sif", layer, image_config, src)
}

/// A record for an image that has no manifest of its own: its manifest and config are made
/// here, deterministically, so the same partition always gets the same image digest.
pub fn synthesized_record(
    reference: &str,
    transport: &str,
    layer: Descriptor,
    image_config: serde_json::Value,
    src: SifSource,
) -> Result<ImageRecord> {
    let record = synthesized(
        reference,
        transport,
        vec![layer],
        image_config,
        src.path.clone(),
        None,
    )?;
    Ok(record.with_sif(src))
}

/// The record of an image without a manifest of its own (a SIF partition, a sandbox
/// directory). `annotations` go into the manifest, so they take part in the image digest.
pub fn synthesized(
    reference: &str,
    transport: &str,
    layers: Vec<Descriptor>,
    image_config: serde_json::Value,
    layout: PathBuf,
    annotations: Option<serde_json::Value>,
) -> Result<ImageRecord> {
    let config_bytes = serde_json::to_vec(&image_config)?;
    let config = Descriptor {
        media_type: CONFIG.into(),
        digest: Digest::of_bytes(&config_bytes).to_string(),
        size: config_bytes.len() as u64,
        annotations: None,
    };
    let mut manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST,
        "config": config,
        "layers": layers,
    });
    if let Some(a) = annotations {
        manifest["annotations"] = a;
    }
    let manifest_bytes = serde_json::to_vec(&manifest)?;
    let manifest_digest = Digest::of_bytes(&manifest_bytes).to_string();
    let arch = image_config["architecture"]
        .as_str()
        .unwrap_or("unknown")
        .to_string();
    let manifest = Descriptor {
        media_type: MANIFEST.into(),
        digest: manifest_digest,
        size: manifest_bytes.len() as u64,
        annotations: None,
    };
    let platform = Platform {
        os: "linux".into(),
        architecture: arch,
        variant: None,
    };
    Ok(ImageRecord::new(
        reference,
        transport,
        layout,
        manifest,
        config,
        layers,
        image_config,
    )
    .with_platform(platform))
}

/// sha256 of one object of the file, read in large chunks.
pub fn hash_object(file: &File, o: SifObject) -> Result<Digest> {
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut done = 0u64;
    while done < o.size {
        let n = (o.size - done).min(buf.len() as u64) as usize;
        file.read_exact_at(&mut buf[..n], o.offset + done)
            .context("the SIF is truncated or unreadable")?;
        h.update(&buf[..n]);
        done += n as u64;
    }
    Digest::parse(&format!("sha256:{}", hex::encode(h.finalize())))
}

/// The entry name for one object of one file identity.
fn entry_name(src: &SifSource, o: SifObject) -> String {
    let key = format!(
        "sif-object-v1 {} {} {} {} {} {} {}",
        src.dev, src.ino, src.size, src.mtime_ns, src.ctime_ns, o.offset, o.size
    );
    format!("{}.digest", Digest::of_bytes(key.as_bytes()).hex())
}

/// The digest remembered for this identity, if any. The cache directories on the way are
/// checked as every cache lookup checks them (owned by the caller or root, writable by nobody
/// else, no symlinks); the entry must be a regular file (not a symlink) of the caller's that
/// nobody else can write.
pub fn remembered(src: &SifSource, o: SifObject) -> Result<Option<Digest>> {
    let root = common::cache::default_root()?;
    let Some(dir) = common::cache::lookup_dir(&root, DIGESTS_DIR)? else {
        return Ok(None);
    };
    let p = dir.join(entry_name(src, o));
    let f = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK)
        .open(&p)
    {
        Ok(f) => f,
        Err(_) => return Ok(None),
    };
    let m = f.metadata()?;
    let euid = nix::unistd::geteuid().as_raw();
    if !m.is_file() || m.uid() != euid || m.mode() & 0o022 != 0 {
        common::cli::warn(format!(
            "ignoring {}: not a private regular file of this user",
            p.display()
        ));
        return Ok(None);
    }
    let mut s = String::new();
    f.take(128).read_to_string(&mut s)?;
    Ok(Digest::parse(s.trim()).ok())
}

pub fn remember(src: &SifSource, o: SifObject, d: &Digest) -> Result<()> {
    let cache = Cache::open_default()?;
    let dir = cache.root().join(DIGESTS_DIR);
    common::fsutil::private_dir(&dir)?;
    cache.write_entry(
        &dir.join(entry_name(src, o)),
        d.to_string().as_bytes(),
        0o600,
    )
}
