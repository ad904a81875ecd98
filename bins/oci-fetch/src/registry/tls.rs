//! TLS trust for registries: system CAs, plus `certs.d` and `--cert-dir` certificates.

use anyhow::{Context, Result};
use std::path::{Path, PathBuf};
use ureq::tls::{Certificate, PemItem, RootCerts, TlsConfig};

/// Directories whose `*.crt` files are trusted for `host` (containers-certs.d(5) layout).
pub fn cert_dirs(host: &str, cert_dir: Option<&Path>) -> Vec<PathBuf> {
    let mut v = Vec::new();
    if let Some(d) = cert_dir {
        v.push(d.to_path_buf());
    }
    v.push(Path::new("/etc/containers/certs.d").join(host));
    v.push(Path::new("/etc/docker/certs.d").join(host));
    if let Ok(home) = common::identity::home_dir() {
        v.push(home.join(".config/containers/certs.d").join(host));
    }
    v
}

fn read_pem_certs(path: &Path, out: &mut Vec<Certificate<'static>>) -> Result<usize> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut n = 0;
    for item in ureq::tls::parse_pem(&bytes) {
        if let PemItem::Certificate(c) =
            item.with_context(|| format!("{} is not a PEM certificate file", path.display()))?
        {
            out.push(c);
            n += 1;
        }
    }
    Ok(n)
}

/// The system CA bundle (Debian's, or `$SSL_CERT_FILE`).
fn system_bundle() -> Option<PathBuf> {
    if let Some(f) = std::env::var_os("SSL_CERT_FILE").filter(|f| !f.is_empty()) {
        return Some(PathBuf::from(f));
    }
    [
        "/etc/ssl/certs/ca-certificates.crt",
        "/etc/pki/tls/certs/ca-bundle.crt",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|p| p.is_file())
}

/// TLS configuration for `host`. With no extra certificates, the platform verifier (system
/// store); with some, the system bundle plus them, since rustls takes one root set.
pub fn config(host: &str, cert_dir: Option<&Path>, verify: bool) -> Result<TlsConfig> {
    if !verify {
        return Ok(TlsConfig::builder().disable_verification(true).build());
    }
    let mut extra = Vec::new();
    for d in cert_dirs(host, cert_dir) {
        let Ok(rd) = std::fs::read_dir(&d) else {
            if cert_dir == Some(d.as_path()) {
                anyhow::bail!("--cert-dir {} cannot be read", d.display());
            }
            continue;
        };
        let mut names: Vec<PathBuf> = rd
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "crt"))
            .collect();
        names.sort();
        for p in names {
            read_pem_certs(&p, &mut extra)?;
        }
    }
    if extra.is_empty() {
        return Ok(TlsConfig::builder()
            .root_certs(RootCerts::PlatformVerifier)
            .build());
    }
    let mut all = Vec::new();
    if let Some(b) = system_bundle() {
        read_pem_certs(&b, &mut all)?;
    }
    all.extend(extra);
    Ok(TlsConfig::builder()
        .root_certs(RootCerts::new_with_certs(&all))
        .build())
}
