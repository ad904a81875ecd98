//! `docker://` sources: the distribution v2 protocol over ureq.
//!
//! * Manifests are asked for with every OCI and Docker manifest/index media type.
//! * A 401 starts the auth flow once: a Bearer challenge is answered by fetching a token from the
//!   realm (with Basic credentials when we have some), a Basic challenge by sending credentials.
//! * Redirects are followed by hand (redirect.rs): `Authorization` goes only to the same scheme,
//!   host and port, so blob redirects to object storage (or to another port of the registry's
//!   host) never receive our credentials. Basic credentials go to a token realm only over TLS,
//!   or over plain HTTP to the registry's own host when the user asked for plain HTTP.
//! * 5xx, 429, connection resets and timeouts are retried with backoff a bounded number of times;
//!   blob bodies that break off mid-way resume with `Range` (see store.rs).
//! * Warm path: for a tag fetched before (`refs/`), one `HEAD` of the manifest; when its digest
//!   is already in the cache the whole image is resolved from the cache. By digest, no request
//!   at all. A tag never fetched costs no `HEAD`: the manifest is fetched at once.

pub mod auth;
pub mod credhelper;
pub mod pinned;
pub mod redirect;
pub mod tls;

use crate::image::{ImageSource, Top};
use crate::media::{self, RawDescriptor};
use crate::reference::DockerRef;
use crate::store::{self, BlobSource, Store, Transient};
use anyhow::{Context, Result, anyhow, bail};
use auth::Creds;
use common::digest::Digest;
use std::io::Read;
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use ureq::Body;
use ureq::http::Response;

pub struct Settings {
    pub creds: Option<Creds>,
    pub authfile: Option<PathBuf>,
    pub cert_dir: Option<PathBuf>,
    pub tls_verify: bool,
    pub plain_http: bool,
    pub offline: bool,
}

pub struct Registry {
    agent: ureq::Agent,
    base: String,
    r: DockerRef,
    creds: Option<Creds>,
    /// Current `Authorization` value, shared by the parallel blob downloads.
    auth: Mutex<Option<String>>,
    connected: AtomicBool,
    offline: bool,
    plain_http: bool,
}

#[derive(Clone, Copy)]
enum Method {
    Get,
    Head,
}

impl Registry {
    pub fn new(r: DockerRef, s: Settings) -> Result<Registry> {
        let host = r.api_host().to_string();
        let creds = match s.creds {
            Some(c) => Some(c),
            None => auth::lookup(
                &auth::auth_files(s.authfile.as_deref()),
                s.authfile.is_some(),
                &r.registry,
                &r.repository,
                // --offline never talks to the registry, so it needs no helper either.
                !s.offline,
            )?,
        };
        // Loading the trust store costs milliseconds; the warm path with --offline or over
        // plain HTTP never needs it.
        let tls = if s.plain_http || s.offline {
            tls::Tls::Ureq(ureq::tls::TlsConfig::default())
        } else {
            tls::config(&host, s.cert_dir.as_deref(), s.tls_verify)?
        };
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            // Redirects are followed in `raw`, which decides where Authorization may go.
            .max_redirects(0)
            .user_agent(concat!("oci-fetch/", env!("CARGO_PKG_VERSION")))
            .accept_encoding("identity")
            .timeout_connect(Some(Duration::from_secs(30)))
            .timeout_recv_response(Some(Duration::from_secs(60)))
            .timeout_per_read(Some(Duration::from_secs(60)))
            .max_idle_connections_per_host(16);
        let agent = tls.agent(config);
        let scheme = if s.plain_http { "http" } else { "https" };
        Ok(Registry {
            agent,
            base: format!("{scheme}://{host}"),
            r,
            creds,
            auth: Mutex::new(None),
            connected: AtomicBool::new(false),
            offline: s.offline,
            plain_http: s.plain_http,
        })
    }

    fn name(&self) -> String {
        format!("{}/{}", self.r.registry, self.r.repository)
    }

