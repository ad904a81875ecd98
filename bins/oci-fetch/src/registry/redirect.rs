//! Where credentials may go: redirects followed by hand, and token realms.
//!
//! ureq's own redirect handling keeps `Authorization` for the same *host* (any port, any
//! scheme), so a redirect to another port of the registry's host, or from https to http, would
//! carry the credentials along. Redirects are therefore followed here: the header goes only to
//! the scheme, host and port it was meant for.

use anyhow::{Context, Result, bail};
use ureq::http::Uri;

/// Redirects followed for one request before giving up.
pub const MAX_REDIRECTS: usize = 5;

/// The statuses that carry a `Location` to follow with the same method.
pub fn is_redirect(status: u16) -> bool {
    matches!(status, 301 | 302 | 303 | 307 | 308)
}

/// Scheme, host and port of an absolute URL (ports made explicit), lower-cased.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    scheme: String,
    host: String,
    port: u16,
}

impl Origin {
    pub fn of(url: &str) -> Option<Origin> {
        let u: Uri = url.parse().ok()?;
        let scheme = u.scheme_str()?.to_ascii_lowercase();
        let port = match (u.port_u16(), scheme.as_str()) {
            (Some(p), _) => p,
            (None, "https") => 443,
            (None, "http") => 80,
            _ => return None,
        };
        Some(Origin {
            host: u.host()?.to_ascii_lowercase(),
            scheme,
            port,
        })
    }

    pub fn is_https(&self) -> bool {
        self.scheme == "https"
    }
}

/// Whether a request to `to` may carry the credentials meant for `from`: same scheme, host and
/// port only.
pub fn same_origin(from: &str, to: &str) -> bool {
    matches!((Origin::of(from), Origin::of(to)), (Some(a), Some(b)) if a == b)
}

/// The absolute URL a `Location` header names, relative to the URL that answered.
pub fn resolve(base: &str, location: &str) -> Result<String> {
    let location = location.trim();
    if location.is_empty() {
        bail!("redirect without a Location");
    }
    let b: Uri = base
        .parse()
        .with_context(|| format!("bad request URL {base}"))?;
    let scheme = b.scheme_str().context("request URL without a scheme")?;
    let authority = b.authority().context("request URL without a host")?;
    let url = if location.parse::<Uri>().is_ok_and(|u| u.scheme().is_some()) {
        location.to_string()
    } else if location.starts_with("//") {
        format!("{scheme}:{location}")
    } else if location.starts_with('/') {
        format!("{scheme}://{authority}{location}")
    } else {
        let dir = b.path().rsplit_once('/').map_or("", |(d, _)| d);
        format!("{scheme}://{authority}{dir}/{location}")
    };
    match Origin::of(&url) {
        Some(_) => Ok(url),
        None => bail!("redirect to an unusable location '{location}'"),
    }
}

/// Whether Basic credentials may go to the token service `realm` that a registry at
/// `registry_url` named. The realm may be another host (Docker Hub's is auth.docker.io), but only
/// over TLS: over plain HTTP, only when the user asked for plain HTTP to this registry
/// (`--no-https`) and the realm is on the registry's own host.
pub fn realm_may_get_credentials(realm: &str, registry_url: &str, plain_http: bool) -> bool {
    let (Some(r), Some(reg)) = (Origin::of(realm), Origin::of(registry_url)) else {
        return false;
    };
    r.is_https() || (plain_http && r.host == reg.host)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_compare_scheme_host_and_port() {
        let reg = "https://Reg.example:5000/v2/a/blobs/sha256:1";
        assert!(same_origin(reg, "https://reg.example:5000/other"));
        assert!(!same_origin(reg, "https://reg.example:5001/v2/a"));
        assert!(!same_origin(reg, "http://reg.example:5000/v2/a"));
        assert!(!same_origin(reg, "https://storage.example:5000/x"));
        assert!(same_origin("https://r.io/v2/", "https://r.io:443/x"));
        assert!(same_origin("http://r.io/v2/", "http://r.io:80/x"));
        assert!(!same_origin("https://r.io/v2/", "ftp://r.io/x"));
        assert!(!same_origin("https://r.io/v2/", "not a url"));
    }

    #[test]
    fn locations_resolve_against_the_answering_url() {
        let base = "https://r.io:5000/v2/a/blobs/sha256:1?x=y";
        assert_eq!(
            resolve(base, "https://s3.example/b?sig=1").unwrap(),
            "https://s3.example/b?sig=1"
        );
        assert_eq!(
            resolve(base, "//cdn.example/b").unwrap(),
            "https://cdn.example/b"
        );
        assert_eq!(
            resolve(base, "/storage/b").unwrap(),
            "https://r.io:5000/storage/b"
        );
        assert_eq!(
            resolve(base, "sha256:2").unwrap(),
            "https://r.io:5000/v2/a/blobs/sha256:2"
        );
        assert!(resolve(base, "").is_err());
        assert!(resolve(base, "gopher://x/").is_err());
    }

    #[test]
    fn basic_credentials_reach_a_realm_over_tls_or_the_plain_http_registry_host_only() {
        let hub = "https://registry-1.docker.io/v2/";
        assert!(realm_may_get_credentials(
            "https://auth.docker.io/token",
            hub,
            false
        ));
        assert!(!realm_may_get_credentials(
            "http://auth.docker.io/token",
            hub,
            false
        ));
        let plain = "http://127.0.0.1:5000/v2/";
        assert!(!realm_may_get_credentials(
            "http://127.0.0.1:5001/token",
            plain,
            false
        ));
        assert!(realm_may_get_credentials(
            "http://127.0.0.1:5001/token",
            plain,
            true
        ));
        assert!(!realm_may_get_credentials(
            "http://evil.example/token",
            plain,
            true
        ));
        assert!(!realm_may_get_credentials("no-scheme/token", plain, true));
    }
}
