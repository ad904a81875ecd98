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

/// What a record describes; serialised as its lowercase name in the `kind` field.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// An image verified into an OCI layout (`oci-fetch`).
    Image,
    /// A root filesystem applied from an image's layers (`oci-unpack`).
    Rootfs,
    /// A runtime bundle (`oci-mkspec`).
    Bundle,
    /// A created background container (`oci-conmon-create`).
    Container,
    /// What the cache holds (`oci-fetch --list-cache`).
    Cache,
    /// The caller's instances (`oci-instance list`).
    Instances,
}

impl Kind {
    /// Every kind, so a test can check each has its schema.
    pub const ALL: [Kind; 6] = [
        Kind::Image,
        Kind::Rootfs,
        Kind::Bundle,
        Kind::Container,
        Kind::Cache,
        Kind::Instances,
    ];

    /// The name as it appears in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Image => "image",
            Kind::Rootfs => "rootfs",
            Kind::Bundle => "bundle",
            Kind::Container => "container",
            Kind::Cache => "cache",
            Kind::Instances => "instances",
        }
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

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
    /// Always [`Kind::Image`].
    pub kind: Kind,
    /// The reference exactly as the user gave it.
    pub reference: String,
    /// Normalised transport: `oci`, `oci-archive`, `docker-archive`, `docker`, `sif` (native
    /// SIF), `oci-sif` or `sandbox`.
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
    /// For a sandbox directory (transport `sandbox`): the tree that runs in place, read-only
    /// below the overlay. It has no layers and nothing of it is copied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<SandboxSource>,
}

/// A sandbox directory and the identity it had when `oci-fetch` checked it: `oci-unpack`
/// refuses it once the path leads elsewhere.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct SandboxSource {
    /// Absolute path of the directory, without symbolic links.
    pub path: PathBuf,
    pub dev: u64,
    pub ino: u64,
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
    /// Always [`Kind::Rootfs`].
    pub kind: Kind,
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
    /// Always [`Kind::Bundle`].
    pub kind: Kind,
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
    /// The `--overlay` directories, in the order given (also `<bundle>/overlays.json`, which
    /// oci-userns-starter reads): at most one writable, whose `upper` replaces the tmpfs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub overlays: Vec<crate::overlay::OverlayDir>,
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

/// Output of `oci-conmon-create`: a container created (not started) under conmon. It is also
/// kept as `conmon.json` in the container's state directory.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ContainerRecord {
    pub schema_version: u32,
    /// Always [`Kind::Container`].
    pub kind: Kind,
    pub id: String,
    /// The runtime's status of the container when the record was written.
    pub status: ContainerStatus,
    /// The container's init process, as the runtime wrote it.
    pub pid: i32,
    /// The conmon monitor.
    pub conmon_pid: i32,
    /// Absolute bundle directory.
    pub bundle: PathBuf,
    /// `<root>/containers/<id>`: the container's private state directory.
    pub state_dir: PathBuf,
    /// The runtime executable that created the container; later operations use the same one.
    pub runtime: PathBuf,
    /// The runtime's `--root`.
    pub runtime_root: PathBuf,
    /// The container log (k8s-file), or with `passthrough` the file that is the container's
    /// stdout.
    pub log_path: PathBuf,
    pub log_format: LogFormat,
    /// With `passthrough`: the file that is the container's stderr.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_log_path: Option<PathBuf>,
    /// conmon's attach socket (conmon puts it in the bundle); none with `passthrough`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attach_socket: Option<PathBuf>,
    /// Where conmon writes the exit status.
    pub exit_file: PathBuf,
    /// Whether the container has a terminal (`process.terminal` of the bundle).
    pub terminal: bool,
    /// `--pid-file`, when one was asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid_file: Option<PathBuf>,
}

/// What a cache holds (`oci-fetch --list-cache`); `singularity-oci cache list` renders it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct CacheRecord {
    pub schema_version: u32,
    /// Always [`Kind::Cache`].
    pub kind: Kind,
    /// The cache root.
    pub cache: PathBuf,
    /// The blobs of the layout: how many, and their disk usage in bytes.
    pub blobs: CacheUsage,
    /// Each remembered registry reference and the digest it resolved to, sorted by reference.
    pub references: Vec<CacheReference>,
    /// Each unpacked root filesystem, sorted by manifest digest then ownership.
    pub rootfs: Vec<CacheRootfs>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
