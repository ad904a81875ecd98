//! Registry authentication: `WWW-Authenticate` challenges and stored credentials.

use anyhow::{Context, Result, bail};
use base64::Engine as _;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// One parsed challenge: scheme (lowercased) and its parameters (names lowercased).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    pub scheme: String,
    pub params: HashMap<String, String>,
}

/// Parse a `WWW-Authenticate` value (RFC 7235): `Scheme k=v, k="quoted, with commas", ...`,
/// possibly several challenges in one header. Quoted strings may contain commas (Docker scopes
/// like `repository:a:pull,push`) and backslash escapes, so splitting on ',' is wrong.
pub fn parse_challenges(h: &str) -> Vec<Challenge> {
    let b = h.as_bytes();
    let mut i = 0;
    let mut out: Vec<Challenge> = Vec::new();
    let skip_ws = |i: &mut usize| {
        while *i < b.len() && (b[*i] == b' ' || b[*i] == b'\t' || b[*i] == b',') {
            *i += 1;
        }
    };
    let token = |i: &mut usize| -> String {
        let s = *i;
        while *i < b.len() && !matches!(b[*i], b' ' | b'\t' | b',' | b'=') {
            *i += 1;
        }
        h[s..*i].to_string()
    };
    loop {
        skip_ws(&mut i);
        if i >= b.len() {
            break;
        }
        let word = token(&mut i);
        // Look past spaces for '=' to tell a parameter from a new scheme.
        let mut j = i;
        while j < b.len() && (b[j] == b' ' || b[j] == b'\t') {
            j += 1;
        }
        if j < b.len() && b[j] == b'=' && !out.is_empty() {
            i = j + 1;
            while i < b.len() && (b[i] == b' ' || b[i] == b'\t') {
                i += 1;
            }
            let value = if i < b.len() && b[i] == b'"' {
                i += 1;
                let mut v = String::new();
                while i < b.len() && b[i] != b'"' {
                    if b[i] == b'\\' && i + 1 < b.len() {
                        i += 1;
                    }
                    // Copy one UTF-8 character.
                    let ch_len = utf8_len(b[i]);
                    v.push_str(&h[i..(i + ch_len).min(b.len())]);
                    i += ch_len;
                }
                i += 1; // closing quote
                v
            } else {
                let s = i;
                while i < b.len() && b[i] != b',' {
                    i += 1;
                }
                h[s..i].trim().to_string()
            };
            if let Some(c) = out.last_mut() {
                c.params.insert(word.to_ascii_lowercase(), value);
            }
        } else if word.is_empty() {
            i += 1;
        } else {
            out.push(Challenge {
                scheme: word.to_ascii_lowercase(),
                params: HashMap::new(),
            });
        }
    }
    out
}

fn utf8_len(first: u8) -> usize {
    match first {
        0..=0x7f => 1,
        0xc0..=0xdf => 2,
        0xe0..=0xef => 3,
        _ => 4,
    }
}

/// Environment variables carrying registry credentials (see [`Creds::from_env`]).
pub const ENV_USERNAME: &str = "SINGULARITY_DOCKER_USERNAME";
pub const ENV_PASSWORD: &str = "SINGULARITY_DOCKER_PASSWORD";

/// A user name and password. `Debug` is hand-written so a password can never reach a log.
#[derive(Clone, PartialEq, Eq)]
pub struct Creds {
    pub user: String,
    pub pass: String,
}

impl std::fmt::Debug for Creds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Creds({}, <redacted>)", self.user)
    }
}

impl Creds {
    pub fn parse(s: &str) -> Result<Creds> {
        match s.split_once(':') {
            Some((u, p)) if !u.is_empty() => Ok(Creds {
                user: u.into(),
                pass: p.into(),
            }),
            _ => bail!("--creds expects USER:PASSWORD"),
        }
    }

