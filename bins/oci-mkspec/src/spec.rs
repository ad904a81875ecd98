//! The pure spec builder: options + image + host facts + rootfs facts → config.json and the
//! generated /etc files. Nothing here touches the filesystem, so golden tests cover it whole.

use crate::binds::{self, Bind};
use crate::caps;
use crate::env::{self, EnvInputs};
use crate::etcfiles;
use crate::image::ImageFacts;
use crate::init;
use crate::mounts::{self, MountInputs};
use crate::options::{Action, Options};
use crate::process;
use anyhow::{Result, bail};
use common::identity::PasswdEntry;
use common::subid::{IdMapEntry, reverse_map};
use oci_spec::runtime::{
    Linux, LinuxIdMapping, LinuxIdMappingBuilder, LinuxNamespace, LinuxNamespaceBuilder,
    LinuxNamespaceType, LinuxResources, ProcessBuilder, Root, Spec, UserBuilder,
};
use serde_json::Value;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// runtime-spec version written into config.json (what crun 1.8.1 and runc 1.1.5 accept).
pub const OCI_VERSION: &str = "1.0.2";

/// Facts about the host and the caller, gathered once by `host::gather`.
#[derive(Debug, Clone)]
pub struct Host {
    pub uid: u32,
    pub gid: u32,
    pub is_root: bool,
    /// Host passwd entry of the caller, if any.
    pub user: Option<PasswdEntry>,
    /// Host passwd entry of root (for `--fakeroot`'s generated passwd line).
    pub root_user: Option<PasswdEntry>,
    /// Host group name of the caller's gid, and of gid 0.
    pub group_name: Option<String>,
    pub root_group_name: Option<String>,
    /// The caller's home (passwd, else $HOME).
    pub home: String,
    pub cwd: String,
    pub umask: u32,
    pub env: Vec<(String, String)>,
    pub terminal: bool,
    pub tty_gid: Option<u32>,
    pub ncpus: usize,
    /// cgroup v2 unified hierarchy at /sys/fs/cgroup.
    pub cgroup_v2: bool,
    /// Capabilities `--keep-privs` keeps (the effective set of the container's creator).
    pub keep_caps: Vec<String>,
    pub resolv_conf: Vec<u8>,
    /// Subordinate uid/gid range sizes of the outer namespace; `None` for the single-ID map.
    /// Only meaningful for the unprivileged default.
    pub subid_sizes: Option<(u32, u32)>,
    /// A unique name for the cgroup of this container.
    pub unique: String,
}

/// Facts read (safely) from the image's root filesystem.
pub struct RootfsFacts<'a> {
    pub passwd: Option<String>,
    pub group: Option<String>,
    pub var_tmp_is_tmp: bool,
    pub dir_exists: &'a dyn Fn(&str) -> bool,
}

pub struct Inputs<'a> {
    pub opts: &'a Options,
    pub action: Action,
    pub command: &'a [String],
    pub image: &'a ImageFacts,
    pub image_ref: &'a str,
    pub bundle: &'a Path,
    pub host: &'a Host,
    pub rootfs: &'a RootfsFacts<'a>,
    /// Evaluated `--env-file`s.
    pub env_files: &'a [Vec<(String, String)>],
    /// Resources requested by the cgroup flags / TOML.
    pub resources: Option<LinuxResources>,
    /// Whether the chosen runtime is crun (only asked for `--no-setgroups`).
    pub runtime_is_crun: Option<bool>,
    /// The host's init binary to run as PID 1 (`init::find`); `None`: the command is PID 1.
    pub init: Option<&'a str>,
    /// The edits of the requested CDI devices (`cdi::edits_for`), applied last.
    pub cdi: Option<&'a crate::cdi::ContainerEdits>,
    /// The legacy `--rocm`/`--nv` binds (`gpu::legacy_binds`).
    pub gpu_mounts: &'a [oci_spec::runtime::Mount],
}

/// What `build` produces.
#[derive(Debug)]
pub struct Built {
    /// config.json; write it as [`Built::config_json`].
    pub config: Spec,
    /// Files to write under `<bundle>/etc/`: (file name, contents).
    pub etc_files: Vec<(String, Vec<u8>)>,
    pub uid: u32,
    pub gid: u32,
    pub args: Vec<String>,
    pub inner_userns: bool,
    /// Host directories `--workdir` needs (created 1777 before the run).
    pub workdir_dirs: Vec<PathBuf>,
    pub warnings: Vec<String>,
}

