//! Golden tests of the pure builder: fixed inputs → config.json compared as JSON values with
//! `testdata/golden/<name>.json`, and every config validated against the runtime-spec schema.
//! Run with `UPDATE_GOLDEN=1` to rewrite the files after an intended change (then review the
//! diff).

use crate::image::ImageFacts;
use crate::options::{self, Action, Options};
use crate::spec::{self, Built, Host, Inputs, RootfsFacts};
use common::identity::PasswdEntry;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};

fn testdata() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata")
}

fn host(uid: u32, subids: Option<(u32, u32)>) -> Host {
    let user = PasswdEntry {
        name: if uid == 0 {
            "root".into()
        } else {
            "alice".into()
        },
        uid,
        gid: uid,
        gecos: "Alice".into(),
        home: if uid == 0 {
            "/root".into()
        } else {
            "/home/alice".into()
        },
        shell: "/bin/bash".into(),
    };
    Host {
        uid,
        gid: uid,
        is_root: uid == 0,
        user: Some(user),
        root_user: Some(PasswdEntry {
            name: "root".into(),
            uid: 0,
            gid: 0,
            gecos: "root".into(),
            home: "/root".into(),
            shell: "/bin/bash".into(),
        }),
        group_name: Some(if uid == 0 {
            "root".into()
        } else {
            "alice".into()
        }),
        root_group_name: Some("root".into()),
        home: if uid == 0 {
            "/root".into()
        } else {
            "/home/alice".into()
        },
        cwd: "/work/dir".into(),
        umask: 0o022,
        env: vec![
            ("TERM".into(), "xterm".into()),
            ("HOME".into(), "/home/alice".into()),
            ("SECRET_HOST_VAR".into(), "no".into()),
            ("SINGULARITYENV_FOO".into(), "bar".into()),
        ],
        terminal: false,
        tty_gid: Some(5),
        ncpus: 2,
        cgroup_v2: false,
        keep_caps: crate::caps::names_from_mask(0x1fffeffffff),
        resolv_conf: b"nameserver 10.0.0.1\n".to_vec(),
        subid_sizes: subids,
        unique: "test".into(),
    }
}

fn image() -> ImageFacts {
    ImageFacts::from_config(&json!({
        "os": "linux", "architecture": "amd64",
        "config": {"Env": ["PATH=/usr/bin:/bin", "CGO_ENABLED=0"], "Cmd": ["/bin/sh"], "WorkingDir": ""}
    }))
}

fn opts(args: &[&str]) -> (Options, Vec<String>) {
    let mut a: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let cmd = match a.iter().position(|s| s == "--") {
        Some(i) => {
            let c = a.split_off(i);
            c[1..].to_vec()
        }
        None => vec![],
    };
    let pa = pico_args::Arguments::from_vec(a.into_iter().map(Into::into).collect());
    let (o, pos) = options::parse(pa, &|_| None).unwrap();
    assert!(pos.is_empty());
    (o, cmd)
}

const PASSWD: &str = "root:x:0:0:root:/root:/bin/ash\n";
const GROUP: &str = "root:x:0:\n";

/// What `spec::build` produced, with config.json as written (`Built::config_json`): `config`
/// is that JSON, the rest of `Built` is reached through `Deref`.
#[derive(Debug)]
struct Tested {
    built: Built,
    config: Value,
}

impl std::ops::Deref for Tested {
    type Target = Built;
    fn deref(&self) -> &Built {
        &self.built
    }
}

fn build_with(
    args: &[&str],
    h: &Host,
    img: &ImageFacts,
    passwd: Option<&str>,
    crun: Option<bool>,
) -> anyhow::Result<Tested> {
    build_full(args, h, img, passwd, crun, None, None)
}

