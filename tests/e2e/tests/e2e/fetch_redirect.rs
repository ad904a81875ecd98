//! Blob redirects never forward Authorization to another host (a registry's storage backend
//! must not receive the user's registry password).
//!
//! docker-registry with filesystem storage never redirects, so this test runs a minimal
//! registry front in Python (`e2e::pyserver::AuthFront`, loopback only): it serves one OCI
//! layout's manifests on 127.0.0.1 behind Basic auth, and answers every blob GET with a 307 to a
//! second server addressed as `localhost` (another host name), which serves the blob and logs
//! whether an Authorization header arrived. oci-fetch must authenticate to the first and send
//! nothing to the second.

use e2e::pyserver::AuthFront;
use e2e::*;
use std::path::Path;

#[test]
fn blob_redirects_do_not_carry_credentials_to_another_host() {
    let dir = workdir().join("fetch-scratch").join("redirect");
    let server = AuthFront::start(&dir, "basic", "localhost");

    for p in [Profile::Root, Profile::User] {
        let ctx = Ctx::new(p, Rt::Crun, &current_test_name());
        let out = server.pull(&ctx);
        let rec = out.json();
        let idx: serde_json::Value =
            serde_json::from_slice(&std::fs::read(fixture("busybox").join("index.json")).unwrap())
                .unwrap();
        assert_eq!(rec["digest"], idx["manifests"][0]["digest"]);
        let hits = server.hits();
        // The config and the layer both came through the redirect.
        assert!(
            hits.len() >= 2,
            "blobs did not go through the redirect: {hits:?}"
        );
        for h in &hits {
            assert!(
                h["auth"].is_null(),
                "Authorization was forwarded to another host: {h}"
            );
        }
        assert!(
            Path::new(&ctx.dir().join("cache"))
                .join("cache/oci-launcher/layout")
                .is_dir()
        );
    }
}