    /// One request, following redirects; `auth` is sent only to the origin of `url`.
    fn raw(
        &self,
        m: Method,
        url: &str,
        accept: Option<&str>,
        range: Option<u64>,
        auth: Option<&str>,
    ) -> Result<Response<Body>> {
        let mut target = url.to_string();
        for _ in 0..=redirect::MAX_REDIRECTS {
            let auth_here = auth.filter(|_| redirect::same_origin(url, &target));
            let resp = self.send(m, &target, accept, range, auth_here)?;
            if !redirect::is_redirect(resp.status().as_u16()) {
                return Ok(resp);
            }
            let Some(location) = resp.headers().get("location").and_then(|v| v.to_str().ok())
            else {
                return Ok(resp);
            };
            let next = redirect::resolve(&target, location)?;
            common::cli::debug(format!(
                "redirect {} -> {next}{}",
                target,
                if auth.is_some() && !redirect::same_origin(url, &next) {
                    " (without credentials)"
                } else {
                    ""
                }
            ));
            target = next;
        }
        bail!(
            "request to {url} failed: more than {} redirects",
            redirect::MAX_REDIRECTS
        )
    }

    fn send(
        &self,
        m: Method,
        url: &str,
        accept: Option<&str>,
        range: Option<u64>,
        auth: Option<&str>,
    ) -> Result<Response<Body>> {
        let mut req = match m {
            Method::Get => self.agent.get(url),
            Method::Head => self.agent.head(url),
        };
        if let Some(a) = accept {
            req = req.header("Accept", a);
        }
        if let Some(off) = range {
            req = req.header("Range", format!("bytes={off}-"));
        }
        if let Some(a) = auth {
            req = req.header("Authorization", a);
        }
        match req.call() {
            Ok(r) => {
                self.connected.store(true, Ordering::Relaxed);
                Ok(r)
            }
            Err(e) => Err(self.classify(e, url)),
        }
    }

    fn classify(&self, e: ureq::Error, url: &str) -> anyhow::Error {
        let host = self.r.api_host();
        let first_contact = !self.connected.load(Ordering::Relaxed);
        match e {
            ureq::Error::Io(ref io)
                if first_contact && io.kind() == std::io::ErrorKind::ConnectionRefused =>
            {
                anyhow!("cannot connect to registry {host}: connection refused")
            }
            ureq::Error::Io(ref io)
                if self.base.starts_with("https:")
                    && io.to_string().contains("InvalidContentType") =>
            {
                anyhow!(
                    "TLS handshake with {host} failed: it does not speak HTTPS (a plain-HTTP registry needs --no-https)"
                )
            }
            // The server's alert about *our* certificate (Go sends bad_certificate when a
            // required client certificate is missing; TLS 1.3 has certificate_required).
            ureq::Error::Io(ref io)
                if [
                    "fatal alert: BadCertificate",
                    "fatal alert: CertificateRequired",
                ]
                .iter()
                .any(|a| io.to_string().contains(a)) =>
            {
                anyhow!(
                    "registry {host} refused the TLS connection: it wants a client certificate, or refused ours ({io}); put NAME.cert and NAME.key into --cert-dir DIR or /etc/containers/certs.d/{host}/"
                )
            }
            ureq::Error::Io(ref io) if io.to_string().contains("certificate") => anyhow!(
                "TLS certificate of {host} not trusted: {io} (trust its CA with --cert-dir DIR or /etc/containers/certs.d/{host}/ca.crt)"
            ),
            // Nothing answering at all on first contact: retrying only multiplies the wait.
            ureq::Error::Timeout(t) if first_contact => {
                anyhow!("cannot reach registry {host}: {t} timed out")
            }
            ureq::Error::Io(ref io) if first_contact => {
                anyhow!("cannot reach registry {host}: {io}")
            }
            ureq::Error::Timeout(_) | ureq::Error::Io(_) | ureq::Error::BodyStalled => {
                anyhow::Error::new(Transient(format!("request to {url} failed: {e}")))
            }
            // A refused connection on first contact means no registry there: fail now.
            ureq::Error::ConnectionFailed if self.connected.load(Ordering::Relaxed) => {
                anyhow::Error::new(Transient(format!("connection to {host} failed")))
            }
            ureq::Error::ConnectionFailed => anyhow!("cannot connect to registry {host}"),
            ureq::Error::HostNotFound => anyhow!("cannot resolve registry host {host}"),
            ureq::Error::Tls(_) | ureq::Error::Rustls(_) => anyhow!(
                "TLS error talking to {host}: {e} (trust a CA with --cert-dir or /etc/containers/certs.d/{host}/*.crt)"
            ),
            other => anyhow!("request to {url} failed: {other}"),
        }
    }