impl Built {
    /// config.json as written: object keys sorted, and capabilities in
    /// [`caps::listing_rank`] order. oci-spec keeps annotations in a `HashMap` and capabilities
    /// in `HashSet`s, whose order changes from run to run; a fixed order makes the same inputs
    /// give the same bytes.
    pub fn config_json(&self) -> Result<Value> {
        let mut v = serde_json::to_value(&self.config)?;
        if let Some(Value::Object(sets)) = v.pointer_mut("/process/capabilities") {
            for set in sets.values_mut() {
                if let Value::Array(names) = set {
                    names.sort_by_key(|n| caps::listing_rank(n.as_str().unwrap_or_default()));
                }
            }
        }
        Ok(v)
    }
}

fn id_mappings(v: &[IdMapEntry]) -> Result<Vec<LinuxIdMapping>> {
    v.iter()
        .map(|e| {
            Ok(LinuxIdMappingBuilder::default()
                .container_id(e.container)
                .host_id(e.host)
                .size(e.size)
                .build()?)
        })
        .collect()
}

fn namespace(typ: LinuxNamespaceType) -> Result<LinuxNamespace> {
    Ok(LinuxNamespaceBuilder::default().typ(typ).build()?)
}

/// A value of an oci-spec type with nothing set. Their `Default`s are runc's example
/// configuration (rlimits, masked paths, a hostname, ...); config.json holds only what `build`
/// sets.
fn empty<T: serde::de::DeserializeOwned>() -> T {
    serde_json::from_str("{}").expect("an oci-spec type with only optional fields")
}

/// SingularityCE's base spec: the device cgroup denies every device first, and the runtime then
/// allows its default ones (and a CDI device its own). runc adds the deny itself; crun without
/// it leaves a root container's device cgroup open to every device (`a *:* rwm`). Only root's
/// containers have a device cgroup of their own.
fn deny_all_devices(mut r: LinuxResources) -> Result<LinuxResources> {
    let deny = serde_json::from_value(serde_json::json!({"allow": false, "access": "rwm"}))?;
    let mut rules = r.devices().clone().unwrap_or_default();
    rules.insert(0, deny);
    r.set_devices(Some(rules));
    Ok(r)
}

fn absolute(p: &str, cwd: &str) -> String {
    if p.starts_with('/') {
        p.to_string()
    } else {
        format!("{}/{}", cwd.trim_end_matches('/'), p)
    }
}

/// Collect `--bind` and `--mount` values into binds with absolute host sources.
pub fn parse_binds(o: &Options, cwd: &str) -> Result<(Vec<Bind>, Vec<Bind>)> {
    let mut user = Vec::new();
    for b in &o.binds {
        user.extend(binds::parse_bind(b)?);
    }
    let mut mounts = Vec::new();
    for m in &o.mounts {
        mounts.extend(binds::parse_mount(m)?);
    }
    for b in user.iter_mut().chain(mounts.iter_mut()) {
        b.source = absolute(&b.source, cwd);
    }
    Ok((user, mounts))
}

/// The reverse map covers container IDs 0..=S when the host ID is below S, else 0..S-1 and the
/// host ID itself. An image USER outside it cannot run. With the single-ID map only the caller's
/// own ID exists: the image's files all appear as the caller's anyway, so the container runs as
/// the caller, with a warning.
fn check_user_is_mapped(
    t: &mut process::Target,
    h: &Host,
    warn: &mut dyn FnMut(String),
) -> Result<()> {
    let Some((us, gs)) = h.subid_sizes else {
        if (t.uid, t.gid) != (h.uid, h.gid) {
            warn(format!(
                "the image's USER ({}:{}) cannot be mapped without subordinate IDs (/etc/subuid, /etc/subgid): running as uid {} gid {} instead",
                t.uid, t.gid, h.uid, h.gid
            ));
            t.uid = h.uid;
            t.gid = h.gid;
        }
        return Ok(());
    };
    for (what, id, host_id, s) in [("uid", t.uid, h.uid, us), ("gid", t.gid, h.gid, gs)] {
        if id != host_id && (id > s || (host_id >= s && id >= s)) {
            bail!(
                "the container runs as {what} {id} (image USER), outside the {s} subordinate {what}s mapped"
            );
        }
    }
    Ok(())
}

