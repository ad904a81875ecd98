//! Entry names from a layer, normalised to a relative `a/b/c` form before anything touches the
//! disk.
//!
//! Absolute names are neutralised (the leading `/` is dropped, as GNU tar and umoci do), `.` and
//! empty components vanish, and `..` anywhere is refused: a layer has no business naming it, and
//! refusing is simpler to reason about than clamping. Names and depths are bounded so a hostile
//! layer cannot make us build paths the kernel will refuse half-way through a tree.

use std::fmt;

/// Longest normalised path we accept (the kernel's PATH_MAX).
pub const MAX_PATH: usize = 4096;
/// Longest single component (NAME_MAX on every filesystem we unpack onto).
pub const MAX_NAME: usize = 255;
/// Deepest path we accept. Real images stay far below this; the bound keeps recursive removal
/// and the parent walk cheap and predictable.
pub const MAX_DEPTH: usize = 256;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathError {
    DotDot,
    TooLong(usize),
    NameTooLong(usize),
    TooDeep(usize),
    Nul,
}

impl fmt::Display for PathError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PathError::DotDot => write!(f, "it contains a '..' component"),
            PathError::TooLong(n) => write!(f, "it is {n} bytes long (limit {MAX_PATH})"),
            PathError::NameTooLong(n) => {
                write!(f, "a component is {n} bytes long (limit {MAX_NAME})")
            }
            PathError::TooDeep(n) => write!(f, "it is {n} levels deep (limit {MAX_DEPTH})"),
            PathError::Nul => write!(f, "it contains a NUL byte"),
        }
    }
}

impl std::error::Error for PathError {}

/// Normalise a raw entry name into `a/b/c` (the empty string names the root itself).
pub fn normalise(raw: &[u8]) -> Result<Vec<u8>, PathError> {
    if raw.contains(&0) {
        return Err(PathError::Nul);
    }
    let mut out = Vec::with_capacity(raw.len());
    let mut depth = 0;
    for comp in raw.split(|&b| b == b'/') {
        match comp {
            b"" | b"." => continue,
            b".." => return Err(PathError::DotDot),
            _ => {}
        }
        if comp.len() > MAX_NAME {
            return Err(PathError::NameTooLong(comp.len()));
        }
        depth += 1;
        if depth > MAX_DEPTH {
            return Err(PathError::TooDeep(depth));
        }
        if !out.is_empty() {
            out.push(b'/');
        }
        out.extend_from_slice(comp);
    }
    if out.len() > MAX_PATH {
        return Err(PathError::TooLong(out.len()));
    }
    Ok(out)
}

/// Split a normalised path into (parent, last component). The root has an empty name.
pub fn split(path: &[u8]) -> (&[u8], &[u8]) {
    match path.iter().rposition(|&b| b == b'/') {
        Some(i) => (&path[..i], &path[i + 1..]),
        None => (&[], path),
    }
}

/// `parent/name` for normalised parts.
pub fn join(parent: &[u8], name: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(parent.len() + 1 + name.len());
    v.extend_from_slice(parent);
    if !parent.is_empty() {
        v.push(b'/');
    }
    v.extend_from_slice(name);
    v
}

/// Printable form of a path for messages.
pub fn show(path: &[u8]) -> String {
    if path.is_empty() {
        "/".to_string()
    } else {
        format!("/{}", String::from_utf8_lossy(path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_leading_slash_and_dots() {
        assert_eq!(normalise(b"/etc/passwd").unwrap(), b"etc/passwd");
        assert_eq!(normalise(b"./usr//bin/./x/").unwrap(), b"usr/bin/x");
        assert_eq!(normalise(b"./").unwrap(), b"");
        assert_eq!(normalise(b"/").unwrap(), b"");
    }

    #[test]
    fn refuses_dotdot_anywhere() {
        for p in [&b"../x"[..], b"a/../b", b"a/..", b"/../../etc", b".."] {
            assert_eq!(normalise(p), Err(PathError::DotDot), "{p:?}");
        }
        // "..." and "..x" are ordinary names.
        assert_eq!(normalise(b"a/.../..x").unwrap(), b"a/.../..x");
    }

    #[test]
    fn bounds_names_and_depth() {
        let long = vec![b'a'; MAX_NAME + 1];
        assert!(matches!(normalise(&long), Err(PathError::NameTooLong(_))));
        let deep = b"a/".repeat(MAX_DEPTH + 1);
        assert!(matches!(normalise(&deep), Err(PathError::TooDeep(_))));
        let ok = b"a/".repeat(MAX_DEPTH);
        assert!(normalise(&ok).is_ok());
        let wide: Vec<u8> = (0..20)
            .flat_map(|_| {
                let mut c = vec![b'b'; 250];
                c.push(b'/');
                c
            })
            .collect();
        assert!(matches!(normalise(&wide), Err(PathError::TooLong(_))));
        assert_eq!(normalise(b"a\0b"), Err(PathError::Nul));
    }

    #[test]
    fn split_and_join() {
        assert_eq!(split(b"a/b/c"), (&b"a/b"[..], &b"c"[..]));
        assert_eq!(split(b"c"), (&b""[..], &b"c"[..]));
        assert_eq!(join(b"", b"x"), b"x");
        assert_eq!(join(b"a/b", b"x"), b"a/b/x");
        assert_eq!(show(b""), "/");
    }
}