pub struct CacheUsage {
    pub count: u64,
    /// Disk usage (allocated blocks; a file with several links counted once).
    pub bytes: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct CacheReference {
    pub reference: String,
    pub digest: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct CacheRootfs {
    /// `sha256:<hex>` of the image manifest the tree was unpacked from.
    pub manifest: String,
    /// `keep` or `flatten`.
    pub ownership: String,
    /// Disk usage of the tree, as for blobs.
    pub bytes: u64,
}

impl CacheRecord {
    pub fn new(cache: PathBuf) -> Self {
        CacheRecord {
            schema_version: SCHEMA_VERSION,
            kind: Kind::Cache,
            cache,
            blobs: CacheUsage::default(),
            references: Vec::new(),
            rootfs: Vec::new(),
        }
    }
}

/// One instance: a named background container (`oci-instance start`), as kept in its state
/// directory (`instance.json`) and listed by `oci-instance list`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Instance {
    pub name: String,
    /// The container's first process (its init), as the runtime wrote it.
    pub pid: i32,
    /// The conmon monitor.
    pub conmon_pid: i32,
    /// The image as the user named it.
    pub image: String,
    /// When the instance started: seconds since the epoch, and the same as RFC 3339 UTC.
    pub started: u64,
    pub start_time: String,
    /// The runtime executable and its `--root`.
    pub runtime: PathBuf,
    pub runtime_root: PathBuf,
    pub bundle: PathBuf,
    /// `DEV:INO` of the bundle: `stop` removes only that directory.
    pub bundle_inode: String,
    pub state_dir: PathBuf,
    /// The files the instance's stdout and stderr go to (kept after `stop`).
    pub log_out_path: PathBuf,
    pub log_err_path: PathBuf,
}

/// Whether a listed instance still runs.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum InstanceStatus {
    Running,
    /// Its first process has ended; `stop` removes what is left.
    Exited,
}

/// An instance as `oci-instance list` sees it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ListedInstance {
    #[serde(flatten)]
    pub instance: Instance,
    pub status: InstanceStatus,
    /// The exit status (128+N for signal N) once conmon recorded it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_status: Option<i32>,
}

/// The caller's instances (`oci-instance list`); `singularity-oci instance list` renders it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct InstancesRecord {
    pub schema_version: u32,
    /// Always [`Kind::Instances`].
    pub kind: Kind,
    /// Sorted by name.
    pub instances: Vec<ListedInstance>,
}

impl InstancesRecord {
    pub fn new(instances: Vec<ListedInstance>) -> Self {
        InstancesRecord {
            schema_version: SCHEMA_VERSION,
            kind: Kind::Instances,
            instances,
        }
    }
}

/// A container's status, with the runtime-spec state names.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ContainerStatus {
    Creating,
    Created,
    Running,
    Stopped,
    /// runc and crun report a frozen container as `paused`.
    Paused,
}

/// The container log's format: conmon writes only the CRI one to a file, or hands the
/// container its own stdout and stderr (its `passthrough` driver).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// One `TIME STREAM F|P TEXT` line per record.
    #[default]
    #[serde(rename = "k8s-file")]
    K8sFile,
    /// The container writes its stdout and stderr straight into two files (no attach socket).
    #[serde(rename = "passthrough")]
    Passthrough,
}

impl ImageRecord {
    /// An image record of this schema version. Its identity `digest` is the manifest's, and the
    /// platform the one the configuration names; [`ImageRecord::with_platform`] replaces it when
    /// an index said more, [`ImageRecord::with_sif`] names the SIF file the layers are in,
    /// [`ImageRecord::with_sandbox`] the sandbox directory that is the tree.
    pub fn new(
        reference: impl Into<String>,
        transport: impl Into<String>,
        layout: PathBuf,
        manifest: Descriptor,
        config: Descriptor,
        layers: Vec<Descriptor>,
        image_config: serde_json::Value,
    ) -> Self {
        ImageRecord {
            schema_version: SCHEMA_VERSION,
            kind: Kind::Image,
            reference: reference.into(),
            transport: transport.into(),
            digest: manifest.digest.clone(),
            layout,
            manifest,
            config,
            layers,
            platform: Platform::of_config(&image_config),
            image_config,
            sif: None,
            sandbox: None,
        }
    }

