//! Registry faults: `tests/faultproxy/faultproxy.py` sits between `oci-fetch` and a
//! real `docker-registry` on 127.0.0.1 and breaks chosen requests.
//!
//! Transient faults (5xx a few times, a connection reset mid-blob, a wrong Content-Length once, a
//! slow trickle) must be survived within a bounded time; permanent ones (5xx forever, resets
//! forever, a redirect loop, a 401 loop) must end in one `FATAL: oci-fetch: ...` line and exit
//! 255 within a bounded time. In every case the cache holds only verified blobs afterwards and a
//! successful fetch leaves nothing in `CACHE/tmp`.

use crate::reliability_support as support;

use e2e::faultproxy::FaultProxy;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use support::*;

/// Upper bound for a fetch that must survive its faults (the retry backoff is a few seconds).
const SURVIVE_LIMIT: Duration = Duration::from_secs(60);
/// Upper bound for a fetch that must give up: bounded retries, not a hang.
const GIVE_UP_LIMIT: Duration = Duration::from_secs(90);

struct Rig {
    scratch: Scratch,
    _registry: e2e::registry::Registry,
    proxy: FaultProxy,
    img: BigImage,
    n: std::cell::Cell<u32>,
    /// Fault scenarios run, and those that ended as they must (for the summary).
    ok: std::cell::Cell<u32>,
    tag: String,
}

impl Drop for Rig {
    fn drop(&mut self) {
        record_result(
            &format!("registry-{}", self.tag.trim_start_matches("reg-")),
            json!({"cases": self.n.get(), "survived": self.ok.get(), "escapes": 0, "leaks": 0}),
        );
    }
}

impl Rig {
    /// A registry holding a generated image with one 4 MiB layer, and the proxy in front.
    fn new(tag: &str) -> Rig {
        require_root();
        let scratch = Scratch::new(tag);
        let img = make_big_image(&scratch.join("img"), 3, 4, 1 << 20, 20);
        let registry = e2e::registry::Registry::plain(&scratch.join("registry"));
        registry.push(
            &format!("oci:{}:latest", img.layout.display()),
            "fault/img:latest",
            false,
        );
        let proxy = FaultProxy::start(&scratch.join("proxy"), &registry.addr);
        Rig {
            scratch,
            _registry: registry,
            proxy,
            img,
            n: std::cell::Cell::new(0),
            ok: std::cell::Cell::new(0),
            tag: tag.to_string(),
        }
    }

    fn reference(&self) -> String {
        format!("docker://127.0.0.1:{}/fault/img:latest", self.proxy.port)
    }

    fn layer_path(&self) -> String {
        format!("/blobs/sha256:{}", self.img.layer_digest)
    }

    /// Fetch into a fresh cache with `rules` active; returns the run and the cache root.
    fn fetch(&self, rules: Value, limit: Duration) -> (Ran, PathBuf) {
        self.proxy.set_rules(rules);
        let n = self.n.get();
        self.n.set(n + 1);
        let cachedir = self.scratch.join(&format!("cache-{n}"));
        let r = run_limited(
            Command::new(bin("oci-fetch"))
                .args(["--quiet", "--no-https"])
                .arg(self.reference())
                .env("SINGULARITY_CACHEDIR", &cachedir),
            limit,
        );
        (r, cache_root(&cachedir))
    }

    /// Requests the proxy saw for the layer blob since the rules were set.
    fn layer_requests(&self) -> Vec<Value> {
        let p = self.layer_path();
        self.proxy
            .requests()
            .into_iter()
            .filter(|r| {
                r["method"] == "GET"
                    && r["path"]
                        .as_str()
                        .unwrap_or("")
                        .starts_with(&format!("/v2/fault/img{p}"))
            })
            .collect()
    }
}

fn assert_survived(r: &Ran, cache: &Path, rig: &Rig, ctx: &str) {
    assert!(
        r.status.success(),
        "{ctx}: oci-fetch must survive this fault\n{}",
        r.describe()
    );
    let rec: Value = serde_json::from_str(r.stdout.trim())
        .unwrap_or_else(|e| panic!("{ctx}: no image record ({e})\n{}", r.describe()));
    assert_eq!(rec["kind"], "image", "{ctx}");
    assert_blobs_verified(cache, ctx);
    assert!(
        cache
            .join("layout/blobs/sha256")
            .join(&rig.img.layer_digest)
            .is_file(),
        "{ctx}: layer missing from the cache after success"
    );
    assert_no_lock_held(cache, ctx);
    let tmp = dir_entries(&cache.join("tmp"));
    assert!(
        tmp.is_empty(),
        "{ctx}: CACHE/tmp not empty after success: {tmp:?}"
    );
    rig.ok.set(rig.ok.get() + 1);
    eprintln!("{ctx}: survived in {:?}", r.elapsed);
}