pub fn build(i: &Inputs) -> Result<Built> {
    let o = i.opts;
    let h = i.host;
    let mut warnings = Vec::new();
    let mut warn = |s: String| warnings.push(s);

    if !o.unsupported.is_empty() {
        bail!(
            "while configuring container: not supported by OCI launcher: {}",
            o.unsupported.join(",")
        );
    }
    if o.no_compat && o.compat {
        bail!("Cannot use --no-compat with --compat");
    }
    if o.no_setgroups && i.runtime_is_crun == Some(false) {
        bail!("the selected runtime does not support --no-setgroups (use crun)");
    }
    if o.keep_privs && o.no_privs {
        bail!("--keep-privs and --no-privs cannot be used together");
    }

    // Identity.
    let mut target = process::target(
        o.fakeroot,
        &i.image.user,
        i.rootfs.passwd.as_deref(),
        i.rootfs.group.as_deref(),
        (h.uid, h.gid),
    )?;
    let inner_userns = !h.is_root && !o.fakeroot;
    if inner_userns {
        check_user_is_mapped(&mut target, h, &mut warn)?;
    }

    // Home.
    let default_home = if o.fakeroot {
        "/root".to_string()
    } else {
        h.home.clone()
    };
    let home = mounts::home_plan(o.home.as_deref(), &default_home)?;
    if home.custom && !i.image.user.is_empty() {
        bail!(
            "a custom --home is not currently supported when running containers that declare a USER"
        );
    }
    let home_mounted = !o.no_home && !o.no_mount.iter().any(|n| n == "home");
    if let Some(src) = &home.source {
        let src = absolute(src, &h.cwd);
        if let Err(e) = std::fs::metadata(&src) {
            bail!("cannot stat home source {src}: {e}");
        }
    }
    // --no-compat binds the host home instead of a tmpfs (not with --contain).
    let source = match &home.source {
        Some(s) => Some(absolute(s, &h.cwd)),
        None if o.no_compat && !o.contain => Some(h.home.clone()),
        None => None,
    };
    let home = mounts::HomePlan { source, ..home };

    // Process.
    let args = process::args(i.action, o.app.as_deref(), i.image, i.command, &mut warn)?;
    let cwd = process::cwd(
        o.cwd.as_deref(),
        // Under --contain the host's working directory is not in the container.
        o.no_compat && !o.contain,
        &h.cwd,
        &i.image.working_dir,
        &home.dest,
        home_mounted,
        i.rootfs.dir_exists,
    )?;

    // Environment.
    let mut env_opts = Vec::new();
    for e in &o.env {
        env_opts.extend(env::parse_env_option(e)?);
    }
    let env = env::build(
        &EnvInputs {
            image_env: &i.image.env,
            host_env: &h.env,
            image_ref: i.image_ref,
            env_files: i.env_files,
            env_opts: &env_opts,
            home: (!target.container_user).then_some(home.dest.as_str()),
            user_home: target.user_home.as_deref(),
            no_compat: o.no_compat,
            cleanenv: o.cleanenv,
            native: i.image.singularity_d,
            no_eval: o.no_eval,
        },
        &mut warn,
    );

    // Capabilities.
    let (add, unknown_add) = caps::parse_list(o.add_caps.as_deref());
    let (drop, unknown_drop) = caps::parse_list(o.drop_caps.as_deref());
    if !unknown_add.is_empty() {
        warn(format!(
            "Ignoring unknown --add-caps: {}",
            unknown_add.join(",")
        ));
    }
    if !unknown_drop.is_empty() {
        warn(format!(
            "Ignoring unknown --drop-caps: {}",
            unknown_drop.join(",")
        ));
    }
    let capabilities = caps::process_caps(&caps::CapInputs {
        target_uid: target.uid,
        no_privs: o.no_privs,
        keep_privs: o.keep_privs,
        current: &h.keep_caps,
        add: &add,
        drop: &drop,
    });

    let mut user = UserBuilder::default().uid(target.uid).gid(target.gid);
    if o.no_compat && !o.no_umask {
        user = user.umask(h.umask);
    }
    // A minimal init as PID 1, where the command would otherwise be PID 1 (init.rs).
    let init_path = i.init.filter(|_| !o.no_pid && !o.no_init);
    let process_args = match init_path {
        Some(_) => init::wrap_args(&args),
        None => args.clone(),
    };
    let mut process = ProcessBuilder::default()
        .terminal(h.terminal)
        .user(user.build()?)
        .args(process_args)
        .env(env)
        .cwd(cwd)
        .capabilities(capabilities)
        .no_new_privileges(o.no_privs)
        .build()?;
    // Not part of SingularityCE's process (oci-spec's default has an RLIMIT_NOFILE of 1024).
    process.set_rlimits(None);

    // Generated /etc files (not for an image USER: its own passwd/group stay).
    let mut etc_files: Vec<(String, Vec<u8>)> = Vec::new();
    if !target.container_user {
        let (entry, group_name) = if o.fakeroot {
            (h.root_user.clone(), h.root_group_name.clone())
        } else {
            (h.user.clone(), h.group_name.clone())
        };
        match (&i.rootfs.passwd, &entry) {
            (Some(p), Some(e)) => {
                etc_files.push((
                    "passwd".into(),
                    etcfiles::passwd(p, e, &home.dest).into_bytes(),
                ));
            }
            (None, _) => warn("the image has no /etc/passwd: not generating one".to_string()),
            (Some(_), None) => warn(format!(
                "uid {} has no passwd entry on the host: not generating /etc/passwd",
                target.uid
            )),
        }
        if let (Some(g), Some(gn)) = (&i.rootfs.group, &group_name) {
            let uname = entry.as_ref().map(|e| e.name.as_str()).unwrap_or("");
            etc_files.push((
                "group".into(),
                etcfiles::group(g, target.gid, gn, uname).into_bytes(),
            ));
        }
    }
    let dns = etcfiles::parse_dns(o.dns.as_deref().unwrap_or(""))?;
    etc_files.push((
        "resolv.conf".into(),
        etcfiles::resolv_conf(&dns, &h.resolv_conf),
    ));
    let etc_mounts: Vec<(String, String)> = etc_files
        .iter()
        .map(|(n, _)| {
            (
                format!("/etc/{n}"),
                i.bundle.join("etc").join(n).to_string_lossy().into_owned(),
            )
        })
        .collect();

    // Mounts.
    let (user_binds, mount_binds) = parse_binds(o, &h.cwd)?;
    let workdir = o
        .workdir
        .as_deref()
        .map(|w| PathBuf::from(absolute(w, &h.cwd)));
    let scratch: Vec<String> = o.scratch.clone();
    for s in &scratch {
        if !s.starts_with('/') {
            bail!("scratch directory {s} must be an absolute path");
        }
    }
    let mut mount_list = mounts::build(
        &MountInputs {
            host_root: h.is_root,
            fakeroot: o.fakeroot,
            host_uid: h.uid,
            host_gid: h.gid,
            no_pid: o.no_pid,
            net: o.net,
            userns: o.userns,
            no_compat: o.no_compat,
            contain: o.contain,
            allow_setuid: o.allow_setuid,
            keep_privs: o.keep_privs,
            cgroup_v2: h.cgroup_v2,
            tty_gid: h.tty_gid,
            tmpfs_mib: o.tmpfs_size_mib.unwrap_or(64),
            no_mount: &o.no_mount,
            home: home_mounted.then_some(&home),
            scratch: &scratch,
            workdir: workdir.as_deref(),
            binds: &user_binds,
            system_binds: &mount_binds,
            host_cwd: &h.cwd,
            containlibs: &o.containlibs,
            gpu: i.gpu_mounts,
            var_tmp_is_tmp: i.rootfs.var_tmp_is_tmp,
            etc_files: &etc_mounts,
        },
        &mut warn,
    )?;
    if let Some(p) = init_path {
        mount_list.push(init::mount(p));
    }
    let mut workdir_dirs = Vec::new();
    if let Some(w) = &workdir {
        if !o.no_compat {
            workdir_dirs.push(w.join("tmp"));
            if !i.rootfs.var_tmp_is_tmp {
                workdir_dirs.push(w.join("var_tmp"));
            }
        }
        for s in &scratch {
            workdir_dirs.push(w.join("scratch").join(s.trim_start_matches('/')));
        }
    }

    // Namespaces, in Singularity's order.
    let mut ns = vec![
        namespace(LinuxNamespaceType::Ipc)?,
        namespace(LinuxNamespaceType::Mount)?,
    ];
    if o.net {
        ns.push(namespace(LinuxNamespaceType::Network)?);
    }
    if !o.no_pid {
        ns.push(namespace(LinuxNamespaceType::Pid)?);
    }
    let mut linux: Linux = empty();
    if o.userns && h.is_root {
        // Beyond Singularity (which adds a user namespace without maps, which runtimes reject):
        // an identity map, so --userns as root runs in a user namespace that changes nothing else.
        ns.push(namespace(LinuxNamespaceType::User)?);
        let full = [IdMapEntry {
            container: 0,
            host: 0,
            size: u32::MAX,
        }];
        linux
            .set_uid_mappings(Some(id_mappings(&full)?))
            .set_gid_mappings(Some(id_mappings(&full)?));
    }
    let uts = o.uts || o.hostname.is_some();
    if uts {
        ns.push(namespace(LinuxNamespaceType::Uts)?);
    }
    if inner_userns {
        let (us, gs) = match h.subid_sizes {
            Some((u, g)) => (Some(u), Some(g)),
            None => (None, None),
        };
        if us.is_none() && i.runtime_is_crun == Some(false) {
            // runc insists that container uid 0 is mapped, and a single-ID outer namespace has
            // only one ID to give: the caller's identity cannot be kept.
            bail!(
                "runc cannot run the unprivileged default without subordinate IDs (no /etc/subuid and /etc/subgid entry for this user): use crun, or --fakeroot"
            );
        }
        let um = reverse_map(h.uid, us, "uid")?;
        let gm = reverse_map(h.gid, gs, "gid")?;
        ns.push(namespace(LinuxNamespaceType::User)?);
        linux
            .set_uid_mappings(Some(id_mappings(&um)?))
            .set_gid_mappings(Some(id_mappings(&gm)?));
    }
    linux.set_namespaces(Some(ns));

    // Cgroups: only real root can manage them on this kind of host (no systemd, cgroup v1).
    match (&i.resources, h.is_root) {
        (Some(r), true) => {
            linux
                .set_resources(Some(deny_all_devices(r.clone())?))
                .set_cgroups_path(Some(format!("/singularity-oci/{}", h.unique).into()));
        }
        (Some(_), false) => bail!(
            "system configuration does not support cgroup management: cgroup limits need root on this host (no systemd cgroup delegation)"
        ),
        (None, true) => {
            linux.set_resources(Some(deny_all_devices(empty())?));
        }
        (None, false) => {
            // An empty object rather than none: crun >= 1.11 crashes without it.
            linux.set_resources(Some(empty()));
        }
    }

    let mut annotations: HashMap<String, String> = i.image.annotations.clone();
    if o.no_setgroups {
        // crun's own annotation: keep the caller's supplementary groups.
        annotations.insert("run.oci.keep_original_groups".into(), "1".into());
    }
    if i.image.has_volumes {
        warn("Container specifies volume mounts, which are not supported by singularity. It may not operate as expected.".into());
    }

    // A writable --overlay is asked for to be written: it keeps the root writable even with
    // --no-compat (where SingularityCE would make it read-only, as without --writable-tmpfs).
    let writable = o.writable_tmpfs || common::overlay::has_writable(&o.overlays);
    let mut root = Root::default();
    root.set_path("rootfs".into())
        .set_readonly(Some(o.no_compat && !writable));
    let mut config: Spec = empty();
    config
        .set_version(OCI_VERSION.into())
        .set_process(Some(process))
        .set_root(Some(root))
        .set_mounts(Some(mount_list))
        .set_linux(Some(linux))
        .set_hostname(o.hostname.clone())
        .set_annotations((!annotations.is_empty()).then_some(annotations));
    if let Some(edits) = i.cdi {
        // In a user namespace (every container not made by host root, and root's --userns)
        // device nodes cannot be made: they are bound from the host.
        config = crate::cdi::apply::apply(config, edits, !h.is_root || o.userns)?;
    }
    Ok(Built {
        config,
        etc_files,
        uid: target.uid,
        gid: target.gid,
        args,
        inner_userns,
        workdir_dirs,
        warnings,
    })
}
