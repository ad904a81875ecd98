//! `oci-archive:` and `docker-archive:` sources, read in place.
//!
//! An archive is scanned once for its table of contents (names, data offsets, sizes; entry data
//! is skipped with seeks, not read). Small members (index.json, manifest.json, manifests,
//! configs) are then read by offset, and each layer is streamed straight from its offset into
//! the cache while it is hashed. Nothing is extracted to a temporary directory.
//!
//! `docker save` archives carry no manifest in OCI form: oci-fetch writes one (OCI media types,
//! the archive's config blob byte for byte, each layer as an *uncompressed* tar layer). Docker's
//! layer tars are uncompressed, and their sha256 is the config's `rootfs.diff_ids[i]`, so the
//! descriptor digests stay truthful: each layer is verified against its diff_id on the way in.
//! Layers are not recompressed (that would cost CPU and invent digests no registry knows).

use crate::image::{ImageSource, Top};
use crate::layout::select_entry;
use crate::media::{self, RawDescriptor};
use crate::reference::{Selector, parse_docker};
use crate::store::{BlobSource, Store, read_limited};
use anyhow::{Context, Result, bail};
use common::digest::Digest;
use sha2::{Digest as _, Sha256};
use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Component, Path, PathBuf};

/// Table of contents of a tar file: normalised member name -> (data offset, size).
struct Toc {
    file: PathBuf,
    members: HashMap<String, (u64, u64)>,
}

fn normalise(p: &Path) -> String {
    let mut parts: Vec<String> = Vec::new();
    for c in p.components() {
        match c {
            Component::Normal(s) => parts.push(s.to_string_lossy().into_owned()),
            Component::ParentDir => {
                parts.pop();
            }
            _ => {}
        }
    }
    parts.join("/")
}

impl Toc {
    fn scan(file: &Path) -> Result<Toc> {
        let mut f =
            File::open(file).with_context(|| format!("cannot open archive {}", file.display()))?;
        let mut magic = [0u8; 4];
        let n = f.read(&mut magic)?;
        if n >= 2 && magic[..2] == [0x1f, 0x8b] || n == 4 && magic == [0x28, 0xb5, 0x2f, 0xfd] {
            bail!(
                "{} is a compressed file; oci-fetch reads uncompressed tar archives in place (decompress it first)",
                file.display()
            );
        }
        f.seek(SeekFrom::Start(0))?;
        let mut ar = tar::Archive::new(f);
        let mut members = HashMap::new();
        let mut links: Vec<(String, String)> = Vec::new();
        let entries = ar
            .entries_with_seek()
            .with_context(|| format!("{} is not a tar archive", file.display()))?;
        for e in entries {
            let e = e.with_context(|| format!("{} is not a valid tar archive", file.display()))?;
            let name = normalise(&e.path()?);
            let kind = e.header().entry_type();
            if kind.is_file() {
                members.insert(name, (e.raw_file_position(), e.size()));
            } else if (kind.is_symlink() || kind.is_hard_link())
                && let Some(target) = e.link_name()?
            {
                // Docker deduplicates identical layers with links between `<id>/layer.tar`s.
                let t = if kind.is_symlink() {
                    let base = Path::new(&name).parent().unwrap_or(Path::new(""));
                    normalise(&base.join(&target))
                } else {
                    normalise(&target)
                };
                links.push((name, t));
            }
        }
        for (name, target) in links {
            if let Some(v) = members.get(&target).copied() {
                members.insert(name, v);
            }
        }
        if members.is_empty() {
            bail!("{} is empty or not a tar archive", file.display());
        }
        Ok(Toc {
            file: file.to_path_buf(),
            members,
        })
    }

    fn open_member(&self, name: &str, offset: u64) -> Result<(Box<dyn Read + Send>, u64)> {
        let (pos, size) = *self
            .members
            .get(name)
            .with_context(|| format!("{} has no member '{name}'", self.file.display()))?;
        let offset = offset.min(size);
        let mut f = File::open(&self.file)?;
        f.seek(SeekFrom::Start(pos + offset))?;
        Ok((Box::new(f.take(size - offset)), offset))
    }

    fn read_member(&self, name: &str, limit: u64) -> Result<Vec<u8>> {
        let (r, _) = self.open_member(name, 0)?;
        read_limited(r, limit, &format!("{name} in {}", self.file.display()))
    }

    fn has(&self, name: &str) -> bool {
        self.members.contains_key(name)
    }

    fn size(&self, name: &str) -> Option<u64> {
        self.members.get(name).map(|m| m.1)
    }
}

fn blob_member(d: &Digest) -> String {
    format!("blobs/{}/{}", d.algorithm(), d.hex())
}

/// `oci-archive:FILE[:TAG|@DIGEST]`: a tar of an OCI layout.
pub struct OciArchive {
    toc: Toc,
    sel: Selector,
}