    /// Credentials from `SINGULARITY_DOCKER_USERNAME` and `SINGULARITY_DOCKER_PASSWORD`
    /// (SingularityCE's names), the way to hand a password over without putting it on a
    /// command line, where every user of the host can read it (`ps`, `/proc/PID/cmdline`); a
    /// process's environment is readable by its own user only. A password without a user name
    /// is an error rather than silently anonymous.
    pub fn from_env(get: impl Fn(&str) -> Option<String>) -> Result<Option<Creds>> {
        let user = get(ENV_USERNAME).filter(|v| !v.is_empty());
        let pass = get(ENV_PASSWORD);
        match (user, pass) {
            (Some(user), Some(pass)) => Ok(Some(Creds { user, pass })),
            (Some(user), None) => Ok(Some(Creds {
                user,
                pass: String::new(),
            })),
            (None, Some(p)) if !p.is_empty() => {
                bail!("{ENV_PASSWORD} is set but {ENV_USERNAME} is not")
            }
            _ => Ok(None),
        }
    }

    pub fn basic_header(&self) -> String {
        let raw = format!("{}:{}", self.user, self.pass);
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(raw)
        )
    }
}

/// Auth files in the order containers/image and Docker consult them.
pub fn auth_files(explicit: Option<&Path>) -> Vec<PathBuf> {
    if let Some(p) = explicit {
        return vec![p.to_path_buf()];
    }
    let mut v = Vec::new();
    if let Some(p) = std::env::var_os("REGISTRY_AUTH_FILE").filter(|p| !p.is_empty()) {
        v.push(PathBuf::from(p));
    }
    if let Some(r) = std::env::var_os("XDG_RUNTIME_DIR").filter(|p| !p.is_empty()) {
        v.push(PathBuf::from(r).join("containers/auth.json"));
    }
    if let Ok(home) = common::identity::home_dir() {
        v.push(home.join(".config/containers/auth.json"));
        v.push(home.join(".docker/config.json"));
    }
    v
}

/// Look up credentials for `registry` (as the user named it) and `repository`. An explicit
/// `--authfile` that cannot be read is an error; the default files are optional. In each file,
/// as in Docker, a credential helper named for the registry (or the default `credsStore`) is
/// asked first (when `use_helpers`), then the `auths` entries.
pub fn lookup(
    files: &[PathBuf],
    explicit: bool,
    registry: &str,
    repository: &str,
    use_helpers: bool,
) -> Result<Option<Creds>> {
    for f in files {
        let bytes = match std::fs::read(f) {
            Ok(b) => b,
            Err(e) if !explicit && e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => {
                return Err(e).with_context(|| format!("cannot read auth file {}", f.display()));
            }
        };
        let v: serde_json::Value = serde_json::from_slice(&bytes)
            .with_context(|| format!("auth file {} is not valid JSON", f.display()))?;
        if use_helpers && let Some(name) = super::credhelper::helper_for(&v, registry) {
            let path = std::env::var_os("PATH");
            if let Some(c) = super::credhelper::get(&name, registry, path.as_deref()) {
                return Ok(Some(c));
            }
        }
        let Some(auths) = v.get("auths").and_then(|a| a.as_object()) else {
            continue;
        };
        for key in candidate_keys(registry, repository) {
            let Some(entry) = auths.get(&key) else {
                continue;
            };
            if let Some(c) = decode_entry(entry)
                .with_context(|| format!("bad entry '{key}' in {}", f.display()))?
            {
                return Ok(Some(c));
            }
        }
    }
    Ok(None)
}

/// Keys an auth file may use: most specific repository namespace first, then the host in the
/// spellings Docker has used.
fn candidate_keys(registry: &str, repository: &str) -> Vec<String> {
    let mut keys = Vec::new();
    let parts: Vec<&str> = repository.split('/').collect();
    for n in (1..=parts.len()).rev() {
        keys.push(format!("{registry}/{}", parts[..n].join("/")));
    }
    keys.push(registry.to_string());
    keys.push(format!("https://{registry}"));
    keys.push(format!("http://{registry}"));
    if registry == crate::reference::DOCKER_HUB {
        for k in [
            "https://index.docker.io/v1/",
            "index.docker.io",
            "registry-1.docker.io",
        ] {
            keys.push(k.to_string());
        }
    }
    keys
}

