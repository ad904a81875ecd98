//! `oci:DIR[:TAG|@DIGEST]`: an OCI image layout directory.

use crate::image::{ImageSource, Top};
use crate::media::{self, RawDescriptor};
use crate::reference::Selector;
use crate::store::{BlobSource, Store, read_limited};
use anyhow::{Context, Result, bail};
use common::digest::Digest;
use serde::Deserialize;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

pub const REF_NAME: &str = "org.opencontainers.image.ref.name";

#[derive(Deserialize)]
struct IndexJson {
    #[serde(default)]
    manifests: Vec<RawDescriptor>,
}

/// Pick the entry of a layout's `index.json` that a selector names.
pub fn select_entry(index_bytes: &[u8], sel: &Selector, what: &str) -> Result<RawDescriptor> {
    let index: IndexJson = serde_json::from_slice(index_bytes)
        .with_context(|| format!("{what}: index.json is not a valid image index"))?;
    let tags = || -> String {
        let t: Vec<&str> = index
            .manifests
            .iter()
            .filter_map(|m| m.annotation(REF_NAME))
            .collect();
        if t.is_empty() {
            "none".into()
        } else {
            t.join(", ")
        }
    };
    match sel {
        Selector::Tag(tag) => index
            .manifests
            .iter()
            .find(|m| m.annotation(REF_NAME) == Some(tag.as_str()))
            .cloned()
            .with_context(|| format!("tag '{tag}' not found in {what} (tags: {})", tags())),
        Selector::Digest(d) => {
            let ds = d.to_string();
            match index.manifests.iter().find(|m| m.digest == ds) {
                Some(m) => Ok(m.clone()),
                // A digest of a manifest inside a nested index is fine too: make a descriptor
                // for it and let the blob's own media type speak.
                None => Ok(RawDescriptor {
                    media_type: String::new(),
                    digest: ds,
                    size: 0,
                    annotations: None,
                    platform: None,
                    urls: None,
                }),
            }
        }
        Selector::Only => match index.manifests.len() {
            1 => Ok(index.manifests[0].clone()),
            0 => bail!("{what} holds no images"),
            n => bail!(
                "{what} holds {n} images: name one with :TAG or @DIGEST (tags: {})",
                tags()
            ),
        },
    }
}

pub struct LayoutSource {
    dir: PathBuf,
    sel: Selector,
}

impl LayoutSource {
    pub fn new(dir: &Path, sel: Selector) -> Result<LayoutSource> {
        let marker = dir.join("oci-layout");
        if !dir.is_dir() {
            bail!("OCI layout {} does not exist", dir.display());
        }
        if !marker.is_file() {
            bail!(
                "{} is not an OCI image layout (no oci-layout file)",
                dir.display()
            );
        }
        Ok(LayoutSource {
            dir: dir.to_path_buf(),
            sel,
        })
    }

    fn blob_file(&self, d: &Digest) -> PathBuf {
        common::cache::blob_path_in(&self.dir, d)
    }

    fn what(&self) -> String {
        format!("OCI layout {}", self.dir.display())
    }
}

impl BlobSource for LayoutSource {
    fn open(&self, desc: &RawDescriptor, offset: u64) -> Result<(Box<dyn Read + Send + '_>, u64)> {
        let d = desc.digest()?;
        let p = self.blob_file(&d);
        let mut f = File::open(&p).with_context(|| {
            format!("blob {d} is missing from {} ({})", self.what(), p.display())
        })?;
        if offset > 0 {
            f.seek(SeekFrom::Start(offset))?;
        }
        Ok((Box::new(f), offset))
    }
}

impl ImageSource for LayoutSource {
    fn top(&self, _store: &Store) -> Result<Top> {
        let ip = self.dir.join("index.json");
        let f = File::open(&ip).with_context(|| format!("cannot open {}", ip.display()))?;
        let index = read_limited(f, media::MAX_MANIFEST, &ip.display().to_string())?;
        let entry = select_entry(&index, &self.sel, &self.what())?;
        let d = entry.digest()?;
        let p = self.blob_file(&d);
        let f = File::open(&p)
            .with_context(|| format!("manifest {d} is missing from {}", self.what()))?;
        let bytes = read_limited(f, media::MAX_MANIFEST, &format!("manifest {d}"))?;
        if entry.size != 0 && entry.size != bytes.len() as u64 {
            bail!(
                "size mismatch for manifest {d}: index.json says {} bytes, blob has {}",
                entry.size,
                bytes.len()
            );
        }
        Ok(Top {
            bytes,
            media_type: entry.media_type.clone(),
            expected: Some(d),
            platform: entry.platform.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const IDX: &str = r#"{"schemaVersion":2,"manifests":[
      {"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:1111111111111111111111111111111111111111111111111111111111111111","size":1,"annotations":{"org.opencontainers.image.ref.name":"latest"}},
      {"mediaType":"application/vnd.oci.image.index.v1+json","digest":"sha256:2222222222222222222222222222222222222222222222222222222222222222","size":2,"annotations":{"org.opencontainers.image.ref.name":"multi"}}]}"#;

    #[test]
    fn tag_lookup() {
        let e = select_entry(IDX.as_bytes(), &Selector::Tag("multi".into()), "L").unwrap();
        assert_eq!(e.size, 2);
        let err = select_entry(IDX.as_bytes(), &Selector::Tag("nope".into()), "L")
            .unwrap_err()
            .to_string();
        assert!(err.contains("tag 'nope' not found"), "{err}");
        assert!(err.contains("latest, multi"), "{err}");
    }

    #[test]
    fn only_entry_needs_a_single_image() {
        let err = select_entry(IDX.as_bytes(), &Selector::Only, "L")
            .unwrap_err()
            .to_string();
        assert!(err.contains("holds 2 images"), "{err}");
        let one = r#"{"manifests":[{"mediaType":"x","digest":"sha256:1111111111111111111111111111111111111111111111111111111111111111","size":1}]}"#;
        assert_eq!(
            select_entry(one.as_bytes(), &Selector::Only, "L")
                .unwrap()
                .size,
            1
        );
    }

    #[test]
    fn digest_lookup_and_bad_json() {
        let d = Digest::parse(
            "sha256:1111111111111111111111111111111111111111111111111111111111111111",
        )
        .unwrap();
        let e = select_entry(IDX.as_bytes(), &Selector::Digest(d), "L").unwrap();
        assert_eq!(e.size, 1);
        assert!(select_entry(b"{", &Selector::Only, "L").is_err());
    }
}
