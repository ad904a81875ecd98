//! The end-to-end slice (fetch, unpack, mkspec, starter, shim through the front), as root and unprivileged, with crun and runc.
//!
//! Every run through the front is followed by `assert_no_leftovers` (no bundle in TMPDIR, no
//! runtime state, no mount), successful or not.

use e2e::*;
use serde_json::Value;
use std::path::Path;

/// Every profile with both runtimes, except that the user without subordinate IDs runs only
/// with crun: runc cannot run the single-ID unprivileged default, which oci-mkspec refuses with
/// one FATAL line (checked by `runc_without_subids_is_refused_clearly`).
fn all_profiles() -> Vec<Ctx> {
    let mut v = matrix_with(&[Profile::Root, Profile::User, Profile::Fakeroot]);
    v.push(Ctx::for_test(Profile::UserNoSubids, Rt::Crun));
    v
}

#[test]
fn runc_without_subids_is_refused_clearly() {
    let ctx = Ctx::for_test(Profile::UserNoSubids, Rt::Runc);
    ctx.front(&["exec", &oci_ref("busybox"), "true"])
        .assert_fatal("subordinate");
    ctx.assert_no_leftovers();
}

#[test]
fn exec_echo_prints_hello() {
    for ctx in all_profiles() {
        ctx.front(&["exec", &oci_ref("busybox"), "echo", "hello"])
            .assert_code(0)
            .assert_stdout_eq("hello");
        ctx.assert_no_leftovers();
    }
}

#[test]
fn exit_status_passes_through() {
    for ctx in all_profiles() {
        ctx.front(&["exec", &oci_ref("busybox"), "sh", "-c", "exit 42"])
            .assert_code(42);
        ctx.assert_no_leftovers();
    }
}

#[test]
fn missing_image_is_one_fatal_line_naming_it() {
    for ctx in all_profiles() {
        let missing = ctx.dir().join("no-such-layout");
        let reference = format!("oci:{}:latest", missing.display());
        ctx.front(&["exec", &reference, "true"])
            .assert_fatal(&missing.display().to_string());
        ctx.assert_no_leftovers();

        // An existing layout without the tag: the message names the tag.
        let reference = format!("oci:{}:no-such-tag", fixture("busybox").display());
        ctx.front(&["exec", &reference, "true"])
            .assert_fatal("no-such-tag");
        ctx.assert_no_leftovers();
    }
}

#[test]
fn id_is_the_callers_and_fakeroot_is_zero() {
    for ctx in all_profiles() {
        let want = match ctx.profile {
            Profile::Fakeroot => 0,
            _ => ctx.uid(),
        };
        ctx.front(&["exec", &oci_ref("busybox"), "id", "-u"])
            .assert_code(0)
            .assert_stdout_eq(&want.to_string());
        ctx.assert_no_leftovers();
    }
}

/// `/proc/self/uid_map` (or gid_map) as sorted `(inside, outside, count)` triples.
fn parse_map(text: &str) -> Vec<(u64, u64, u64)> {
    let mut v: Vec<(u64, u64, u64)> = text
        .lines()
        .filter_map(|l| {
            let f: Vec<u64> = l
                .split_whitespace()
                .filter_map(|w| w.parse().ok())
                .collect();
            (f.len() == 3).then(|| (f[0], f[1], f[2]))
        })
        .collect();
    v.sort();
    v
}

/// The container's view of its map when the outer namespace maps the host id to 0 and `count`
/// subordinate ids to 1..=count: the host id is itself again, everything else shifted by one.
fn reverse_map(id: u32, count: u32) -> Vec<(u64, u64, u64)> {
    let (id, count) = (id as u64, count as u64);
    let mut v = vec![(0, 1, id), (id, 0, 1), (id + 1, id + 1, count - id)];
    v.sort();
    v
}