fn decode_entry(entry: &serde_json::Value) -> Result<Option<Creds>> {
    if let Some(a) = entry
        .get("auth")
        .and_then(|a| a.as_str())
        .filter(|a| !a.is_empty())
    {
        let raw = base64::engine::general_purpose::STANDARD
            .decode(a.trim())
            .context("'auth' is not base64")?;
        let s = String::from_utf8(raw).context("'auth' is not UTF-8")?;
        let (u, p) = s.split_once(':').context("'auth' is not USER:PASSWORD")?;
        return Ok(Some(Creds {
            user: u.into(),
            pass: p.into(),
        }));
    }
    let u = entry.get("username").and_then(|v| v.as_str());
    let p = entry.get("password").and_then(|v| v.as_str());
    Ok(match (u, p) {
        (Some(u), Some(p)) => Some(Creds {
            user: u.into(),
            pass: p.into(),
        }),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_with_comma_scope() {
        let c = parse_challenges(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:samalba/my-app:pull,push""#,
        );
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].scheme, "bearer");
        assert_eq!(c[0].params["realm"], "https://auth.docker.io/token");
        assert_eq!(c[0].params["scope"], "repository:samalba/my-app:pull,push");
        assert_eq!(c[0].params["service"], "registry.docker.io");
    }

    #[test]
    fn several_challenges_escapes_and_tokens() {
        let c = parse_challenges(
            r#"Basic realm="a \"q\" realm", Bearer realm=https://x/t , error=invalid_token"#,
        );
        assert_eq!(c.len(), 2, "{c:?}");
        assert_eq!(c[0].scheme, "basic");
        assert_eq!(c[0].params["realm"], r#"a "q" realm"#);
        assert_eq!(c[1].params["realm"], "https://x/t");
        assert_eq!(c[1].params["error"], "invalid_token");
    }

    #[test]
    fn creds_never_debug_print_the_password() {
        let c = Creds::parse("u:s3cret:x").unwrap();
        assert_eq!(c.pass, "s3cret:x");
        assert!(!format!("{c:?}").contains("s3cret"));
        assert!(Creds::parse("nopass").is_err());
        assert_eq!(Creds::parse("a:b").unwrap().basic_header(), "Basic YTpi");
    }

    #[test]
    fn creds_from_the_environment() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            }
        };
        let c = Creds::from_env(env(&[(ENV_USERNAME, "u"), (ENV_PASSWORD, "p:w")]))
            .unwrap()
            .unwrap();
        assert_eq!((c.user.as_str(), c.pass.as_str()), ("u", "p:w"));
        assert!(Creds::from_env(env(&[])).unwrap().is_none());
        assert!(Creds::from_env(env(&[(ENV_PASSWORD, "p")])).is_err());
        assert_eq!(
            Creds::from_env(env(&[(ENV_USERNAME, "u")]))
                .unwrap()
                .unwrap()
                .pass,
            ""
        );
    }

    #[test]
    fn auth_file_lookup() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("auth.json");
        std::fs::write(
            &f,
            r#"{"auths":{"127.0.0.1:5000":{"auth":"dTpw"},"quay.io/org":{"username":"o","password":"q"},"https://index.docker.io/v1/":{"auth":"aHViOmg="}}}"#,
        )
        .unwrap();
        let files = vec![f.clone()];
        let get = |r: &str, repo: &str| lookup(&files, true, r, repo, false).unwrap();
        assert_eq!(get("127.0.0.1:5000", "x/y").unwrap().user, "u");
        assert_eq!(get("quay.io", "org/app").unwrap().user, "o");
        assert!(get("quay.io", "other/app").is_none());
        assert_eq!(get("docker.io", "library/alpine").unwrap().pass, "h");
        assert!(lookup(&[d.path().join("missing")], true, "a", "b", false).is_err());
        assert!(
            lookup(&[d.path().join("missing")], false, "a", "b", false)
                .unwrap()
                .is_none()
        );
    }
}
