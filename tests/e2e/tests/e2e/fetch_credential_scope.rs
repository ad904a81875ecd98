//! Where registry credentials may travel: only to the scheme, host and port they were given for
//! (redirects), and to a token service only over TLS, or over plain HTTP to the registry's own
//! host when the user asked for plain HTTP (`--no-https`).
//!
//! A loopback registry front in Python (`e2e::pyserver::AuthFront`) serves one OCI layout. Its blobs
//! are redirected to a storage server on *the same host, another port*; in the Bearer modes its
//! 401 names a token service on another port, addressed as `127.0.0.1` (the registry's host) or
//! as `localhost` (another host name). Storage and token service log every Authorization header
//! they receive.

use e2e::pyserver::AuthFront;
use e2e::*;

/// One logged request: which server, and the Authorization it received.
type Hit = (String, Option<String>);

/// Pull `sioci/busybox` from a fresh server in `mode` as root and as the test user, with
/// `--no-https --creds u:p`; returns each run's log and stderr.
fn pull_in_mode(mode: &str) -> Vec<(Ctx, Vec<Hit>, String)> {
    let dir = workdir()
        .join("fetch-scratch")
        .join(format!("scope-{mode}"));
    let server = AuthFront::start(&dir, mode, "127.0.0.1");
    let mut runs = Vec::new();
    for p in [Profile::Root, Profile::User] {
        let ctx = Ctx::new(p, Rt::Crun, &format!("{}-{mode}", current_test_name()));
        let out = server.pull(&ctx);
        assert!(!out.stderr.contains("u:p") && !out.stderr.contains("dTpw"));
        let hits = server
            .hits()
            .iter()
            .map(|v| {
                (
                    v["who"].as_str().unwrap().to_string(),
                    v["auth"].as_str().map(str::to_string),
                )
            })
            .collect();
        runs.push((ctx, hits, out.stderr.clone()));
    }
    runs
}

/// ureq's `SameHost` would keep Authorization on a redirect to another port of the same host.
#[test]
fn a_redirect_to_another_port_of_the_same_host_gets_no_credentials() {
    for (ctx, hits, _) in pull_in_mode("basic") {
        let storage: Vec<_> = hits.iter().filter(|(w, _)| w == "storage").collect();
        assert!(
            storage.len() >= 2,
            "[{}] blobs did not go through the redirect: {hits:?}",
            ctx.name
        );
        for (_, auth) in storage {
            assert_eq!(
                auth, &None,
                "[{}] Authorization went to another port",
                ctx.name
            );
        }
    }
}

/// A registry may name a token service on another host (Docker Hub does), but Basic
/// credentials go there over plain HTTP only when it is the registry's own host and the user
/// asked for plain HTTP: the `localhost` realm gets none (and the pull goes on anonymously,
/// with a WARNING), the `127.0.0.1` realm gets them (the control: the test can see them).
#[test]
fn basic_credentials_reach_a_plain_http_token_service_only_on_the_registry_host() {
    for (ctx, hits, stderr) in pull_in_mode("bearer-other-host") {
        let token: Vec<_> = hits.iter().filter(|(w, _)| w == "token").collect();
        assert!(
            !token.is_empty(),
            "[{}] no token request: {hits:?}",
            ctx.name
        );
        for (_, auth) in &token {
            assert_eq!(
                auth, &None,
                "[{}] credentials sent to a plain-HTTP realm on another host",
                ctx.name
            );
        }
        assert!(
            stderr.contains("WARNING: oci-fetch: not sending the credentials"),
            "[{}] {stderr}",
            ctx.name
        );
        // The blob redirect to another port got nothing either (the Bearer token included).
        assert!(
            hits.iter()
                .filter(|(w, _)| w == "storage")
                .all(|(_, a)| a.is_none()),
            "[{}] {hits:?}",
            ctx.name
        );
    }
    for (ctx, hits, stderr) in pull_in_mode("bearer-same-host") {
        let token: Vec<_> = hits.iter().filter(|(w, _)| w == "token").collect();
        assert!(
            !token.is_empty(),
            "[{}] no token request: {hits:?}",
            ctx.name
        );
        assert!(
            token
                .iter()
                .all(|(_, a)| a.as_deref() == Some("Basic dTpw")),
            "[{}] the registry's own host should get the credentials: {hits:?}",
            ctx.name
        );
        assert!(!stderr.contains("WARNING"), "[{}] {stderr}", ctx.name);
    }
}
