//! CDI devices (`--device VENDOR/CLASS=NAME`, `--cdi-dirs`): specs the tests write, in JSON and
//! YAML and several cdiVersions, that expose real host nodes under other names (`/dev/zero` as
//! `/dev/vendor0`), bind a host directory read-only, and set environment variables, additional
//! groups and a hook; and the errors for unknown devices, malformed names and broken or
//! untrusted specs. Root gets device nodes (and a device-cgroup rule); the unprivileged user
//! gets binds of the host nodes. As root and as the test user, with crun and runc.

use e2e::*;

fn bb() -> String {
    oci_ref("busybox")
}

fn exec(ctx: &Ctx, opts: &[&str], cmd: &[&str]) -> Output {
    ctx.front_exec(opts, &bb(), cmd)
}

/// A spec directory of the context's user with the vendor's JSON spec (cdiVersion 0.7.0:
/// host paths, additional GIDs): device `dev0` is `/dev/zero` as `/dev/vendor0` plus a
/// read-only vendor directory and variables; `ctl` is `/dev/null` as `/dev/vendorctl`, with
/// permissions `r` (the device-cgroup rule for root).
fn vendor_dir(ctx: &Ctx) -> String {
    let lib = ctx.mkdir("vendor-lib");
    ctx.write_file("vendor-lib/libvendor.so", "vendor library\n");
    ctx.mkdir("cdi");
    let spec = serde_json::json!({
        "cdiVersion": "0.7.0",
        "kind": "vendor.test/device",
        "containerEdits": {"env": ["VENDOR_WIDE=yes"]},
        "devices": [
            {
                "name": "dev0",
                "containerEdits": {
                    "deviceNodes": [{"path": "/dev/vendor0", "hostPath": "/dev/zero"}],
                    "mounts": [{
                        "hostPath": lib.display().to_string(),
                        "containerPath": "/opt/vendor",
                        "options": ["ro", "nosuid", "nodev", "rbind"]
                    }],
                    "env": ["VENDOR_DEVICE=dev0"],
                    "additionalGids": [4242]
                }
            },
            {
                "name": "ctl",
                "containerEdits": {
                    "deviceNodes": [{"path": "/dev/vendorctl", "hostPath": "/dev/null", "permissions": "r"}]
                }
            }
        ]
    });
    ctx.write_file("cdi/vendor.json", serde_json::to_vec_pretty(&spec).unwrap());
    ctx.dir().join("cdi").display().to_string()
}

#[test]
fn json_spec_nodes_mounts_env_and_groups() {
    for ctx in matrix() {
        let dir = vendor_dir(&ctx);
        let script = "\
            test -c /dev/vendor0 && head -c 3 /dev/vendor0 | od -An -tx1; \
            echo \"$VENDOR_WIDE $VENDOR_DEVICE\"; cat /opt/vendor/libvendor.so; \
            touch /opt/vendor/new 2>/dev/null && echo writable; \
            grep ^Groups: /proc/self/status; \
            test -c /dev/vendorctl && echo ctl";
        let out = exec(
            &ctx,
            &[
                "--device",
                "vendor.test/device=dev0,vendor.test/device=ctl",
                "--cdi-dirs",
                &dir,
            ],
            &["sh", "-c", script],
        );
        out.assert_success()
            .assert_stdout_contains(" 00 00 00")
            .assert_stdout_contains("yes dev0")
            .assert_stdout_contains("vendor library")
            .assert_stdout_contains("ctl");
        if out.stdout.contains("writable") {
            out.fail("the vendor directory is bound read-only");
        }
        let groups = out
            .lines()
            .into_iter()
            .find(|l| l.starts_with("Groups:"))
            .unwrap_or_else(|| out.fail("no Groups line"));
        if !groups.split_whitespace().any(|g| g == "4242") {
            out.fail("additional GID 4242 missing");
        }
        // Without --device the device is not there.
        exec(&ctx, &["--cdi-dirs", &dir], &["test", "-e", "/dev/vendor0"]).assert_code(1);
        ctx.assert_no_leftovers();
    }
}

