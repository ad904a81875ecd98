//! `--save-oci-sif FILE`: write the fetched image as an OCI-SIF, the single-file format
//! SingularityCE 4 runs with `--oci`, laid out as sylabs/oci-tools writes it.
//!
//! * An image of more than one layer is squashed into one (squash.rs), as SingularityCE does
//!   unless `--keep-layers` is given: one squashfs holds the tree the layers leave.
//! * With `--keep-layers` (or one layer), each layer becomes a squashfs. A squashfs is made by
//!   `sqfstar` (squashfs-tools) from a tar stream, with
//!   the root directory owned by 0:0, mode 0755 (SingularityCE's flags). AUFS whiteouts
//!   (`.wh.NAME`, `.wh..wh..opq`) are turned into OverlayFS ones (a 0/0 character device, the
//!   directory attribute `trusted.overlay.opaque=y`), as SingularityCE does for an image whose
//!   layers it keeps, because it mounts the layers with overlayfs.
//! * A hard link to a file of a lower layer cannot be held by one kept layer's squashfs
//!   (sqfstar drops it): the file's content is copied up into the layer as a regular file
//!   instead. Squashed, the link stays a link.
//! * The config is the source's with `rootfs.diff_ids` naming the squashfs layers (a squashfs
//!   layer is not compressed, so its diff ID is its digest); the manifest is an OCI manifest;
//!   the root index lists it with its platform.
//! * The SIF: header, exactly as many descriptors as objects at offset 4096, then the objects
//!   unaligned, in oci-tools' order (layers, config, manifest, root index), every one in group
//!   1 with its digest in the descriptor.
//!
//! Same input, same bytes: the SIF is written the way sylabs/sif's deterministic mode writes it
//! (nil header ID, creation and modification times of Go's zero time), and sqfstar gets
//! `SOURCE_DATE_EPOCH` set to the newest modification time in its input, which fixes the
//! superblock and root directory times to a value taken from the content while clamping no
//! file's time. (sqfstar 4.5's `-mkfs-time 0 -root-time 0`, which SingularityCE passes, still
//! stamp the current time.)

use crate::media::{self, Compression};
use crate::save;
use crate::squash;
use anyhow::{Context, Result, bail};
use common::digest::Digest;
use common::record::{Descriptor, ImageRecord};
use common::sif;
use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Where sylabs/sif puts the descriptor table by default.
const DESCRIPTORS_AT: u64 = 4096;
/// Go's zero `time.Time` in Unix seconds: what sylabs/sif's deterministic mode records.
const GO_ZERO_TIME: i64 = -62_135_596_800;
const DEFAULT_GROUP: u32 = 1;
pub(crate) const WHITEOUT: &[u8] = b".wh.";
const OPAQUE: &[u8] = b".wh..wh..opq";
const OPAQUE_XATTR: &[u8] = b"SCHILY.xattr.trusted.overlay.opaque";

/// One object to store: its SIF data type, where its bytes are, digest and size.
struct Object {
    data_type: i32,
    source: Source,
    digest: Digest,
    size: u64,
}

enum Source {
    File(PathBuf),
    Bytes(Vec<u8>),
}

/// Write `record`'s image (blobs in `record.layout`) to `out` as an OCI-SIF.
pub fn write_oci_sif(
    record: &ImageRecord,
    out: &Path,
    force: bool,
    keep_layers: bool,
) -> Result<()> {
    if record.sif.is_some() {
        bail!(
            "the image is already a {} file ({}): copy that file instead",
            if record.transport == "oci-sif" {
                "OCI-SIF"
            } else {
                "SIF"
            },
            record.layout.display()
        );
    }
    let sqfstar = common::runtime::which("sqfstar")
        .context("writing an OCI-SIF needs sqfstar (squashfs-tools 4.5 or later) on PATH")?;
    save::write_whole(out, force, |tmp| {
        let work = WorkDir::create(tmp)?;
        let objects = objects(record, &sqfstar, &work.0, keep_layers)?;
        write_sif(tmp, &objects)
    })
}

