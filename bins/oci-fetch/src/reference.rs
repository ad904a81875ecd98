//! Image references: `oci:`, `oci-archive:`, `docker-archive:` and `docker://`.
//!
//! The grammar follows containers/image (what skopeo and Singularity accept), with two
//! deliberate choices: a path may contain ':' when the whole remainder names an existing path,
//! and a `docker://` short name expands the way Docker does (`alpine` ->
//! `docker.io/library/alpine:latest`).

use anyhow::{Result, bail};
use common::digest::Digest;
use std::path::{Path, PathBuf};

/// Docker Hub as users spell it, and the host its API really lives on.
pub const DOCKER_HUB: &str = "docker.io";
pub const DOCKER_HUB_API: &str = "registry-1.docker.io";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageRef {
    /// An OCI image layout directory.
    Oci { dir: PathBuf, sel: Selector },
    /// A tar of an OCI image layout.
    OciArchive { file: PathBuf, sel: Selector },
    /// A `docker save` archive; `repo_tag` picks one image when the archive holds several.
    DockerArchive {
        file: PathBuf,
        repo_tag: Option<String>,
    },
    /// An image in a registry.
    Docker(DockerRef),
}

/// How an image is picked inside a layout: by tag (ref.name annotation), by digest, or the only one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    Only,
    Tag(String),
    Digest(Digest),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DockerRef {
    /// Registry as named (`docker.io`, `127.0.0.1:5000`).
    pub registry: String,
    /// Repository path (`library/alpine`).
    pub repository: String,
    pub tag: Option<String>,
    pub digest: Option<Digest>,
}

impl DockerRef {
    /// Host (and port) the API is served on.
    pub fn api_host(&self) -> &str {
        if self.registry == DOCKER_HUB {
            DOCKER_HUB_API
        } else {
            &self.registry
        }
    }

    /// The manifest reference to ask the registry for: the digest when given, else the tag.
    pub fn manifest_ref(&self) -> String {
        match (&self.digest, &self.tag) {
            (Some(d), _) => d.to_string(),
            (None, Some(t)) => t.clone(),
            (None, None) => "latest".into(),
        }
    }

    /// Canonical spelling, used as the key of the reference index.
    pub fn canonical(&self) -> String {
        let mut s = format!("{}/{}", self.registry, self.repository);
        if let Some(t) = &self.tag {
            s.push(':');
            s.push_str(t);
        }
        if let Some(d) = &self.digest {
            s.push('@');
            s.push_str(&d.to_string());
        }
        s
    }
}

impl ImageRef {
    pub fn transport(&self) -> &'static str {
        match self {
            ImageRef::Oci { .. } => "oci",
            ImageRef::OciArchive { .. } => "oci-archive",
            ImageRef::DockerArchive { .. } => "docker-archive",
            ImageRef::Docker(_) => "docker",
        }
    }
}

