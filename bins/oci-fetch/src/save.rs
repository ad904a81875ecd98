//! `--save-archive FILE`: write the fetched image as one self-contained file, an OCI archive
//! (a tar of an OCI image layout holding just this image), so `pull --name FILE` and
//! `build FILE IMAGE` leave a file that later runs read with the `oci-archive:` transport.
//!
//! The file appears whole or not at all: it is written under a temporary name in the target
//! directory, synced, then renamed into place. An existing file is only replaced with `force`.
//! Every blob is re-hashed while it is copied, so a cache entry damaged since it was verified
//! never ends up in an archive.

use anyhow::{Context, Result, bail};
use common::digest::{Digest, HashingReader, check_stream};
use common::record::{Descriptor, ImageRecord};
use std::fs::OpenOptions;
use std::io::{BufWriter, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// The `org.opencontainers.image.ref.name` the single index entry gets, so both
/// `oci-archive:FILE` and `oci-archive:FILE:latest` select it.
const REF_NAME: &str = "latest";

/// Write `record`'s image (manifest, config, layers from `record.layout`) to `out`.
pub fn write_oci_archive(record: &ImageRecord, out: &Path, force: bool) -> Result<()> {
    write_whole(out, force, |tmp| write_to(record, tmp))
}

/// Make the file `out` with `write` (which creates the temporary path it is given), whole or
/// not at all: an existing file is replaced only with `force`, and on failure nothing is left.
pub fn write_whole(out: &Path, force: bool, write: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let out = common::fsutil::absolute(out)?;
    match std::fs::symlink_metadata(&out) {
        Ok(m) if m.is_dir() => bail!("{} is a directory", out.display()),
        Ok(_) if !force => bail!(
            "image file already exists: {} - will not overwrite (use --force)",
            out.display()
        ),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("cannot stat {}", out.display())),
    }
    let tmp = common::fsutil::temp_sibling(&out);
    let result = write(&tmp).and_then(|()| {
        std::fs::rename(&tmp, &out)
            .with_context(|| format!("cannot rename {} to {}", tmp.display(), out.display()))
    });
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Create `path` for writing: a new file (O_EXCL), never through a symlink someone planted.
pub fn create_new(path: &Path) -> Result<std::fs::File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))
}

fn write_to(record: &ImageRecord, tmp: &Path) -> Result<()> {
    let file = create_new(tmp)?;
    let mut tar = tar::Builder::new(BufWriter::new(file));
    tar.mode(tar::HeaderMode::Deterministic);
    add_bytes(&mut tar, "oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    add_bytes(&mut tar, "index.json", &index_json(&record.manifest)?)?;
    add_dir(&mut tar, "blobs/")?;
    add_dir(&mut tar, "blobs/sha256/")?;
    let mut written = std::collections::HashSet::new();
    for d in std::iter::once(&record.manifest)
        .chain(std::iter::once(&record.config))
        .chain(record.layers.iter())
    {
        if written.insert(d.digest.clone()) {
            add_blob(&mut tar, &record.layout, d)?;
        }
    }
    let file = tar
        .into_inner()
        .context("cannot finish the archive")?
        .into_inner()
        .map_err(|e| e.into_error())
        .context("cannot write the archive")?;
    file.sync_all().context("cannot sync the archive")?;
    Ok(())
}

/// An index with the one manifest, tagged [`REF_NAME`].
fn index_json(manifest: &Descriptor) -> Result<Vec<u8>> {
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": manifest.media_type,
            "digest": manifest.digest,
            "size": manifest.size,
            "annotations": {"org.opencontainers.image.ref.name": REF_NAME},
        }],
    });
    Ok(serde_json::to_vec(&index)?)
}

fn header(kind: tar::EntryType, size: u64, mode: u32) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(kind);
    h.set_size(size);
    h.set_mode(mode);
    h.set_mtime(0);
    h.set_uid(0);
    h.set_gid(0);
    h
}

fn add_bytes<W: Write>(tar: &mut tar::Builder<W>, name: &str, bytes: &[u8]) -> Result<()> {
    let mut h = header(tar::EntryType::Regular, bytes.len() as u64, 0o644);
    tar.append_data(&mut h, name, bytes)
        .with_context(|| format!("cannot add {name} to the archive"))
}