#[test]
fn uid_and_gid_maps_inside_are_the_reverse_map() {
    let mut contexts = matrix_with(&[Profile::User]);
    contexts.push(Ctx::for_test(Profile::UserNoSubids, Rt::Crun));
    for ctx in contexts {
        let user = ctx.user().unwrap().to_string();
        let (want_uid, want_gid) = match ctx.profile {
            Profile::User => {
                let (_, ucount) = subuid_range(&user).expect("the test user has subuids");
                let (_, gcount) = subgid_range(&user).expect("the test user has subgids");
                (
                    reverse_map(ctx.uid(), ucount),
                    reverse_map(ctx.gid(), gcount),
                )
            }
            _ => {
                assert!(subuid_range(&user).is_none(), "{user} must have no subuids");
                (
                    vec![(ctx.uid() as u64, 0, 1)],
                    vec![(ctx.gid() as u64, 0, 1)],
                )
            }
        };
        let out = ctx.front(&[
            "exec",
            &oci_ref("busybox"),
            "sh",
            "-c",
            "cat /proc/self/uid_map; echo --; cat /proc/self/gid_map",
        ]);
        out.assert_code(0);
        let (u, g) = out
            .stdout
            .split_once("--\n")
            .unwrap_or_else(|| out.fail("no separator in the output"));
        if parse_map(u) != want_uid || parse_map(g) != want_gid {
            out.fail(&format!(
                "expected uid_map {want_uid:?} and gid_map {want_gid:?}"
            ));
        }
        ctx.assert_no_leftovers();
    }
}

/// The pipeline typed by hand, as the profile's user; returns the bundle record it printed.
fn hand_pipeline(ctx: &Ctx, image: &str, bundle: &Path, cmd: &[&str]) -> Value {
    let script = r#"set -e
ref=$1 bundle=$2; shift 2
oci-fetch "$ref" | oci-unpack | oci-mkspec --bundle "$bundle" -- "$@""#;
    let mut args = vec!["-c", script, "sh", image, bundle.to_str().unwrap()];
    args.extend_from_slice(cmd);
    let out = ctx.run("sh", &args);
    out.assert_code(0);
    let record = out.json();
    if record["kind"] != "bundle" {
        out.fail("expected a bundle record on stdout");
    }
    record
}

#[test]
fn hand_typed_pipeline_writes_a_valid_config() {
    let mut contexts = matrix_with(&[Profile::Root, Profile::User]);
    contexts.push(Ctx::for_test(Profile::UserNoSubids, Rt::Crun));
    for ctx in contexts {
        // Without subordinate IDs the `user` image (USER 2000) cannot be mapped: refused.
        let images: &[&str] = match ctx.profile {
            Profile::UserNoSubids => &["busybox", "entrypoint"],
            _ => &["busybox", "user", "entrypoint"],
        };
        for &image in images {
            let bundle = ctx.dir().join(format!("bundle-{image}"));
            hand_pipeline(&ctx, &oci_ref(image), &bundle, &["echo", "hi"]);
            let config = bundle.join("config.json");
            assert!(
                config.is_file(),
                "[{}] {} missing",
                ctx.name,
                config.display()
            );
            validate_runtime_config(&config);
            let v: Value =
                serde_json::from_str(&std::fs::read_to_string(&config).unwrap()).unwrap();
            assert_eq!(
                v["process"]["args"],
                // The init (tini-static from scripts/setup) is PID 1 and runs the command.
                serde_json::json!(["/.singularity-oci-init", "--", "echo", "hi"]),
                "[{}] process.args of {}",
                ctx.name,
                config.display()
            );
            assert!(
                v["linux"]["resources"].is_object(),
                "[{}] linux.resources missing in {}",
                ctx.name,
                config.display()
            );
            std::fs::remove_dir_all(&bundle).unwrap();
        }
    }
}

#[test]
fn layered_fixture_holds_in_a_container() {
    let exp = layered_expected();
    for ctx in all_profiles() {
        let errors = layered_in_container_errors(&ctx, &oci_ref("layered"), &exp);
        assert!(
            errors.is_empty(),
            "[{}] layered image inside the container:\n  {}",
            ctx.name,
            errors.join("\n  ")
        );
        ctx.assert_no_leftovers();
    }
}