fn build_full(
    args: &[&str],
    h: &Host,
    img: &ImageFacts,
    passwd: Option<&str>,
    crun: Option<bool>,
    init: Option<&str>,
    cdi: Option<&crate::cdi::ContainerEdits>,
) -> anyhow::Result<Tested> {
    let (o, cmd) = opts(args);
    let dir_exists = |p: &str| p == "/" || p == "/etc";
    let facts = RootfsFacts {
        passwd: passwd.map(str::to_string),
        group: Some(GROUP.to_string()),
        var_tmp_is_tmp: false,
        dir_exists: &dir_exists,
    };
    let resources = crate::cgroups::requested(&o.cgroups, h.ncpus)?;
    let action = o.action.unwrap_or(if cmd.is_empty() {
        Action::Run
    } else {
        Action::Exec
    });
    let built = spec::build(&Inputs {
        opts: &o,
        action,
        command: &cmd,
        image: img,
        image_ref: "oci:/images/busybox:latest",
        bundle: Path::new("/bundles/b"),
        host: h,
        rootfs: &facts,
        env_files: &[],
        resources,
        runtime_is_crun: crun,
        init,
        cdi,
        gpu_mounts: &[],
    })?;
    let config = built.config_json()?;
    Ok(Tested { built, config })
}

#[test]
fn an_init_is_pid_1_unless_no_init_or_no_pid() {
    let tini = Some("/usr/bin/tini-static");
    let b = build_full(
        &["--", "sleep", "9"],
        &host(0, None),
        &image(),
        Some(PASSWD),
        None,
        tini,
        None,
    )
    .unwrap();
    validate(&b.config);
    assert_eq!(
        b.config["process"]["args"],
        json!([crate::init::CONTAINER_PATH, "--", "sleep", "9"])
    );
    // The record still names the command itself.
    assert_eq!(b.args, ["sleep", "9"]);
    let m = mount_of(&b, crate::init::CONTAINER_PATH);
    assert_eq!(m["source"], json!("/usr/bin/tini-static"));
    assert!(m["options"].as_array().unwrap().contains(&json!("ro")));
    for off in ["--no-init", "--no-pid"] {
        let b = build_full(
            &[off, "--", "sleep", "9"],
            &host(0, None),
            &image(),
            Some(PASSWD),
            None,
            tini,
            None,
        )
        .unwrap();
        assert_eq!(b.config["process"]["args"], json!(["sleep", "9"]), "{off}");
        let has = b.config["mounts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["destination"] == json!(crate::init::CONTAINER_PATH));
        assert!(!has, "{off}");
    }
}

fn validate(config: &Value) {
    // The vendored runtime-spec schema of the repository (tests/schemas).
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/schemas/runtime-spec");
    let schema_path = dir.join("config-schema.json");
    let schema: Value = serde_json::from_slice(&std::fs::read(&schema_path).unwrap()).unwrap();
    let v = jsonschema::options()
        .with_draft(jsonschema::Draft::Draft4)
        .with_base_uri(format!("file://{}", schema_path.display()))
        .build(&schema)
        .unwrap();
    let errs: Vec<String> = v
        .iter_errors(config)
        .map(|e| format!("{e} at {}", e.instance_path()))
        .collect();
    assert!(
        errs.is_empty(),
        "config.json fails the runtime-spec schema: {errs:#?}"
    );
}

fn golden(name: &str, b: &Tested) {
    validate(&b.config);
    let got = json!({"config": b.config, "etcFiles": b.etc_files.iter().map(|(n, c)| json!({n: String::from_utf8_lossy(c)})).collect::<Vec<_>>()});
    let path = testdata().join("golden").join(format!("{name}.json"));
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, serde_json::to_string_pretty(&got).unwrap() + "\n").unwrap();
        return;
    }
    let want: Value = serde_json::from_slice(
        &std::fs::read(&path)
            .unwrap_or_else(|e| panic!("{}: {e} (run with UPDATE_GOLDEN=1)", path.display())),
    )
    .unwrap();
    assert_eq!(got, want, "{name}: config differs from {}", path.display());
}

