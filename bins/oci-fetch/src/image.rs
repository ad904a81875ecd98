//! The fetch itself, the same for every source: top manifest -> platform -> manifest -> config
//! -> layers, each verified against its digest before it is stored or trusted.

use crate::media::{self, Doc, RawDescriptor, RawPlatform, Wanted};
use crate::progress::Progress;
use crate::store::{self, BlobSource, Store, Transient, read_limited};
use anyhow::{Context, Result, bail};
use common::digest::Digest;
use common::record::{Descriptor, ImageRecord, Platform};
use std::sync::atomic::{AtomicBool, Ordering};

/// The document a reference points at (a manifest or an index).
pub struct Top {
    pub bytes: Vec<u8>,
    /// Media type declared by the source (descriptor or Content-Type); may be empty.
    pub media_type: String,
    /// The digest the bytes must have, when the source names one (layout descriptor, `@digest`).
    pub expected: Option<Digest>,
    /// Platform from the descriptor that pointed here, if any.
    pub platform: Option<RawPlatform>,
}

pub trait ImageSource: BlobSource {
    /// Resolve the reference to its top document. `store` lets a source answer from the cache.
    fn top(&self, store: &Store) -> Result<Top>;

    /// Read a small blob (an image config) by descriptor, at most `limit` bytes.
    fn read_small(&self, desc: &RawDescriptor, limit: u64) -> Result<Vec<u8>> {
        let (r, _) = self.open(desc, 0)?;
        read_limited(r, limit, &format!("blob {}", desc.digest))
    }

    /// Read a child manifest named by an index entry. Layouts and archives keep manifests with
    /// the blobs; a registry serves them only from its manifests endpoint.
    fn read_manifest(&self, desc: &RawDescriptor, limit: u64) -> Result<Vec<u8>> {
        self.read_small(desc, limit)
    }
}

/// What a small document read through [`small_blob`] is: it decides how the source is asked.
#[derive(Clone, Copy)]
enum Small {
    Manifest,
    Config,
}

impl Small {
    fn what(self) -> &'static str {
        match self {
            Small::Manifest => "manifest",
            Small::Config => "config",
        }
    }
}

pub struct Options<'a> {
    pub reference: &'a str,
    pub transport: &'a str,
    pub want: Wanted,
    /// Whether the user chose the platform (a mismatch is then an error, not a warning).
    pub want_explicit: bool,
    pub jobs: usize,
    pub progress: &'a Progress,
}

/// What a fetch produced, beyond the record: the top digest for the reference index.
pub struct Fetched {
    pub record: ImageRecord,
    pub top_digest: Digest,
    pub top_media_type: String,
}

/// Read a small blob through the cache: use the cached copy when present (re-verified), else
/// read it from the source, verify it, and store it.
fn small_blob(
    src: &dyn ImageSource,
    store: &Store,
    desc: &RawDescriptor,
    limit: u64,
    kind: Small,
) -> Result<Vec<u8>> {
    let what = kind.what();
    let d = desc.digest()?;
    if desc.size > limit {
        bail!(
            "{what} {d} is {} bytes, over the {limit} byte limit",
            desc.size
        );
    }
    if let Some(b) = store.read_small(&d, limit)? {
        return Ok(b);
    }
    // Like layers, small blobs are fetched under their lock, so concurrent fetchers of one
    // image ask the source once.
    let _lock = store.cache().lock(&format!("blob-{}", d.hex()))?;
    if let Some(b) = store.read_small(&d, limit)? {
        return Ok(b);
    }
    let mut attempt = 0;
    let bytes = loop {
        let read = match kind {
            Small::Manifest => src.read_manifest(desc, limit),
            Small::Config => src.read_small(desc, limit),
        };
        let got = read.and_then(|b| {
            if b.len() as u64 == desc.size {
                return Ok(b);
            }
            let msg = if (b.len() as u64) < desc.size {
                format!(
                    "{what} {d} is truncated: got {} of {} bytes",
                    b.len(),
                    desc.size
                )
            } else {
                format!(
                    "size mismatch for {what} {d}: descriptor says {} bytes, got more",
                    desc.size
                )
            };
            // A short body from the network is worth another try; from a file it is final.
            if src.retryable() && (b.len() as u64) < desc.size {
                Err(anyhow::Error::new(Transient(msg)))
            } else {
                Err(anyhow::anyhow!(msg))
            }
        });
        match got {
            Ok(b) => break b,
            Err(e) if src.retryable() && store::is_transient(&e) && attempt < store::RETRIES => {
                std::thread::sleep(store::backoff(attempt));
                attempt += 1;
            }
            Err(e) => return Err(e.context(format!("cannot read {what} {d}"))),
        }
    };
    d.verify_bytes(&bytes, &format!("{what} {d}"))?;
    store.put_bytes(&d, &bytes)?;
    Ok(bytes)
}