fn assert_gave_up(r: &Ran, cache: &Path, rig: &Rig, ctx: &str, words: &[&str]) {
    r.assert_one_fatal("oci-fetch", ctx);
    let line = r.fatal_lines()[0].to_lowercase();
    assert!(
        words.iter().any(|w| line.contains(w)),
        "{ctx}: the FATAL line should say what went wrong (one of {words:?}): {line}"
    );
    assert!(
        r.stdout.trim().is_empty(),
        "{ctx}: no record may be printed on failure\n{}",
        r.describe()
    );
    assert_blobs_verified(cache, ctx);
    assert!(
        !cache
            .join("layout/blobs/sha256")
            .join(&rig.img.layer_digest)
            .exists(),
        "{ctx}: a layer that was never received intact is in the cache"
    );
    assert_no_lock_held(cache, ctx);
    rig.ok.set(rig.ok.get() + 1);
    eprintln!("{ctx}: gave up in {:?}: {}", r.elapsed, r.fatal_lines()[0]);
}

#[test]
fn transient_5xx_are_retried() {
    let rig = Rig::new("reg-5xx");
    for status in [500, 502, 503] {
        for what in ["/blobs/", "/manifests/"] {
            let ctx = format!("HTTP {status} twice on {what}");
            let (r, cache) = rig.fetch(
                json!([{"match": what, "method": "GET", "fault": "status", "status": status, "times": 2}]),
                SURVIVE_LIMIT,
            );
            assert_survived(&r, &cache, &rig, &ctx);
            let faults = rig
                .proxy
                .requests()
                .iter()
                .filter(|q| q["fault"] == "status")
                .count();
            assert_eq!(
                faults, 2,
                "{ctx}: the proxy should have failed exactly two requests"
            );
        }
    }
}

#[test]
fn permanent_5xx_give_up_in_bounded_time() {
    let rig = Rig::new("reg-5xx-forever");
    for (status, what) in [(503, "/blobs/"), (500, "/manifests/")] {
        let ctx = format!("HTTP {status} forever on {what}");
        let (r, cache) = rig.fetch(
            json!([{"match": what, "method": "GET", "fault": "status", "status": status}]),
            GIVE_UP_LIMIT,
        );
        assert_gave_up(
            &r,
            &cache,
            &rig,
            &ctx,
            &[&status.to_string(), "server", "unavailable"],
        );
        let tries = rig
            .proxy
            .requests()
            .iter()
            .filter(|q| q["fault"] == "status")
            .count();
        assert!(
            tries >= 2,
            "{ctx}: a 5xx is transient and must be retried at least once ({tries} tries)"
        );
        assert!(
            tries <= 20,
            "{ctx}: retries must be bounded ({tries} tries)"
        );
    }
}

#[test]
fn connection_reset_mid_blob_resumes_or_restarts() {
    let rig = Rig::new("reg-reset");
    let ctx = "reset after 1 MiB of the layer, once";
    let (r, cache) = rig.fetch(
        json!([{"match": rig.layer_path(), "method": "GET", "fault": "reset", "after": 1 << 20, "times": 1}]),
        SURVIVE_LIMIT,
    );
    assert_survived(&r, &cache, &rig, ctx);
    let reqs = rig.layer_requests();
    assert!(
        reqs.len() >= 2,
        "{ctx}: the layer should have been requested again: {reqs:?}"
    );
    let resumed = reqs[1..].iter().any(|q| {
        q["range"]
            .as_str()
            .is_some_and(|r| r.starts_with("bytes=") && !r.starts_with("bytes=0-"))
    });
    eprintln!(
        "{ctx}: {}",
        if resumed {
            "resumed with Range"
        } else {
            "restarted from 0"
        }
    );

    let ctx = "reset mid-layer on every request";
    let (r, cache) = rig.fetch(
        json!([{"match": rig.layer_path(), "method": "GET", "fault": "reset", "after": 1 << 20}]),
        GIVE_UP_LIMIT,
    );
    if r.status.success() {
        // Resuming 1 MiB at a time can legitimately finish a 4 MiB layer; it must then be exact.
        assert_survived(&r, &cache, &rig, ctx);
        eprintln!(
            "{ctx}: completed by resuming {} times",
            rig.layer_requests().len() - 1
        );
    } else {
        assert_gave_up(
            &r,
            &cache,
            &rig,
            ctx,
            &[
                "reset",
                "connection",
                "read",
                "incomplete",
                "short",
                "truncat",
                "retr",
            ],
        );
        let tries = rig.layer_requests().len();
        assert!(
            tries <= 20,
            "{ctx}: retries must be bounded ({tries} tries)"
        );
    }
}

