//! The JSON records that flow between stages.
//!
//! `oci-fetch` prints an [`ImageRecord`], `oci-unpack` reads it and prints a [`RootfsRecord`]
//! (which carries the image record whole), and `oci-mkspec` reads that and prints a
//! [`BundleRecord`]. Each record is one JSON object on one line of stdout, with a `schemaVersion`
//! and a `kind`, so that a stage fed the wrong record, or a record from a future version, refuses
//! it with a clear message instead of guessing.

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use std::io::Read;
use std::path::{Path, PathBuf};

/// Version of the record format this build reads and writes.
pub const SCHEMA_VERSION: u32 = 1;

/// An OCI content descriptor, as it appears in manifests.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    pub media_type: String,
    pub digest: String,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<serde_json::Map<String, serde_json::Value>>,
}

/// The platform an image was built for.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

/// Output of `oci-fetch`: one image, verified and present in an OCI layout.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ImageRecord {
    pub schema_version: u32,
    /// Always `"image"`.
    pub kind: String,
    /// The reference exactly as the user gave it.
    pub reference: String,
    /// Normalised transport: `oci`, `oci-archive`, `docker-archive` or `docker`.
    pub transport: String,
    /// Digest of the image manifest (the image's identity).
    pub digest: String,
    /// OCI image layout holding every blob named below (`blobs/<alg>/<hex>`).
    pub layout: PathBuf,
    pub manifest: Descriptor,
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
    pub platform: Platform,
    /// The image configuration blob, parsed (carried so later stages need not reopen it).
    pub image_config: serde_json::Value,
    /// For images read from a SIF file (transports `sif` and `oci-sif`): where the layers are.
    /// Their blobs are not copied into the layout; `oci-unpack` reads them from the file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sif: Option<SifSource>,
}

/// A SIF file an image record's layers are read from, and the identity the file had when its
/// digests were computed: `oci-unpack` refuses to use it once any of these has changed.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct SifSource {
    /// Absolute path of the SIF file.
    pub path: PathBuf,
    pub dev: u64,
    pub ino: u64,
    pub size: u64,
    /// Modification and change times, in nanoseconds since the epoch.
    pub mtime_ns: i64,
    pub ctime_ns: i64,
    /// Where each entry of `layers` lives in the file (same order).
    pub objects: Vec<SifObject>,
}

/// One data object of a SIF file: byte offset and length.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct SifObject {
    pub offset: u64,
    pub size: u64,
}

/// Output of `oci-unpack`: a root filesystem applied from an image's layers.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RootfsRecord {
    pub schema_version: u32,
    /// Always `"rootfs"`.
    pub kind: String,
    /// Absolute path of the root filesystem tree.
    pub rootfs: PathBuf,
    /// True when `rootfs` is a shared cache entry that must never be written to (the launcher
    /// mounts an overlay over it); false for a private `--bundle` unpack.
    pub read_only: bool,
    /// True when this run found the tree in the cache and extracted nothing.
    pub cached: bool,
    /// How file owners were applied: `keep` (root or a full ID map), or `flatten` (single-ID
    /// unprivileged unpack: every file owned by the caller, original owner in
    /// `user.rootlesscontainers`).
    pub ownership: String,
    /// The image record this tree was built from.
    pub image: ImageRecord,
}

/// Output of `oci-mkspec`: a runtime bundle ready for `oci-runtime-shim`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct BundleRecord {
    pub schema_version: u32,
    /// Always `"bundle"`.
    pub kind: String,
    /// Absolute bundle directory.
    pub bundle: PathBuf,
    /// `DEV:INO` of the bundle directory when oci-mkspec opened it: a later removal
    /// (`oci-runtime-shim run --remove-bundle --bundle-inode`) removes only that directory.
    #[serde(default)]
    pub bundle_inode: String,
    /// `<bundle>/config.json`.
    pub config: PathBuf,
    /// Read-only tree to mount under `<bundle>/rootfs` with a writable overlay, when the rootfs
    /// is a cache entry; also recorded as the symlink `<bundle>/rootfs.lower`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rootfs_lower: Option<PathBuf>,
    /// Files generated into `<bundle>/etc` and bind-mounted into the container.
    pub etc_files: Vec<PathBuf>,
    /// The container's process: user and argv, for the record's reader.
    pub uid: u32,
    pub gid: u32,
    pub args: Vec<String>,
    /// Whether the spec asks for a user namespace with the reverse ID map.
    pub inner_userns: bool,
    /// The rootfs record the bundle was made from.
    pub rootfs: RootfsRecord,
}

/// Records carry a kind so a stage fed the wrong record can say so.
pub trait Record: Serialize + DeserializeOwned {
    const KIND: &'static str;
    fn schema_version(&self) -> u32;
}

