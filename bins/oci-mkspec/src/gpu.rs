//! `--nv` and `--rocm` without a vendor CDI spec: SingularityCE's legacy GPU binding. The
//! vendor's library list (`nvliblist.conf`, `rocmliblist.conf`: one file name a line, `#`
//! comments; a name with `.so` is a library, anything else a program) is resolved on the host:
//! libraries through the linker cache (`ldconfig -p`, the first entry of each name, only those
//! of our own ELF machine) or as given when absolute, programs through `PATH`. Libraries are
//! bound read-only into `/.singularity.d/libs` (on the container's `LD_LIBRARY_PATH`), programs
//! into `/usr/bin`, and the device nodes (`/dev/nvidia*`; `/dev/kfd` and `/dev/dri`) and the
//! NVIDIA persistence daemon's socket at their own paths. Nothing found is a warning in
//! SingularityCE's words, not an error.
//!
//! When a CDI spec of the vendor's kind (`nvidia.com/gpu`, `amd.com/gpu`) is installed, the
//! flags ask for its device `all` instead (main.rs); this module is not used then.

use crate::mounts::m;
use anyhow::{Context, Result};
use oci_spec::runtime::Mount;
use std::collections::HashSet;
use std::io::Read;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Vendor {
    Nvidia,
    Rocm,
}

/// The library list is read from this directory when set, else from SingularityCE's
/// configuration directories, else the built-in list below is used.
pub const ENV_CONFDIR: &str = "SINGULARITY_OCI_CONFDIR";
const CONF_DIRS: [&str; 2] = ["/etc/singularity", "/usr/local/etc/singularity"];
const PERSISTENCED_SOCKET: &str = "/var/run/nvidia-persistenced/socket";

const NVIDIA_DEFAULT: &[&str] = &[
    "nvidia-smi",
    "nvidia-debugdump",
    "nvidia-persistenced",
    "nvidia-cuda-mps-control",
    "nvidia-cuda-mps-server",
    "libcuda.so",
    "libcudadebugger.so",
    "libnvidia-ml.so",
    "libnvidia-cfg.so",
    "libnvidia-ptxjitcompiler.so",
    "libnvidia-nvvm.so",
    "libnvidia-gpucomp.so",
    "libnvidia-allocator.so",
    "libnvidia-opencl.so",
    "libnvidia-encode.so",
    "libnvidia-opticalflow.so",
    "libnvcuvid.so",
    "libnvidia-eglcore.so",
    "libnvidia-glcore.so",
    "libnvidia-glsi.so",
    "libnvidia-glvkspirv.so",
    "libnvidia-tls.so",
    "libnvidia-rtcore.so",
    "libnvoptix.so",
    "libEGL_nvidia.so",
    "libGLX_nvidia.so",
    "libGLESv1_CM_nvidia.so",
    "libGLESv2_nvidia.so",
    "libvdpau_nvidia.so",
];

const ROCM_DEFAULT: &[&str] = &[
    "rocm-smi",
    "rocminfo",
    "libamdhip64.so",
    "libhsa-runtime64.so",
    "libhsakmt.so",
    "libamd_comgr.so",
    "librocm_smi64.so",
    "libdrm_amdgpu.so",
    "libdrm.so",
];

impl Vendor {
    fn list_file(self) -> &'static str {
        match self {
            Vendor::Nvidia => "nvliblist.conf",
            Vendor::Rocm => "rocmliblist.conf",
        }
    }
    fn default_list(self) -> &'static [&'static str] {
        match self {
            Vendor::Nvidia => NVIDIA_DEFAULT,
            Vendor::Rocm => ROCM_DEFAULT,
        }
    }
    fn name(self) -> &'static str {
        match self {
            Vendor::Nvidia => "NVIDIA",
            Vendor::Rocm => "ROCm",
        }
    }
    /// The kind of the vendor's CDI spec; `KIND=all` is what the flag asks for.
    pub fn cdi_kind(self) -> &'static str {
        match self {
            Vendor::Nvidia => "nvidia.com/gpu",
            Vendor::Rocm => "amd.com/gpu",
        }
    }
}

/// The list's entries (trimmed, no blank lines or comments).
pub fn parse_list(text: &str) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .collect()
}