/// Copy the SIF open as `src` (checked by the caller) to `out`, whole or not at all.
pub fn copy_sif(src: &File, out: &Path, force: bool) -> Result<()> {
    save::write_whole(out, force, |tmp| {
        let mut dst = save::create_new(tmp)?;
        let len = src.metadata()?.len();
        let mut from = src.try_clone()?;
        from.seek(SeekFrom::Start(0))?;
        let n = std::io::copy(&mut from.take(len), &mut dst)?;
        if n != len {
            bail!("the SIF changed while it was copied");
        }
        dst.sync_all().context("cannot sync the copy")
    })
}

/// A private scratch directory beside the output, removed on drop.
struct WorkDir(PathBuf);

impl WorkDir {
    fn create(tmp: &Path) -> Result<WorkDir> {
        let mut name = tmp.as_os_str().to_owned();
        name.push(".d");
        let dir = PathBuf::from(name);
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        Ok(WorkDir(dir))
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn objects(
    record: &ImageRecord,
    sqfstar: &Path,
    work: &Path,
    keep_layers: bool,
) -> Result<Vec<Object>> {
    let mut objs = Vec::new();
    let mut layers = Vec::new();
    let mut outs = Vec::new();
    if keep_layers || record.layers.len() < 2 {
        for (i, l) in record.layers.iter().enumerate() {
            let out = work.join(format!("layer{i}.sqfs"));
            squashfs_layer(&record.layout, l, &record.layers[..i], sqfstar, &out).with_context(
                || format!("cannot convert layer {} ({}) to squashfs", i + 1, l.digest),
            )?;
            outs.push(out);
        }
    } else {
        let out = work.join("squashed.sqfs");
        squashfs_of_squashed(&record.layout, &record.layers, sqfstar, &out)
            .context("cannot squash the layers into one squashfs")?;
        outs.push(out);
    }
    for out in outs {
        let (digest, size) = hash_file(&out)?;
        layers.push(Descriptor {
            media_type: crate::sif::SQUASHFS_LAYER.into(),
            digest: digest.to_string(),
            size,
            annotations: None,
        });
        objs.push(Object {
            data_type: sif::DATA_OCI_BLOB,
            source: Source::File(out),
            digest,
            size,
        });
    }
    let config = config_bytes(record, &layers)?;
    let config_desc = descriptor(media::OCI_CONFIG, &config);
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": media::OCI_MANIFEST,
        "config": config_desc,
        "layers": layers,
    }))?;
    let manifest_desc = descriptor(media::OCI_MANIFEST, &manifest);
    let mut platform = serde_json::json!({
        "architecture": record.platform.architecture,
        "os": record.platform.os,
    });
    if let Some(v) = &record.platform.variant {
        platform["variant"] = v.clone().into();
    }
    let mut entry = serde_json::to_value(&manifest_desc)?;
    entry["platform"] = platform;
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": media::OCI_INDEX,
        "manifests": [entry],
    }))?;
    for (data_type, bytes) in [
        (sif::DATA_OCI_BLOB, config),
        (sif::DATA_OCI_BLOB, manifest),
        (sif::DATA_OCI_ROOT_INDEX, index),
    ] {
        objs.push(Object {
            data_type,
            digest: Digest::of_bytes(&bytes),
            size: bytes.len() as u64,
            source: Source::Bytes(bytes),
        });
    }
    Ok(objs)
}

fn descriptor(media_type: &str, bytes: &[u8]) -> Descriptor {
    Descriptor {
        media_type: media_type.into(),
        digest: Digest::of_bytes(bytes).to_string(),
        size: bytes.len() as u64,
        annotations: None,
    }
}

