//! `mounts` of config.json, in the order SingularityCE's OCI launcher adds them
//! (`mounts_linux.go`). The numbered steps below keep its numbering, so the two read side by
//! side; 13 and 14 (ROCm and NVIDIA without a CDI spec) come ready from `gpu.rs`, 17 (CDI
//! devices) is applied to the finished config (`cdi::apply`), and 16 (the native-SIF
//! environment script) is a mount this launcher does not make.

use crate::binds::Bind;
use anyhow::{Result, bail};
use oci_spec::runtime::Mount;
use std::path::Path;

/// The home directory plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HomePlan {
    /// Destination inside the container (also `$HOME`).
    pub dest: String,
    /// Host source for a bind (`--home SRC:DST`); `None` for the tmpfs home.
    pub source: Option<String>,
    /// True when the user gave `--home`.
    pub custom: bool,
}

/// `--home` handling (Singularity's parseHomeDir).
pub fn home_plan(opt: Option<&str>, default_dest: &str) -> Result<HomePlan> {
    let Some(h) = opt else {
        return Ok(HomePlan {
            dest: default_dest.to_string(),
            source: None,
            custom: false,
        });
    };
    let parts: Vec<&str> = h.split(':').collect();
    let (source, dest) = match parts.as_slice() {
        [d] => (None, d.to_string()),
        [s, d] => (Some(s.to_string()), d.to_string()),
        _ => bail!("home argument has incorrect number of elements: {h}"),
    };
    if !dest.starts_with('/') {
        bail!("home destination {dest} must be an absolute path");
    }
    Ok(HomePlan {
        dest,
        source,
        custom: true,
    })
}

/// What the mount list depends on.
pub struct MountInputs<'a> {
    pub host_root: bool,
    pub fakeroot: bool,
    pub host_uid: u32,
    pub host_gid: u32,
    pub no_pid: bool,
    /// A private network namespace (`--net --network none`).
    pub net: bool,
    /// Root asked for a user namespace (`--userns`).
    pub userns: bool,
    pub no_compat: bool,
    /// `--contain`: with `--no-compat`, the host's /tmp, /var/tmp and working directory are not
    /// shared (the compat default shares none of them anyway).
    pub contain: bool,
    pub allow_setuid: bool,
    pub keep_privs: bool,
    pub cgroup_v2: bool,
    pub tty_gid: Option<u32>,
    /// `size=<N>m` for every tmpfs.
    pub tmpfs_mib: u64,
    pub no_mount: &'a [String],
    pub home: Option<&'a HomePlan>,
    pub scratch: &'a [String],
    pub workdir: Option<&'a Path>,
    pub binds: &'a [Bind],
    /// `--mount` binds. In --no-compat SingularityCE adds them twice (as system binds and as
    /// user binds); here they are mounted once, since a second identical mount only hides the
    /// first.
    pub system_binds: &'a [Bind],
    pub host_cwd: &'a str,
    pub containlibs: &'a [String],
    /// The legacy `--rocm` and `--nv` binds (`gpu::legacy_binds`), in that order.
    pub gpu: &'a [Mount],
    pub var_tmp_is_tmp: bool,
    /// Generated etc files: (container path, bundle path).
    pub etc_files: &'a [(String, String)],
}

/// One entry of `mounts`: every mount here names its type, source and options.
pub fn m(dest: &str, typ: &str, source: &str, options: Vec<String>) -> Mount {
    let mut mount = Mount::default();
    mount
        .set_destination(dest.into())
        .set_typ(Some(typ.to_string()))
        .set_source(Some(source.into()))
        .set_options(Some(options));
    mount
}