/// Parse a user's image reference. A bare name without a transport is refused: guessing between
/// a local directory and a registry name is what makes errors confusing.
pub fn parse(s: &str) -> Result<ImageRef> {
    if s.is_empty() {
        bail!("empty image reference");
    }
    if let Some(rest) = s.strip_prefix("docker://") {
        return Ok(ImageRef::Docker(parse_docker(rest)?));
    }
    if let Some(file) = bare_archive(s) {
        return Ok(ImageRef::OciArchive {
            file,
            sel: Selector::Only,
        });
    }
    let Some((transport, rest)) = s.split_once(':') else {
        bail!(without_transport(s));
    };
    match transport {
        "oci" | "oci-archive" => {
            let (path, sel) = split_layout_ref(rest)?;
            Ok(if transport == "oci" {
                ImageRef::Oci { dir: path, sel }
            } else {
                ImageRef::OciArchive { file: path, sel }
            })
        }
        "docker-archive" => {
            if rest.is_empty() {
                bail!("docker-archive: reference '{s}' names no file");
            }
            // FILE[:REPO:TAG]. REPO may contain a port colon (`host:5000/x:tag`), so take the
            // file as the longest prefix that exists, else everything before the first ':'.
            if Path::new(rest).exists() {
                return Ok(ImageRef::DockerArchive {
                    file: rest.into(),
                    repo_tag: None,
                });
            }
            let (file, rt) = rest.split_once(':').unwrap_or((rest, ""));
            if file.is_empty() {
                bail!("docker-archive: reference '{s}' names no file");
            }
            let repo_tag = if rt.is_empty() {
                None
            } else {
                // Validate REPO:TAG with the registry grammar so typos are caught here.
                let r = parse_docker(rt)?;
                if r.digest.is_some() {
                    bail!("docker-archive: select an image by REPO:TAG, not by digest");
                }
                Some(rt.to_string())
            };
            Ok(ImageRef::DockerArchive {
                file: file.into(),
                repo_tag,
            })
        }
        "docker" => bail!("malformed reference '{s}': the docker transport is spelt docker://NAME"),
        "docker-daemon" | "containers-storage" | "library" | "oras" | "shub" | "http" | "https"
        | "dir" | "oci-sif" => {
            bail!(
                "unsupported transport '{transport}:' in '{s}' (oci-fetch reads oci:, oci-archive:, docker-archive:, docker:// and sif:)"
            )
        }
        _ => bail!(
            "unknown transport '{transport}:' in '{s}' (use oci:, oci-archive:, docker-archive: or docker://)"
        ),
    }
}

/// Transports a reference may start with; such a reference never names a local file.
const TRANSPORTS: &[&str] = &[
    "oci:",
    "oci-archive:",
    "docker-archive:",
    "sif:",
    "oci-sif:",
];

/// A bare path naming a regular file that is not a SIF: the OCI archive that `pull --name` and
/// `build` write, whatever its name (cwltool's names contain colons). SIF files never get here
/// (oci-fetch recognises them by their magic first), and a file that starts with SIF's launch
/// line is left to `without_transport`, which says it has no SIF header. Deciding here rather
/// than in the front costs nothing: a shell can only sniff a file by reading it a byte per
/// system call up to its first newline, tens of thousands of calls for a SIF without the launch
/// line, on every container start.
pub fn bare_archive(s: &str) -> Option<PathBuf> {
    if s.contains("://") || TRANSPORTS.iter().any(|t| s.starts_with(t)) {
        return None;
    }
    let p = Path::new(s);
    (p.is_file() && !has_sif_header(p)).then(|| p.to_path_buf())
}

/// The references oci-fetch reads, for messages.
pub const SUPPORTED: &str = "oci:DIR[:TAG], oci-archive:FILE[:TAG], docker-archive:FILE[:REPO:TAG], docker://NAME, a SIF file or a sandbox directory";

/// What to tell a user whose reference has no transport. Singularity users pass image files
/// and directories bare, so a path that names one gets a message about what it is. (A file
/// with the SIF header never gets here: oci-fetch reads it as a SIF.)
pub fn without_transport(s: &str) -> String {
    let p = Path::new(s);
    let is_sif = p.extension().is_some_and(|e| e.eq_ignore_ascii_case("sif")) || has_sif_header(p);
    if p.is_dir() {
        if p.join("oci-layout").is_file() {
            return format!("'{s}' is an OCI image layout: use oci:{s}");
        }
        return format!(
            "'{s}' is a directory but not a sandbox image (it has no /.singularity.d); use {SUPPORTED}"
        );
    }
    if is_sif || p.is_file() {
        return match (is_sif, p.exists()) {
            (true, true) => format!("'{s}' is not a SIF image: it has no SIF header"),
            (true, false) => format!("'{s}' names a SIF image, but there is no such file"),
            _ => format!(
                "'{s}' is a file but not a SIF image; use {SUPPORTED} (a tar made by docker save is docker-archive:{s}, one of an OCI layout oci-archive:{s})"
            ),
        };
    }
    format!("image reference '{s}' has no transport (use {SUPPORTED})")
}

/// Whether `p` is a file that starts with the launch line every SIF image begins with.
fn has_sif_header(p: &Path) -> bool {
    use std::io::Read;
    const LAUNCH: &[u8] = b"#!/usr/bin/env run-singularity";
    let mut head = [0u8; LAUNCH.len()];
    std::fs::File::open(p)
        .and_then(|mut f| f.read_exact(&mut head))
        .is_ok_and(|_| head == LAUNCH)
}