/// The source's config (re-read from the layout and checked) with the squashfs layers' diff IDs.
fn config_bytes(record: &ImageRecord, layers: &[Descriptor]) -> Result<Vec<u8>> {
    let bytes = read_blob(&record.layout, &record.config, media::MAX_CONFIG)?;
    let mut config: serde_json::Value =
        serde_json::from_slice(&bytes).context("the image config is not valid JSON")?;
    let ids: Vec<serde_json::Value> = layers.iter().map(|l| l.digest.clone().into()).collect();
    config["rootfs"] = serde_json::json!({"type": "layers", "diff_ids": ids});
    Ok(serde_json::to_vec(&config)?)
}

fn blob_path(layout: &Path, d: &Descriptor) -> Result<PathBuf> {
    let digest = Digest::parse(&d.digest)?;
    Ok(common::cache::blob_path_in(layout, &digest))
}

fn open_blob(layout: &Path, d: &Descriptor) -> Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    let p = blob_path(layout, d)?;
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&p)
        .with_context(|| format!("cannot open blob {}", p.display()))
}

fn read_blob(layout: &Path, d: &Descriptor, limit: u64) -> Result<Vec<u8>> {
    let mut bytes = Vec::new();
    open_blob(layout, d)?
        .take(limit + 1)
        .read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limit {
        bail!("blob {} is larger than {limit} bytes", d.digest);
    }
    Digest::parse(&d.digest)?.verify_bytes(&bytes, &d.digest)?;
    Ok(bytes)
}

/// sha256 and length of a file.
fn hash_file(p: &Path) -> Result<(Digest, u64)> {
    let f = File::open(p).with_context(|| format!("cannot open {}", p.display()))?;
    let mut r = common::digest::HashingReader::new(BufReader::with_capacity(1 << 20, f));
    std::io::copy(&mut r, &mut std::io::sink())?;
    Ok(r.finish()?)
}

/// The layer's tar stream, decompressed, read from the cache (its digest checked first).
fn layer_tar(layout: &Path, d: &Descriptor) -> Result<Box<dyn Read>> {
    let kind = media::layer_kind(&d.media_type)
        .with_context(|| format!("layer media type '{}' is not a tar layer", d.media_type))?;
    let file = BufReader::with_capacity(1 << 20, open_blob(layout, d)?);
    Ok(match kind.compression {
        Compression::None => Box::new(file),
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(file)),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::with_buffer(file)?),
    })
}

/// What the first read of a layer learns: the newest modification time, whether there are AUFS
/// whiteouts, which directories are opaque, and which directories the layer itself lists.
#[derive(Default)]
struct Scan {
    newest: u64,
    whiteouts: bool,
    opaque: HashSet<Vec<u8>>,
    dirs: HashSet<Vec<u8>>,
    /// Names the layer itself holds, and its hard links (name, target).
    names: HashSet<Vec<u8>>,
    hard_links: Vec<(Vec<u8>, Vec<u8>)>,
    /// A name sqfstar refuses as it is (`.` for the root, as umoci writes it, or a `.` inside).
    odd_names: bool,
}

impl Scan {
    /// The files of lower layers this layer hard-links. A squashfs holds one layer, so such a
    /// link cannot be kept (sqfstar drops it): the file is copied up into this layer instead.
    fn lower_link_targets(&self) -> Vec<Vec<u8>> {
        let mut t: Vec<Vec<u8>> = self
            .hard_links
            .iter()
            .filter(|(_, t)| !self.names.contains(t))
            .map(|(_, t)| t.clone())
            .collect();
        t.sort();
        t.dedup();
        t
    }
}