impl OciArchive {
    pub fn new(file: &Path, sel: Selector) -> Result<OciArchive> {
        let toc = Toc::scan(file)?;
        if !toc.has("index.json") {
            bail!(
                "{} is not an OCI archive (no index.json; a docker save archive needs docker-archive:)",
                file.display()
            );
        }
        Ok(OciArchive { toc, sel })
    }
}

impl BlobSource for OciArchive {
    fn open(&self, desc: &RawDescriptor, offset: u64) -> Result<(Box<dyn Read + Send + '_>, u64)> {
        let d = desc.digest()?;
        self.toc
            .open_member(&blob_member(&d), offset)
            .with_context(|| format!("blob {d} is missing from the archive"))
    }
}

impl ImageSource for OciArchive {
    fn top(&self, _store: &Store) -> Result<Top> {
        let index = self.toc.read_member("index.json", media::MAX_MANIFEST)?;
        let what = format!("OCI archive {}", self.toc.file.display());
        let entry = select_entry(&index, &self.sel, &what)?;
        let d = entry.digest()?;
        let bytes = self
            .toc
            .read_member(&blob_member(&d), media::MAX_MANIFEST)
            .with_context(|| format!("manifest {d} is missing from {what}"))?;
        Ok(Top {
            bytes,
            media_type: entry.media_type.clone(),
            expected: Some(d),
            platform: entry.platform.clone(),
        })
    }
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerEntry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

/// `docker-archive:FILE[:REPO:TAG]`: a `docker save` archive.
pub struct DockerArchive {
    toc: Toc,
    manifest: Vec<u8>,
    /// Digest -> archive member, for the config and every layer.
    members: HashMap<String, String>,
}

impl DockerArchive {
    pub fn new(file: &Path, repo_tag: Option<&str>) -> Result<DockerArchive> {
        let toc = Toc::scan(file)?;
        if !toc.has("manifest.json") {
            bail!(
                "{} is not a docker save archive (no manifest.json)",
                file.display()
            );
        }
        let list: Vec<DockerEntry> =
            serde_json::from_slice(&toc.read_member("manifest.json", media::MAX_MANIFEST)?)
                .with_context(|| format!("manifest.json in {} is not valid", file.display()))?;
        let entry = pick_docker_entry(&list, repo_tag, file)?;

        let config = toc.read_member(&normalise(Path::new(&entry.config)), media::MAX_CONFIG)?;
        let config_digest = Digest::of_bytes(&config);
        // Modern names carry the digest (`<hex>.json`, `blobs/sha256/<hex>`): hold them to it.
        let stem = Path::new(&entry.config)
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        if stem.len() == 64
            && stem.bytes().all(|b| b.is_ascii_hexdigit())
            && stem != config_digest.hex()
        {
            bail!(
                "digest mismatch for config {}: content hashes to {config_digest}",
                entry.config
            );
        }
        let cfg: serde_json::Value =
            serde_json::from_slice(&config).context("image config is not valid JSON")?;
        let diff_ids: Vec<String> = cfg
            .pointer("/rootfs/diff_ids")
            .and_then(|v| v.as_array())
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        let mut members = HashMap::new();
        members.insert(
            config_digest.to_string(),
            normalise(Path::new(&entry.config)),
        );
        let mut layers = Vec::new();
        for (i, l) in entry.layers.iter().enumerate() {
            let name = normalise(Path::new(l));
            let size = toc
                .size(&name)
                .with_context(|| format!("layer {l} is missing from {}", file.display()))?;
            let (media_type, digest) = layer_identity(&toc, &name, diff_ids.get(i))?;
            members.insert(digest.clone(), name);
            layers.push(serde_json::json!({
                "mediaType": media_type, "digest": digest, "size": size,
            }));
        }
        let manifest = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": media::OCI_MANIFEST,
            "config": {
                "mediaType": media::OCI_CONFIG,
                "digest": config_digest.to_string(),
                "size": config.len(),
            },
            "layers": layers,
        }))?;
        Ok(DockerArchive {
            toc,
            manifest,
            members,
        })
    }
}

/// Media type and digest of one docker-save layer. Uncompressed layers (the normal case) are
/// named by their diff_id and verified against it while copied; a compressed one (some tools
/// write them) is hashed here first, because its digest is not recorded anywhere.
fn layer_identity(toc: &Toc, name: &str, diff_id: Option<&String>) -> Result<(String, String)> {
    let (mut r, _) = toc.open_member(name, 0)?;
    let mut magic = [0u8; 4];
    let n = read_up_to(&mut r, &mut magic)?;
    let media_type = if n >= 2 && magic[..2] == [0x1f, 0x8b] {
        "application/vnd.oci.image.layer.v1.tar+gzip"
    } else if n == 4 && magic == [0x28, 0xb5, 0x2f, 0xfd] {
        "application/vnd.oci.image.layer.v1.tar+zstd"
    } else {
        media::OCI_LAYER_TAR
    };
    if media_type == media::OCI_LAYER_TAR
        && let Some(d) = diff_id
    {
        Digest::parse(d).with_context(|| format!("bad diff_id for {name}"))?;
        return Ok((media_type.into(), d.clone()));
    }
    let (r, _) = toc.open_member(name, 0)?;
    let mut h = Sha256::new();
    let mut r = r;
    let mut buf = vec![0u8; 256 << 10];
    loop {
        let n = r.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok((
        media_type.into(),
        format!("sha256:{}", hex::encode(h.finalize())),
    ))
}

fn read_up_to(r: &mut dyn Read, buf: &mut [u8]) -> Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        let k = r.read(&mut buf[n..])?;
        if k == 0 {
            break;
        }
        n += k;
    }
    Ok(n)
}