/// The vendor's list: `$SINGULARITY_OCI_CONFDIR/<file>`, else the first of SingularityCE's
/// configuration directories that has it, else the built-in list. The file must be trusted
/// (owned by you or root, writable by nobody else).
fn read_list(v: Vendor, confdir: Option<&str>) -> Result<Vec<String>> {
    let dirs: Vec<&str> = match confdir {
        Some(d) => vec![d],
        None => CONF_DIRS.to_vec(),
    };
    for dir in dirs {
        let Some(d) = common::trusted::open_dir_if_exists(Path::new(dir))
            .with_context(|| format!("{} library list directory {dir}", v.name()))?
        else {
            continue;
        };
        if !d.entries()?.iter().any(|(n, _)| n == v.list_file()) {
            continue;
        }
        let bytes = d.read_file(v.list_file().as_ref(), 1 << 20)?;
        return Ok(parse_list(&String::from_utf8_lossy(&bytes)));
    }
    Ok(v.default_list().iter().map(|s| s.to_string()).collect())
}

/// `ldconfig -p`: library name → path, the first (highest priority) entry of each name, in
/// output order.
pub fn parse_ldconfig(text: &str) -> Vec<(String, String)> {
    let mut seen = HashSet::new();
    let mut v = Vec::new();
    for line in text.lines() {
        let Some((left, path)) = line.split_once("=>") else {
            continue;
        };
        let Some((name, _abi)) = left.trim().split_once(" (") else {
            continue;
        };
        let (name, path) = (name.trim().to_string(), path.trim().to_string());
        if !name.is_empty() && path.starts_with('/') && seen.insert(name.clone()) {
            v.push((name, path));
        }
    }
    v
}

fn ld_cache() -> Vec<(String, String)> {
    let Some(ldconfig) = common::runtime::which("ldconfig") else {
        return Vec::new();
    };
    match std::process::Command::new(&ldconfig)
        .arg("-p")
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .output()
    {
        Ok(o) if o.status.success() => parse_ldconfig(&String::from_utf8_lossy(&o.stdout)),
        _ => Vec::new(),
    }
}

/// The ELF machine of a file (`e_machine`), or `None` when it is no ELF file.
fn elf_machine(path: &Path) -> Option<u16> {
    let mut h = [0u8; 20];
    std::fs::File::open(path).ok()?.read_exact(&mut h).ok()?;
    if &h[..4] != b"\x7fELF" {
        return None;
    }
    Some(match h[5] {
        2 => u16::from_be_bytes([h[18], h[19]]),
        _ => u16::from_le_bytes([h[18], h[19]]),
    })
}

/// What the list resolves to on this host: (libraries, programs), each once.
fn resolve(list: &[String], cache: &[(String, String)]) -> (Vec<PathBuf>, Vec<PathBuf>) {
    let machine = elf_machine(Path::new("/proc/self/exe"));
    let ours = |p: &Path| elf_machine(p).is_some() && elf_machine(p) == machine;
    let mut libs: Vec<PathBuf> = Vec::new();
    let mut bins: Vec<PathBuf> = Vec::new();
    for entry in list {
        if entry.contains(".so") {
            if entry.starts_with('/') {
                let p = PathBuf::from(entry);
                if ours(&p) && !libs.contains(&p) {
                    libs.push(p);
                }
            } else {
                for (name, path) in cache {
                    let p = PathBuf::from(path);
                    if name.starts_with(entry.as_str()) && ours(&p) && !libs.contains(&p) {
                        libs.push(p);
                    }
                }
            }
        } else if let Some(p) = common::runtime::which(entry)
            && !bins.contains(&p)
        {
            bins.push(p);
        }
    }
    (libs, bins)
}