/// oci-spec keeps capabilities and annotations in hash containers: the written config is still
/// the same bytes for the same inputs, with the capabilities in their listing order.
#[test]
fn config_json_is_deterministic() {
    let args = [
        "--keep-privs",
        "--add-caps",
        "CAP_SYS_TIME,CAP_SYS_ADMIN",
        "--no-setgroups",
        "--",
        "id",
    ];
    let h = host(0, None);
    let img = ImageFacts::from_config(&json!({
        "os": "linux", "architecture": "amd64",
        "config": {"Labels": {"b": "2", "a": "1", "c": "3"}, "Cmd": ["/bin/sh"]}
    }));
    let first = build_with(&args, &h, &img, Some(PASSWD), Some(true)).unwrap();
    let bytes = serde_json::to_vec_pretty(&first.config).unwrap();
    for _ in 0..20 {
        let again = build_with(&args, &h, &img, Some(PASSWD), Some(true)).unwrap();
        assert_eq!(serde_json::to_vec_pretty(&again.config).unwrap(), bytes);
    }
    let bounding: Vec<&str> = first.config["process"]["capabilities"]["bounding"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    let mut sorted = bounding.clone();
    sorted.sort_by_key(|c| crate::caps::listing_rank(c));
    assert_eq!(bounding, sorted);
    assert_eq!(
        first.config["annotations"]["run.oci.keep_original_groups"],
        "1"
    );
}

#[test]
fn golden_root_default() {
    let b = build_with(
        &["--", "echo", "hi"],
        &host(0, None),
        &image(),
        Some(PASSWD),
        None,
    )
    .unwrap();
    assert!(!b.inner_userns);
    golden("root-default", &b);
}

#[test]
fn golden_user_default_subids() {
    let b = build_with(
        &["--", "id"],
        &host(1000, Some((65536, 65536))),
        &image(),
        Some(PASSWD),
        None,
    )
    .unwrap();
    assert!(b.inner_userns);
    assert_eq!((b.uid, b.gid), (1000, 1000));
    golden("user-default", &b);
}

#[test]
fn golden_user_single_id_crun() {
    let b = build_with(
        &["--", "id"],
        &host(1000, None),
        &image(),
        Some(PASSWD),
        Some(true),
    )
    .unwrap();
    assert_eq!(
        b.config["linux"]["uidMappings"],
        json!([{"containerID": 1000, "hostID": 0, "size": 1}])
    );
    golden("user-single-id", &b);
}

#[test]
fn single_id_with_runc_is_a_clear_error() {
    let e = build_with(
        &["--", "id"],
        &host(1000, None),
        &image(),
        Some(PASSWD),
        Some(false),
    )
    .unwrap_err();
    assert!(e.to_string().contains("runc cannot run"), "{e}");
}

#[test]
fn golden_fakeroot() {
    let b = build_with(
        &["--fakeroot", "--", "id"],
        &host(1000, Some((65536, 65536))),
        &image(),
        Some(PASSWD),
        None,
    )
    .unwrap();
    assert!(!b.inner_userns);
    assert_eq!((b.uid, b.gid), (0, 0));
    golden("fakeroot", &b);
}

#[test]
fn golden_root_many_flags() {
    let b = build_with(
        &[
            "--no-compat",
            "--bind",
            "/etc:/hostetc:ro",
            "--mount",
            "src=/usr,dst=/hostusr",
            "--scratch",
            "/scratch",
            "--hostname",
            "box",
            "--dns",
            "8.8.8.8",
            "--net",
            "--network",
            "none",
            "--no-pid",
            "--add-caps",
            "sys_admin",
            "--drop-caps",
            "CAP_CHOWN",
            "--env",
            "A=1,B=2",
            "--allow-setuid",
            "--memory",
            "500M",
            "--pids-limit",
            "10",
            "--cwd",
            "/etc",
            "--",
            "true",
        ],
        &host(0, None),
        &image(),
        Some(PASSWD),
        None,
    )
    .unwrap();
    golden("root-flags", &b);
}

#[test]
fn golden_user_image_user() {
    let mut img = image();
    img.user = "testuser".into();
    img.working_dir = "/home/testuser".into();
    let passwd = "root:x:0:0::/root:/bin/sh\ntestuser:x:2000:2000::/home/testuser:/bin/sh\n";
    let b = build_with(
        &["--action", "run"],
        &host(1000, Some((65536, 65536))),
        &img,
        Some(passwd),
        None,
    )
    .unwrap();
    assert_eq!((b.uid, b.gid), (2000, 2000));
    assert!(b.etc_files.iter().all(|(n, _)| n == "resolv.conf"));
    golden("user-image-user", &b);
}

#[test]
fn custom_home_with_image_user_is_refused() {
    let mut img = image();
    img.user = "testuser".into();
    let passwd = "testuser:x:2000:2000::/home/testuser:/bin/sh\n";
    for h in [host(0, None), host(1000, Some((65536, 65536)))] {
        let e = build_with(
            &["--home", "/tmp", "--", "true"],
            &h,
            &img,
            Some(passwd),
            None,
        )
        .unwrap_err();
        assert!(e.to_string().contains("custom --home"), "{e}");
    }
}

#[test]
fn image_user_without_subids_runs_as_the_caller() {
    let mut img = image();
    img.user = "2000".into();
    let b = build_with(
        &["--", "id"],
        &host(1000, None),
        &img,
        Some(PASSWD),
        Some(true),
    )
    .unwrap();
    assert_eq!((b.uid, b.gid), (1000, 1000));
    assert!(
        b.warnings
            .iter()
            .any(|w| w.contains("cannot be mapped without subordinate IDs")),
        "{:?}",
        b.warnings
    );
    img.user = "70000".into();
    let e = build_with(
        &["--", "id"],
        &host(1000, Some((65536, 65536))),
        &img,
        Some(PASSWD),
        None,
    )
    .unwrap_err();
    assert!(
        e.to_string().contains("outside the 65536 subordinate uids"),
        "{e}"
    );
}

#[test]
fn unsupported_options_are_one_error() {
    let e = build_with(
        &["--boot", "--no-init", "--fusemount", "x", "--", "true"],
        &host(0, None),
        &image(),
        Some(PASSWD),
        None,
    )
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "while configuring container: not supported by OCI launcher: FuseMount,Boot"
    );
}