    /// A request with bounded retries and one authentication round on 401.
    fn request(
        &self,
        m: Method,
        url: &str,
        accept: Option<&str>,
        range: Option<u64>,
    ) -> Result<Response<Body>> {
        let mut attempt = 0;
        let mut authed = false;
        loop {
            let auth = self.auth.lock().unwrap().clone();
            match self.raw(m, url, accept, range, auth.as_deref()) {
                Err(e) if store::is_transient(&e) && attempt < store::RETRIES => {
                    common::cli::debug(format!("retrying {url}: {e:#}"));
                    std::thread::sleep(store::backoff(attempt));
                    attempt += 1;
                }
                Err(e) => return Err(e),
                Ok(resp) => {
                    let st = resp.status().as_u16();
                    if st == 401 && !authed {
                        authed = true;
                        self.authenticate(&resp, auth.as_deref())?;
                        continue;
                    }
                    if (st >= 500 || st == 429) && attempt < store::RETRIES {
                        common::cli::debug(format!("retrying {url}: HTTP {st}"));
                        std::thread::sleep(store::backoff(attempt));
                        attempt += 1;
                        continue;
                    }
                    return Ok(resp);
                }
            }
        }
    }

    /// Answer a 401 challenge, updating the shared Authorization value.
    fn authenticate(&self, resp: &Response<Body>, used: Option<&str>) -> Result<()> {
        {
            // Another thread may already have refreshed the token.
            let cur = self.auth.lock().unwrap();
            if cur.is_some() && cur.as_deref() != used {
                return Ok(());
            }
        }
        let challenges: Vec<auth::Challenge> = resp
            .headers()
            .get_all("www-authenticate")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(auth::parse_challenges)
            .collect();
        let value = if let Some(b) = challenges.iter().find(|c| c.scheme == "bearer") {
            self.bearer_token(b)?
        } else if challenges.iter().any(|c| c.scheme == "basic") {
            match &self.creds {
                Some(c) => c.basic_header(),
                None => bail!(
                    "registry {} requires authentication (give --creds, --authfile, or log in with podman/docker login)",
                    self.r.registry
                ),
            }
        } else {
            bail!(
                "registry {} answered 401 without a usable WWW-Authenticate challenge",
                self.r.registry
            );
        };
        *self.auth.lock().unwrap() = Some(value);
        Ok(())
    }

    fn bearer_token(&self, c: &auth::Challenge) -> Result<String> {
        let realm = c
            .params
            .get("realm")
            .context("Bearer challenge without a realm")?;
        let scope = c
            .params
            .get("scope")
            .cloned()
            .unwrap_or_else(|| format!("repository:{}:pull", self.r.repository));
        let mut url = format!("{realm}?scope={}", urlencode(&scope));
        if let Some(s) = c.params.get("service") {
            url.push_str(&format!("&service={}", urlencode(s)));
        }
        let basic = self.creds_for_realm(realm);
        let resp = self.raw(Method::Get, &url, None, None, basic.as_deref())?;
        let st = resp.status().as_u16();
        if st == 401 || st == 403 {
            bail!(
                "authentication to {} failed (HTTP {st} from the token service): {}",
                self.r.registry,
                if self.creds.is_some() {
                    "bad credentials?"
                } else {
                    "no credentials given"
                }
            );
        }
        if st != 200 {
            bail!("token service {realm} answered HTTP {st}");
        }
        let body = store::read_limited(resp.into_body().into_reader(), 1 << 20, "token")?;
        let v: serde_json::Value =
            serde_json::from_slice(&body).context("token service sent invalid JSON")?;
        let tok = v
            .get("token")
            .or_else(|| v.get("access_token"))
            .and_then(|t| t.as_str())
            .filter(|t| !t.is_empty())
            .context("token service sent no token")?;
        Ok(format!("Bearer {tok}"))
    }

    /// The Basic credentials for token service `realm`, if they may go there (see
    /// [`redirect::realm_may_get_credentials`]); withheld ones are a WARNING, and the token is
    /// then asked for anonymously.
    fn creds_for_realm(&self, realm: &str) -> Option<String> {
        let creds = self.creds.as_ref()?;
        if redirect::realm_may_get_credentials(realm, &self.base, self.plain_http) {
            return Some(creds.basic_header());
        }
        common::cli::warn(format!(
            "not sending the credentials for {} to the token service {realm} over plain HTTP (only the registry's own host gets them unencrypted, with --no-https): asking for an anonymous token",
            self.r.registry
        ));
        None
    }