/// Root makes a device node of the host node's numbers; the unprivileged user gets the host's
/// node bound.
#[test]
fn nodes_for_root_binds_for_users() {
    for ctx in matrix() {
        let dir = vendor_dir(&ctx);
        let out = exec(
            &ctx,
            &["--device", "vendor.test/device=ctl", "--cdi-dirs", &dir],
            &[
                "sh",
                "-c",
                "stat -c 'node %t:%T' /dev/vendorctl; grep -c ' /dev/vendorctl ' /proc/self/mountinfo; echo x > /dev/vendorctl",
            ],
        );
        out.assert_success().assert_stdout_contains("node 1:3");
        let mounted = out.lines().contains(&"1");
        if ctx.is_root() {
            if mounted {
                out.fail("root's device node is a mount, not a node of its own");
            }
        } else if !mounted {
            out.fail("the user's device node is not a bind of the host's");
        }
        ctx.assert_no_leftovers();
    }
}

/// As root a device's `permissions` are its device-cgroup rule: a write-only node cannot be
/// read. (`/dev/loop-control`, 10:237, is not among the devices the runtimes allow anyway.)
#[test]
fn root_device_permissions_are_enforced() {
    for rt in Rt::ALL {
        let ctx = Ctx::for_test(Profile::Root, rt);
        ctx.mkdir("cdi");
        ctx.write_file(
            "cdi/loop.json",
            r#"{"cdiVersion":"0.3.0","kind":"loop.test/ctl","devices":[{"name":"w","containerEdits":{"deviceNodes":[{"path":"/dev/loopctl-w","type":"c","major":10,"minor":237,"permissions":"w"}]}}]}"#,
        );
        let dir = ctx.dir().join("cdi").display().to_string();
        exec(
            &ctx,
            &["--device", "loop.test/ctl=w", "--cdi-dirs", &dir],
            &[
                "sh",
                "-c",
                "true > /dev/loopctl-w && echo write; true < /dev/loopctl-w 2>/dev/null && echo read; echo x > /dev/null && echo null",
            ],
        )
        .assert_success()
        .assert_stdout_eq("write\nnull");
        ctx.assert_no_leftovers();
    }
}

/// YAML and JSON specs of several cdiVersions in one directory; `=all` takes every device of a
/// kind; a later directory overrides an earlier one.
#[test]
fn yaml_versions_all_and_directory_priority() {
    for ctx in matrix() {
        ctx.mkdir("cdi");
        ctx.write_file(
            "cdi/v03.yaml",
            "cdiVersion: 0.3.0\nkind: old.test/thing\ndevices:\n  - name: a\n    containerEdits:\n      env: [OLD_A=1]\n  - name: b\n    containerEdits:\n      env: [OLD_B=1]\n",
        );
        let data = ctx.mkdir("data");
        ctx.write_file("data/hello", "hello from the host\n");
        ctx.write_file(
            "cdi/v04.yaml",
            format!(
                "---\ncdiVersion: \"0.4.0\"\nkind: typed.test/mount\ncontainerEdits:\n  env:\n    - TYPED=1\ndevices:\n  - name: data\n    containerEdits:\n      mounts:\n        - hostPath: {}\n          containerPath: /data\n          type: bind\n          options: [rbind, ro]\n",
                data.display()
            ),
        );
        for (file, version) in [
            ("v08.json", "0.8.0"),
            ("v10.json", "1.0.0"),
            ("v06.json", "0.6.0"),
        ] {
            let kind = format!("v{}.test/dev", version.replace('.', ""));
            let spec = serde_json::json!({
                "cdiVersion": version,
                "kind": kind,
                "devices": [{"name": "0", "annotations": {"a": "b"}, "containerEdits": {"env": [format!("FROM_{}=1", version.replace('.', "_"))]}}]
            });
            ctx.write_file(&format!("cdi/{file}"), serde_json::to_vec(&spec).unwrap());
        }
        let dir = ctx.dir().join("cdi").display().to_string();
        exec(
            &ctx,
            &[
                "--device",
                "old.test/thing=all",
                "--device",
                "typed.test/mount=data,v080.test/dev=0,v100.test/dev=0,v060.test/dev=0",
                "--cdi-dirs",
                &dir,
            ],
            &["sh", "-c", "env | sort; cat /data/hello"],
        )
        .assert_success()
        .assert_stdout_contains("OLD_A=1\nOLD_B=1")
        .assert_stdout_contains("TYPED=1")
        .assert_stdout_contains("FROM_0_8_0=1")
        .assert_stdout_contains("FROM_1_0_0=1")
        .assert_stdout_contains("FROM_0_6_0=1")
        .assert_stdout_contains("hello from the host");

        // The same device in a later directory wins.
        ctx.mkdir("cdi-late");
        ctx.write_file(
            "cdi-late/override.yaml",
            "cdiVersion: 0.3.0\nkind: old.test/thing\ndevices:\n  - name: a\n    containerEdits:\n      env: [OLD_A=overridden]\n",
        );
        let late = ctx.dir().join("cdi-late").display().to_string();
        exec(
            &ctx,
            &[
                "--device",
                "old.test/thing=a",
                "--cdi-dirs",
                &format!("{dir},{late}"),
            ],
            &["sh", "-c", "echo $OLD_A"],
        )
        .assert_success()
        .assert_stdout_eq("overridden");
        ctx.assert_no_leftovers();
    }
}

