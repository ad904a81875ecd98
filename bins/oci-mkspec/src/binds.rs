//! `--bind src[:dst[:opts]]` and `--mount type=bind,...` parsing (Singularity's pkg/util/bind).

use anyhow::{Result, bail};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bind {
    pub source: String,
    pub destination: String,
    pub readonly: bool,
}

fn is_bind_option(s: &str) -> bool {
    matches!(s, "ro" | "rw") || s.starts_with("image-src=") || s.starts_with("id=")
}

/// Parse one `--bind` value: comma-separated binds, where a comma-separated word that is a bind
/// option (`ro`, `rw`, `image-src=`, `id=`) belongs to the previous bind's option list.
pub fn parse_bind(spec: &str) -> Result<Vec<Bind>> {
    let mut groups: Vec<String> = Vec::new();
    for part in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        match groups.last_mut() {
            Some(last) if is_bind_option(part) && last.matches(':').count() >= 2 => {
                last.push(',');
                last.push_str(part);
            }
            _ => groups.push(part.to_string()),
        }
    }
    groups.iter().map(|g| one_bind(g)).collect()
}

fn one_bind(g: &str) -> Result<Bind> {
    let parts: Vec<&str> = g.splitn(3, ':').collect();
    let source = parts[0].to_string();
    if source.is_empty() {
        bail!("empty bind source for bind path \"{g}\"");
    }
    let destination = parts
        .get(1)
        .map(|s| s.to_string())
        .unwrap_or_else(|| source.clone());
    let mut readonly = false;
    if let Some(opts) = parts.get(2) {
        for o in opts.split(',') {
            match o {
                "ro" => readonly = true,
                "rw" => readonly = false,
                o if o.starts_with("image-src=") => bail!(
                    "image binds (image-src=) need FUSE-mounted image files, which singularity-oci does not support: {g}"
                ),
                o if o.starts_with("id=") => {
                    bail!("image bind id values are not supported, but one was supplied ({g})")
                }
                o => bail!("{o} is not a valid bind option"),
            }
        }
    }
    Ok(Bind {
        source,
        destination,
        readonly,
    })
}

/// Parse one `--mount` value: Docker's CSV syntax; several mounts may be given on separate lines.
pub fn parse_mount(spec: &str) -> Result<Vec<Bind>> {
    spec.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(one_mount)
        .collect()
}

fn one_mount(line: &str) -> Result<Bind> {
    let mut source = None;
    let mut dest = None;
    let mut readonly = false;
    for field in line.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (k, v) = match field.split_once('=') {
            Some((k, v)) => (
                k.trim().to_ascii_lowercase(),
                Some(v.trim().trim_matches('"')),
            ),
            None => (field.to_ascii_lowercase(), None),
        };
        match (k.as_str(), v) {
            ("type", Some("bind")) => {}
            ("type", Some(t)) => bail!("--mount {line}: unsupported mount type '{t}' (only bind)"),
            ("source" | "src", Some(v)) => source = Some(v.to_string()),
            ("destination" | "dst" | "target", Some(v)) => dest = Some(v.to_string()),
            ("ro" | "readonly", None) => readonly = true,
            ("ro" | "readonly", Some(v)) => {
                readonly = match v {
                    "true" | "1" => true,
                    "false" | "0" => false,
                    _ => bail!("--mount {line}: invalid {k} value '{v}'"),
                }
            }
            ("image-src", _) => bail!(
                "image binds (image-src) need FUSE-mounted image files, which singularity-oci does not support: {line}"
            ),
            ("id", _) => {
                bail!("image bind id values are not supported, but one was supplied ({line})")
            }
            ("bind-propagation", _) => bail!("--mount {line}: bind-propagation is not supported"),
            _ => bail!("--mount {line}: unknown field '{field}'"),
        }
    }
    let Some(source) = source else {
        bail!("--mount {line}: a source is required");
    };
    let Some(destination) = dest else {
        bail!("--mount {line}: a destination is required");
    };
    Ok(Bind {
        source,
        destination,
        readonly,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &str, d: &str, ro: bool) -> Bind {
        Bind {
            source: s.into(),
            destination: d.into(),
            readonly: ro,
        }
    }

    #[test]
    fn bind_forms() {
        assert_eq!(parse_bind("/a").unwrap(), vec![b("/a", "/a", false)]);
        assert_eq!(parse_bind("/a:/b").unwrap(), vec![b("/a", "/b", false)]);
        assert_eq!(parse_bind("/a:/b:ro").unwrap(), vec![b("/a", "/b", true)]);
        assert_eq!(
            parse_bind("/a:/b:ro,/c,/d:/e:rw").unwrap(),
            vec![
                b("/a", "/b", true),
                b("/c", "/c", false),
                b("/d", "/e", false)
            ]
        );
        assert_eq!(
            parse_bind("/a:/b:rw,ro").unwrap(),
            vec![b("/a", "/b", true)]
        );
        // A word "ro" after a bind without options is a path, as in Singularity.
        assert_eq!(
            parse_bind("/a,ro").unwrap(),
            vec![b("/a", "/a", false), b("ro", "ro", false)]
        );
        assert!(parse_bind("/a:/b:bogus").is_err());
        assert!(
            parse_bind("/a:/b:id=2")
                .unwrap_err()
                .to_string()
                .contains("id values")
        );
        assert!(parse_bind(":/b").is_err());
    }

    #[test]
    fn mount_forms() {
        assert_eq!(
            parse_mount("type=bind,source=/a,destination=/b").unwrap(),
            vec![b("/a", "/b", false)]
        );
        assert_eq!(
            parse_mount("src=/a,dst=/b,ro").unwrap(),
            vec![b("/a", "/b", true)]
        );
        assert_eq!(
            parse_mount("src=/a,target=/b,readonly=true\nsrc=/c,dst=/d").unwrap(),
            vec![b("/a", "/b", true), b("/c", "/d", false)]
        );
        assert!(parse_mount("type=volume,src=/a,dst=/b").is_err());
        assert!(parse_mount("src=/a,dst=/b,bind-propagation=shared").is_err());
        assert!(parse_mount("src=/a,dst=/b,foo=bar").is_err());
        assert!(parse_mount("src=/a").is_err());
    }
}