    /// Turn an unexpected status into an error that names the cause.
    fn status_error(&self, resp: Response<Body>, what: &str) -> anyhow::Error {
        let st = resp.status().as_u16();
        let detail = store::read_limited(resp.into_body().into_reader(), 64 << 10, "error body")
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .and_then(|v| {
                v.pointer("/errors/0/message")
                    .and_then(|m| m.as_str())
                    .map(str::to_string)
            })
            .map(|m| format!(" ({m})"))
            .unwrap_or_default();
        match st {
            401 | 403 => anyhow!(
                "access to {} denied (HTTP {st}){detail}: {}",
                self.name(),
                if self.creds.is_some() {
                    "check the credentials"
                } else {
                    "credentials needed (--creds or --authfile)"
                }
            ),
            404 => anyhow!("{what} not found in {}{detail}", self.name()),
            _ => anyhow!("registry answered HTTP {st} for {what}{detail}"),
        }
    }

    fn manifest_url(&self, reference: &str) -> String {
        format!(
            "{}/v2/{}/manifests/{}",
            self.base, self.r.repository, reference
        )
    }

    fn get_manifest(&self, reference: &str) -> Result<(Vec<u8>, String, Option<Digest>)> {
        let resp = self.request(
            Method::Get,
            &self.manifest_url(reference),
            Some(media::ACCEPT),
            None,
        )?;
        if resp.status().as_u16() != 200 {
            return Err(self.status_error(resp, &format!("manifest '{reference}'")));
        }
        let header = |k: &str| {
            resp.headers()
                .get(k)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        if let Some(n) = header("content-length").and_then(|l| l.parse::<u64>().ok())
            && n > media::MAX_MANIFEST
        {
            bail!(
                "manifest '{reference}' is {n} bytes, over the {} byte limit",
                media::MAX_MANIFEST
            );
        }
        let ct = header("content-type").unwrap_or_default();
        let ct = ct.split(';').next().unwrap_or("").trim().to_string();
        let dcd = header("docker-content-digest").and_then(|d| Digest::parse(&d).ok());
        let bytes = store::read_limited(
            resp.into_body().into_reader(),
            media::MAX_MANIFEST,
            &format!("manifest '{reference}'"),
        )?;
        Ok((bytes, ct, dcd))
    }

    /// The digest a tag points at now, by one HEAD request.
    fn head_digest(&self, reference: &str) -> Result<Option<Digest>> {
        let resp = self.request(
            Method::Head,
            &self.manifest_url(reference),
            Some(media::ACCEPT),
            None,
        )?;
        match resp.status().as_u16() {
            200 => Ok(resp
                .headers()
                .get("docker-content-digest")
                .and_then(|v| v.to_str().ok())
                .and_then(|d| Digest::parse(d).ok())),
            // Some registries refuse HEAD; GET will tell the real story.
            _ => Ok(None),
        }
    }
}

fn urlencode(s: &str) -> String {
    let mut o = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            o.push(b as char);
        } else {
            o.push_str(&format!("%{b:02X}"));
        }
    }
    o
}

/// `refs/<sha256 of canonical reference>.json`: what a tag resolved to last time.
fn ref_path(store: &Store, r: &DockerRef) -> PathBuf {
    store.cache().refs_dir().join(format!(
        "{}.json",
        Digest::of_bytes(r.canonical().as_bytes()).hex()
    ))
}

/// Remember what `r` resolved to. The record is a hint (every reader checks it, and the
/// manifest it names is re-verified by digest), written after the image's blobs are durable:
/// it needs no fsync of its own.
pub fn save_ref(store: &Store, r: &DockerRef, d: &Digest, media_type: &str) -> Result<()> {
    // Unchanged on every warm run: skip the write.
    if load_ref(store, r).is_some_and(|(old, _)| old == *d) {
        return Ok(());
    }
    let v = serde_json::json!({
        "reference": r.canonical(), "digest": d.to_string(), "mediaType": media_type,
    });
    store
        .cache()
        .write_hint(&ref_path(store, r), v.to_string().as_bytes(), 0o600)
}