    pub fn with_platform(mut self, platform: Platform) -> Self {
        self.platform = platform;
        self
    }

    pub fn with_sif(mut self, sif: SifSource) -> Self {
        self.sif = Some(sif);
        self
    }

    pub fn with_sandbox(mut self, sandbox: SandboxSource) -> Self {
        self.sandbox = Some(sandbox);
        self
    }
}

impl Platform {
    /// The platform an image configuration names (`os`, `architecture`, `variant`); a missing
    /// name is empty.
    pub fn of_config(config: &serde_json::Value) -> Self {
        let s = |k: &str| config.get(k).and_then(|v| v.as_str()).map(str::to_string);
        Platform {
            os: s("os").unwrap_or_default(),
            architecture: s("architecture").unwrap_or_default(),
            variant: s("variant"),
        }
    }
}

impl RootfsRecord {
    /// A rootfs record of this schema version for the tree `rootfs` built from `image`.
    pub fn new(
        rootfs: PathBuf,
        read_only: bool,
        cached: bool,
        ownership: impl Into<String>,
        image: ImageRecord,
    ) -> Self {
        RootfsRecord {
            schema_version: SCHEMA_VERSION,
            kind: Kind::Rootfs,
            rootfs,
            read_only,
            cached,
            ownership: ownership.into(),
            image,
        }
    }
}

impl BundleRecord {
    /// A bundle record of this schema version for the bundle directory `bundle` (identified by
    /// `bundle_inode`, `DEV:INO`) with its `config.json` at `config`, made from `rootfs`, whose
    /// process is `uid:gid` running `args`. No generated `/etc` files, no lower tree, no overlay
    /// directories and no inner user namespace until set.
    pub fn new(
        bundle: PathBuf,
        bundle_inode: String,
        config: PathBuf,
        rootfs: RootfsRecord,
        uid: u32,
        gid: u32,
        args: Vec<String>,
    ) -> Self {
        BundleRecord {
            schema_version: SCHEMA_VERSION,
            kind: Kind::Bundle,
            bundle,
            config,
            bundle_inode,
            rootfs_lower: None,
            overlays: Vec::new(),
            etc_files: Vec::new(),
            uid,
            gid,
            args,
            inner_userns: false,
            rootfs,
        }
    }
}

/// Where a conmon-created container lives: what [`ContainerRecord::created`] needs besides the
/// container's processes.
#[derive(Debug, Clone)]
pub struct ContainerPlace {
    pub id: String,
    pub bundle: PathBuf,
    /// The runtime executable and its `--root`.
    pub runtime: PathBuf,
    pub runtime_root: PathBuf,
    /// `<runtime_root>/containers/<id>`.
    pub state_dir: PathBuf,
}

impl ContainerRecord {
    /// The record of a container just created at `place` with init `pid` under conmon
    /// `conmon_pid`: status `created`, the default log in the state directory, the attach socket
    /// and exit file where conmon puts them, no terminal and no pid file until set.
    pub fn created(place: ContainerPlace, pid: i32, conmon_pid: i32) -> Self {
        use crate::lifecycle::statedir::{ATTACH_SOCKET, CONTAINER_LOG, EXIT_FILE};
        ContainerRecord {
            schema_version: SCHEMA_VERSION,
            kind: Kind::Container,
            status: ContainerStatus::Created,
            pid,
            conmon_pid,
            log_path: place.state_dir.join(CONTAINER_LOG),
            log_format: LogFormat::K8sFile,
            error_log_path: None,
            attach_socket: Some(place.bundle.join(ATTACH_SOCKET)),
            exit_file: place.state_dir.join(EXIT_FILE),
            terminal: false,
            pid_file: None,
            id: place.id,
            bundle: place.bundle,
            state_dir: place.state_dir,
            runtime: place.runtime,
            runtime_root: place.runtime_root,
        }
    }
}

/// Records carry a kind so a stage fed the wrong record can say so.
pub trait Record: Serialize + DeserializeOwned {
    const KIND: Kind;
    fn schema_version(&self) -> u32;
}

macro_rules! record_kind {
    ($($t:ty => $kind:expr),* $(,)?) => {$(
        impl Record for $t {
            const KIND: Kind = $kind;
            fn schema_version(&self) -> u32 {
                self.schema_version
            }
        }
    )*};
}