fn add_dir<W: Write>(tar: &mut tar::Builder<W>, name: &str) -> Result<()> {
    let mut h = header(tar::EntryType::Directory, 0, 0o755);
    tar.append_data(&mut h, name, std::io::empty())
        .with_context(|| format!("cannot add {name} to the archive"))
}

/// Copy one blob from the layout, checking its size and digest on the way.
fn add_blob<W: Write>(tar: &mut tar::Builder<W>, layout: &Path, d: &Descriptor) -> Result<()> {
    let digest = Digest::parse(&d.digest)?;
    let src: PathBuf = layout
        .join("blobs")
        .join(digest.algorithm())
        .join(digest.hex());
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&src)
        .with_context(|| format!("cannot open blob {}", src.display()))?;
    let len = file.metadata()?.len();
    if len != d.size {
        bail!(
            "blob {} is {len} bytes, the image says {}",
            src.display(),
            d.size
        );
    }
    let mut reader = HashingReader::new(file.take(d.size));
    let name = format!("blobs/{}/{}", digest.algorithm(), digest.hex());
    let mut h = header(tar::EntryType::Regular, d.size, 0o644);
    tar.append_data(&mut h, &name, &mut reader)
        .with_context(|| format!("cannot add {name} to the archive"))?;
    let (got, size) = reader.finish()?;
    check_stream(&digest, Some(d.size), &got, size, &name)
}

/// Open an archive this module wrote and list its entry names (for tests).
#[cfg(test)]
fn entry_names(path: &Path) -> Vec<String> {
    let mut a = tar::Archive::new(std::fs::File::open(path).unwrap());
    a.entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(layout: &Path, bytes: &[u8], media: &str) -> Descriptor {
        let d = Digest::of_bytes(bytes);
        let dir = layout.join("blobs/sha256");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(d.hex()), bytes).unwrap();
        Descriptor {
            media_type: media.into(),
            digest: d.to_string(),
            size: bytes.len() as u64,
            annotations: None,
        }
    }

    fn record(layout: &Path) -> ImageRecord {
        let manifest = put(
            layout,
            b"{\"m\":1}",
            "application/vnd.oci.image.manifest.v1+json",
        );
        let config = put(
            layout,
            b"{\"c\":1}",
            "application/vnd.oci.image.config.v1+json",
        );
        let layer = put(layout, b"layer", "application/vnd.oci.image.layer.v1.tar");
        ImageRecord::new(
            "oci:x",
            "oci",
            layout.to_path_buf(),
            manifest,
            config,
            vec![layer.clone(), layer],
            serde_json::json!({}),
        )
    }

    #[test]
    fn writes_a_layout_once_per_blob_and_refuses_to_overwrite() {
        let t = tempfile::tempdir().unwrap();
        let rec = record(&t.path().join("layout"));
        let out = t.path().join("img.tar");
        write_oci_archive(&rec, &out, false).unwrap();
        let names = entry_names(&out);
        assert_eq!(names[..2], ["oci-layout", "index.json"]);
        assert_eq!(
            names
                .iter()
                .filter(|n| n.starts_with("blobs/sha256/"))
                .count(),
            4
        );
        let err = write_oci_archive(&rec, &out, false).unwrap_err();
        assert!(format!("{err:#}").contains("will not overwrite"), "{err:#}");
        write_oci_archive(&rec, &out, true).unwrap();
        let leftovers: Vec<_> = std::fs::read_dir(t.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(leftovers.len(), 2, "{leftovers:?}");
    }

    #[test]
    fn a_damaged_blob_leaves_no_file() {
        let t = tempfile::tempdir().unwrap();
        let layout = t.path().join("layout");
        let rec = record(&layout);
        let d = Digest::parse(&rec.layers[0].digest).unwrap();
        std::fs::write(layout.join("blobs/sha256").join(d.hex()), b"LAYER").unwrap();
        let out = t.path().join("img.tar");
        let err = write_oci_archive(&rec, &out, false).unwrap_err();
        assert!(format!("{err:#}").contains("digest mismatch"), "{err:#}");
        assert!(!out.exists());
        assert_eq!(std::fs::read_dir(t.path()).unwrap().count(), 1);
    }
}