pub fn fetch(src: &dyn ImageSource, store: &Store, opts: &Options) -> Result<Fetched> {
    let top = src.top(store)?;
    if top.bytes.len() as u64 > media::MAX_MANIFEST {
        bail!(
            "manifest is {} bytes, over the {} byte limit",
            top.bytes.len(),
            media::MAX_MANIFEST
        );
    }
    let top_digest = Digest::of_bytes(&top.bytes);
    if let Some(exp) = &top.expected
        && *exp != top_digest
    {
        bail!("digest mismatch for manifest: expected {exp}, content hashes to {top_digest}");
    }
    let (mut doc, top_mt) = media::parse_doc(&top.bytes, &top.media_type, "manifest")?;

    // Walk down indexes (nested ones too, bounded) to one image manifest.
    let mut platform = top.platform.clone();
    let mut manifest_desc = RawDescriptor {
        media_type: top_mt.clone(),
        digest: top_digest.to_string(),
        size: top.bytes.len() as u64,
        annotations: None,
        platform: None,
        urls: None,
    };
    let mut depth = 0;
    let (config_desc, layers) = loop {
        match doc {
            Doc::Manifest { config, layers } => break (config, layers),
            Doc::Index(entries) => {
                depth += 1;
                if depth > 4 {
                    bail!("image indexes nested more than 4 deep");
                }
                let pick = media::select_platform(&entries, &opts.want)?.clone();
                let bytes = small_blob(src, store, &pick, media::MAX_MANIFEST, Small::Manifest)?;
                let (d, mt) = media::parse_doc(&bytes, &pick.media_type, "manifest")?;
                if pick.platform.is_some() {
                    platform = pick.platform.clone();
                }
                manifest_desc = RawDescriptor {
                    media_type: mt,
                    ..pick
                };
                doc = d;
            }
        }
    };
    media::check_image_manifest(&config_desc, &layers)?;
    // Besides the layers: the top document into the cache (verified above) and the config.
    let side_work = || -> Result<serde_json::Value> {
        store.put_bytes_locked(&top_digest, &top.bytes)?;
        let bytes = small_blob(src, store, &config_desc, media::MAX_CONFIG, Small::Config)?;
        let config: serde_json::Value =
            serde_json::from_slice(&bytes).context("image config is not valid JSON")?;
        if !config.is_object() {
            bail!("image config is not a JSON object");
        }
        Ok(config)
    };
    // The side work runs while the layers download (a round trip and an fsync less before the
    // first layer byte), except when only the config can tell whether this is the platform the
    // user asked for: then it is done and checked first, so a wrong image's layers never come.
    // With every layer already cached (a warm start) there is nothing to download or overlap:
    // no thread, and no second look at the layers.
    let cancel = AtomicBool::new(false);
    let all_cached = layers
        .iter()
        .all(|l| l.digest().is_ok_and(|d| store.has(&d)));
    let image_config = if (depth == 0 && opts.want_explicit) || all_cached {
        let config = side_work()?;
        if depth == 0 {
            check_single_platform(&config, opts)?;
        }
        if !all_cached {
            fetch_layers(src, store, &layers, opts, &cancel)?;
        }
        config
    } else {
        let (config, layers_fetched) = std::thread::scope(|s| {
            let fetching = s.spawn(|| fetch_layers(src, store, &layers, opts, &cancel));
            let config = side_work();
            if config.is_err() {
                // No more layers for an image that fails anyway (those on their way still
                // land: they are verified).
                cancel.store(true, Ordering::Relaxed);
            }
            let fetched = fetching
                .join()
                .unwrap_or_else(|_| Err(anyhow::anyhow!("the layer downloads panicked")));
            (config, fetched)
        });
        let config = config?;
        if depth == 0 {
            check_single_platform(&config, opts)?;
        }
        layers_fetched?;
        config
    };

    let manifest = Descriptor {
        media_type: manifest_desc.media_type.clone(),
        digest: manifest_desc.digest.clone(),
        size: manifest_desc.size,
        annotations: None,
    };
    let mut record = ImageRecord::new(
        opts.reference,
        opts.transport,
        store.layout(),
        manifest,
        config_desc.to_record(),
        layers.iter().map(RawDescriptor::to_record).collect(),
        image_config,
    );
    if let Some(p) = &platform {
        record = record.with_platform(p.to_record());
    }
    Ok(Fetched {
        record,
        top_digest,
        top_media_type: top_mt,
    })
}