/// Copy the content of regular file `target` as the layers `lower` (bottom first) leave it
/// into `out`. A hard link there is followed to its own target (a few steps at most).
fn copy_up(layout: &Path, lower: &[Descriptor], target: &[u8], out: &Path) -> Result<()> {
    let mut want = target.to_vec();
    let mut layer = lower.len();
    for _ in 0..(lower.len() + 8) {
        let Some(d) = layer.checked_sub(1).map(|i| &lower[i]) else {
            break;
        };
        let mut found = None;
        let mut ar = tar::Archive::new(layer_tar(layout, d)?);
        for e in ar.entries()? {
            let mut e = e?;
            if normalize(&e.path_bytes()) != want {
                continue;
            }
            let kind = e.header().entry_type();
            found = Some(if kind.is_file() || kind == tar::EntryType::Continuous {
                std::io::copy(&mut e, &mut File::create(out)?)?;
                None
            } else if kind.is_hard_link() {
                e.link_name_bytes().map(|l| normalize(&l))
            } else {
                bail!("/{} is not a regular file", String::from_utf8_lossy(&want));
            });
        }
        match found {
            Some(None) => return Ok(()),
            // A link within that layer: look for its target there again.
            Some(Some(t)) => want = t,
            None => layer -= 1,
        }
    }
    bail!(
        "the hard link target /{} is in no lower layer",
        String::from_utf8_lossy(target)
    )
}

fn scan(tar: impl Read) -> Result<Scan> {
    let mut s = Scan::default();
    let mut ar = tar::Archive::new(tar);
    for e in ar.entries().context("cannot read the layer's tar")? {
        let mut e = e.context("cannot read the layer's tar")?;
        s.newest = s.newest.max(entry_mtime(&mut e)?);
        let raw = e.path_bytes().into_owned();
        s.odd_names |= raw == b"." || has_dot_component(&raw);
        let path = normalize(&raw);
        let (parent, base) = split(&path);
        if base == OPAQUE {
            s.whiteouts = true;
            s.opaque.insert(parent.to_vec());
        } else if base.starts_with(WHITEOUT) {
            s.whiteouts = true;
        }
        let kind = e.header().entry_type();
        if kind.is_hard_link()
            && let Some(t) = e.link_name_bytes()
        {
            s.hard_links.push((path.clone(), normalize(&t)));
        } else {
            s.names.insert(path.clone());
        }
        if kind.is_dir() {
            s.dirs.insert(path);
        }
    }
    Ok(s)
}

/// An entry's modification time in whole seconds, rounded up when an extended header gives
/// a fraction (no file's time may lie after the one `SOURCE_DATE_EPOCH` fixes).
pub(crate) fn entry_mtime<R: Read>(e: &mut tar::Entry<R>) -> Result<u64> {
    let mut t = e.header().mtime().unwrap_or(0);
    if let Some(exts) = e.pax_extensions()? {
        for x in exts.flatten() {
            if x.key_bytes() == b"mtime"
                && let Some(secs) = std::str::from_utf8(x.value_bytes())
                    .ok()
                    .and_then(|v| v.split('.').next()?.parse::<u64>().ok())
            {
                t = t.max(secs + 1);
            }
        }
    }
    Ok(t)
}

/// A tar member name without `./`, leading or trailing slashes.
pub(crate) fn normalize(p: &[u8]) -> Vec<u8> {
    let mut p = p;
    loop {
        if let Some(r) = p.strip_prefix(b"./") {
            p = r;
        } else if let Some(r) = p.strip_prefix(b"/") {
            p = r;
        } else {
            break;
        }
    }
    while let Some(r) = p.strip_suffix(b"/") {
        p = r;
    }
    if p == b"." { Vec::new() } else { p.to_vec() }
}

/// Whether a name has a `.` or `..` component after its leading `./` and `/` (which sqfstar
/// skips itself).
fn has_dot_component(p: &[u8]) -> bool {
    let mut p = p;
    while let Some(r) = p.strip_prefix(b"./").or_else(|| p.strip_prefix(b"/")) {
        p = r;
    }
    p.split(|&c| c == b'/').any(|c| c == b"." || c == b"..")
}