#[test]
fn cgroup_limits_need_root_here() {
    let h = host(1000, Some((65536, 65536)));
    let e = build_with(
        &["--cpus", "1", "--", "true"],
        &h,
        &image(),
        Some(PASSWD),
        None,
    )
    .unwrap_err();
    assert!(
        e.to_string().contains("does not support cgroup management"),
        "{e}"
    );
    let b = build_with(&["--", "true"], &h, &image(), Some(PASSWD), None).unwrap();
    assert_eq!(b.config["linux"]["resources"], json!({}));
}

#[test]
fn no_mount_dev_and_devpts_are_errors() {
    for v in ["dev", "devpts"] {
        let e = build_with(
            &["--no-mount", v, "--", "true"],
            &host(0, None),
            &image(),
            Some(PASSWD),
            None,
        )
        .unwrap_err();
        assert!(e.to_string().contains("OCI-mode requires"), "{e}");
    }
}

#[test]
fn no_mount_removes_defaults() {
    let b = build_with(
        &[
            "--no-mount",
            "proc,sys,tmp,home,/etc/resolv.conf",
            "--",
            "true",
        ],
        &host(0, None),
        &image(),
        Some(PASSWD),
        None,
    )
    .unwrap();
    let dests = destinations(&b);
    for gone in [
        "/proc",
        "/sys",
        "/tmp",
        "/var/tmp",
        "/root",
        "/etc/resolv.conf",
    ] {
        assert!(!dests.contains(&gone), "{gone} still mounted: {dests:?}");
    }
    assert_eq!(
        b.config["process"]["cwd"], "/",
        "home not mounted and absent: cwd falls back to /"
    );
}

#[test]
fn writable_tmpfs_and_no_compat_readonly() {
    let h = host(0, None);
    let ro = |a: &[&str]| {
        build_with(a, &h, &image(), Some(PASSWD), None)
            .unwrap()
            .config["root"]["readonly"]
            .clone()
    };
    assert_eq!(ro(&["--", "true"]), json!(false));
    assert_eq!(ro(&["--no-compat", "--", "true"]), json!(true));
    assert_eq!(
        ro(&["--no-compat", "--writable-tmpfs", "--", "true"]),
        json!(false)
    );
    assert_eq!(
        ro(&["--no-compat", "--overlay", "/o", "--", "true"]),
        json!(false),
        "a writable overlay"
    );
    assert_eq!(
        ro(&["--no-compat", "--overlay", "/o:ro", "--", "true"]),
        json!(true),
        "read-only overlays only"
    );
}