/// `PATH[:TAG|@DIGEST]` for layouts and OCI archives.
fn split_layout_ref(rest: &str) -> Result<(PathBuf, Selector)> {
    if rest.is_empty() {
        bail!("reference names no path");
    }
    // A path that exists as given wins, so directories with ':' in their names work.
    if Path::new(rest).exists() {
        return Ok((rest.into(), Selector::Only));
    }
    if let Some(at) = rest.rfind('@') {
        let (path, dig) = (&rest[..at], &rest[at + 1..]);
        if dig.contains(':') && !dig.contains('/') {
            if path.is_empty() {
                bail!("reference '{rest}' names no path");
            }
            return Ok((path.into(), Selector::Digest(Digest::parse(dig)?)));
        }
    }
    if let Some(colon) = rest.rfind(':') {
        let (path, tag) = (&rest[..colon], &rest[colon + 1..]);
        if !tag.contains('/') {
            if path.is_empty() {
                bail!("reference '{rest}' names no path");
            }
            if tag.is_empty() {
                bail!("empty tag in reference '{rest}'");
            }
            check_layout_tag(tag)?;
            return Ok((path.into(), Selector::Tag(tag.into())));
        }
    }
    Ok((rest.into(), Selector::Only))
}

/// OCI `org.opencontainers.image.ref.name` values are looser than Docker tags (they may contain
/// '/', but never at this position since we split on the last ':'). Refuse control characters
/// and whitespace, which are always typos.
fn check_layout_tag(tag: &str) -> Result<()> {
    if tag
        .chars()
        .any(|c| c.is_control() || c.is_whitespace() || c == '@')
    {
        bail!("malformed tag '{tag}'");
    }
    Ok(())
}

fn valid_tag(t: &str) -> bool {
    let b = t.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
}

/// One path component of a repository: `[a-z0-9]+(?:(?:[._]|__|[-]*)[a-z0-9]+)*`.
fn valid_component(c: &str) -> bool {
    let b = c.as_bytes();
    if b.is_empty() || !is_alnum_lower(b[0]) || !is_alnum_lower(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if is_alnum_lower(b[i]) {
            i += 1;
            continue;
        }
        // A separator run: '.', '_', '__', or any number of '-'.
        let start = i;
        while i < b.len() && !is_alnum_lower(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-');
        if !ok {
            return false;
        }
    }
    true
}

fn is_alnum_lower(c: u8) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit()
}

