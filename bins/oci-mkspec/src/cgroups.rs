//! `linux.resources` from the cgroup limit flags or an `--apply-cgroups` TOML file.
//!
//! The TOML keys are Singularity's cgroups.toml keys, which are the runtime-spec JSON names, so
//! the file converts straight into `linux.resources`.

use crate::options::CgroupFlags;
use anyhow::{Context, Result, bail};
use oci_spec::runtime::{
    LinuxBlockIo, LinuxCpu, LinuxMemory, LinuxPidsBuilder, LinuxResources, LinuxWeightDeviceBuilder,
};

/// docker/go-units RAMInBytes: `500M`, `1.5g`, `64KiB`, `1024` (binary multipliers).
pub fn ram_in_bytes(s: &str) -> Result<i64> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num
        .parse()
        .ok()
        .filter(|n: &f64| n.is_finite())
        .with_context(|| format!("invalid size: '{s}'"))?;
    let unit = unit.trim().to_ascii_lowercase();
    let unit = unit.trim_end_matches('b').trim_end_matches('i');
    let mult: f64 = match unit {
        "" => 1.0,
        "k" => 1024.0,
        "m" => 1024f64.powi(2),
        "g" => 1024f64.powi(3),
        "t" => 1024f64.powi(4),
        "p" => 1024f64.powi(5),
        _ => bail!("invalid size: '{s}'"),
    };
    Ok((n * mult) as i64)
}

fn int<T: std::str::FromStr>(flag: &str, v: &str) -> Result<T> {
    v.trim()
        .parse()
        .ok()
        .with_context(|| format!("--{flag} {v}: not a valid integer"))
}

fn device_major_minor(path: &str) -> Result<(u64, u64)> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let m = std::fs::symlink_metadata(path)
        .with_context(|| format!("while examining device {path}"))?;
    let ft = m.file_type();
    if !(ft.is_block_device() || ft.is_char_device() || ft.is_fifo()) {
        bail!("while examining device: {path} is not a device");
    }
    let rdev = m.rdev();
    Ok((libc::major(rdev) as u64, libc::minor(rdev) as u64))
}

/// The resources asked for by the flags, or `None` when no limit flag was given.
pub fn from_flags(f: &CgroupFlags, ncpus: usize) -> Result<Option<LinuxResources>> {
    let mut r = LinuxResources::default();
    let mut blkio = LinuxBlockIo::default();
    if let Some(w) = &f.blkio_weight {
        let w: u16 = int("blkio-weight", w)?;
        if w != 0 {
            if !(10..=1000).contains(&w) {
                bail!("blkio-weight must be in range 10-1000");
            }
            blkio.set_weight(Some(w));
        }
    }
    if !f.blkio_weight_device.is_empty() {
        let mut devs = Vec::new();
        for d in &f.blkio_weight_device {
            let Some((path, w)) = d.split_once(':') else {
                bail!("blkio-weight-device specifications must be in <device>:<weight> format");
            };
            let (major, minor) = device_major_minor(path)?;
            let w: u16 = w
                .parse()
                .ok()
                .with_context(|| format!("{w} is not a valid device weight"))?;
            if !(10..=1000).contains(&w) {
                bail!("blkio-device-weight must be in range 10-1000");
            }
            devs.push(
                LinuxWeightDeviceBuilder::default()
                    .major(major as i64)
                    .minor(minor as i64)
                    .weight(w)
                    .build()?,
            );
        }
        blkio.set_weight_device(Some(devs));
    }
    if blkio != LinuxBlockIo::default() {
        r.set_block_io(Some(blkio));
    }

    let mut cpu = LinuxCpu::default();
    if let Some(s) = &f.cpu_shares {
        let s: i64 = int("cpu-shares", s)?;
        if s > 0 {
            cpu.set_shares(Some(s as u64));
        }
    }
    if let Some(c) = &f.cpuset_cpus {
        cpu.set_cpus(Some(c.clone()));
    }
    if let Some(m) = &f.cpuset_mems {
        cpu.set_mems(Some(m.clone()));
    }
    if let Some(c) = &f.cpus {
        let n: f64 = c
            .trim()
            .parse()
            .ok()
            .filter(|n: &f64| n.is_finite())
            .with_context(|| format!("invalid cpus value: {c}"))?;
        if n < 0.01 || n > ncpus as f64 {
            bail!("cpus value must be in range 0.01 - {ncpus}");
        }
        let period: u64 = 100_000;
        // Singularity computes nano-CPUs first (1e9 precision), then the quota.
        let nano = (n * 1e9).round() as u64;
        let quota = (nano * period / 1_000_000_000) as i64;
        cpu.set_period(Some(period)).set_quota(Some(quota));
    }
    if cpu != LinuxCpu::default() {
        r.set_cpu(Some(cpu));
    }

    let mut mem = LinuxMemory::default();
    if let Some(m) = &f.memory {
        mem.set_limit(Some(ram_in_bytes(m).context("invalid memory value")?));
    }
    if let Some(m) = &f.memory_reservation {
        mem.set_reservation(Some(
            ram_in_bytes(m).context("invalid memory-reservation value")?,
        ));
    }
    if let Some(m) = &f.memory_swap {
        let v = if m.trim() == "-1" {
            -1
        } else {
            ram_in_bytes(m).context("invalid memory-swap value")?
        };
        mem.set_swap(Some(v));
    }
    if f.oom_kill_disable {
        mem.set_disable_oom_killer(Some(true));
    }
    if mem != LinuxMemory::default() {
        r.set_memory(Some(mem));
    }

    if let Some(p) = &f.pids_limit {
        let p: i64 = int("pids-limit", p)?;
        if p < -1 {
            bail!("invalid pids-limit: {p}");
        }
        if p != 0 {
            r.set_pids(Some(LinuxPidsBuilder::default().limit(p).build()?));
        }
    }
    Ok((r != LinuxResources::default()).then_some(r))
}