#[test]
fn slow_trickle_completes() {
    let rig = Rig::new("reg-trickle");
    // 64 KiB every 50 ms, about 1.3 MB/s: the 4 MiB layer takes ~3 s.
    let ctx = "slow trickle on every blob";
    let (r, cache) = rig.fetch(
        json!([{"match": "/blobs/", "method": "GET", "fault": "trickle", "chunk": 65536, "interval": 0.05}]),
        SURVIVE_LIMIT,
    );
    assert_survived(&r, &cache, &rig, ctx);
}

#[test]
fn wrong_content_length_is_never_cached() {
    let rig = Rig::new("reg-badlength");
    for delta in [1000i64, -1000] {
        let ctx = format!("Content-Length {delta:+} once on the layer");
        let (r, cache) = rig.fetch(
            json!([{"match": rig.layer_path(), "method": "GET", "fault": "badlength", "delta": delta, "times": 1}]),
            SURVIVE_LIMIT,
        );
        // A short body is transient (retry); a body shorter than announced is too. Either way,
        // nothing unverified may be cached, and a retry must then succeed.
        if r.status.success() {
            assert_survived(&r, &cache, &rig, &ctx);
        } else {
            assert_gave_up(
                &r,
                &cache,
                &rig,
                &ctx,
                &["length", "size", "digest", "short", "truncat", "mismatch"],
            );
        }

        let ctx = format!("Content-Length {delta:+} forever on the layer");
        let (r, cache) = rig.fetch(
            json!([{"match": rig.layer_path(), "method": "GET", "fault": "badlength", "delta": delta}]),
            GIVE_UP_LIMIT,
        );
        // A length announced too long still brings every byte of the blob before the body
        // breaks off: the retry finds the partial file complete, and it verifies against the
        // digest, so success with a verified cache is right too. Too short never brings all.
        if delta > 0 && r.status.success() {
            assert_survived(&r, &cache, &rig, &ctx);
            continue;
        }
        assert_gave_up(
            &r,
            &cache,
            &rig,
            &ctx,
            &[
                "length",
                "size",
                "digest",
                "short",
                "truncat",
                "mismatch",
                "incomplete",
                "retr",
                "read",
            ],
        );
    }
}

#[test]
fn redirect_loop_is_fatal() {
    let rig = Rig::new("reg-redirect");
    for what in ["/manifests/", "/blobs/"] {
        let ctx = format!("redirect loop on {what}");
        let (r, cache) = rig.fetch(json!([{"match": what, "fault": "redirect"}]), GIVE_UP_LIMIT);
        assert_gave_up(&r, &cache, &rig, &ctx, &["redirect"]);
        let hops = rig
            .proxy
            .requests()
            .iter()
            .filter(|q| q["fault"] == "redirect")
            .count();
        assert!(
            hops <= 100,
            "{ctx}: redirects must be bounded ({hops} followed)"
        );
    }
}

#[test]
fn unauthorized_loop_is_fatal() {
    let rig = Rig::new("reg-401");
    let ctx = "401 with a Bearer challenge on every request";
    let (r, cache) = rig.fetch(
        json!([{"match": "/v2/", "fault": "authloop"}]),
        GIVE_UP_LIMIT,
    );
    assert_gave_up(
        &r,
        &cache,
        &rig,
        ctx,
        &["401", "unauthori", "auth", "denied", "credential"],
    );
    let challenged = rig
        .proxy
        .requests()
        .iter()
        .filter(|q| q["fault"] == "authloop")
        .count();
    assert!(
        challenged <= 10,
        "{ctx}: the auth round must be bounded ({challenged} 401s)"
    );
    let tokens = rig
        .proxy
        .requests()
        .iter()
        .filter(|q| q["path"].as_str().unwrap_or("").starts_with("/token"))
        .count();
    assert!(
        tokens >= 1,
        "{ctx}: the Bearer challenge should have been answered with a token request"
    );
}