record_kind! {
    ImageRecord => Kind::Image,
    RootfsRecord => Kind::Rootfs,
    BundleRecord => Kind::Bundle,
    ContainerRecord => Kind::Container,
    CacheRecord => Kind::Cache,
    InstancesRecord => Kind::Instances,
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
        Some(k) if k == T::KIND.as_str() => {}
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

/// Print a record as one line of JSON on stdout (or keep it for the next stage of a
/// `--then` chain, `crate::chain`).
pub fn print_record<T: Record>(record: &T) -> Result<()> {
    use std::io::Write;
    if crate::chain::is_chained() {
        let mut line = serde_json::to_vec(record).context("cannot serialise record")?;
        line.push(b'\n');
        crate::chain::keep_record(line);
        return Ok(());
    }
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
        ImageRecord::new(
            "oci:/x:latest",
            "oci",
            "/x".into(),
            Descriptor {
                media_type: "application/vnd.oci.image.manifest.v1+json".into(),
                digest: "sha256:00".into(),
                size: 1,
                annotations: None,
            },
            Descriptor {
                media_type: "application/vnd.oci.image.config.v1+json".into(),
                digest: "sha256:01".into(),
                size: 1,
                annotations: None,
            },
            vec![],
            serde_json::json!({"os": "linux", "architecture": "amd64"}),
        )
    }

    fn container() -> ContainerRecord {
        let place = ContainerPlace {
            id: "c1".into(),
            bundle: "/b".into(),
            runtime: "/usr/bin/crun".into(),
            runtime_root: "/run/s".into(),
            state_dir: "/run/s/containers/c1".into(),
        };
        ContainerRecord::created(place, 42, 41)
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
    fn constructors_fill_schema_version_and_kind() {
        let v = serde_json::to_value(image()).unwrap();
        assert_eq!(
            (&v["schemaVersion"], &v["kind"]),
            (&1.into(), &"image".into())
        );
        assert_eq!(v["digest"], "sha256:00");
        assert_eq!(
            v["platform"],
            serde_json::json!({"os": "linux", "architecture": "amd64"})
        );
        let rootfs = RootfsRecord::new("/r".into(), true, false, "keep", image());
        let v = serde_json::to_value(&rootfs).unwrap();
        assert_eq!(
            (&v["schemaVersion"], &v["kind"]),
            (&1.into(), &"rootfs".into())
        );
        let bundle = BundleRecord::new(
            "/b".into(),
            "1:2".into(),
            "/b/config.json".into(),
            rootfs,
            0,
            0,
            vec!["id".into()],
        );
        let v = serde_json::to_value(&bundle).unwrap();
        assert_eq!(
            (&v["schemaVersion"], &v["kind"]),
            (&1.into(), &"bundle".into())
        );
        let v = serde_json::to_value(container()).unwrap();
        assert_eq!(
            (&v["schemaVersion"], &v["kind"]),
            (&1.into(), &"container".into())
        );
    }

    #[test]
    fn container_record_keeps_its_field_names_and_order() {
        let json = serde_json::to_string(&container()).unwrap();
        assert_eq!(
            json,
            r#"{"schemaVersion":1,"kind":"container","id":"c1","status":"created","pid":42,"conmonPid":41,"bundle":"/b","stateDir":"/run/s/containers/c1","runtime":"/usr/bin/crun","runtimeRoot":"/run/s","logPath":"/run/s/containers/c1/container.log","logFormat":"k8s-file","attachSocket":"/b/attach","exitFile":"/run/s/containers/c1/exit","terminal":false}"#
        );
        let back: ContainerRecord = parse_record(json.as_bytes(), "conmon.json").unwrap();
        assert_eq!(back, container());
    }

    #[test]
    fn an_unknown_kind_is_named() {
        let mut v = serde_json::to_value(image()).unwrap();
        v["kind"] = "volume".into();
        let e = parse_record::<ImageRecord>(v.to_string().as_bytes(), "stdin").unwrap_err();
        assert!(e.to_string().contains("'volume' record"), "{e}");
    }

    #[test]
    fn wrong_kind_is_named() {
        let s = serde_json::to_vec(&image()).unwrap();
        let e = parse_record::<RootfsRecord>(&s, "stdin").unwrap_err();
        assert!(e.to_string().contains("'image' record"), "{e}");
    }
}