fn o(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

impl MountInputs<'_> {
    fn no_mount(&self, what: &str) -> bool {
        self.no_mount.iter().any(|n| n == what)
    }
    fn size(&self) -> String {
        format!("size={}m", self.tmpfs_mib)
    }
    fn nosuid(&self, v: &mut Vec<String>) {
        if !self.allow_setuid {
            v.push("nosuid".into());
        }
    }
    fn user_bind_options(&self, b: &Bind) -> Vec<String> {
        let mut opts = if b.source.starts_with("/dev") {
            o(&["bind", "nosuid"])
        } else {
            let mut v = o(&["rbind", "nodev"]);
            self.nosuid(&mut v);
            if b.source.starts_with("/proc") || b.source.starts_with("/sys") {
                if !v.iter().any(|x| x == "nosuid") {
                    v.push("nosuid".into());
                }
                v.push("noexec".into());
            }
            v
        };
        if b.readonly {
            opts.push("ro".into());
        }
        opts
    }
}

/// Check every bind before anything is written (Singularity's launcher-time errors).
pub fn check_bind(b: &Bind) -> Result<()> {
    if !b.destination.starts_with('/') {
        bail!(
            "bind destination {} must be an absolute path",
            b.destination
        );
    }
    if let Err(e) = std::fs::metadata(&b.source) {
        bail!("cannot stat bind source {}: {e}", b.source);
    }
    if b.source == "/dev" && b.destination != "/dev" {
        bail!("host /dev may only be bound to /dev in container");
    }
    if b.source.starts_with("/dev/") && b.source != b.destination {
        bail!(
            "device bind source {} must be the same as destination {}",
            b.source,
            b.destination
        );
    }
    Ok(())
}