impl Record for ImageRecord {
    const KIND: &'static str = "image";
    fn schema_version(&self) -> u32 {
        self.schema_version
    }
}
impl Record for RootfsRecord {
    const KIND: &'static str = "rootfs";
    fn schema_version(&self) -> u32 {
        self.schema_version
    }
}
impl Record for BundleRecord {
    const KIND: &'static str = "bundle";
    fn schema_version(&self) -> u32 {
        self.schema_version
    }
}

/// Largest record a stage accepts (records are small; this stops a stray binary on stdin).
const MAX_RECORD: u64 = 16 << 20;

/// Parse a record of type `T` from bytes, checking `schemaVersion` and `kind` first so that the
/// error names the real problem rather than a missing field.
pub fn parse_record<T: Record>(bytes: &[u8], source: &str) -> Result<T> {
    let value: serde_json::Value =
        serde_json::from_slice(bytes).with_context(|| format!("{source} is not a JSON record"))?;
    let obj = value
        .as_object()
        .with_context(|| format!("{source} is not a JSON object"))?;
    match obj.get("schemaVersion").and_then(|v| v.as_u64()) {
        Some(v) if v == SCHEMA_VERSION as u64 => {}
        Some(v) => bail!(
            "{source} has schemaVersion {v}, but this stage understands only {SCHEMA_VERSION}"
        ),
        None => bail!("{source} has no schemaVersion: not a singularity-oci record"),
    }
    match obj.get("kind").and_then(|v| v.as_str()) {
        Some(k) if k == T::KIND => {}
        Some(k) => bail!(
            "{source} is a '{k}' record, but this stage reads a '{}' record",
            T::KIND
        ),
        None => bail!("{source} has no kind"),
    }
    serde_json::from_value(value).with_context(|| format!("{source}: malformed {} record", T::KIND))
}

/// Read a record from `--input FILE` (or `-`), or from stdin when no file is given.
pub fn read_record<T: Record>(input: Option<&Path>) -> Result<T> {
    let mut bytes = Vec::new();
    let source = match input {
        Some(p) if p != Path::new("-") => {
            std::fs::File::open(p)
                .with_context(|| format!("cannot open input record {}", p.display()))?
                .take(MAX_RECORD)
                .read_to_end(&mut bytes)
                .with_context(|| format!("cannot read {}", p.display()))?;
            p.display().to_string()
        }
        _ => {
            if is_terminal(0) {
                bail!(
                    "expected a '{}' record on stdin (pipe the previous stage in, or use --input FILE)",
                    T::KIND
                );
            }
            std::io::stdin()
                .lock()
                .take(MAX_RECORD)
                .read_to_end(&mut bytes)
                .context("cannot read stdin")?;
            "stdin".to_string()
        }
    };
    if bytes.iter().all(|b| b.is_ascii_whitespace()) {
        bail!(
            "no '{}' record on {source}: the previous stage printed nothing (did it fail?)",
            T::KIND
        );
    }
    parse_record(&bytes, &source)
}

/// Print a record as one line of JSON on stdout.
pub fn print_record<T: Record>(record: &T) -> Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    serde_json::to_writer(&mut out, record).context("cannot serialise record")?;
    out.write_all(b"\n")
        .and_then(|_| out.flush())
        .context("cannot write record to stdout")?;
    Ok(())
}

fn is_terminal(fd: i32) -> bool {
    // SAFETY: isatty only inspects the descriptor.
    unsafe { libc::isatty(fd) == 1 }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image() -> ImageRecord {
        ImageRecord {
            schema_version: SCHEMA_VERSION,
            kind: "image".into(),
            reference: "oci:/x:latest".into(),
            transport: "oci".into(),
            digest: "sha256:00".into(),
            layout: "/x".into(),
            manifest: Descriptor {
                media_type: "application/vnd.oci.image.manifest.v1+json".into(),
                digest: "sha256:00".into(),
                size: 1,
                annotations: None,
            },
            config: Descriptor {
                media_type: "application/vnd.oci.image.config.v1+json".into(),
                digest: "sha256:01".into(),
                size: 1,
                annotations: None,
            },
            layers: vec![],
            platform: Platform::default(),
            image_config: serde_json::json!({}),
            sif: None,
        }
    }

    #[test]
    fn round_trip() {
        let r = image();
        let s = serde_json::to_vec(&r).unwrap();
        let back: ImageRecord = parse_record(&s, "test").unwrap();
        assert_eq!(back, r);
    }

    #[test]
    fn unknown_schema_version_is_refused() {
        let mut v = serde_json::to_value(image()).unwrap();
        v["schemaVersion"] = 99.into();
        let e = parse_record::<ImageRecord>(v.to_string().as_bytes(), "stdin").unwrap_err();
        assert!(e.to_string().contains("schemaVersion 99"), "{e}");
    }

    #[test]
    fn wrong_kind_is_named() {
        let s = serde_json::to_vec(&image()).unwrap();
        let e = parse_record::<RootfsRecord>(&s, "stdin").unwrap_err();
        assert!(e.to_string().contains("'image' record"), "{e}");
    }
}