/// Convert a cgroups TOML document into `linux.resources`. Keys the runtime-spec does not
/// define are ignored, as SingularityCE (which reads the file into the same type) and the
/// runtimes ignore them; a value of the wrong type is an error naming the file.
pub fn from_toml(text: &str, file: &str) -> Result<LinuxResources> {
    let t: toml::Table = toml::from_str(text)
        .with_context(|| format!("while parsing {file}: toml: expected valid TOML"))?;
    let v = serde_json::to_value(t).context("cannot convert the cgroups TOML to JSON")?;
    serde_json::from_value(v).with_context(|| format!("{file}: not a valid cgroups resource file"))
}

/// The resources requested by flags or by `--apply-cgroups` (they cannot be combined).
pub fn requested(f: &CgroupFlags, ncpus: usize) -> Result<Option<LinuxResources>> {
    let from_flags = from_flags(f, ncpus)?;
    match (&from_flags, &f.apply_cgroups) {
        (Some(_), Some(_)) => bail!("cannot apply a cgroups TOML file while using limit flags"),
        (None, Some(file)) => {
            let text = std::fs::read_to_string(file)
                .with_context(|| format!("while loading cgroups file {file}"))?;
            Ok(Some(from_toml(&text, file)?))
        }
        _ => Ok(from_flags),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn sizes() {
        assert_eq!(ram_in_bytes("500M").unwrap(), 524_288_000);
        assert_eq!(ram_in_bytes("250m").unwrap(), 262_144_000);
        assert_eq!(ram_in_bytes("1g").unwrap(), 1 << 30);
        assert_eq!(ram_in_bytes("64KiB").unwrap(), 65536);
        assert_eq!(ram_in_bytes("1024").unwrap(), 1024);
        assert!(ram_in_bytes("lots").is_err());
    }

    #[test]
    fn flags_map_to_resources() {
        let f = CgroupFlags {
            cpus: Some("0.5".into()),
            cpu_shares: Some("123".into()),
            cpuset_cpus: Some("0".into()),
            cpuset_mems: Some("0".into()),
            memory: Some("250M".into()),
            memory_reservation: Some("500M".into()),
            memory_swap: Some("500M".into()),
            pids_limit: Some("123".into()),
            blkio_weight: Some("50".into()),
            oom_kill_disable: true,
            ..Default::default()
        };
        let r = serde_json::to_value(from_flags(&f, 2).unwrap().unwrap()).unwrap();
        assert_eq!(
            r,
            json!({
                "blockIO": {"weight": 50},
                "cpu": {"shares": 123, "cpus": "0", "mems": "0", "period": 100000, "quota": 50000},
                "memory": {"limit": 262144000, "reservation": 524288000, "swap": 524288000, "disableOOMKiller": true},
                "pids": {"limit": 123}
            })
        );
        assert_eq!(from_flags(&CgroupFlags::default(), 2).unwrap(), None);
    }

    #[test]
    fn range_errors() {
        let f = CgroupFlags {
            cpus: Some("3".into()),
            ..Default::default()
        };
        assert!(from_flags(&f, 2).unwrap_err().to_string().contains("range"));
        let f = CgroupFlags {
            blkio_weight: Some("5".into()),
            ..Default::default()
        };
        assert!(from_flags(&f, 2).is_err());
    }

    #[test]
    fn toml_file() {
        let v = from_toml("[memory]\nlimit = 524288000\n[pids]\nlimit = 10\n", "f").unwrap();
        let v = serde_json::to_value(v).unwrap();
        assert_eq!(
            v,
            json!({"memory": {"limit": 524288000}, "pids": {"limit": 10}})
        );
        let e = from_toml("[memory\n", "f").unwrap_err();
        assert!(format!("{e:#}").contains("toml: expected"), "{e:#}");
        // Typed as linux.resources: unknown keys go, a wrong type is refused.
        let v = from_toml(
            "[memory]\nlimit = 1\nsurprise = 2\n[nonsense]\nx = 1\n",
            "f",
        )
        .unwrap();
        assert_eq!(
            serde_json::to_value(v).unwrap(),
            json!({"memory": {"limit": 1}})
        );
        let e = from_toml("[memory]\nlimit = \"lots\"\n", "f.toml").unwrap_err();
        assert!(format!("{e:#}").contains("f.toml"), "{e:#}");
    }

    #[test]
    fn flags_and_toml_conflict() {
        let f = CgroupFlags {
            pids_limit: Some("5".into()),
            apply_cgroups: Some("/nonexistent".into()),
            ..Default::default()
        };
        assert!(
            requested(&f, 2)
                .unwrap_err()
                .to_string()
                .contains("cannot apply")
        );
    }
}