/// Download the layers not in the cache yet.
fn fetch_layers(
    src: &dyn ImageSource,
    store: &Store,
    layers: &[RawDescriptor],
    opts: &Options,
    cancel: &AtomicBool,
) -> Result<()> {
    for l in layers {
        if media::layer_kind(&l.media_type).is_some_and(|k| k.non_distributable)
            && !store.has(&l.digest()?)
        {
            common::cli::debug(format!(
                "layer {} is non-distributable; trying the source anyway",
                l.digest
            ));
        }
    }
    store
        .fetch_all(layers, src, opts.progress, opts.jobs, cancel)
        .map_err(|e| explain_foreign(e, layers, store))
}

/// An image without an index has one platform, named in its config: say so when it is not the
/// one wanted (an error when the user asked for a platform, a warning for the host default).
fn check_single_platform(config: &serde_json::Value, opts: &Options) -> Result<()> {
    let p = Platform::of_config(config);
    if p.os.is_empty() || p.architecture.is_empty() {
        return Ok(());
    }
    let raw = RawPlatform {
        os: p.os.clone(),
        architecture: p.architecture.clone(),
        variant: p.variant.clone(),
    };
    if opts.want.matches(&raw) {
        return Ok(());
    }
    let msg = format!(
        "image is for {}/{}{}, not {}",
        p.os,
        p.architecture,
        p.variant.map(|v| format!("/{v}")).unwrap_or_default(),
        opts.want
    );
    if opts.want_explicit {
        bail!(msg);
    }
    common::cli::warn(msg);
    Ok(())
}

/// A missing non-distributable layer gets a message that says why it is missing.
fn explain_foreign(e: anyhow::Error, layers: &[RawDescriptor], store: &Store) -> anyhow::Error {
    for l in layers {
        let foreign = media::layer_kind(&l.media_type).is_some_and(|k| k.non_distributable);
        if foreign && l.digest().map(|d| !store.has(&d)).unwrap_or(false) {
            let urls = l.urls.clone().unwrap_or_default();
            return e.context(format!(
                "layer {} is non-distributable ({}){}: its owner does not allow it to be copied with the image, and oci-fetch does not download from foreign URLs",
                l.digest,
                l.media_type,
                if urls.is_empty() {
                    String::new()
                } else {
                    format!(", urls: {}", urls.join(" "))
                }
            ));
        }
    }
    e
}
