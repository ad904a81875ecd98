//! CDI names: a spec's `kind` (`vendor.com/class`), a device's name, and the fully qualified
//! device name `vendor.com/class=name` that `--device` takes. The character rules are the
//! Container Device Interface's (its `pkg/parser`).

use anyhow::{Result, bail};

/// A fully qualified device name, split.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Qualified {
    pub vendor: String,
    pub class: String,
    pub name: String,
}

impl Qualified {
    /// `vendor/class`, the `kind` of the spec that defines the device.
    pub fn kind(&self) -> String {
        format!("{}/{}", self.vendor, self.class)
    }
}

impl std::fmt::Display for Qualified {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}={}", self.vendor, self.class, self.name)
    }
}

fn alnum(c: char) -> bool {
    c.is_ascii_alphanumeric()
}

/// Vendor and class: a letter first, a letter or digit last, and letters, digits, `_`, `-`
/// and `.` between.
fn check_vendor_or_class(what: &str, s: &str) -> Result<()> {
    let Some(first) = s.chars().next() else {
        bail!("invalid {what}: empty name");
    };
    if !first.is_ascii_alphabetic() {
        bail!("invalid {what} {s:?}: should start with a letter");
    }
    check_middle_and_end(what, s, &['_', '-', '.'])
}

fn check_middle_and_end(what: &str, s: &str, extra: &[char]) -> Result<()> {
    let chars: Vec<char> = s.chars().collect();
    if chars.len() > 1 {
        for &c in &chars[1..chars.len() - 1] {
            if !alnum(c) && !extra.contains(&c) {
                bail!("invalid character '{c}' in {what} {s:?}");
            }
        }
        if !alnum(chars[chars.len() - 1]) {
            bail!("invalid {what} {s:?}: should end with a letter or digit");
        }
    }
    Ok(())
}

/// A device name: a letter or digit first and last, and letters, digits, `_`, `-`, `.` and
/// `:` between.
pub fn check_device_name(s: &str) -> Result<()> {
    let Some(first) = s.chars().next() else {
        bail!("invalid (empty) device name");
    };
    if !alnum(first) {
        bail!("invalid device name {s:?}: should start with a letter or digit");
    }
    check_middle_and_end("device name", s, &['_', '-', '.', ':'])
}

/// Split a spec's `kind` into vendor and class, both checked.
pub fn parse_kind(kind: &str) -> Result<(String, String)> {
    let Some((vendor, class)) = kind
        .split_once('/')
        .filter(|(v, c)| !v.is_empty() && !c.is_empty())
    else {
        bail!("invalid kind {kind:?}: expected VENDOR/CLASS");
    };
    check_vendor_or_class("vendor", vendor)?;
    check_vendor_or_class("class", class)?;
    Ok((vendor.to_string(), class.to_string()))
}

/// Parse `vendor/class=name`; `None` when it is not a valid fully qualified device name.
pub fn parse_qualified(s: &str) -> Option<Qualified> {
    if s.starts_with('/') {
        return None;
    }
    let (kind, name) = s.split_once('=')?;
    if name.is_empty() {
        return None;
    }
    let (vendor, class) = parse_kind(kind).ok()?;
    check_device_name(name).ok()?;
    Some(Qualified {
        vendor,
        class,
        name: name.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qualified_names() {
        let q = parse_qualified("vendor.com/device=dev0").unwrap();
        assert_eq!(
            (q.vendor.as_str(), q.class.as_str(), q.name.as_str()),
            ("vendor.com", "device", "dev0")
        );
        assert_eq!(q.to_string(), "vendor.com/device=dev0");
        assert_eq!(q.kind(), "vendor.com/device");
        assert!(parse_qualified("nvidia.com/gpu=all").is_some());
        assert!(parse_qualified("nvidia.com/gpu=0").is_some());
        assert!(parse_qualified("nvidia.com/gpu=MIG-1:0").is_some());
        assert!(parse_qualified("foo.bar.baz/foo-bar123.B_az=x").is_some());
        for bad in [
            "",
            "dev0",
            "vendor.com/device",
            "vendor.com/device=",
            "/dev/null",
            "=dev0",
            "vendor.com=dev0",
            "vendor.com/=dev0",
            "/device=dev0",
            "1vendor.com/device=dev0",
            "vendor.com/device-=dev0",
            "vendor.com/dev/ice=dev0",
            "vendor.com/device=-dev0",
            "vendor.com/device=dev0-",
            "vendor.com/device=de v0",
            "vendor.com/device=dev/0",
        ] {
            assert!(parse_qualified(bad).is_none(), "{bad:?} accepted");
        }
    }

    #[test]
    fn kinds() {
        assert!(parse_kind("vendor.com/device").is_ok());
        assert!(parse_kind("a/b").is_ok());
        assert!(parse_kind("vendor.com").is_err());
        assert!(parse_kind("vendor.com/foo/").is_err());
        assert!(parse_kind("vendor.com/foo/bar").is_err());
    }
}
