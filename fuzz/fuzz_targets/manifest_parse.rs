//! Manifest, index and config parsing: oci-fetch's `media` module (compiled from its source)
//! under every declared media type, then the checks and the platform choice it feeds, and the
//! records of `common::record` that carry manifests and configs between the stages.
#![no_main]

use oci_fetch::media;

use libfuzzer_sys::fuzz_target;

const DECLARED: &[&str] = &[
    "",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/json",
];

fuzz_target!(|data: &[u8]| {
    let declared = DECLARED[data.first().map_or(0, |b| *b as usize) % DECLARED.len()];
    let body = data.get(1..).unwrap_or_default();
    if let Ok((doc, _mt)) = media::parse_doc(body, declared, "fuzz") {
        match doc {
            media::Doc::Index(m) => {
                let _ = media::select_platform(&m, &media::Wanted::host());
                if let Ok(w) = media::Wanted::parse("linux/arm/v7") {
                    let _ = media::select_platform(&m, &w);
                }
                for d in &m {
                    let _ = d.digest();
                    let _ = d.to_record();
                    if let Some(p) = &d.platform {
                        let _ = p.to_record();
                    }
                }
            }
            media::Doc::Manifest { config, layers } => {
                let _ = media::check_image_manifest(&config, &layers);
                for l in &layers {
                    let _ = media::layer_kind(&l.media_type);
                }
            }
        }
    }
    // The same bytes as an image config, and as each record kind.
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) {
        let _ = common::record::Platform::of_config(&v);
    }
    let _ = common::record::parse_record::<common::record::ImageRecord>(body, "fuzz");
    let _ = common::record::parse_record::<common::record::RootfsRecord>(body, "fuzz");
    let _ = common::record::parse_record::<common::record::BundleRecord>(body, "fuzz");
    if let Ok(s) = std::str::from_utf8(body) {
        let _ = media::Wanted::parse(s);
        let _ = common::digest::Digest::parse(s);
    }
});
