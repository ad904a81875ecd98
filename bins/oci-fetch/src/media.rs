//! Manifests, indexes, media types and platform choice.
//!
//! Manifests and configs are kept as the raw bytes that were verified against their digest and
//! only *read* through these types: re-serialising would drop fields and change digests.

use anyhow::{Context, Result, bail};
use common::digest::Digest;
use common::record::{Descriptor, Platform};
use serde::Deserialize;

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
pub const OCI_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";

/// What a registry is asked for, best first.
pub const ACCEPT: &str = "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.docker.distribution.manifest.v2+json";

/// Size limits. Real manifests are a few KiB and configs rarely above 100 KiB; containers/image
/// uses 4 MiB for manifests. Anything larger is refused before it is buffered.
pub const MAX_MANIFEST: u64 = 4 << 20;
pub const MAX_CONFIG: u64 = 8 << 20;

/// Layer media types oci-unpack can apply, and whether they are non-distributable.
pub fn layer_kind(media_type: &str) -> Option<LayerKind> {
    use Compression::*;
    let (c, foreign) = match media_type {
        "application/vnd.oci.image.layer.v1.tar" => (None, false),
        "application/vnd.oci.image.layer.v1.tar+gzip" => (Gzip, false),
        "application/vnd.oci.image.layer.v1.tar+zstd" => (Zstd, false),
        "application/vnd.oci.image.layer.nondistributable.v1.tar" => (None, true),
        "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip" => (Gzip, true),
        "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd" => (Zstd, true),
        "application/vnd.docker.image.rootfs.diff.tar" => (None, false),
        "application/vnd.docker.image.rootfs.diff.tar.gzip" => (Gzip, false),
        "application/vnd.docker.image.rootfs.diff.tar.zstd" => (Zstd, false),
        "application/vnd.docker.image.rootfs.foreign.diff.tar" => (None, true),
        "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip" => (Gzip, true),
        _ => return Option::None,
    };
    Some(LayerKind {
        compression: c,
        non_distributable: foreign,
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LayerKind {
    pub compression: Compression,
    pub non_distributable: bool,
}

/// A descriptor as found in manifests and indexes (only the fields we use).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RawDescriptor {
    #[serde(default)]
    pub media_type: String,
    pub digest: String,
    pub size: u64,
    #[serde(default)]
    pub annotations: Option<serde_json::Map<String, serde_json::Value>>,
    #[serde(default)]
    pub platform: Option<RawPlatform>,
    #[serde(default)]
    pub urls: Option<Vec<String>>,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct RawPlatform {
    #[serde(default)]
    pub os: String,
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub variant: Option<String>,
}

impl RawDescriptor {
    pub fn digest(&self) -> Result<Digest> {
        Digest::parse(&self.digest)
    }

    pub fn to_record(&self) -> Descriptor {
        Descriptor {
            media_type: self.media_type.clone(),
            digest: self.digest.clone(),
            size: self.size,
            annotations: self.annotations.clone().filter(|a| !a.is_empty()),
        }
    }

    pub fn annotation(&self, key: &str) -> Option<&str> {
        self.annotations.as_ref()?.get(key)?.as_str()
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawDoc {
    #[serde(default)]
    schema_version: Option<u32>,
    #[serde(default)]
    media_type: Option<String>,
    #[serde(default)]
    manifests: Option<Vec<RawDescriptor>>,
    #[serde(default)]
    config: Option<RawDescriptor>,
    #[serde(default)]
    layers: Option<Vec<RawDescriptor>>,
}

/// A parsed manifest or index.
#[derive(Debug, Clone)]
pub enum Doc {
    Index(Vec<RawDescriptor>),
    Manifest {
        config: RawDescriptor,
        layers: Vec<RawDescriptor>,
    },
}

/// Parse a manifest or index. `declared` is the media type the source gave (Content-Type or the
/// parent descriptor), used when the document itself has no `mediaType`.
pub fn parse_doc(bytes: &[u8], declared: &str, what: &str) -> Result<(Doc, String)> {
    let raw: RawDoc = serde_json::from_slice(bytes)
        .with_context(|| format!("{what} is not a valid manifest (bad JSON)"))?;
    let mt = raw
        .media_type
        .clone()
        .filter(|m| !m.is_empty())
        .or_else(|| Some(declared.to_string()).filter(|m| !m.is_empty() && !is_generic(m)))
        .unwrap_or_else(|| {
            // OCI lets mediaType be absent; decide by shape.
            if raw.manifests.is_some() {
                OCI_INDEX.into()
            } else {
                OCI_MANIFEST.into()
            }
        });
    if raw.schema_version == Some(1)
        || mt.starts_with("application/vnd.docker.distribution.manifest.v1")
    {
        bail!("{what} is a Docker schema 1 manifest, which is deprecated and not supported");
    }
    match mt.as_str() {
        OCI_INDEX | DOCKER_LIST => {
            let m = raw
                .manifests
                .with_context(|| format!("{what}: index has no 'manifests'"))?;
            Ok((Doc::Index(m), mt))
        }
        OCI_MANIFEST | DOCKER_MANIFEST => {
            let config = raw
                .config
                .with_context(|| format!("{what}: manifest has no 'config'"))?;
            let layers = raw
                .layers
                .with_context(|| format!("{what}: manifest has no 'layers'"))?;
            Ok((Doc::Manifest { config, layers }, mt))
        }
        other => bail!("{what} has unsupported media type '{other}'"),
    }
}

fn is_generic(m: &str) -> bool {
    m.starts_with("application/json")
        || m.starts_with("text/plain")
        || m.starts_with("application/octet-stream")
}

/// Check that a manifest describes a runnable container image we can unpack.
pub fn check_image_manifest(config: &RawDescriptor, layers: &[RawDescriptor]) -> Result<()> {
    match config.media_type.as_str() {
        OCI_CONFIG | DOCKER_CONFIG => {}
        other => bail!(
            "unsupported config media type '{other}': this is not a container image (an artifact?)"
        ),
    }
    if config.size > MAX_CONFIG {
        bail!(
            "image config is {} bytes, over the {} byte limit",
            config.size,
            MAX_CONFIG
        );
    }
    config.digest()?;
    for l in layers {
        if layer_kind(&l.media_type).is_none() {
            bail!(
                "layer {} has unsupported media type '{}'",
                l.digest,
                l.media_type
            );
        }
        l.digest()?;
    }
    Ok(())
}

/// The platform to pick from an index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wanted {
    pub os: String,
    pub arch: String,
    pub variant: Option<String>,
}

impl Wanted {
    /// The host: Go's names for Rust's `std::env::consts`.
    pub fn host() -> Wanted {
        let arch = go_arch(std::env::consts::ARCH);
        let variant = match arch.as_str() {
            "arm64" => Some("v8".to_string()),
            _ => None,
        };
        Wanted {
            os: "linux".into(),
            arch,
            variant,
        }
    }

    /// `os/arch[/variant]`.
    pub fn parse(s: &str) -> Result<Wanted> {
        let parts: Vec<&str> = s.split('/').collect();
        if !(2..=3).contains(&parts.len()) || parts.iter().any(|p| p.is_empty()) {
            bail!("malformed platform '{s}' (expected os/arch[/variant], e.g. linux/arm64)");
        }
        Ok(Wanted {
            os: parts[0].into(),
            arch: go_arch(parts[1]),
            variant: parts.get(2).map(|v| v.to_string()),
        })
    }

    pub fn matches(&self, p: &RawPlatform) -> bool {
        if p.os != self.os || go_arch(&p.architecture) != self.arch {
            return false;
        }
        match (&self.variant, &p.variant) {
            (Some(w), Some(v)) => w == v,
            // arm64 images rarely say v8; amd64 images rarely carry a variant at all.
            _ => true,
        }
    }
}

impl std::fmt::Display for Wanted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.arch)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

fn go_arch(a: &str) -> String {
    match a {
        "x86_64" | "x86-64" => "amd64",
        "aarch64" => "arm64",
        "x86" | "i386" | "i686" => "386",
        "powerpc64" => "ppc64",
        "powerpc64le" => "ppc64le",
        "riscv64gc" => "riscv64",
        other => other,
    }
    .to_string()
}

/// The annotation Docker's buildx puts on the attestation (provenance, SBOM) manifests it lists
/// in an image index beside the images, with the platform `unknown/unknown`.
const DOCKER_REFERENCE_TYPE: &str = "vnd.docker.reference.type";

/// Whether an index entry is an attestation manifest rather than an image: never runnable,
/// whatever platform is asked for.
pub fn is_attestation(d: &RawDescriptor) -> bool {
    d.annotation(DOCKER_REFERENCE_TYPE) == Some("attestation-manifest")
        || d.platform
            .as_ref()
            .is_some_and(|p| p.os == "unknown" && p.architecture == "unknown")
}

fn platform_name(p: &RawPlatform) -> String {
    let mut s = format!("{}/{}", p.os, p.architecture);
    if let Some(v) = &p.variant {
        s.push('/');
        s.push_str(v);
    }
    s
}

/// Pick the manifest for `want` from an index. Exact variant matches beat variant-less ones;
/// attestation entries are never chosen.
pub fn select_platform<'a>(
    manifests: &'a [RawDescriptor],
    want: &Wanted,
) -> Result<&'a RawDescriptor> {
    let images: Vec<&RawDescriptor> = manifests.iter().filter(|d| !is_attestation(d)).collect();
    let candidates: Vec<&RawDescriptor> = images
        .iter()
        .copied()
        .filter(|d| matches!(d.media_type.as_str(), OCI_MANIFEST | DOCKER_MANIFEST | ""))
        .filter(|d| d.platform.as_ref().is_some_and(|p| want.matches(p)))
        .collect();
    let exact = candidates
        .iter()
        .find(|d| d.platform.as_ref().and_then(|p| p.variant.as_ref()) == want.variant.as_ref());
    if let Some(d) = exact.or(candidates.first()) {
        return Ok(d);
    }
    // An index of one entry without platform information (common for single-image layouts,
    // and for an index that wraps another index).
    if let [only] = images.as_slice()
        && only.platform.is_none()
    {
        return Ok(only);
    }
    let mut avail: Vec<String> = images
        .iter()
        .filter_map(|d| d.platform.as_ref())
        .map(platform_name)
        .collect();
    avail.dedup();
    let attestations = manifests.len() - images.len();
    let others = if attestations > 0 {
        format!(
            "; the index also lists {attestations} attestation manifest(s), which are not images"
        )
    } else {
        String::new()
    };
    if avail.is_empty() {
        let has = match (images.len(), attestations) {
            (0, n) => format!("only {n} attestation manifest(s), which are not images"),
            (n, 0) => format!("{n} entries without a platform"),
            (n, a) => format!(
                "{n} entries without a platform and {a} attestation manifest(s), which are not images"
            ),
        };
        bail!(
            "no manifest for platform {want} in the image index: it names no usable platform (it has {has})"
        );
    }
    bail!(
        "no manifest for platform {want} in the image index; available: {} (choose with --platform){others}",
        avail.join(", ")
    )
}

impl RawPlatform {
    /// The platform an index entry names, as the image record carries it (it wins over the
    /// configuration's, which is what a record says without an index).
    pub fn to_record(&self) -> Platform {
        Platform {
            os: self.os.clone(),
            architecture: self.architecture.clone(),
            variant: self.variant.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn idx(entries: &[(&str, &str, Option<&str>)]) -> Vec<RawDescriptor> {
        entries
            .iter()
            .enumerate()
            .map(|(i, (os, arch, v))| RawDescriptor {
                media_type: OCI_MANIFEST.into(),
                digest: format!("sha256:{:064x}", i),
                size: 1,
                annotations: None,
                platform: Some(RawPlatform {
                    os: os.to_string(),
                    architecture: arch.to_string(),
                    variant: v.map(str::to_string),
                }),
                urls: None,
            })
            .collect()
    }

    #[test]
    fn selects_by_platform_and_variant() {
        let m = idx(&[
            ("linux", "amd64", None),
            ("linux", "arm", Some("v6")),
            ("linux", "arm", Some("v7")),
            ("linux", "arm64", Some("v8")),
            ("unknown", "unknown", None),
        ]);
        let pick = |s: &str| {
            select_platform(&m, &Wanted::parse(s).unwrap())
                .unwrap()
                .digest
                .clone()
        };
        assert_eq!(pick("linux/amd64"), m[0].digest);
        assert_eq!(pick("linux/arm/v7"), m[2].digest);
        assert_eq!(pick("linux/arm64"), m[3].digest);
        assert_eq!(pick("linux/aarch64"), m[3].digest);
        let e = select_platform(&m, &Wanted::parse("linux/s390x").unwrap())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("linux/amd64, linux/arm/v6, linux/arm/v7, linux/arm64/v8"),
            "{e}"
        );
        assert!(!e.contains("unknown"), "{e}");
    }

    #[test]
    fn attestations_are_never_picked() {
        let mut m = idx(&[
            ("unknown", "unknown", None),
            ("linux", "amd64", None),
            ("linux", "arm64", Some("v8")),
        ]);
        let mut ann = serde_json::Map::new();
        ann.insert(
            DOCKER_REFERENCE_TYPE.into(),
            serde_json::Value::from("attestation-manifest"),
        );
        m[0].annotations = Some(ann);
        let pick =
            |s: &str| select_platform(&m, &Wanted::parse(s).unwrap()).map(|d| d.digest.clone());
        assert_eq!(pick("linux/amd64").unwrap(), m[1].digest);
        let e = pick("unknown/unknown").unwrap_err().to_string();
        assert!(e.contains("available: linux/amd64, linux/arm64/v8"), "{e}");
        assert!(e.contains("1 attestation manifest(s)"), "{e}");
        // An attestation without a platform is not the "only entry" either.
        m[0].platform = None;
        let only_attestation = vec![m[0].clone()];
        let e = select_platform(&only_attestation, &Wanted::parse("linux/amd64").unwrap())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("names no usable platform (it has only 1 attestation manifest(s)"),
            "{e}"
        );
    }

    #[test]
    fn bad_platform_strings() {
        for s in ["linux", "linux/", "/amd64", "a/b/c/d"] {
            assert!(Wanted::parse(s).is_err(), "{s}");
        }
    }

    #[test]
    fn doc_kinds() {
        let (d, mt) = parse_doc(br#"{"schemaVersion":2,"manifests":[]}"#, "", "x").unwrap();
        assert!(matches!(d, Doc::Index(_)));
        assert_eq!(mt, OCI_INDEX);
        let m = br#"{"schemaVersion":2,"config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:00","size":1},"layers":[]}"#;
        let (d, mt) = parse_doc(m, "application/json", "x").unwrap();
        assert!(matches!(d, Doc::Manifest { .. }));
        assert_eq!(mt, OCI_MANIFEST);
        assert!(parse_doc(b"{not json", "", "x").is_err());
        let e = parse_doc(br#"{"schemaVersion":1,"fsLayers":[]}"#, "", "x")
            .unwrap_err()
            .to_string();
        assert!(e.contains("schema 1"), "{e}");
        let e = parse_doc(br#"{"mediaType":"application/x-foo"}"#, "", "x")
            .unwrap_err()
            .to_string();
        assert!(e.contains("unsupported media type"), "{e}");
    }

    #[test]
    fn layer_media_types() {
        assert_eq!(
            layer_kind("application/vnd.docker.image.rootfs.diff.tar.gzip")
                .unwrap()
                .compression,
            Compression::Gzip
        );
        assert!(
            layer_kind("application/vnd.oci.image.layer.nondistributable.v1.tar+zstd")
                .unwrap()
                .non_distributable
        );
        assert!(layer_kind("application/vnd.oci.image.layer.v1.tar+bzip2").is_none());
    }
}