fn load_ref(store: &Store, r: &DockerRef) -> Option<(Digest, String)> {
    let b = std::fs::read(ref_path(store, r)).ok()?;
    let v: serde_json::Value = serde_json::from_slice(&b).ok()?;
    if v.get("reference")?.as_str()? != r.canonical() {
        return None;
    }
    let d = Digest::parse(v.get("digest")?.as_str()?).ok()?;
    let mt = v
        .get("mediaType")
        .and_then(|m| m.as_str())
        .unwrap_or("")
        .to_string();
    Some((d, mt))
}

impl BlobSource for Registry {
    fn open(&self, desc: &RawDescriptor, offset: u64) -> Result<(Box<dyn Read + Send + '_>, u64)> {
        if self.offline {
            bail!("blob {} is not in the cache (--offline)", desc.digest);
        }
        let url = format!(
            "{}/v2/{}/blobs/{}",
            self.base, self.r.repository, desc.digest
        );
        let range = (offset > 0).then_some(offset);
        let resp = self.request(Method::Get, &url, None, range)?;
        match resp.status().as_u16() {
            200 => Ok((Box::new(resp.into_body().into_reader()), 0)),
            206 => {
                let start = resp
                    .headers()
                    .get("content-range")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.strip_prefix("bytes "))
                    .and_then(|v| v.split('-').next())
                    .and_then(|v| v.parse::<u64>().ok());
                if start != Some(offset) {
                    bail!(Transient(format!(
                        "registry answered a range request for {} with the wrong range",
                        desc.digest
                    )));
                }
                Ok((Box::new(resp.into_body().into_reader()), offset))
            }
            416 if offset > 0 => self.open(desc, 0),
            _ => Err(self.status_error(resp, &format!("blob {}", desc.digest))),
        }
    }

    fn retryable(&self) -> bool {
        true
    }
}

impl ImageSource for Registry {
    /// A child manifest of an index, by digest from the manifests endpoint (the blobs endpoint
    /// does not serve manifests). The caller verifies the digest and the size.
    fn read_manifest(&self, desc: &RawDescriptor, _limit: u64) -> Result<Vec<u8>> {
        if self.offline {
            bail!("manifest {} is not in the cache (--offline)", desc.digest);
        }
        let (bytes, _, _) = self.get_manifest(&desc.digest)?;
        Ok(bytes)
    }

    fn top(&self, store: &Store) -> Result<Top> {
        let from_cache = |d: &Digest, mt: &str| -> Result<Option<Top>> {
            Ok(store.read_small(d, media::MAX_MANIFEST)?.map(|bytes| Top {
                bytes,
                media_type: mt.to_string(),
                expected: Some(d.clone()),
                platform: None,
            }))
        };
        if let Some(d) = &self.r.digest {
            if let Some(t) = from_cache(d, "")? {
                return Ok(t);
            }
        } else if self.offline
            && let Some((d, mt)) = load_ref(store, &self.r)
            && let Some(t) = from_cache(&d, &mt)?
        {
            return Ok(t);
        }
        if self.offline {
            bail!(
                "{} is not in the cache, and --offline forbids asking the registry",
                self.r.canonical()
            );
        }
        let reference = self.r.manifest_ref();
        // A tag fetched before: one HEAD says whether the cached manifest is still the one it
        // names, which spares the GET (Docker Hub counts manifest GETs against its pull limit,
        // not HEADs). A tag never fetched goes straight to the GET: the HEAD would cost a round
        // trip on every cold pull to find the manifest cached under another name only rarely.
        if self.r.digest.is_none()
            && let Some((known, known_mt)) = load_ref(store, &self.r)
            && let Some(d) = self.head_digest(&reference)?
        {
            let mt = if d == known { known_mt } else { String::new() };
            if let Some(t) = from_cache(&d, &mt)? {
                return Ok(t);
            }
        }
        let (bytes, ct, dcd) = self.get_manifest(&reference)?;
        Ok(Top {
            bytes,
            media_type: ct,
            expected: self.r.digest.clone().or(dcd),
            platform: None,
        })
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn urlencode_scopes() {
        assert_eq!(
            super::urlencode("repository:a/b:pull,push"),
            "repository%3Aa%2Fb%3Apull%2Cpush"
        );
    }
}
