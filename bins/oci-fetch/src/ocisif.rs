//! OCI-SIF images (SingularityCE 4's `--oci` format): an OCI image kept inside a SIF file, as
//! sylabs/sif and sylabs/oci-tools lay it out. The root index is the one `OCI.RootIndex`
//! object; every other blob (nested indexes, manifests, configs, layers) is an `OCI.Blob`
//! object whose descriptor records the blob's digest.
//!
//! Every blob read is checked against its digest: the root index against its descriptor, the
//! rest against the digest the parent document names. Manifests and configs are small and are
//! hashed on every read; a layer is hashed once and its digest remembered in `CACHE/sif/`
//! against the file's identity, as for a native SIF, so a warm run reads no layer data. The
//! layers (squashfs, one per OCI layer) stay in the file; `oci-unpack` applies them in place.

use crate::media::{self, Doc, RawDescriptor, Wanted};
use crate::sif::{self, Opened};
use anyhow::{Context, Result, bail};
use common::digest::Digest;
use common::record::{ImageRecord, Platform, SifObject};
use common::sif::{Descriptor as SifDescriptor, Sif};
use std::os::unix::fs::FileExt;

/// The writable overlay SingularityCE's `overlay create` appends as an OCI-SIF's last layer.
pub const EXT3_LAYER: &str = "application/vnd.sylabs.image.layer.v1.ext3";
/// Nested indexes followed from the root index before giving up.
const MAX_INDEX_DEPTH: usize = 4;

/// Read a small object whole and check it against `digest`.
fn read_blob(
    o: &Opened,
    d: &SifDescriptor,
    digest: &str,
    limit: u64,
    what: &str,
) -> Result<Vec<u8>> {
    if d.size > limit {
        bail!(
            "the {what} in the OCI-SIF is {} bytes, more than the {limit} allowed",
            d.size
        );
    }
    let mut buf = vec![0u8; d.size as usize];
    o.file
        .read_exact_at(&mut buf, d.offset)
        .with_context(|| format!("cannot read the {what} from the OCI-SIF"))?;
    Digest::parse(digest)?
        .verify_bytes(&buf, &format!("the {what} in the OCI-SIF"))
        .with_context(|| format!("the {what} in the OCI-SIF does not match its digest"))?;
    Ok(buf)
}

/// The object holding the blob a document names, with its size checked.
fn blob<'a>(s: &'a Sif, r: &RawDescriptor, what: &str) -> Result<&'a SifDescriptor> {
    r.digest()
        .with_context(|| format!("the OCI-SIF names its {what} by a malformed digest"))?;
    let d = s.oci_blob(&r.digest).with_context(|| {
        format!(
            "the OCI-SIF is missing its {what} (no OCI.Blob object holds {})",
            r.digest
        )
    })?;
    if d.size != r.size {
        bail!(
            "the OCI-SIF's {what} {} is {} bytes, its descriptor says {}",
            r.digest,
            d.size,
            r.size
        );
    }
    Ok(d)
}

/// The image record of an OCI-SIF for platform `want`.
pub fn record(
    reference: &str,
    o: &Opened,
    s: &Sif,
    want: &Wanted,
    use_cache: bool,
) -> Result<ImageRecord> {
    let root = s.oci_root_index()?;
    let root_digest = root
        .oci_digest()
        .context("the OCI-SIF's root index descriptor records no digest")?;
    let mut bytes = read_blob(o, root, &root_digest, media::MAX_MANIFEST, "root index")?;
    let mut declared = media::OCI_INDEX.to_string();
    let mut from_index = None;
    let mut via: Option<RawDescriptor> = None;
    let mut depth = 0;
    let (manifest_desc, config_raw, layers_raw) = loop {
        match media::parse_doc(&bytes, &declared, "the OCI-SIF's index or manifest")?.0 {
            Doc::Manifest { config, layers } => match via {
                Some(m) => break (m, config, layers),
                None => bail!("the OCI-SIF's root object is a manifest, not an index"),
            },
            Doc::Index(entries) => {
                depth += 1;
                if depth > MAX_INDEX_DEPTH {
                    bail!("the OCI-SIF nests indexes more than {MAX_INDEX_DEPTH} deep");
                }
                if entries.is_empty() {
                    bail!("the OCI-SIF's index lists no manifest: it holds no image");
                }
                let pick = media::select_platform(&entries, want)?.clone();
                let d = blob(s, &pick, "manifest")?;
                bytes = read_blob(o, d, &pick.digest, media::MAX_MANIFEST, "manifest")?;
                declared = pick.media_type.clone();
                if pick.platform.is_some() {
                    from_index = pick.platform.clone();
                }
                via = Some(pick);
            }
        }
    };
    let config_obj = blob(s, &config_raw, "image config")?;
    let config_bytes = read_blob(
        o,
        config_obj,
        &config_raw.digest,
        media::MAX_CONFIG,
        "image config",
    )?;
    let image_config: serde_json::Value = serde_json::from_slice(&config_bytes)
        .context("the OCI-SIF's image config is not valid JSON")?;
    let platform = match &from_index {
        Some(p) => p.to_record(),
        None => Platform::of_config(&image_config),
    };
    if !platform.architecture.is_empty() && platform.architecture != want.arch {
        bail!(
            "the OCI-SIF's image is built for {} and {} was asked for",
            platform.architecture,
            want.arch
        );
    }
    let mut objects = Vec::new();
    for (i, l) in layers_raw.iter().enumerate() {
        match l.media_type.as_str() {
            sif::SQUASHFS_LAYER => {}
            EXT3_LAYER => bail!(
                "layer {} of the OCI-SIF is a writable ext3 overlay (SingularityCE's `overlay create`), which this launcher cannot read without mounting it; turn it into a squashfs layer with `singularity overlay seal FILE` first",
                i + 1
            ),
            other => bail!(
                "layer {} of the OCI-SIF has media type '{other}'; an OCI-SIF holds only squashfs layers ({})",
                i + 1,
                sif::SQUASHFS_LAYER
            ),
        }
        let d = blob(s, l, &format!("layer {}", i + 1))?;
        objects.push(SifObject {
            offset: d.offset,
            size: d.size,
        });
    }
    if objects.is_empty() {
        bail!("the OCI-SIF's image has no layers");
    }
    let src = sif::source(o, objects.clone());
    for (i, (l, obj)) in layers_raw.iter().zip(&objects).enumerate() {
        verify_layer(o, &src, *obj, &l.digest, use_cache)
            .with_context(|| format!("layer {} of the OCI-SIF", i + 1))?;
    }
    let layers = layers_raw.iter().map(RawDescriptor::to_record).collect();
    let record = ImageRecord::new(
        reference,
        "oci-sif",
        src.path.clone(),
        manifest_desc.to_record(),
        config_raw.to_record(),
        layers,
        image_config,
    );
    Ok(record.with_platform(platform).with_sif(src))
}

/// Check one layer object against its digest: from the remembered digest of this file identity
/// when there is one, else by reading it (and remembering the result).
fn verify_layer(
    o: &Opened,
    src: &common::record::SifSource,
    obj: SifObject,
    want: &str,
    use_cache: bool,
) -> Result<()> {
    let want = Digest::parse(want)?;
    let got = match use_cache
        .then(|| sif::remembered(src, obj))
        .transpose()?
        .flatten()
    {
        Some(d) => d,
        None => {
            let d = sif::hash_object(&o.file, obj)?;
            if d == want && use_cache {
                sif::remember(src, obj, &d)?;
            }
            d
        }
    };
    if got != want {
        bail!("digest mismatch: the blob's content is {got}, the manifest says {want}");
    }
    Ok(())
}