#[test]
fn layered_fixture_unpacks_on_the_host() {
    let exp = layered_expected();
    for profile in [Profile::Root, Profile::User, Profile::UserNoSubids] {
        let ctx = Ctx::for_test(profile, Rt::Crun);
        let out = ctx
            .cmd("sh")
            .args(&[
                "-c",
                "oci-fetch \"$1\" | oci-unpack",
                "sh",
                &oci_ref("layered"),
            ])
            .run();
        out.assert_code(0);
        let record = out.json();
        let rootfs = record["rootfs"]
            .as_str()
            .unwrap_or_else(|| out.fail("no rootfs in the record"));
        let errors = check_tree_host(Path::new(rootfs), &exp);
        assert!(
            errors.is_empty(),
            "[{}] layered image unpacked at {rootfs}:\n  {}",
            ctx.name,
            errors.join("\n  ")
        );
    }
}

/// The fixtures themselves: valid against the image-spec schemas, with truthful digests and
/// diff_ids (so a failure elsewhere is never the image builder's).
#[test]
fn fixtures_are_valid_oci_layouts() {
    use std::process::Command;
    for name in [
        "busybox",
        "layered",
        "user",
        "entrypoint",
        "vartmp-link",
        "uncompressed",
        "zstd",
    ] {
        let dir = fixture(name);
        validate_image_json("image-layout-schema.json", dir.join("oci-layout"));
        validate_image_json("image-index-schema.json", dir.join("index.json"));
        let blob = |digest: &str| {
            dir.join("blobs/sha256")
                .join(digest.trim_start_matches("sha256:"))
        };
        let sha = |path: &Path| -> String {
            let out = Command::new("sha256sum").arg(path).output().unwrap();
            format!(
                "sha256:{}",
                String::from_utf8_lossy(&out.stdout)
                    .split(' ')
                    .next()
                    .unwrap()
            )
        };
        let index: Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("index.json")).unwrap())
                .unwrap();
        for m in index["manifests"].as_array().unwrap() {
            let digest = m["digest"].as_str().unwrap();
            assert_eq!(sha(&blob(digest)), digest, "{name}: manifest digest");
            validate_image_json("image-manifest-schema.json", blob(digest));
            let manifest: Value =
                serde_json::from_str(&std::fs::read_to_string(blob(digest)).unwrap()).unwrap();
            let cdigest = manifest["config"]["digest"].as_str().unwrap();
            assert_eq!(sha(&blob(cdigest)), cdigest, "{name}: config digest");
            validate_image_json("config-schema.json", blob(cdigest));
            let config: Value =
                serde_json::from_str(&std::fs::read_to_string(blob(cdigest)).unwrap()).unwrap();
            let layers = manifest["layers"].as_array().unwrap();
            let diff_ids = config["rootfs"]["diff_ids"].as_array().unwrap();
            assert_eq!(
                layers.len(),
                diff_ids.len(),
                "{name}: one diff_id per layer"
            );
            for (layer, diff_id) in layers.iter().zip(diff_ids) {
                let ld = layer["digest"].as_str().unwrap();
                assert_eq!(sha(&blob(ld)), ld, "{name}: layer digest");
                let decompress = match layer["mediaType"].as_str().unwrap() {
                    t if t.ends_with("+gzip") => "gzip -dc",
                    t if t.ends_with("+zstd") => "zstd -dc",
                    _ => "cat",
                };
                let out = Command::new("sh")
                    .args(["-c", &format!("{decompress} \"$1\" | sha256sum"), "sh"])
                    .arg(blob(ld))
                    .output()
                    .unwrap();
                let got = format!(
                    "sha256:{}",
                    String::from_utf8_lossy(&out.stdout)
                        .split(' ')
                        .next()
                        .unwrap()
                );
                assert_eq!(&got, diff_id.as_str().unwrap(), "{name}: diff_id of {ld}");
            }
        }
    }
}