/// (parent, base name) of a normalized path; the parent of a top-level name is empty.
pub(crate) fn split(p: &[u8]) -> (&[u8], &[u8]) {
    match p.iter().rposition(|&c| c == b'/') {
        Some(i) => (&p[..i], &p[i + 1..]),
        None => (&[], p),
    }
}

fn join(parent: &[u8], name: &[u8]) -> Vec<u8> {
    let mut p = parent.to_vec();
    if !p.is_empty() {
        p.push(b'/');
    }
    p.extend_from_slice(name);
    p
}

/// Run sqfstar on layer `d` (above the layers `lower`), writing the squashfs to `out`.
fn squashfs_layer(
    layout: &Path,
    d: &Descriptor,
    lower: &[Descriptor],
    sqfstar: &Path,
    out: &Path,
) -> Result<()> {
    verify_blob(layout, d)?;
    let s = scan(layer_tar(layout, d)?)?;
    let mut copied = HashMap::new();
    for (k, t) in s.lower_link_targets().into_iter().enumerate() {
        let file = out.with_extension(format!("up{k}"));
        copy_up(layout, lower, &t, &file).with_context(|| {
            format!(
                "cannot copy up /{}, which the layer hard-links",
                String::from_utf8_lossy(&t)
            )
        })?;
        copied.insert(t, file);
    }
    run_sqfstar(sqfstar, out, s.newest, |stdin| {
        if s.whiteouts || s.odd_names || !copied.is_empty() {
            to_overlay_whiteouts(layer_tar(layout, d)?, stdin, &s, &copied)
        } else {
            let mut stdin = stdin;
            std::io::copy(&mut layer_tar(layout, d)?, &mut stdin)?;
            Ok(stdin.flush()?)
        }
    })
}

/// The layers `layers` squashed into one squashfs at `out` (see squash.rs).
fn squashfs_of_squashed(
    layout: &Path,
    layers: &[Descriptor],
    sqfstar: &Path,
    out: &Path,
) -> Result<()> {
    for d in layers {
        verify_blob(layout, d)?;
    }
    let tars = || layers.iter().map(|d| layer_tar(layout, d));
    let plan = squash::Plan::read(&mut tars())?;
    run_sqfstar(sqfstar, out, plan.newest, |stdin| {
        plan.write(&mut tars(), stdin)
    })
}

/// The cache verified the blob when it was stored; check again before building on it.
fn verify_blob(layout: &Path, d: &Descriptor) -> Result<()> {
    let (got, _) = hash_file(&blob_path(layout, d)?)?;
    if got.to_string() != d.digest {
        bail!(
            "blob {} in the cache no longer matches its digest",
            d.digest
        );
    }
    Ok(())
}

