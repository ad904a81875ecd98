//! A directory tree as data, walked without following symbolic links, so that what two
//! extractors made of one image (ours and umoci, ours and unsquashfs) can be compared entry by
//! entry, each comparison choosing the attributes that matter to it.

use std::collections::BTreeMap;
use std::hash::{DefaultHasher, Hasher};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

/// One path of a tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// `d`, `f`, `l`, `p` (FIFO), `c`, `b`, `s` (socket).
    pub kind: char,
    /// Permission bits, setuid/setgid/sticky included.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// Bytes (0 for directories, whose size is the filesystem's business).
    pub size: u64,
    /// A hash of a regular file's content.
    pub content: Option<u64>,
    /// A symbolic link's target.
    pub target: Option<String>,
    pub nlink: u64,
    /// Modification time in nanoseconds since the epoch.
    pub mtime_ns: i128,
    /// For a regular file with several links: the smallest path of its hard-link group.
    pub link_group: Option<String>,
    pub xattrs: BTreeMap<String, Vec<u8>>,
    /// A device node's device number (0 for anything else).
    pub rdev: u64,
}

/// Path (`/` for the root, `/bin/sh` below it) to entry.
pub type Tree = BTreeMap<String, Entry>;

/// Walk `root`; panics on an unreadable entry.
pub fn snapshot(root: &Path) -> Tree {
    let mut out = BTreeMap::new();
    let mut groups: BTreeMap<(u64, u64), String> = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    let mut multi = vec![];
    while let Some(p) = stack.pop() {
        let m = std::fs::symlink_metadata(&p).unwrap();
        let rel = format!("/{}", p.strip_prefix(root).unwrap().display());
        let ft = m.file_type();
        let kind = match () {
            _ if ft.is_dir() => 'd',
            _ if ft.is_symlink() => 'l',
            _ if ft.is_file() => 'f',
            _ if ft.is_fifo() => 'p',
            _ if ft.is_char_device() => 'c',
            _ if ft.is_block_device() => 'b',
            _ => 's',
        };
        if kind == 'd' {
            stack.extend(std::fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
        }
        let content = (kind == 'f').then(|| {
            let mut h = DefaultHasher::new();
            h.write(&std::fs::read(&p).unwrap());
            h.finish()
        });
        if kind == 'f' && m.nlink() > 1 {
            let g = groups.entry((m.dev(), m.ino())).or_insert(rel.clone());
            if rel < *g {
                *g = rel.clone();
            }
            multi.push((rel.clone(), (m.dev(), m.ino())));
        }
        out.insert(
            rel,
            Entry {
                kind,
                mode: m.mode() & 0o7777,
                uid: m.uid(),
                gid: m.gid(),
                size: if kind == 'd' { 0 } else { m.size() },
                content,
                target: (kind == 'l')
                    .then(|| std::fs::read_link(&p).unwrap().display().to_string()),
                nlink: m.nlink(),
                mtime_ns: m.mtime() as i128 * 1_000_000_000 + m.mtime_nsec() as i128,
                link_group: None,
                xattrs: xattrs(&p),
                rdev: m.rdev(),
            },
        );
    }
    for (rel, key) in multi {
        out.get_mut(&rel).unwrap().link_group = groups.get(&key).cloned();
    }
    out
}

/// What differs between two trees, one line per path, as seen through `view`: it returns the
/// part of an entry that must match (clear the rest), or `None` to leave the path out of the
/// comparison. `names` label the two sides in the lines.
pub fn differences(
    ours: &Tree,
    theirs: &Tree,
    names: (&str, &str),
    view: impl Fn(&str, &Entry) -> Option<Entry>,
) -> Vec<String> {
    let seen = |t: &Tree| -> BTreeMap<String, Entry> {
        t.iter()
            .filter_map(|(p, e)| view(p, e).map(|v| (p.clone(), v)))
            .collect()
    };
    let (ours, theirs) = (seen(ours), seen(theirs));
    let mut d = vec![];
    for (k, a) in &ours {
        match theirs.get(k) {
            None => d.push(format!("only in {}: {k}", names.0)),
            Some(b) if a != b => d.push(format!(
                "{k}:\n    {:<10} {a:?}\n    {:<10} {b:?}",
                names.0, names.1
            )),
            _ => {}
        }
    }
    d.extend(
        theirs
            .keys()
            .filter(|k| !ours.contains_key(*k))
            .map(|k| format!("only in {}: {k}", names.1)),
    );
    d
}

fn xattrs(p: &Path) -> BTreeMap<String, Vec<u8>> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(p.as_os_str().as_bytes()).unwrap();
    let mut names = vec![0u8; 65536];
    // SAFETY: buffers are valid for the sizes given; c is NUL-terminated.
    let n = unsafe { libc::llistxattr(c.as_ptr(), names.as_mut_ptr().cast(), names.len()) };
    let mut out = BTreeMap::new();
    if n <= 0 {
        return out;
    }
    for name in names[..n as usize]
        .split(|&b| b == 0)
        .filter(|s| !s.is_empty())
    {
        let cn = std::ffi::CString::new(name).unwrap();
        let mut v = vec![0u8; 65536];
        // SAFETY: as above.
        let m = unsafe { libc::lgetxattr(c.as_ptr(), cn.as_ptr(), v.as_mut_ptr().cast(), v.len()) };
        if m >= 0 {
            out.insert(
                String::from_utf8_lossy(name).into_owned(),
                v[..m as usize].to_vec(),
            );
        }
    }
    out
}
