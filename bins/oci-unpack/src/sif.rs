//! Layers that live inside a SIF file (native SIF and OCI-SIF): squashfs images read in place
//! and applied through the same applier as tar layers.
//!
//! A squashfs walk runs on a thread of its own and writes a tar stream into a pipe; the applier
//! reads it on this thread. The decompression and the applier's system calls run side by side,
//! the way the tar producer and the applier do for OCI layers, and memory stays bounded by the
//! pipe and one block.

use crate::apply::{Applier, Stats};
use crate::ownership::Ownership;
use crate::squashfs::{Image, totar::Walk};
use anyhow::{Context, Result, anyhow, bail};
use common::progress::Progress;
use common::record::{ImageRecord, SifObject, SifSource};
use std::fs::File;
use std::io::{BufReader, BufWriter};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;
use std::sync::Arc;

/// Layer media types read from SIF objects.
pub const SQUASHFS_LAYER: &str = "application/vnd.sylabs.image.layer.v1.squashfs";
/// Room in the pipe between the walk and the applier.
const PIPE_SIZE: i32 = 1 << 20;

/// Open the SIF a record names, refusing it when it is no longer the file oci-fetch read.
fn open_checked(src: &SifSource) -> Result<File> {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_CLOEXEC)
        .open(&src.path)
        .with_context(|| format!("cannot open SIF {}", src.path.display()))?;
    check_identity(&f, src)?;
    Ok(f)
}

fn check_identity(f: &File, src: &SifSource) -> Result<()> {
    let m = f.metadata()?;
    let now = (
        m.dev(),
        m.ino(),
        m.size(),
        m.mtime() * 1_000_000_000 + m.mtime_nsec(),
        m.ctime() * 1_000_000_000 + m.ctime_nsec(),
    );
    if now != (src.dev, src.ino, src.size, src.mtime_ns, src.ctime_ns) {
        bail!(
            "{} changed after oci-fetch read it (run oci-fetch again)",
            src.path.display()
        );
    }
    Ok(())
}

/// Apply every layer of a SIF-backed record into `root` (existing, empty).
pub fn unpack_into(
    record: &ImageRecord,
    src: &SifSource,
    root: &Path,
    ownership: Ownership,
    max_bytes: u64,
) -> Result<Stats> {
    if src.objects.len() != record.layers.len() {
        bail!(
            "image record lists {} layers but {} SIF objects",
            record.layers.len(),
            src.objects.len()
        );
    }
    let file = open_checked(src)?;
    // OCI-SIF layers mark deletions the OverlayFS way; a native SIF partition is a plain tree.
    let overlay_whiteouts = record.transport == "oci-sif";
    let mut applier = Applier::new(root, ownership)?;
    let mut sockets = 0;
    // Bar i is partition i: bytes of the squashfs read, and the total under them.
    let progress = Arc::new(Progress::new(false).with_total());
    for (i, obj) in src.objects.iter().enumerate() {
        progress.start(
            &format!("partition {}/{}", i + 1, src.objects.len()),
            obj.size,
        );
    }
    for (i, (layer, obj)) in record.layers.iter().zip(&src.objects).enumerate() {
        if layer.media_type != SQUASHFS_LAYER {
            bail!(
                "layer {} of the SIF has media type '{}'; only squashfs layers are read",
                i + 1,
                layer.media_type
            );
        }
        if obj
            .offset
            .checked_add(obj.size)
            .is_none_or(|e| e > src.size)
        {
            bail!("layer {} lies outside the SIF file", i + 1);
        }
        let report = Some((progress.clone(), i));
        sockets += apply_squashfs(
            &mut applier,
            &file,
            *obj,
            max_bytes,
            overlay_whiteouts,
            report,
        )
        .with_context(|| format!("layer {} ({})", i + 1, layer.digest))?;
        progress.finish(i);
    }
    // The tree is only as good as the file was for the whole read.
    check_identity(&file, src)?;
    let stats = applier.finish()?;
    crate::unpack::warn_skipped(&stats);
    if sockets > 0 {
        common::cli::warn(format!(
            "skipped {sockets} socket(s): they cannot be unpacked"
        ));
    }
    Ok(stats)
}

/// Apply one squashfs object of `file` as a layer; returns how many sockets were left out.
/// With `overlay_whiteouts`, OverlayFS whiteouts in it delete from the layers below.
pub fn apply_squashfs(
    applier: &mut Applier,
    file: &File,
    obj: SifObject,
    max_bytes: u64,
    overlay_whiteouts: bool,
    report: Option<(Arc<Progress>, usize)>,
) -> Result<u64> {
    let (reader, writer) = std::io::pipe().context("cannot create a pipe")?;
    // SAFETY: F_SETPIPE_SZ only resizes the pipe buffer; failure keeps the default size.
    unsafe { libc::fcntl(writer.as_raw_fd(), libc::F_SETPIPE_SZ, PIPE_SIZE) };
    let file = file.try_clone()?;
    let walker = std::thread::Builder::new()
        .name("squashfs-walk".into())
        .spawn(move || -> Result<u64> {
            let mut img = Image::open(file, obj.offset, obj.size)?;
            if let Some((p, id)) = report {
                img.report_to(p, id);
            }
            let out = BufWriter::with_capacity(256 << 10, writer);
            let mut walk = Walk::new(&mut img, out, max_bytes);
            if overlay_whiteouts {
                walk = walk.overlay_whiteouts();
            }
            let (_, sockets) = walk.run()?;
            Ok(sockets)
        })
        .context("cannot start the squashfs reader thread")?;
    let mut reader = BufReader::with_capacity(256 << 10, reader);
    let applied = applier.apply_layer(&mut reader);
    if applied.is_ok() {
        // Anything after the end marker (there should be nothing) is drained so the walk ends.
        let _ = std::io::copy(&mut reader, &mut std::io::sink());
    }
    drop(reader);
    let walked = walker
        .join()
        .map_err(|_| anyhow!("the squashfs reader thread panicked"))?;
    match (applied, walked) {
        (Ok(()), Ok(sockets)) => Ok(sockets),
        (Ok(()), Err(w)) => Err(w),
        (Err(a), Ok(_)) => Err(a),
        // The applier stopping closes the pipe under the walk: then the applier's error is the
        // real one. Otherwise the walk failed first (a corrupt image), and the applier only saw
        // the stream end early.
        (Err(a), Err(w)) => Err(if is_broken_pipe(&w) { a } else { w }),
    }
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}