/// Build the mount list (pure). Warnings go to `warn`.
pub fn build(i: &MountInputs, warn: &mut dyn FnMut(String)) -> Result<Vec<Mount>> {
    if i.no_mount("dev") {
        bail!("OCI-mode requires /dev to be mounted, but '--no-mount dev' was requested");
    }
    if i.no_mount("devpts") {
        bail!("OCI-mode requires /dev/pts to be mounted, but '--no-mount devpts' was requested");
    }
    let mut v = Vec::new();
    // 1. /proc
    if !i.no_mount("proc") {
        if i.no_pid {
            v.push(m(
                "/proc",
                "bind",
                "/proc",
                o(&["rbind", "nodev", "nosuid", "noexec"]),
            ));
        } else {
            v.push(m(
                "/proc",
                "proc",
                "proc",
                o(&["nosuid", "noexec", "nodev"]),
            ));
        }
    }
    // 2. /sys: a user namespace may mount sysfs only in a network namespace it owns, so without
    // --net an unprivileged container gets the host's /sys read-only. Beyond Singularity: with
    // --net it gets its own sysfs, which shows the container's interfaces, not the host's.
    if !i.no_mount("sys") {
        if (i.host_root && !i.userns) || i.net {
            v.push(m(
                "/sys",
                "sysfs",
                "sysfs",
                o(&["nosuid", "noexec", "nodev", "ro"]),
            ));
        } else {
            v.push(m(
                "/sys",
                "bind",
                "/sys",
                o(&["rbind", "nosuid", "noexec", "nodev", "ro"]),
            ));
        }
        // 2b. the namespaced cgroup2 hierarchy, on cgroup v2 hosts only.
        if i.cgroup_v2 {
            let rw = if i.keep_privs { "rw" } else { "ro" };
            v.push(m(
                "/sys/fs/cgroup",
                "cgroup",
                "cgroup",
                o(&["nosuid", "noexec", "nodev", rw]),
            ));
        }
    }
    // 3–5. /dev: a minimal tmpfs /dev, unless the user binds the host's /dev.
    let host_dev = i
        .binds
        .iter()
        .any(|b| b.source == "/dev" && b.destination == "/dev");
    if host_dev {
        v.push(m(
            "/dev",
            "bind",
            "/dev",
            o(&["nosuid", "rprivate", "rbind", "rw"]),
        ));
    } else {
        v.push(m(
            "/dev",
            "tmpfs",
            "tmpfs",
            vec![
                "nosuid".into(),
                "strictatime".into(),
                "mode=755".into(),
                i.size(),
            ],
        ));
        v.push(m(
            "/dev/shm",
            "tmpfs",
            "shm",
            vec![
                "nosuid".into(),
                "noexec".into(),
                "nodev".into(),
                "mode=1777".into(),
                i.size(),
            ],
        ));
        v.push(m(
            "/dev/mqueue",
            "mqueue",
            "mqueue",
            o(&["nosuid", "noexec", "nodev"]),
        ));
    }
    // 6. /dev/pts: gid=tty only for real root (the tty gid is unmapped in a user namespace).
    let mut pts = o(&[
        "nosuid",
        "noexec",
        "newinstance",
        "ptmxmode=0666",
        "mode=0620",
    ]);
    if let Some(g) = i.tty_gid.filter(|_| i.host_root) {
        pts.push(format!("gid={g}"));
    }
    v.push(m("/dev/pts", "devpts", "devpts", pts));
    // 7. /tmp and /var/tmp. Mode 1777 (sticky), not SingularityCE's 777: without the sticky bit
    // any process in the container could remove or rename another user's files there.
    if !i.no_mount("tmp") {
        for (dest, sub) in [("/tmp", "tmp"), ("/var/tmp", "var_tmp")] {
            if dest == "/var/tmp" && i.var_tmp_is_tmp {
                continue; // the image's /var/tmp is /tmp: one mount serves both (4.0.1)
            }
            if i.no_compat && !i.contain {
                let mut opts = o(&["rbind", "nodev"]);
                i.nosuid(&mut opts);
                v.push(m(dest, "bind", dest, opts));
            } else if let Some(w) = i.workdir {
                let mut opts = o(&["rbind"]);
                i.nosuid(&mut opts);
                v.push(m(dest, "bind", &w.join(sub).to_string_lossy(), opts));
            } else {
                v.push(m(
                    dest,
                    "tmpfs",
                    "tmpfs",
                    vec![
                        "nosuid".into(),
                        "relatime".into(),
                        "mode=1777".into(),
                        i.size(),
                    ],
                ));
            }
        }
    }
    // 8. home
    if let Some(h) = i.home.filter(|_| !i.no_mount("home")) {
        match &h.source {
            Some(src) => {
                let mut opts = o(&["rbind", "nodev"]);
                i.nosuid(&mut opts);
                v.push(m(&h.dest, "bind", src, opts));
            }
            None => {
                let mut opts = vec!["relatime".to_string(), "mode=755".into(), i.size()];
                i.nosuid(&mut opts);
                if !i.fakeroot {
                    opts.push(format!("uid={}", i.host_uid));
                    opts.push(format!("gid={}", i.host_gid));
                }
                v.push(m(&h.dest, "tmpfs", "tmpfs", opts));
            }
        }
    }
    // 9. scratch
    for d in i.scratch {
        let mut opts;
        if let Some(w) = i.workdir {
            opts = o(&["rbind", "nodev"]);
            i.nosuid(&mut opts);
            let src = w.join("scratch").join(d.trim_start_matches('/'));
            v.push(m(d, "bind", &src.to_string_lossy(), opts));
        } else {
            opts = vec!["relatime".to_string(), "nodev".into(), i.size()];
            i.nosuid(&mut opts);
            v.push(m(d, "tmpfs", "tmpfs", opts));
        }
    }
    // 10. system bind paths, --no-compat only.
    if i.no_compat && !i.no_mount("bind-paths") {
        for p in ["/etc/localtime", "/etc/hosts"] {
            if i.no_mount(p) || !Path::new(p).exists() {
                continue;
            }
            let b = Bind {
                source: p.into(),
                destination: p.into(),
                readonly: false,
            };
            v.push(m(p, "bind", p, i.user_bind_options(&b)));
        }
    }
    // 11. user binds (and --mount binds, once).
    for b in i.binds.iter().chain(i.system_binds) {
        if b.source == "/dev" && b.destination == "/dev" {
            continue; // handled as row 3'
        }
        if i.var_tmp_is_tmp
            && (b.destination == "/var/tmp" || b.destination.starts_with("/var/tmp/"))
        {
            warn(format!(
                "bind destination {} is inside the image's /var/tmp, which is a link to /tmp: it lands under /tmp",
                b.destination
            ));
        }
        v.push(m(&b.destination, "bind", &b.source, i.user_bind_options(b)));
    }
    // 12. host cwd, --no-compat only.
    if i.no_compat && !i.contain && !i.no_mount("cwd") && i.host_cwd != "/" {
        let taken = v.iter().any(|x| x.destination().as_os_str() == i.host_cwd);
        if !taken {
            let mut opts = o(&["rbind", "nodev"]);
            i.nosuid(&mut opts);
            v.push(m(i.host_cwd, "bind", i.host_cwd, opts));
        }
    }
    // 13–14. ROCm and NVIDIA libraries, programs and device nodes.
    v.extend(i.gpu.iter().cloned());
    // 15. --containlibs
    for lib in i.containlibs {
        let base = Path::new(lib)
            .file_name()
            .map(|b| b.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut opts = o(&["rbind", "nodev"]);
        i.nosuid(&mut opts);
        opts.push("ro".into());
        v.push(m(
            &format!("/.singularity.d/libs/{base}"),
            "bind",
            lib,
            opts,
        ));
    }
    // 18–20. generated files.
    for (dest, src) in i.etc_files {
        if i.no_mount(dest) {
            continue;
        }
        // rbind, not bind: crun drops nosuid/nodev of a plain "bind" in a user namespace.
        v.push(m(dest, "bind", src, o(&["rbind", "nosuid", "nodev"])));
    }
    // --no-mount values with no effect.
    for n in i.no_mount {
        let known = matches!(
            n.as_str(),
            "proc" | "sys" | "tmp" | "home" | "cwd" | "bind-paths"
        );
        if !known && !n.starts_with('/') {
            bail!(
                "--no-mount {n}: unknown value (expected proc, sys, dev, devpts, tmp, home, cwd, bind-paths or an absolute path)"
            );
        }
        if n.starts_with('/') {
            let matched = i.etc_files.iter().any(|(d, _)| d == n)
                || (i.no_compat && ["/etc/localtime", "/etc/hosts"].contains(&n.as_str()));
            if !matched {
                warn(format!("--no-mount {n}: no such default mount, ignoring"));
            }
        }
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn home_forms() {
        assert_eq!(home_plan(None, "/home/u").unwrap().dest, "/home/u");
        let h = home_plan(Some("/x"), "/home/u").unwrap();
        assert_eq!(
            (h.dest.as_str(), h.source.is_none(), h.custom),
            ("/x", true, true)
        );
        let h = home_plan(Some("/a:/b"), "/home/u").unwrap();
        assert_eq!((h.dest.as_str(), h.source.as_deref()), ("/b", Some("/a")));
        assert!(
            home_plan(Some("/a:/b:/c"), "/h")
                .unwrap_err()
                .to_string()
                .contains("incorrect number")
        );
    }

    #[test]
    fn bind_checks() {
        let b = |s: &str, d: &str| Bind {
            source: s.into(),
            destination: d.into(),
            readonly: false,
        };
        assert!(
            check_bind(&b("/etc", "relative"))
                .unwrap_err()
                .to_string()
                .contains("absolute")
        );
        assert!(
            check_bind(&b("/non/existent", "/x"))
                .unwrap_err()
                .to_string()
                .contains("cannot stat")
        );
        assert!(check_bind(&b("/dev", "/x")).is_err());
        assert!(check_bind(&b("/dev/null", "/x")).is_err());
        assert!(check_bind(&b("/dev/null", "/dev/null")).is_ok());
        assert!(check_bind(&b("/etc", "/x")).is_ok());
    }
}