fn pick_docker_entry<'a>(
    list: &'a [DockerEntry],
    repo_tag: Option<&str>,
    file: &Path,
) -> Result<&'a DockerEntry> {
    let tags = || {
        let t: Vec<&str> = list
            .iter()
            .flat_map(|e| e.repo_tags.iter().flatten())
            .map(String::as_str)
            .collect();
        if t.is_empty() {
            "none".to_string()
        } else {
            t.join(", ")
        }
    };
    match repo_tag {
        None => match list.len() {
            1 => Ok(&list[0]),
            0 => bail!("{} holds no images", file.display()),
            n => bail!(
                "{} holds {n} images: name one with :REPO:TAG (tags: {})",
                file.display(),
                tags()
            ),
        },
        Some(want) => {
            let canon = |s: &str| parse_docker(s).map(|r| r.canonical()).ok();
            let w = canon(want);
            list.iter()
                .find(|e| {
                    e.repo_tags
                        .iter()
                        .flatten()
                        .any(|t| t == want || (w.is_some() && canon(t) == w))
                })
                .with_context(|| {
                    format!(
                        "tag '{want}' not found in {} (tags: {})",
                        file.display(),
                        tags()
                    )
                })
        }
    }
}

impl BlobSource for DockerArchive {
    fn open(&self, desc: &RawDescriptor, offset: u64) -> Result<(Box<dyn Read + Send + '_>, u64)> {
        let name = self
            .members
            .get(&desc.digest)
            .with_context(|| format!("blob {} is not in the archive", desc.digest))?;
        self.toc.open_member(name, offset)
    }
}

impl ImageSource for DockerArchive {
    fn top(&self, _store: &Store) -> Result<Top> {
        Ok(Top {
            bytes: self.manifest.clone(),
            media_type: media::OCI_MANIFEST.into(),
            expected: None,
            platform: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn add(b: &mut tar::Builder<File>, name: &str, data: &[u8]) {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, name, data).unwrap();
    }

    fn layer_tar() -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(2);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, "hi.txt", &b"hi"[..]).unwrap();
        b.into_inner().unwrap()
    }

    #[test]
    fn docker_save_old_form_with_linked_layer() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("a.tar");
        let layer = layer_tar();
        let lid = Digest::of_bytes(&layer);
        let cfg = format!(
            r#"{{"architecture":"amd64","os":"linux","rootfs":{{"type":"layers","diff_ids":["{lid}","{lid}"]}}}}"#
        );
        let cid = Digest::of_bytes(cfg.as_bytes());
        let mut b = tar::Builder::new(File::create(&p).unwrap());
        add(&mut b, "aaa/layer.tar", &layer);
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_size(0);
        h.set_cksum();
        b.append_link(&mut h, "bbb/layer.tar", "../aaa/layer.tar")
            .unwrap();
        add(&mut b, &format!("{}.json", cid.hex()), cfg.as_bytes());
        let m = format!(
            r#"[{{"Config":"{}.json","RepoTags":["busybox:latest"],"Layers":["aaa/layer.tar","bbb/layer.tar"]}}]"#,
            cid.hex()
        );
        add(&mut b, "manifest.json", m.as_bytes());
        b.finish().unwrap();
        drop(b);

        let a = DockerArchive::new(&p, Some("docker.io/library/busybox:latest")).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&a.manifest).unwrap();
        assert_eq!(v["config"]["digest"], cid.to_string());
        assert_eq!(v["layers"][1]["digest"], lid.to_string());
        assert_eq!(v["layers"][0]["size"], layer.len());
        let (mut r, _) = a
            .open(
                &RawDescriptor {
                    media_type: String::new(),
                    digest: lid.to_string(),
                    size: 0,
                    annotations: None,
                    platform: None,
                    urls: None,
                },
                0,
            )
            .unwrap();
        let mut got = Vec::new();
        r.read_to_end(&mut got).unwrap();
        assert_eq!(got, layer);
        let e = DockerArchive::new(&p, Some("other:1"))
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("busybox:latest"), "{e}");
    }

    #[test]
    fn compressed_archives_are_named() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("a.tar.gz");
        std::fs::write(&p, [0x1f, 0x8b, 8, 0, 0, 0]).unwrap();
        let e = Toc::scan(&p).err().unwrap().to_string();
        assert!(e.contains("compressed"), "{e}");
    }
}