/// Run sqfstar writing `out` from the tar stream `feed` writes, with SingularityCE's root
/// owner and mode and `SOURCE_DATE_EPOCH` = `newest` (see the module comment).
fn run_sqfstar(
    sqfstar: &Path,
    out: &Path,
    newest: u64,
    feed: impl FnOnce(BufWriter<std::process::ChildStdin>) -> Result<()>,
) -> Result<()> {
    let log_path = out.with_extension("log");
    let log = File::create(&log_path)?;
    let mut child = Command::new(sqfstar)
        .args(["-quiet", "-no-progress"])
        .args(["-root-uid", "0", "-root-gid", "0", "-root-mode", "0755"])
        .arg(out)
        .env("SOURCE_DATE_EPOCH", newest.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .with_context(|| format!("cannot run {}", sqfstar.display()))?;
    let stdin = BufWriter::with_capacity(1 << 20, child.stdin.take().expect("piped stdin"));
    let fed = feed(stdin);
    let status = child.wait()?;
    if !status.success() {
        let mut msg = String::new();
        let _ = File::open(&log_path).and_then(|f| f.take(4096).read_to_string(&mut msg));
        let msg = msg
            .lines()
            .filter(|l| !l.trim().is_empty())
            .collect::<Vec<_>>()
            .join("; ");
        bail!("sqfstar failed ({status}): {msg}");
    }
    fed.context("cannot feed the layer to sqfstar")
}

/// Copy a tar stream, turning AUFS whiteouts into OverlayFS ones (see the module comment), with
/// names normalized and without an entry for the root (sqfstar gives the root its own owner
/// and mode). A hard link to a file of a lower layer becomes a regular file with the content in
/// `copied` (the link's target → that content); further links to it link to that copy.
fn to_overlay_whiteouts(
    tar_in: impl Read,
    out: impl Write,
    s: &Scan,
    copied: &HashMap<Vec<u8>, PathBuf>,
) -> Result<()> {
    let mut ar = tar::Archive::new(tar_in);
    let mut b = tar::Builder::new(out);
    let mut first_copy: HashMap<Vec<u8>, Vec<u8>> = HashMap::new();
    for e in ar.entries()? {
        let mut e = e?;
        let path = normalize(&e.path_bytes());
        if path.is_empty() {
            continue;
        }
        if e.header().entry_type() == tar::EntryType::GNUSparse {
            bail!(
                "/{} is a GNU sparse file, which this converter does not rewrite",
                String::from_utf8_lossy(&path)
            );
        }
        let (parent, base) = split(&path);
        let mut pax: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        if let Some(exts) = e.pax_extensions()? {
            for x in exts {
                let x = x?;
                if !matches!(x.key_bytes(), b"path" | b"linkpath") {
                    pax.push((x.key_bytes().to_vec(), x.value_bytes().to_vec()));
                }
            }
        }
        let mut h = e.header().clone();
        if base == OPAQUE {
            // The directory carries the mark; one the layer does not list is made here.
            if !s.dirs.contains(parent) {
                let mut dh = tar::Header::new_gnu();
                dh.set_entry_type(tar::EntryType::Directory);
                dh.set_mode(0o755);
                dh.set_size(0);
                dh.set_uid(0);
                dh.set_gid(0);
                dh.set_mtime(h.mtime().unwrap_or(0));
                write_pax(&mut b, &[(OPAQUE_XATTR.to_vec(), b"y".to_vec())])?;
                b.append_data(&mut dh, as_path(parent), std::io::empty())?;
            }
            continue;
        }
        let mut name = path.clone();
        let whiteout = base.starts_with(WHITEOUT);
        if whiteout {
            name = join(parent, &base[WHITEOUT.len()..]);
            h.set_entry_type(tar::EntryType::Char);
            h.set_size(0);
            h.set_device_major(0)?;
            h.set_device_minor(0)?;
        } else if h.entry_type().is_dir() && s.opaque.contains(&path) {
            pax.push((OPAQUE_XATTR.to_vec(), b"y".to_vec()));
        }
        write_pax(&mut b, &pax)?;
        let kind = h.entry_type();
        let link = e.link_name_bytes().map(|l| l.into_owned());
        match link {
            Some(l) if kind.is_hard_link() && copied.contains_key(&normalize(&l)) => {
                let t = normalize(&l);
                if let Some(first) = first_copy.get(&t) {
                    b.append_link(&mut h, as_path(&name), as_path(first))?
                } else {
                    let f = File::open(&copied[&t])?;
                    h.set_entry_type(tar::EntryType::Regular);
                    h.set_size(f.metadata()?.len());
                    b.append_data(&mut h, as_path(&name), f)?;
                    first_copy.insert(t, name.clone());
                }
            }
            Some(l) if kind.is_hard_link() || kind.is_symlink() => {
                b.append_link(&mut h, as_path(&name), as_path(&l))?
            }
            _ if whiteout => b.append_data(&mut h, as_path(&name), std::io::empty())?,
            _ => b.append_data(&mut h, as_path(&name), &mut e)?,
        }
    }
    b.into_inner()?.flush()?;
    Ok(())
}

pub(crate) fn as_path(b: &[u8]) -> &Path {
    use std::os::unix::ffi::OsStrExt;
    Path::new(std::ffi::OsStr::from_bytes(if b.is_empty() {
        b"."
    } else {
        b
    }))
}

pub(crate) fn write_pax<W: Write>(
    b: &mut tar::Builder<W>,
    records: &[(Vec<u8>, Vec<u8>)],
) -> Result<()> {
    if records.is_empty() {
        return Ok(());
    }
    let body = common::pax::body(records);
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(tar::EntryType::XHeader);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h.set_size(body.len() as u64);
    b.append_data(&mut h, "././@PaxHeader", body.as_slice())?;
    Ok(())
}

/// The SIF itself: header, descriptor table, then the objects in order.
fn write_sif(tmp: &Path, objects: &[Object]) -> Result<()> {
    let file = save::create_new(tmp)?;
    let n = objects.len() as u64;
    let table_len = n * sif::DESCRIPTOR_LEN;
    let data_at = DESCRIPTORS_AT + table_len;
    let mut w = BufWriter::with_capacity(1 << 20, file);
    w.seek(SeekFrom::Start(data_at))?;
    let mut table = Vec::with_capacity(table_len as usize);
    let mut at = data_at;
    for (i, o) in objects.iter().enumerate() {
        let written = match &o.source {
            Source::Bytes(b) => {
                w.write_all(b)?;
                b.len() as u64
            }
            Source::File(p) => {
                let mut f = File::open(p)?;
                std::io::copy(&mut f, &mut w)?
            }
        };
        if written != o.size {
            bail!("object {} changed size while it was written", i + 1);
        }
        table.extend_from_slice(&descriptor_bytes(i as u32 + 1, o, at));
        at += o.size;
    }
    w.seek(SeekFrom::Start(0))?;
    w.write_all(&header_bytes(n, at - data_at))?;
    w.write_all(&vec![0u8; (DESCRIPTORS_AT - sif::HEADER_LEN) as usize])?;
    w.write_all(&table)?;
    let file = w.into_inner().map_err(|e| e.into_error())?;
    file.sync_all().context("cannot sync the OCI-SIF")?;
    Ok(())
}

/// The 128-byte global header (sylabs/sif's layout, little endian).
fn header_bytes(descriptors: u64, data_size: u64) -> Vec<u8> {
    let mut h = vec![0u8; sif::HEADER_LEN as usize];
    // No launch script: oci-tools writes none (the file is not directly executable).
    h[sif::MAGIC_AT..sif::MAGIC_AT + sif::MAGIC.len()].copy_from_slice(sif::MAGIC);
    h[42..44].copy_from_slice(b"01");
    // Architecture "00": unknown, as an OCI-SIF (no partition) leaves it. ID: nil UUID.
    h[45..47].copy_from_slice(b"00");
    let put = |h: &mut Vec<u8>, at: usize, v: i64| h[at..at + 8].copy_from_slice(&v.to_le_bytes());
    put(&mut h, 64, GO_ZERO_TIME);
    put(&mut h, 72, GO_ZERO_TIME);
    put(&mut h, 80, 0); // free descriptors
    put(&mut h, 88, descriptors as i64);
    put(&mut h, 96, DESCRIPTORS_AT as i64);
    put(&mut h, 104, (descriptors * sif::DESCRIPTOR_LEN) as i64);
    put(
        &mut h,
        112,
        (DESCRIPTORS_AT + descriptors * sif::DESCRIPTOR_LEN) as i64,
    );
    put(&mut h, 120, data_size as i64);
    h
}

/// One 585-byte descriptor.
fn descriptor_bytes(id: u32, o: &Object, offset: u64) -> Vec<u8> {
    let mut d = vec![0u8; sif::DESCRIPTOR_LEN as usize];
    d[0..4].copy_from_slice(&o.data_type.to_le_bytes());
    d[4] = 1; // used
    d[5..9].copy_from_slice(&id.to_le_bytes());
    d[9..13].copy_from_slice(&(sif::GROUP_MASK | DEFAULT_GROUP).to_le_bytes());
    // 13..17: linked object, none.
    d[17..25].copy_from_slice(&(offset as i64).to_le_bytes());
    d[25..33].copy_from_slice(&(o.size as i64).to_le_bytes());
    d[33..41].copy_from_slice(&(o.size as i64).to_le_bytes()); // size with padding: none
    d[41..49].copy_from_slice(&GO_ZERO_TIME.to_le_bytes());
    d[49..57].copy_from_slice(&GO_ZERO_TIME.to_le_bytes());
    // 57..73: the deprecated UID and GID, 0; 73..201: no name.
    let digest = o.digest.to_string();
    d[201..201 + digest.len()].copy_from_slice(digest.as_bytes());
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_normalize_and_split() {
        assert_eq!(normalize(b"./a/b/"), b"a/b");
        assert_eq!(normalize(b"./"), b"");
        assert_eq!(split(b"a/b/.wh.c"), (&b"a/b"[..], &b".wh.c"[..]));
        assert_eq!(split(b".wh.c"), (&b""[..], &b".wh.c"[..]));
        assert!(has_dot_component(b"a/./b") && has_dot_component(b"./a/.."));
        assert!(!has_dot_component(b"./a/b") && !has_dot_component(b"/.wh..wh..opq"));
    }

    #[test]
    fn whiteouts_become_overlayfs_markers() {
        let mut src = tar::Builder::new(Vec::new());
        for (name, kind) in [
            ("d/", tar::EntryType::Directory),
            ("d/.wh..wh..opq", tar::EntryType::Regular),
            ("d/keep", tar::EntryType::Regular),
            (".wh.gone", tar::EntryType::Regular),
            ("e/.wh..wh..opq", tar::EntryType::Regular),
        ] {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(kind);
            h.set_mode(0o644);
            h.set_mtime(7);
            h.set_size(0);
            h.set_uid(0);
            h.set_gid(0);
            src.append_data(&mut h, name, std::io::empty()).unwrap();
        }
        let src = src.into_inner().unwrap();
        let s = scan(src.as_slice()).map_err(|e| format!("{e:#}")).unwrap();
        assert!(s.whiteouts && s.newest == 7);
        let mut out = Vec::new();
        to_overlay_whiteouts(src.as_slice(), &mut out, &s, &HashMap::new()).unwrap();
        let mut ar = tar::Archive::new(out.as_slice());
        let mut seen = Vec::new();
        for e in ar.entries().unwrap() {
            let mut e = e.unwrap();
            let opaque = e
                .pax_extensions()
                .unwrap()
                .map(|x| x.flatten().any(|x| x.key_bytes() == OPAQUE_XATTR))
                .unwrap_or(false);
            let name = String::from_utf8_lossy(&e.path_bytes()).into_owned();
            seen.push((name, e.header().entry_type(), opaque));
        }
        use tar::EntryType::*;
        assert_eq!(
            seen,
            [
                ("d".to_string(), Directory, true),
                ("d/keep".to_string(), Regular, false),
                ("gone".to_string(), Char, false),
                ("e".to_string(), Directory, true),
            ]
        );
    }

    #[test]
    fn header_and_descriptor_follow_sylabs_sif() {
        let h = header_bytes(3, 100);
        assert!(sif::has_magic(&h));
        assert_eq!(&h[48..64], &[0u8; 16]);
        let o = Object {
            data_type: sif::DATA_OCI_BLOB,
            source: Source::Bytes(vec![]),
            digest: Digest::of_bytes(b""),
            size: 0,
        };
        let d = descriptor_bytes(2, &o, 5000);
        assert_eq!(i32::from_le_bytes(d[0..4].try_into().unwrap()), 0x400B);
        assert_eq!(&d[201..208], b"sha256:");
    }
}