/// A createRuntime hook of the spec runs (in the runtime's namespaces, as the caller). It reads
/// the container state the runtime writes to its stdin, as hooks must: crun fails the start
/// when a hook exits before taking it.
#[test]
fn spec_hooks_run() {
    for ctx in matrix() {
        ctx.mkdir("cdi");
        let marker = ctx.dir().join("hook-ran");
        let spec = serde_json::json!({
            "cdiVersion": "0.5.0",
            "kind": "hook.test/dev",
            "devices": [{"name": "h", "containerEdits": {
                "hooks": [{"hookName": "createRuntime", "path": "/bin/sh",
                           "args": ["sh", "-c", format!("cat >/dev/null; echo ran > {}", marker.display())]}]
            }}]
        });
        ctx.write_file("cdi/hook.json", serde_json::to_vec(&spec).unwrap());
        let dir = ctx.dir().join("cdi").display().to_string();
        exec(
            &ctx,
            &["--device", "hook.test/dev=h", "--cdi-dirs", &dir],
            &["true"],
        )
        .assert_success();
        let text = std::fs::read_to_string(&marker).unwrap_or_else(|e| {
            panic!("[{}] the hook left no {}: {e}", ctx.name, marker.display())
        });
        assert_eq!(text, "ran\n", "[{}]", ctx.name);
        ctx.assert_no_leftovers();
    }
}

#[test]
fn unknown_malformed_and_broken() {
    for ctx in matrix() {
        let dir = vendor_dir(&ctx);
        exec(
            &ctx,
            &["--device", "vendor.test/device=nope", "--cdi-dirs", &dir],
            &["true"],
        )
        .assert_fatal(
            "while setting up CDI devices: unresolvable CDI devices vendor.test/device=nope",
        );
        exec(
            &ctx,
            &["--device", "vendor0", "--cdi-dirs", &dir],
            &["true"],
        )
        .assert_fatal("string \"vendor0\" does not represent a valid CDI device");
        // Not in the default directories either.
        exec(&ctx, &["--device", "vendor.test/device=dev0"], &["true"])
            .assert_fatal("unresolvable CDI devices vendor.test/device=dev0");
        // A broken spec anywhere in the directories is named, even for another vendor's device.
        ctx.write_file(
            "cdi/broken.yaml",
            "cdiVersion: 0.3.0\nkind: broken.test/x\ndevices: [\n",
        );
        exec(
            &ctx,
            &["--device", "vendor.test/device=dev0", "--cdi-dirs", &dir],
            &["true"],
        )
        .assert_fatal("broken.yaml");
        // ... but nothing is read without --device.
        exec(&ctx, &["--cdi-dirs", &dir], &["true"]).assert_success();
        ctx.write_file(
            "cdi/broken.yaml",
            "cdiVersion: 0.3.0\nkind: broken.test/x\ndevices:\n  - name: d\n    containerEdits:\n      mounts: [{hostPath: /a, containerPath: /b, type: bind}]\n",
        );
        exec(
            &ctx,
            &["--device", "vendor.test/device=dev0", "--cdi-dirs", &dir],
            &["true"],
        )
        .assert_fatal("must be at least v0.4.0");
        std::fs::remove_file(ctx.dir().join("cdi/broken.yaml")).unwrap();
        // A spec others may write is not trusted.
        let spec = ctx.dir().join("cdi/vendor.json");
        std::fs::set_permissions(&spec, std::os::unix::fs::PermissionsExt::from_mode(0o666))
            .unwrap();
        exec(
            &ctx,
            &["--device", "vendor.test/device=dev0", "--cdi-dirs", &dir],
            &["true"],
        )
        .assert_fatal("writable by group or others");
        ctx.assert_no_leftovers();
    }
}