fn base(p: &Path) -> String {
    p.file_name()
        .map(|b| b.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// The device nodes of the vendor on this host.
fn devices(v: Vendor) -> Vec<PathBuf> {
    match v {
        Vendor::Nvidia => {
            let mut found: Vec<PathBuf> = std::fs::read_dir("/dev")
                .into_iter()
                .flatten()
                .flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with("nvidia"))
                .map(|e| e.path())
                .collect();
            found.sort();
            found
        }
        Vendor::Rocm => ["/dev/dri", "/dev/kfd"]
            .iter()
            .map(PathBuf::from)
            .filter(|p| p.exists())
            .collect(),
    }
}

/// The binds of the vendor's legacy GPU support, and the warnings for what was not found.
pub fn legacy_binds(v: Vendor, warn: &mut dyn FnMut(String)) -> Result<Vec<Mount>> {
    let confdir = std::env::var(ENV_CONFDIR).ok().filter(|s| !s.is_empty());
    let list = read_list(v, confdir.as_deref())?;
    let (libs, bins) = resolve(&list, &ld_cache());
    if libs.is_empty() {
        warn(format!(
            "Could not find any {} libraries on this host!",
            v.name()
        ));
    }
    let devs = devices(v);
    if devs.is_empty() {
        warn(format!(
            "Could not find any {} devices on this host!",
            v.name()
        ));
    }
    let ro = |extra: &[&str]| -> Vec<String> {
        ["rbind", "nodev", "nosuid", "ro"]
            .iter()
            .chain(extra)
            .map(|s| s.to_string())
            .collect()
    };
    let mut out = Vec::new();
    for b in &bins {
        out.push(m(
            &format!("/usr/bin/{}", base(b)),
            "bind",
            &b.to_string_lossy(),
            ro(&[]),
        ));
    }
    for l in &libs {
        out.push(m(
            &format!("{}/{}", crate::env::LIBS_DIR, base(l)),
            "bind",
            &l.to_string_lossy(),
            ro(&[]),
        ));
    }
    if v == Vendor::Nvidia && Path::new(PERSISTENCED_SOCKET).exists() {
        out.push(m(
            PERSISTENCED_SOCKET,
            "bind",
            PERSISTENCED_SOCKET,
            vec!["rbind".into(), "nodev".into(), "nosuid".into()],
        ));
    }
    for d in &devs {
        let p = d.to_string_lossy();
        out.push(m(&p, "bind", &p, vec!["bind".into(), "nosuid".into()]));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_and_the_linker_cache() {
        assert_eq!(
            parse_list("# comment\n\nnvidia-smi\n  libcuda.so  \n"),
            vec!["nvidia-smi", "libcuda.so"]
        );
        let text = "3 libs found in cache `/etc/ld.so.cache'\n\
            \tlibnvidia-ml.so.1 (libc6,x86-64) => /usr/lib/x86_64-linux-gnu/libnvidia-ml.so.1\n\
            \tlibnvidia-ml.so.1 (libc6) => /usr/lib32/libnvidia-ml.so.1\n\
            \tlibcuda.so (libc6,x86-64) => /usr/lib/x86_64-linux-gnu/libcuda.so\n";
        assert_eq!(
            parse_ldconfig(text),
            vec![
                (
                    "libnvidia-ml.so.1".to_string(),
                    "/usr/lib/x86_64-linux-gnu/libnvidia-ml.so.1".to_string()
                ),
                (
                    "libcuda.so".to_string(),
                    "/usr/lib/x86_64-linux-gnu/libcuda.so".to_string()
                ),
            ]
        );
    }

    #[test]
    fn only_libraries_of_our_machine_are_taken() {
        let d = tempfile::tempdir().unwrap();
        let ours = d.path().join("libvendor.so.1");
        std::fs::copy("/proc/self/exe", &ours).unwrap();
        let text = d.path().join("libtext.so.1");
        std::fs::write(&text, "not an ELF file").unwrap();
        let cache = vec![
            ("libvendor.so.1".to_string(), ours.display().to_string()),
            ("libtext.so.1".to_string(), text.display().to_string()),
        ];
        let list = vec![
            "libvendor.so".to_string(),
            "libtext.so".to_string(),
            "sh".to_string(),
        ];
        let (libs, bins) = resolve(&list, &cache);
        assert_eq!(libs, vec![ours.clone()]);
        assert_eq!(bins.len(), 1);
        assert!(bins[0].ends_with("sh"));
        // An absolute entry is taken as given.
        let (libs, _) = resolve(&[ours.display().to_string()], &[]);
        assert_eq!(libs, vec![ours]);
    }
}
