//! Docker credential helpers: `credHelpers` (per registry host) and `credsStore` (the default)
//! in an auth file name a program `docker-credential-NAME` that keeps the secrets (a keychain,
//! pass, a cloud token service). `docker-credential-NAME get` reads the server on stdin and
//! prints `{"ServerURL":...,"Username":...,"Secret":...}`.
//!
//! A helper that is missing, fails or hangs gives a warning and no credentials (an anonymous
//! pull still works): Docker's hard error on a `credsStore` copied from another machine is a
//! common annoyance. Its output is never printed, since it holds the secret.

use super::auth::Creds;
use anyhow::{Context, Result, bail};
use std::ffi::OsStr;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

/// How long a helper may take (it may ask a keyring or a token service).
const HELPER_TIMEOUT: Duration = Duration::from_secs(30);

/// The helper an auth file names for `registry`: `credHelpers[registry]`, else `credsStore`.
pub fn helper_for(auth_file: &serde_json::Value, registry: &str) -> Option<String> {
    let by_host = auth_file
        .get("credHelpers")
        .and_then(|h| h.get(server_key(registry)).or_else(|| h.get(registry)));
    by_host
        .or_else(|| auth_file.get("credsStore"))
        .and_then(|v| v.as_str())
        .filter(|n| !n.is_empty())
        .map(str::to_string)
}

/// What `docker login` stores the registry under: Docker Hub's legacy URL, else the host.
pub fn server_key(registry: &str) -> &str {
    if registry == crate::reference::DOCKER_HUB {
        "https://index.docker.io/v1/"
    } else {
        registry
    }
}

/// Ask helper `name` for `registry`'s credentials, finding it on `search_path` (PATH). Problems
/// are warnings; `None` means "no credentials from this helper".
pub fn get(name: &str, registry: &str, search_path: Option<&OsStr>) -> Option<Creds> {
    match run(name, server_key(registry), search_path) {
        Ok(c) => c,
        Err(e) => {
            common::cli::warn(format!(
                "credential helper '{name}': {}; going on without credentials",
                common::cli::format_chain(&e)
            ));
            None
        }
    }
}

fn run(name: &str, server: &str, search_path: Option<&OsStr>) -> Result<Option<Creds>> {
    if name.is_empty() || name.contains('/') {
        bail!("'{name}' is not a helper name");
    }
    let program = format!("docker-credential-{name}");
    let exe = search_path
        .and_then(|p| common::runtime::which_in(&program, p))
        .with_context(|| format!("{program} is not on PATH"))?;
    let mut child = Command::new(&exe)
        .arg("get")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot run {}", exe.display()))?;
    let mut stdin = child.stdin.take().expect("piped stdin");
    // A helper that exits without reading gives EPIPE here; its status tells the story.
    let _ = stdin.write_all(format!("{server}\n").as_bytes());
    drop(stdin);
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let out = match rx.recv_timeout(HELPER_TIMEOUT) {
        Ok(r) => r.context("cannot read the helper's answer")?,
        Err(_) => {
            // SAFETY: plain kill(2) of our own child, which has not been reaped yet.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
            bail!("no answer within {} s", HELPER_TIMEOUT.as_secs());
        }
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        // The helpers' own words for "nothing stored for this server".
        if stdout.contains("credentials not found") {
            return Ok(None);
        }
        let err = String::from_utf8_lossy(&out.stderr);
        let last = err
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("");
        bail!(
            "failed ({}){}",
            out.status,
            if last.is_empty() {
                String::new()
            } else {
                format!(": {last}")
            }
        );
    }
    parse_answer(&out.stdout).map(Some)
}

/// `{"Username":..,"Secret":..}`. An identity token (`Username` `<token>`) needs an OAuth2
/// refresh-token exchange, which oci-fetch does not do.
fn parse_answer(stdout: &[u8]) -> Result<Creds> {
    let v: serde_json::Value = serde_json::from_slice(stdout).context("the answer is not JSON")?;
    let user = v.get("Username").and_then(|u| u.as_str()).unwrap_or("");
    let secret = v.get("Secret").and_then(|s| s.as_str()).unwrap_or("");
    if user == "<token>" {
        bail!(
            "it returned an identity token, which oci-fetch cannot use (log in with a password or an access token)"
        );
    }
    if user.is_empty() {
        bail!("the answer has no Username");
    }
    Creds::parse(&format!("{user}:{secret}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::os::unix::fs::PermissionsExt;
    use std::path::Path;

    #[test]
    fn per_host_helper_beats_the_store() {
        let f = json!({"credsStore": "desktop", "credHelpers": {"r.io:5000": "ecr"}});
        assert_eq!(helper_for(&f, "r.io:5000").as_deref(), Some("ecr"));
        assert_eq!(helper_for(&f, "other.io").as_deref(), Some("desktop"));
        assert_eq!(helper_for(&json!({"auths": {}}), "r.io"), None);
        let hub = json!({"credHelpers": {"https://index.docker.io/v1/": "hub"}});
        assert_eq!(
            helper_for(&hub, crate::reference::DOCKER_HUB).as_deref(),
            Some("hub")
        );
    }

    fn helper(dir: &Path, name: &str, body: &str) {
        let p = dir.join(format!("docker-credential-{name}"));
        std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    #[test]
    fn helper_answers_not_found_fails_and_tokens() {
        let d = tempfile::tempdir().unwrap();
        helper(
            d.path(),
            "good",
            r#"read s; [ "$1" = get ] && [ "$s" = r.io ] && echo '{"ServerURL":"r.io","Username":"u","Secret":"p:w"}'"#,
        );
        helper(
            d.path(),
            "none",
            "echo 'credentials not found in native keychain'; exit 1",
        );
        helper(d.path(), "broken", "echo 'keyring locked' >&2; exit 3");
        helper(
            d.path(),
            "token",
            r#"echo '{"Username":"<token>","Secret":"t"}'"#,
        );
        let path = Some(d.path().as_os_str());
        let c = run("good", "r.io", path).unwrap().unwrap();
        assert_eq!((c.user.as_str(), c.pass.as_str()), ("u", "p:w"));
        assert!(run("none", "r.io", path).unwrap().is_none());
        let e = run("broken", "r.io", path).unwrap_err().to_string();
        assert!(e.contains("keyring locked"), "{e}");
        assert!(
            run("token", "r.io", path)
                .unwrap_err()
                .to_string()
                .contains("identity token")
        );
        assert!(
            run("missing", "r.io", path)
                .unwrap_err()
                .to_string()
                .contains("not on PATH")
        );
        assert!(run("../x", "r.io", path).is_err());
        // Problems are warnings: no credentials, no error.
        assert!(get("broken", "r.io", path).is_none());
    }
}