/// A fake NVIDIA driver for `--nv` without a CDI spec: a library (a copy of an ELF file of this
/// machine) that the test's `ldconfig` reports, a program, the list naming both, and a device
/// node `/dev/nvidia-sioci-PID` (a character device 1:3, made by root for the test and removed
/// after it).
struct FakeDriver {
    node: std::path::PathBuf,
}

impl FakeDriver {
    fn node() -> FakeDriver {
        let node = std::path::PathBuf::from(format!("/dev/nvidia-sioci-{}", std::process::id()));
        let c = std::ffi::CString::new(node.to_str().unwrap()).unwrap();
        // SAFETY: mknod with a valid C string; the test runs as root.
        let rc = unsafe { libc::mknod(c.as_ptr(), libc::S_IFCHR | 0o666, libc::makedev(1, 3)) };
        assert_eq!(
            rc,
            0,
            "mknod {}: {}",
            node.display(),
            std::io::Error::last_os_error()
        );
        std::fs::set_permissions(&node, std::os::unix::fs::PermissionsExt::from_mode(0o666))
            .unwrap();
        FakeDriver { node }
    }
}

impl Drop for FakeDriver {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.node);
    }
}

/// The driver's files in the context's directory; returns (PATH, SINGULARITY_OCI_CONFDIR).
fn fake_driver_tree(ctx: &Ctx) -> (String, String) {
    let root = ctx.mkdir("nvdriver");
    ctx.mkdir("nvdriver/bin");
    ctx.mkdir("nvdriver/conf");
    let lib = root.join("libnvidia-ml.so.1");
    std::fs::copy("/bin/true", &lib).unwrap();
    std::os::unix::fs::chown(&lib, Some(ctx.uid()), Some(ctx.gid())).unwrap();
    let ldconfig = ctx.write_file(
        "nvdriver/bin/ldconfig",
        format!(
            "#!/bin/sh\nprintf '1 libs found in cache\\n\\tlibnvidia-ml.so.1 (libc6,x86-64) => {}\\n'\n",
            lib.display()
        ),
    );
    let smi = ctx.write_file(
        "nvdriver/bin/nvidia-smi",
        "#!/bin/sh\necho fake nvidia-smi\n",
    );
    for p in [&ldconfig, &smi] {
        std::fs::set_permissions(p, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    }
    ctx.write_file(
        "nvdriver/conf/nvliblist.conf",
        "# test list\nnvidia-smi\nlibnvidia-ml.so\n",
    );
    (
        format!("{}:{}", root.join("bin").display(), ctx.path_env()),
        root.join("conf").display().to_string(),
    )
}

#[test]
fn nv_binds_a_driver_or_warns() {
    for ctx in matrix() {
        // No driver: warnings in SingularityCE's words, and the container still runs.
        ctx.mkdir("emptyconf");
        ctx.write_file("emptyconf/nvliblist.conf", "libnvidia-nothing.so\n");
        let empty = ctx.dir().join("emptyconf").display().to_string();
        ctx.front_cmd(&["exec", "--nv", &bb(), "true"])
            .env("SINGULARITY_OCI_CONFDIR", &empty)
            .run()
            .assert_success()
            .assert_stderr_contains("Could not find any NVIDIA libraries on this host!")
            .assert_stderr_contains("Could not find any NVIDIA devices on this host!");
        ctx.write_file("emptyconf/rocmliblist.conf", "libamd-nothing.so\n");
        ctx.front_cmd(&["exec", "--rocm", &bb(), "true"])
            .env("SINGULARITY_OCI_CONFDIR", &empty)
            .run()
            .assert_success()
            .assert_stderr_contains("Could not find any ROCm libraries on this host!")
            .assert_stderr_contains("Could not find any ROCm devices on this host!");
        ctx.assert_no_leftovers();
    }
    let driver = FakeDriver::node();
    let node = driver.node.display().to_string();
    for ctx in matrix() {
        let (path, confdir) = fake_driver_tree(&ctx);
        let script = format!(
            "nvidia-smi; test -x /.singularity.d/libs/libnvidia-ml.so.1 && echo lib; \
             test -c {node} && echo node; echo \"LD=$LD_LIBRARY_PATH\""
        );
        ctx.front_cmd(&["exec", "--nv", &bb(), "sh", "-c", &script])
            .env("PATH", &path)
            .env("SINGULARITY_OCI_CONFDIR", &confdir)
            .run()
            .assert_success()
            .assert_stderr_empty()
            .assert_stdout_contains("fake nvidia-smi")
            .assert_stdout_contains("lib\nnode\n")
            .assert_stdout_contains("LD=/.singularity.d/libs");
        // SINGULARITY_NV is --nv.
        ctx.front_cmd(&[
            "exec",
            &bb(),
            "test",
            "-x",
            "/.singularity.d/libs/libnvidia-ml.so.1",
        ])
        .env("PATH", &path)
        .env("SINGULARITY_OCI_CONFDIR", &confdir)
        .env("SINGULARITY_NV", "true")
        .run()
        .assert_success();
        // --no-nv cancels it.
        ctx.front_cmd(&[
            "exec",
            "--nv",
            "--no-nv",
            &bb(),
            "test",
            "-e",
            "/.singularity.d/libs/libnvidia-ml.so.1",
        ])
        .env("PATH", &path)
        .env("SINGULARITY_OCI_CONFDIR", &confdir)
        .run()
        .assert_code(1);
        ctx.assert_no_leftovers();
    }
}

/// With the vendor's CDI spec installed, `--nv` is `--device nvidia.com/gpu=all` and binds
/// nothing from the library list.
#[test]
fn nv_and_rocm_use_the_vendor_cdi_spec() {
    for ctx in matrix() {
        ctx.mkdir("cdi");
        ctx.write_file(
            "cdi/nvidia.yaml",
            "cdiVersion: 0.5.0\nkind: nvidia.com/gpu\ndevices:\n  - name: \"0\"\n    containerEdits:\n      env: [GPU0=1]\n  - name: all\n    containerEdits:\n      env: [GPU_ALL=nvidia]\n      deviceNodes: [{path: /dev/nvidia-fake, hostPath: /dev/zero}]\n",
        );
        ctx.write_file(
            "cdi/amd.json",
            r#"{"cdiVersion":"0.6.0","kind":"amd.com/gpu","devices":[{"name":"0","containerEdits":{"env":["GPU_AMD0=1"]}},{"name":"1","containerEdits":{"env":["GPU_AMD1=1"]}}]}"#,
        );
        let dir = ctx.dir().join("cdi").display().to_string();
        ctx.front_cmd(&[
            "exec", "--nv", "--rocm", "--cdi-dirs", &dir, &bb(), "sh", "-c",
            "echo $GPU_ALL $GPU0 $GPU_AMD0 $GPU_AMD1; test -c /dev/nvidia-fake && echo node; ls /.singularity.d/libs 2>/dev/null | wc -l",
        ])
        .env("SINGULARITY_OCI_CONFDIR", "/nonexistent")
        .run()
        .assert_success()
        .assert_stderr_empty()
        .assert_stdout_eq("nvidia 1 1\nnode\n0");
        ctx.assert_no_leftovers();
    }
}
