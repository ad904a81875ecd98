//! TLS for registries: system CAs plus the `*.crt` files of `certs.d` and `--cert-dir`, and a
//! client certificate (`*.cert` with its `*.key`) from the same directories.

use anyhow::{Context, Result, bail};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use ureq::tls::{Certificate, ClientCert, PemItem, PrivateKey, RootCerts, TlsConfig};

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

/// The files of `dir` ending in `.ext`, sorted; `None` when the directory cannot be read.
fn files_with_extension(dir: &Path, ext: &str) -> Option<Vec<PathBuf>> {
    let rd = std::fs::read_dir(dir).ok()?;
    let mut names: Vec<PathBuf> = rd
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == ext))
        .collect();
    names.sort();
    Some(names)
}

/// The client certificate for `host`: the first `NAME.cert` (a PEM chain) in the certificate
/// directories, in their order, with its `NAME.key` beside it (containers-certs.d(5)). A
/// `.cert` without its `.key` is an error, as in containers/image.
pub fn client_cert(host: &str, cert_dir: Option<&Path>) -> Result<Option<ClientCert>> {
    for d in cert_dirs(host, cert_dir) {
        let Some(cert) = files_with_extension(&d, "cert").and_then(|v| v.into_iter().next()) else {
            continue;
        };
        let key = cert.with_extension("key");
        if !key.is_file() {
            bail!(
                "client certificate {} has no key {} beside it",
                cert.display(),
                key.display()
            );
        }
        let mut chain = Vec::new();
        if read_pem_certs(&cert, &mut chain)? == 0 {
            bail!("{} holds no PEM certificate", cert.display());
        }
        return Ok(Some(ClientCert::new_with_certs(
            &chain,
            read_pem_key(&key)?,
        )));
    }
    Ok(None)
}

fn read_pem_key(path: &Path) -> Result<PrivateKey<'static>> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    for item in ureq::tls::parse_pem(&bytes) {
        if let PemItem::PrivateKey(k) =
            item.with_context(|| format!("{} is not a PEM key file", path.display()))?
        {
            return Ok(k);
        }
    }
    bail!("{} holds no PEM private key", path.display())
}

/// How the registry's TLS connections are made.
pub enum Tls {
    /// By ureq: the platform verifier (system store), or no verification.
    Ureq(TlsConfig),
    /// Certificates are trusted for this registry: by our connector, which also accepts a
    /// server certificate that is exactly one of them (see pinned.rs).
    Pinned(Arc<rustls::ClientConfig>),
}

impl Tls {
    /// The agent for `config`, with this TLS.
    pub fn agent(
        self,
        config: ureq::config::ConfigBuilder<ureq::typestate::AgentScope>,
    ) -> ureq::Agent {
        use ureq::unversioned::transport::{ConnectProxyConnector, Connector, TcpConnector};
        match self {
            Tls::Ureq(tls) => config.tls_config(tls).build().new_agent(),
            Tls::Pinned(c) => ureq::Agent::with_parts(
                config.build(),
                ().chain(ConnectProxyConnector::default())
                    .chain(TcpConnector::default())
                    .chain(super::pinned::PinnedTls(c)),
                ureq::unversioned::resolver::DefaultResolver::default(),
            ),
        }
    }
}

fn der(c: &Certificate<'_>) -> CertificateDer<'static> {
    CertificateDer::from(c.der().to_vec())
}

/// A ureq client certificate in rustls' types (the key's DER form tells its kind).
fn rustls_client_cert(
    c: &ClientCert,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)> {
    let key = PrivateKeyDer::try_from(c.private_key().der())
        .map_err(|e| anyhow::anyhow!("unsupported client key: {e}"))?
        .clone_key();
    Ok((c.certs().iter().map(der).collect(), key))
}

/// TLS for `host`. With no certificates trusted for it, the platform verifier (system store);
/// with some, the system bundle plus them, and a server certificate that is exactly one of them
/// is accepted too. A client certificate is presented whenever one is configured, even without
/// verification.
pub fn config(host: &str, cert_dir: Option<&Path>, verify: bool) -> Result<Tls> {
    let client = client_cert(host, cert_dir)?;
    if !verify {
        return Ok(Tls::Ureq(
            TlsConfig::builder()
                .client_cert(client)
                .disable_verification(true)
                .build(),
        ));
    }
    let mut extra = Vec::new();
    for d in cert_dirs(host, cert_dir) {
        let Some(names) = files_with_extension(&d, "crt") else {
            if cert_dir == Some(d.as_path()) {
                bail!("--cert-dir {} cannot be read", d.display());
            }
            continue;
        };
        for p in names {
            read_pem_certs(&p, &mut extra)?;
        }
    }
    if extra.is_empty() {
        return Ok(Tls::Ureq(
            TlsConfig::builder()
                .client_cert(client)
                .root_certs(RootCerts::PlatformVerifier)
                .build(),
        ));
    }
    let mut all = Vec::new();
    if let Some(b) = system_bundle() {
        read_pem_certs(&b, &mut all)?;
    }
    all.extend(extra.iter().cloned());
    let roots: Vec<CertificateDer<'static>> = all.iter().map(der).collect();
    let client = client.as_ref().map(rustls_client_cert).transpose()?;
    Ok(Tls::Pinned(super::pinned::client_config(
        &roots,
        extra.iter().map(der).collect(),
        client,
    )?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_cert_needs_its_key_and_is_optional() {
        let d = tempfile::tempdir().unwrap();
        // Only CA certificates (and an unrelated .key): no client certificate.
        std::fs::write(d.path().join("ca.crt"), "").unwrap();
        std::fs::write(d.path().join("stray.key"), "").unwrap();
        assert!(
            client_cert("h.invalid:1", Some(d.path()))
                .unwrap()
                .is_none()
        );
        std::fs::write(d.path().join("client.cert"), "").unwrap();
        let e = client_cert("h.invalid:1", Some(d.path()))
            .unwrap_err()
            .to_string();
        assert!(e.contains("has no key"), "{e}");
        std::fs::write(d.path().join("client.key"), "").unwrap();
        let e = client_cert("h.invalid:1", Some(d.path()))
            .unwrap_err()
            .to_string();
        assert!(e.contains("holds no PEM certificate"), "{e}");
    }
}