fn valid_host(h: &str) -> bool {
    let (host, port) = match h.rsplit_once(':') {
        Some((host, port)) if !host.ends_with(']') || h.starts_with('[') => (host, Some(port)),
        _ => (h, None),
    };
    if let Some(p) = port
        && (p.is_empty() || p.len() > 5 || !p.bytes().all(|c| c.is_ascii_digit()))
    {
        return false;
    }
    if host.starts_with('[') && host.ends_with(']') {
        return host[1..host.len() - 1]
            .parse::<std::net::Ipv6Addr>()
            .is_ok();
    }
    !host.is_empty()
        && host.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|c| c.is_ascii_alphanumeric() || c == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// `[HOST[:PORT]/]REPO[:TAG][@DIGEST]` with Docker's short-name rules.
pub fn parse_docker(s: &str) -> Result<DockerRef> {
    let bad = |why: &str| anyhow::anyhow!("malformed registry reference '{s}': {why}");
    if s.is_empty() {
        return Err(bad("empty"));
    }
    let (name_tag, digest) = match s.split_once('@') {
        Some((n, d)) => (n, Some(Digest::parse(d).map_err(|e| bad(&e.to_string()))?)),
        None => (s, None),
    };
    // The tag is after the last ':' that follows the last '/' (a ':' before it is a port).
    let last_slash = name_tag.rfind('/').map(|i| i + 1).unwrap_or(0);
    let (name, tag) = match name_tag[last_slash..].rfind(':') {
        Some(i) => {
            let i = last_slash + i;
            (&name_tag[..i], Some(&name_tag[i + 1..]))
        }
        None => (name_tag, None),
    };
    if let Some(t) = tag
        && !valid_tag(t)
    {
        return Err(bad(&format!("invalid tag '{t}'")));
    }
    let (registry, repo) = match name.split_once('/') {
        Some((first, rest))
            if first.contains('.') || first.contains(':') || first == "localhost" =>
        {
            if !valid_host(first) {
                return Err(bad(&format!("invalid registry host '{first}'")));
            }
            (first.to_string(), rest.to_string())
        }
        _ => (DOCKER_HUB.to_string(), name.to_string()),
    };
    let registry = if registry == "index.docker.io" || registry == DOCKER_HUB_API {
        DOCKER_HUB.to_string()
    } else {
        registry
    };
    if repo.is_empty() {
        return Err(bad("no repository name"));
    }
    if repo.chars().any(|c| c.is_ascii_uppercase()) {
        return Err(bad("repository names must be lowercase"));
    }
    if let Some(c) = repo.split('/').find(|c| !valid_component(c)) {
        return Err(bad(&format!("invalid repository component '{c}'")));
    }
    let repository = if registry == DOCKER_HUB && !repo.contains('/') {
        format!("library/{repo}")
    } else {
        repo
    };
    // Checked on the full path: a 250-character short name becomes `library/NAME`, and a name
    // accepted here must still parse in its canonical form (fuzz finding).
    if repository.len() > 255 {
        return Err(bad("repository name longer than 255 characters"));
    }
    let tag = match (tag, &digest) {
        (Some(t), _) => Some(t.to_string()),
        (None, None) => Some("latest".to_string()),
        (None, Some(_)) => None,
    };
    Ok(DockerRef {
        registry,
        repository,
        tag,
        digest,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_short_name_is_refused_like_its_canonical_form() {
        let name = "a".repeat(250);
        assert!(parse_docker(&name).is_err());
        assert!(parse_docker(&format!("docker.io/library/{name}")).is_err());
        let ok = "a".repeat(247);
        let r = parse_docker(&ok).unwrap();
        assert!(parse_docker(&r.canonical()).is_ok());
    }

    const D: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    fn docker(s: &str) -> DockerRef {
        parse_docker(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn short_names_expand_like_docker() {
        let r = docker("alpine");
        assert_eq!(r.canonical(), "docker.io/library/alpine:latest");
        assert_eq!(r.api_host(), "registry-1.docker.io");
        assert_eq!(docker("user/app:1.0").canonical(), "docker.io/user/app:1.0");
        assert_eq!(
            docker("index.docker.io/alpine:3").canonical(),
            "docker.io/library/alpine:3"
        );
    }

    #[test]
    fn hosts_ports_tags_digests() {
        let r = docker("127.0.0.1:5000/test/busybox:v1");
        assert_eq!(r.registry, "127.0.0.1:5000");
        assert_eq!(r.repository, "test/busybox");
        assert_eq!(r.tag.as_deref(), Some("v1"));
        let r = docker("localhost:5000/x");
        assert_eq!(r.tag.as_deref(), Some("latest"));
        let r = docker(&format!("quay.io/a/b@{D}"));
        assert_eq!(r.tag, None);
        assert_eq!(r.manifest_ref(), D);
        let r = docker(&format!("quay.io/a/b:t@{D}"));
        assert_eq!(r.tag.as_deref(), Some("t"));
        assert_eq!(r.manifest_ref(), D, "digest wins over tag");
        // `localhost` without a port is a registry; a bare word is a Docker Hub user.
        assert_eq!(docker("localhost/x").registry, "localhost");
        assert_eq!(docker("someuser/x").registry, "docker.io");
    }

    #[test]
    fn malformed_registry_refs_are_refused() {
        for s in [
            "",
            "UPPER/case",
            "alpine:",
            "alpine:bad tag",
            "a//b",
            "-a/b",
            "alpine@sha256:1234",
            "alpine@md5:00",
            "host:99999999/x",
            "a/b:c/d",
            "x:.bad",
        ] {
            assert!(parse_docker(s).is_err(), "{s:?} should be refused");
        }
    }

    #[test]
    fn transports() {
        assert!(matches!(
            parse("docker://alpine").unwrap(),
            ImageRef::Docker(_)
        ));
        let e = parse("foo:bar").unwrap_err().to_string();
        assert!(e.contains("unknown transport 'foo:'"), "{e}");
        let e = parse("library://x").unwrap_err().to_string();
        assert!(e.contains("unsupported transport"), "{e}");
        let e = parse("just-a-name").unwrap_err().to_string();
        assert!(e.contains("has no transport"), "{e}");
        assert!(parse("docker:alpine").is_err());
        assert!(parse("oci:").is_err());
    }

    #[test]
    fn bare_files_and_directories_say_what_is_supported() {
        let d = tempfile::tempdir().unwrap();
        // A file without SIF's header is an OCI archive, whatever its name (colons included).
        let file = d.path().join("img:v1.sif");
        std::fs::write(&file, b"x").unwrap();
        assert_eq!(
            parse(file.to_str().unwrap()).unwrap(),
            ImageRef::OciArchive {
                file: file.clone(),
                sel: Selector::Only
            }
        );
        let e = parse(d.path().to_str().unwrap()).unwrap_err().to_string();
        assert!(e.contains("not a sandbox image"), "{e}");
        std::fs::write(d.path().join("oci-layout"), b"{}").unwrap();
        let e = parse(d.path().to_str().unwrap()).unwrap_err().to_string();
        assert!(e.contains("is an OCI image layout: use oci:"), "{e}");
        // SIF's launch line without the rest of the header, whatever the name.
        let named = d.path().join("image");
        std::fs::write(&named, b"#!/usr/bin/env run-singularity\n").unwrap();
        let e = parse(named.to_str().unwrap()).unwrap_err().to_string();
        assert!(
            e.contains("is not a SIF image: it has no SIF header"),
            "{e}"
        );
        // A missing .sif is still named as one.
        let e = parse("missing.sif").unwrap_err().to_string();
        assert!(
            e.contains("names a SIF image, but there is no such file"),
            "{e}"
        );
    }

    #[test]
    fn layout_refs() {
        assert_eq!(
            parse("oci:/no/such/dir:latest").unwrap(),
            ImageRef::Oci {
                dir: "/no/such/dir".into(),
                sel: Selector::Tag("latest".into())
            }
        );
        assert_eq!(
            parse("oci:/no/such/dir").unwrap(),
            ImageRef::Oci {
                dir: "/no/such/dir".into(),
                sel: Selector::Only
            }
        );
        assert_eq!(
            parse(&format!("oci:rel/dir@{D}")).unwrap(),
            ImageRef::Oci {
                dir: "rel/dir".into(),
                sel: Selector::Digest(Digest::parse(D).unwrap())
            }
        );
        assert!(parse("oci:/x:").is_err(), "empty tag");
        assert!(parse("oci:/x@sha256:12").is_err(), "bad digest");
        assert_eq!(
            parse("oci-archive:/a/b.tar:v2").unwrap(),
            ImageRef::OciArchive {
                file: "/a/b.tar".into(),
                sel: Selector::Tag("v2".into())
            }
        );
    }

    #[test]
    fn existing_paths_with_colons_win() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("odd:name");
        std::fs::create_dir(&p).unwrap();
        let s = format!("oci:{}", p.display());
        assert_eq!(
            parse(&s).unwrap(),
            ImageRef::Oci {
                dir: p.clone(),
                sel: Selector::Only
            }
        );
    }

    #[test]
    fn docker_archive_refs() {
        assert_eq!(
            parse("docker-archive:/x.tar:myrepo/app:1").unwrap(),
            ImageRef::DockerArchive {
                file: "/x.tar".into(),
                repo_tag: Some("myrepo/app:1".into())
            }
        );
        assert_eq!(
            parse("docker-archive:/x.tar").unwrap(),
            ImageRef::DockerArchive {
                file: "/x.tar".into(),
                repo_tag: None
            }
        );
        assert!(parse("docker-archive:/x.tar:Bad").is_err());
    }
}
