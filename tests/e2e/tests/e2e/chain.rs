//! `--then`: oci-fetch and oci-unpack hand their record to the next stage by exec. The chain
//! must give what the pipeline of the same stages gives, stop at the first failure with that
//! stage's one FATAL line, and keep oci-fetch's registry credentials from the stages after it.
//! As root and as the unprivileged user.

use e2e::*;
use serde_json::Value;

fn contexts() -> Vec<Ctx> {
    vec![
        Ctx::for_test(Profile::Root, Rt::Crun),
        Ctx::for_test(Profile::User, Rt::Crun),
    ]
}

/// The one record `out` printed, without `cached` (the first unpack of a test is cold, the
/// next ones warm).
fn record(out: &Output) -> Value {
    out.assert_code(0);
    let lines = out.lines();
    assert_eq!(lines.len(), 1, "one record line: {}", out.stdout);
    let mut v: Value = serde_json::from_str(lines[0]).unwrap();
    forget_cached(&mut v);
    v
}

fn forget_cached(v: &mut Value) {
    if let Some(obj) = v.as_object_mut() {
        obj.remove("cached");
        obj.values_mut().for_each(forget_cached);
    }
}

/// A bundle record with its own bundle's path written `BUNDLE` and without its inode.
fn without_bundle_identity(v: Value, bundle: &str) -> Value {
    let text = serde_json::to_string(&v).unwrap();
    assert!(
        text.contains(bundle),
        "the record names its bundle {bundle}"
    );
    let mut v: Value = serde_json::from_str(&text.replace(bundle, "BUNDLE")).unwrap();
    assert!(v.as_object_mut().unwrap().remove("bundleInode").is_some());
    v
}

#[test]
fn a_chain_gives_what_the_pipeline_gives() {
    for ctx in contexts() {
        let image = oci_ref("busybox");
        let piped = ctx.run(ctx.bin("oci-fetch"), &[&image]);
        let image_rec = record(&piped);
        let rootfs = ctx.cmd(ctx.bin("oci-unpack")).stdin(&piped.stdout).run();
        let rootfs_rec = record(&rootfs);
        let b1 = ctx.dir().join("piped");
        let bundle = ctx
            .cmd(ctx.bin("oci-mkspec"))
            .args(&[
                "--bundle",
                b1.to_str().unwrap(),
                "--",
                "echo",
                "--then",
                "x",
            ])
            .stdin(&rootfs.stdout)
            .run();
        let b1_rec = without_bundle_identity(record(&bundle), b1.to_str().unwrap());

        // The fetch record as the next stage reads it on stdin.
        let to_cat = ctx.run(ctx.bin("oci-fetch"), &[&image, "--then", "cat"]);
        assert_eq!(record(&to_cat), image_rec);
        let to_unpack = ctx.run(
            ctx.bin("oci-fetch"),
            &[&image, "--then", &ctx.bin("oci-unpack")],
        );
        assert_eq!(record(&to_unpack), rootfs_rec);

        let b2 = ctx.dir().join("chained");
        let chained = ctx.run(
            ctx.bin("oci-fetch"),
            &[
                &image,
                "--then",
                &ctx.bin("oci-unpack"),
                "--then",
                &ctx.bin("oci-mkspec"),
                "--bundle",
                b2.to_str().unwrap(),
                "--",
                "echo",
                "--then",
                "x",
            ],
        );
        chained.assert_stderr_empty();
        assert_eq!(
            without_bundle_identity(record(&chained), b2.to_str().unwrap()),
            b1_rec
        );
        let config = std::fs::read_to_string(b2.join("config.json")).unwrap();
        let spec: Value = serde_json::from_str(&config).unwrap();
        assert_eq!(
            spec["process"]["args"].as_array().unwrap().last().unwrap(),
            "x",
            "a --then after -- is the container command's"
        );
        for b in [&b1, &b2] {
            ctx.cmd(ctx.bin("oci-runtime-shim"))
                .args(&["remove-bundle", "--bundle", b.to_str().unwrap()])
                .run()
                .assert_code(0);
        }
    }
}

#[test]
fn a_failing_stage_stops_the_chain_with_its_own_fatal_line() {
    for ctx in contexts() {
        let missing = ctx.dir().join("no-such-layout");
        let out = ctx.run(
            ctx.bin("oci-fetch"),
            &[
                &format!("oci:{}", missing.display()),
                "--then",
                &ctx.bin("oci-unpack"),
            ],
        );
        out.assert_fatal("oci-fetch: OCI layout");
        assert!(out.stdout.is_empty(), "nothing on stdout: {}", out.stdout);

        let out = ctx.run(
            ctx.bin("oci-fetch"),
            &[&oci_ref("busybox"), "--then", "/nonexistent/stage"],
        );
        out.assert_fatal("cannot run the next stage /nonexistent/stage");
        let out = ctx.run(ctx.bin("oci-fetch"), &[&oci_ref("busybox"), "--then"]);
        out.assert_fatal("--then needs a program");
        // What prints text, not a record, has nothing to hand on.
        ctx.run(
            ctx.bin("oci-fetch"),
            &[&oci_ref("busybox"), "--inspect-json", "--then", "cat"],
        )
        .assert_fatal("--then");
        ctx.run(
            ctx.bin("oci-fetch"),
            &[
                &oci_ref("busybox"),
                "--then",
                &ctx.bin("oci-unpack"),
                "--inspect",
                "labels",
                "--then",
                "cat",
            ],
        )
        .assert_fatal("oci-unpack: --inspect");
        // Stages without records do not take --then.
        ctx.run(ctx.bin("oci-mkspec"), &["--then", "cat"])
            .assert_fatal("--then");
    }
}

#[test]
fn registry_credentials_never_reach_the_next_stage() {
    for ctx in contexts() {
        let out = ctx
            .cmd(ctx.bin("oci-fetch"))
            .args(&[oci_ref("busybox").as_str(), "--then", "env"])
            .env("SINGULARITY_DOCKER_USERNAME", "someone")
            .env("SINGULARITY_DOCKER_PASSWORD", "not-for-later-stages")
            .env("SIOCI_CHAIN_MARK", "passed-on")
            .run();
        out.assert_code(0);
        assert!(
            out.stdout.contains("SIOCI_CHAIN_MARK=passed-on"),
            "{}",
            out.stdout
        );
        assert!(
            !out.stdout.contains("SINGULARITY_DOCKER_"),
            "{}",
            out.stdout
        );
    }
}