#[test]
fn allow_setuid_drops_nosuid_on_user_mounts_only() {
    let h = host(1000, Some((65536, 65536)));
    let b = build_with(
        &[
            "--scratch",
            "/scratch",
            "--bind",
            "/etc:/bind:ro",
            "--allow-setuid",
            "--",
            "true",
        ],
        &h,
        &image(),
        Some(PASSWD),
        None,
    )
    .unwrap();
    let opts_of = |d: &str| -> Vec<String> {
        let m = b.config["mounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["destination"] == d)
            .unwrap();
        m["options"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap().to_string())
            .collect()
    };
    for d in ["/scratch", "/bind"] {
        assert!(!opts_of(d).contains(&"nosuid".to_string()), "{d}");
    }
    for d in ["/proc", "/sys", "/dev/shm", "/tmp", "/var/tmp"] {
        assert!(opts_of(d).contains(&"nosuid".to_string()), "{d}");
    }
}

#[test]
fn var_tmp_link_drops_the_var_tmp_mount() {
    let (o, cmd) = opts(&["--workdir", "/w", "--", "true"]);
    let h = host(0, None);
    let img = image();
    let dir_exists = |_: &str| true;
    let facts = RootfsFacts {
        passwd: Some(PASSWD.into()),
        group: None,
        var_tmp_is_tmp: true,
        dir_exists: &dir_exists,
    };
    let b = spec::build(&Inputs {
        opts: &o,
        action: Action::Exec,
        command: &cmd,
        image: &img,
        image_ref: "x",
        bundle: Path::new("/b"),
        host: &h,
        rootfs: &facts,
        env_files: &[],
        resources: None,
        runtime_is_crun: None,
        init: None,
        cdi: None,
        gpu_mounts: &[],
    })
    .unwrap();
    let config = b.config_json().unwrap();
    let dests: Vec<&str> = config["mounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["destination"].as_str().unwrap())
        .collect();
    assert!(
        dests.contains(&"/tmp") && !dests.contains(&"/var/tmp"),
        "{dests:?}"
    );
    assert_eq!(b.workdir_dirs, vec![PathBuf::from("/w/tmp")]);
}

/// The mount destinations, in order.
fn destinations(b: &Tested) -> Vec<&str> {
    b.config["mounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["destination"].as_str().unwrap())
        .collect()
}

fn mount_of<'a>(b: &'a Tested, dest: &str) -> &'a Value {
    b.config["mounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["destination"] == dest)
        .unwrap_or_else(|| panic!("no mount at {dest}"))
}

/// sysfs needs a network namespace owned by the container's user namespace (or real root
/// without a user namespace); otherwise the host's /sys is bound read-only.
#[test]
fn sysfs_or_bind_of_sys() {
    let user = host(1000, Some((65536, 65536)));
    let root = host(0, None);
    let typ = |args: &[&str], h: &Host| {
        let b = build_with(args, h, &image(), Some(PASSWD), None).unwrap();
        mount_of(&b, "/sys")["type"].as_str().unwrap().to_string()
    };
    assert_eq!(typ(&["--", "true"], &root), "sysfs");
    assert_eq!(typ(&["--userns", "--", "true"], &root), "bind");
    assert_eq!(typ(&["--", "true"], &user), "bind");
    assert_eq!(
        typ(&["--net", "--network", "none", "--", "true"], &user),
        "sysfs"
    );
    assert_eq!(typ(&["--fakeroot", "--", "true"], &user), "bind");
}

#[test]
fn devpts_gid_only_for_real_root() {
    let opts = |h: &Host| {
        let b = build_with(&["--", "true"], h, &image(), Some(PASSWD), None).unwrap();
        mount_of(&b, "/dev/pts")["options"].clone()
    };
    assert!(
        opts(&host(0, None))
            .as_array()
            .unwrap()
            .contains(&json!("gid=5"))
    );
    assert!(
        !opts(&host(1000, Some((65536, 65536))))
            .as_array()
            .unwrap()
            .iter()
            .any(|o| o.as_str().unwrap().starts_with("gid="))
    );
}

#[test]
fn reverse_map_when_uid_beyond_the_range() {
    let b = build_with(
        &["--", "true"],
        &host(70000, Some((65536, 65536))),
        &image(),
        Some(PASSWD),
        None,
    )
    .unwrap();
    assert_eq!(
        b.config["linux"]["uidMappings"],
        json!([{"containerID": 0, "hostID": 1, "size": 65536}, {"containerID": 70000, "hostID": 0, "size": 1}])
    );
    let e = build_with(
        &["--", "true"],
        &host(1000, Some((1000, 65536))),
        &image(),
        Some(PASSWD),
        None,
    )
    .unwrap_err();
    assert!(
        e.to_string()
            .starts_with("uid range size (1000) must be at least 65536"),
        "{e}"
    );
    let e = build_with(
        &["--", "true"],
        &host(1000, Some((65536, 10))),
        &image(),
        Some(PASSWD),
        None,
    )
    .unwrap_err();
    assert!(e.to_string().starts_with("gid range size (10)"), "{e}");
}

#[test]
fn contain_keeps_host_directories_out_of_no_compat() {
    let mounts_of = |args: &[&str]| {
        let b = build_with(
            args,
            &host(1000, Some((65536, 65536))),
            &image(),
            Some(PASSWD),
            None,
        )
        .unwrap();
        let mounts: Vec<(String, String)> = b.config["mounts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| {
                (
                    m["destination"].as_str().unwrap().to_string(),
                    m["type"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        (
            mounts,
            b.config["process"]["cwd"].as_str().unwrap().to_string(),
        )
    };
    let (shared, _) = mounts_of(&["--no-compat", "--", "true"]);
    assert!(
        shared.contains(&("/tmp".into(), "bind".into())),
        "{shared:?}"
    );
    assert!(
        shared.contains(&("/home/alice".into(), "bind".into())),
        "{shared:?}"
    );
    let (contained, cwd) = mounts_of(&["--no-compat", "--contain", "--", "true"]);
    assert!(
        contained.contains(&("/tmp".into(), "tmpfs".into())),
        "{contained:?}"
    );
    assert!(
        contained.contains(&("/home/alice".into(), "tmpfs".into())),
        "{contained:?}"
    );
    assert_eq!(cwd, "/home/alice");
    // The compat default is unchanged by --contain.
    assert_eq!(
        mounts_of(&["--", "true"]),
        mounts_of(&["--contain", "--", "true"])
    );
}

/// The edits of one CDI device as the registry gives them, device nodes already completed.
fn cdi_edits() -> crate::cdi::ContainerEdits {
    let spec: crate::cdi::schema::Spec = serde_json::from_value(json!({
        "cdiVersion": "0.7.0",
        "kind": "vendor.com/device",
        "containerEdits": {
            "env": ["VENDOR_WIDE=1", "PATH=/vendor/bin:/usr/bin:/bin"],
            "hooks": [{"hookName": "createRuntime", "path": "/usr/bin/vendor-hook", "args": ["vendor-hook", "setup"], "timeout": 5}]
        },
        "devices": [{
            "name": "dev0",
            "containerEdits": {
                "deviceNodes": [
                    {"path": "/dev/vendor0", "hostPath": "/dev/zero", "type": "c", "major": 1, "minor": 5, "fileMode": 438},
                    {"path": "/dev/vendorctl", "hostPath": "/dev/null", "type": "c", "major": 1, "minor": 3, "permissions": "r"}
                ],
                "mounts": [{"hostPath": "/opt/vendor", "containerPath": "/opt/vendor", "options": ["ro", "nosuid", "nodev", "bind"]}],
                "additionalGids": [0, 4242, 4242],
                "intelRdt": {"closID": "vendor"}
            }
        }]
    }))
    .unwrap();
    spec.validate().unwrap();
    let mut edits = spec.container_edits.clone();
    edits.append(&spec.devices[0].container_edits);
    edits
}

/// `id` with `args` before `--`, for `h`, with the CDI `edits`.
fn build_cdi(args: &[&str], h: &Host, edits: &crate::cdi::ContainerEdits) -> Tested {
    let mut a = args.to_vec();
    a.extend(["--", "id"]);
    build_full(&a, h, &image(), Some(PASSWD), None, None, Some(edits)).unwrap()
}

#[test]
fn golden_root_cdi_device() {
    let b = build_cdi(&[], &host(0, None), &cdi_edits());
    let c = &b.config;
    assert_eq!(
        c["linux"]["devices"],
        json!([
            {"path": "/dev/vendor0", "type": "c", "major": 1, "minor": 5, "fileMode": 438},
            {"path": "/dev/vendorctl", "type": "c", "major": 1, "minor": 3}
        ])
    );
    assert_eq!(
        c["linux"]["resources"]["devices"],
        json!([
            {"allow": false, "access": "rwm"},
            {"allow": true, "type": "c", "major": 1, "minor": 5, "access": "rwm"},
            {"allow": true, "type": "c", "major": 1, "minor": 3, "access": "r"}
        ])
    );
    let env = c["process"]["env"].as_array().unwrap();
    assert!(env.contains(&json!("VENDOR_WIDE=1")));
    // A variable of the same name is replaced, not repeated.
    let paths: Vec<&Value> = env
        .iter()
        .filter(|e| e.as_str().unwrap().starts_with("PATH="))
        .collect();
    assert_eq!(paths, [&json!("PATH=/vendor/bin:/usr/bin:/bin")]);
    assert_eq!(c["process"]["user"]["additionalGids"], json!([4242]));
    assert_eq!(
        c["hooks"]["createRuntime"],
        json!([{"path": "/usr/bin/vendor-hook", "args": ["vendor-hook", "setup"], "timeout": 5}])
    );
    assert_eq!(c["linux"]["intelRdt"], json!({"closID": "vendor"}));
    assert_eq!(mount_of(&b, "/opt/vendor")["source"], json!("/opt/vendor"));
    golden("root-cdi", &b);
}

#[test]
fn cdi_device_nodes_are_host_binds_in_a_user_namespace() {
    let edits = cdi_edits();
    for (h, args) in [
        (host(1000, Some((65536, 65536))), vec![]),
        (host(0, None), vec!["--userns"]),
    ] {
        let b = build_cdi(&args, &h, &edits);
        validate(&b.config);
        assert!(b.config["linux"].get("devices").is_none());
        // No device is allowed by a rule (root's --userns keeps only the deny-all).
        let rules = b.config["linux"]["resources"]["devices"]
            .as_array()
            .cloned();
        assert!(
            rules
                .unwrap_or_default()
                .iter()
                .all(|r| r["allow"] == json!(false)),
            "{}",
            b.config["linux"]["resources"]
        );
        let m = mount_of(&b, "/dev/vendor0");
        assert_eq!(
            (&m["source"], &m["options"]),
            (&json!("/dev/zero"), &json!(["bind", "nosuid"]))
        );
        assert_eq!(mount_of(&b, "/dev/vendorctl")["source"], json!("/dev/null"));
        // Mounts stay ordered by depth: /dev before the nodes in it.
        let dests = destinations(&b);
        let at = |d: &str| dests.iter().position(|x| *x == d).unwrap();
        assert!(at("/dev") < at("/dev/vendor0"), "{dests:?}");
        assert_eq!(b.config["process"]["user"]["additionalGids"], json!([4242]));
    }
}

#[test]
fn a_cdi_mount_replaces_a_mount_of_the_same_destination() {
    let mut edits = crate::cdi::ContainerEdits::default();
    edits.mounts.push(crate::cdi::schema::Mount {
        host_path: "/srv/vendor-tmp".into(),
        container_path: "/tmp".into(),
        options: vec!["rbind".into()],
        typ: "bind".into(),
    });
    let b = build_cdi(&[], &host(0, None), &edits);
    let tmps: Vec<&Value> = b.config["mounts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["destination"] == "/tmp")
        .collect();
    assert_eq!(tmps.len(), 1);
    assert_eq!(tmps[0]["source"], json!("/srv/vendor-tmp"));
}
