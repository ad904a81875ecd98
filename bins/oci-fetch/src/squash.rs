//! The layers of an image squashed into one tar stream: the tree the layers leave, applied in
//! order (AUFS whiteouts and opaque directories take away what the layers below hold), with
//! no whiteout left. SingularityCE 4 writes an OCI-SIF this way unless `--keep-layers` is
//! given, and so does `--save-oci-sif` here: one squashfs holds every file, so a hard link
//! keeps being a link whichever layer its target came from.
//!
//! Two reads of each layer. The first builds the final tree from the headers alone: every
//! directory (its metadata from the topmost layer that lists it) and, for every other path,
//! the entry whose content it has (a hard link shares its target's). The second writes the
//! directories first (parents before children), then walks the layers bottom first and
//! writes each entry that still has a path in the tree, under that path, followed by hard
//! links for the other paths that share it. A hard link whose target a later layer replaced
//! or removed keeps the old content, as it did in the layered tree.

use crate::sifwrite::{WHITEOUT, entry_mtime, normalize, split};
use anyhow::{Context, Result, bail};
use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};

const OPAQUE: &[u8] = b".wh..wh..opq";
/// AUFS's own bookkeeping names (`.wh..wh.plnk` and the like): no file of the image.
const AUFS_META: &[u8] = b".wh..wh.";

/// An entry of one layer: (layer, position among the layer's entries).
type EntryId = (usize, usize);
type Pax = Vec<(Vec<u8>, Vec<u8>)>;

enum Node {
    Dir(Box<tar::Header>, Pax),
    /// A path with content (file, link, device, fifo): the entry that holds it.
    Leaf(EntryId),
}

/// What the first read learns: the final tree and the newest modification time.
pub struct Plan {
    tree: BTreeMap<Vec<u8>, Node>,
    pub newest: u64,
}

/// One layer's entry as the first read keeps it.
struct Seen {
    path: Vec<u8>,
    kind: tar::EntryType,
    link: Option<Vec<u8>>,
    header: Option<(Box<tar::Header>, Pax)>,
}

/// The extended header records of an entry that travel with it (its names do not: the
/// writer sets them).
fn pax_of<R: Read>(e: &mut tar::Entry<R>) -> Result<Pax> {
    let mut pax = Vec::new();
    if let Some(exts) = e.pax_extensions()? {
        for x in exts {
            let x = x?;
            if !matches!(x.key_bytes(), b"path" | b"linkpath") {
                pax.push((x.key_bytes().to_vec(), x.value_bytes().to_vec()));
            }
        }
    }
    Ok(pax)
}

/// Remove `path` and everything below it.
fn remove_tree(tree: &mut BTreeMap<Vec<u8>, Node>, path: &[u8]) {
    tree.remove(path);
    remove_children(tree, path);
}

fn remove_children(tree: &mut BTreeMap<Vec<u8>, Node>, dir: &[u8]) {
    let mut from = dir.to_vec();
    if !from.is_empty() {
        from.push(b'/');
    }
    let below: Vec<Vec<u8>> = tree
        .range(from.clone()..)
        .take_while(|(k, _)| k.starts_with(&from))
        .map(|(k, _)| k.clone())
        .collect();
    for k in below {
        tree.remove(&k);
    }
}

impl Plan {
    /// The first read: `layers` yields each layer's tar, bottom first.
    pub fn read(layers: &mut dyn Iterator<Item = Result<Box<dyn Read>>>) -> Result<Plan> {
        let mut tree = BTreeMap::new();
        let mut newest = 0;
        for (layer, tar) in layers.enumerate() {
            let mut seen = Vec::new();
            let mut ar = tar::Archive::new(tar?);
            for e in ar.entries().context("cannot read the layer's tar")? {
                let mut e = e.context("cannot read the layer's tar")?;
                newest = newest.max(entry_mtime(&mut e)?);
                let kind = e.header().entry_type();
                if kind == tar::EntryType::XGlobalHeader {
                    seen.push(Seen {
                        path: Vec::new(),
                        kind,
                        link: None,
                        header: None,
                    });
                    continue;
                }
                if kind == tar::EntryType::GNUSparse {
                    bail!(
                        "/{} is a GNU sparse file, which this converter does not rewrite",
                        String::from_utf8_lossy(&normalize(&e.path_bytes()))
                    );
                }
                let header = if kind.is_dir() {
                    Some((Box::new(e.header().clone()), pax_of(&mut e)?))
                } else {
                    None
                };
                seen.push(Seen {
                    path: normalize(&e.path_bytes()),
                    kind,
                    link: e.link_name_bytes().map(|l| normalize(&l)),
                    header,
                });
            }
            // A layer's whiteouts take away what the layers below hold, never what the layer
            // itself adds, wherever they stand in its tar.
            for s in &seen {
                let (parent, base) = split(&s.path);
                if base == OPAQUE {
                    remove_children(&mut tree, parent);
                } else if let Some(name) = base
                    .strip_prefix(WHITEOUT)
                    .filter(|_| !base.starts_with(AUFS_META))
                {
                    let mut p = parent.to_vec();
                    if !p.is_empty() {
                        p.push(b'/');
                    }
                    p.extend_from_slice(name);
                    remove_tree(&mut tree, &p);
                }
            }
            for (i, s) in seen.into_iter().enumerate() {
                let (_, base) = split(&s.path);
                if s.path.is_empty() || base.starts_with(WHITEOUT) {
                    continue;
                }
                // A file where a directory's name now runs through goes (the directory
                // replaces it, as applying the layer would).
                let mut at = 0;
                while let Some(off) = s.path[at..].iter().position(|&c| c == b'/') {
                    let ancestor = &s.path[..at + off];
                    if matches!(tree.get(ancestor), Some(Node::Leaf(_))) {
                        tree.remove(ancestor);
                    }
                    at += off + 1;
                }
                let node = if let Some((h, pax)) = s.header {
                    if !matches!(tree.get(&s.path), Some(Node::Dir(..))) {
                        tree.remove(&s.path);
                    }
                    Node::Dir(h, pax)
                } else if s.kind.is_hard_link() {
                    let target = s.link.unwrap_or_default();
                    match tree.get(&target) {
                        Some(Node::Leaf(id)) => {
                            let id = *id;
                            remove_tree(&mut tree, &s.path);
                            Node::Leaf(id)
                        }
                        _ => bail!(
                            "/{} is a hard link to /{}, which is no file of the layers so far",
                            String::from_utf8_lossy(&s.path),
                            String::from_utf8_lossy(&target)
                        ),
                    }
                } else {
                    remove_tree(&mut tree, &s.path);
                    Node::Leaf((layer, i))
                };
                tree.insert(s.path, node);
            }
        }
        Ok(Plan { tree, newest })
    }

    /// For every entry that keeps content, the paths that have it, in path order.
    fn paths_by_entry(&self) -> HashMap<EntryId, Vec<Vec<u8>>> {
        let mut by: HashMap<EntryId, Vec<Vec<u8>>> = HashMap::new();
        for (path, n) in &self.tree {
            if let Node::Leaf(id) = n {
                by.entry(*id).or_default().push(path.clone());
            }
        }
        by
    }

    /// The second read: write the squashed tar to `out`. `layers` yields the same tars again.
    pub fn write(
        &self,
        layers: &mut dyn Iterator<Item = Result<Box<dyn Read>>>,
        out: impl Write,
    ) -> Result<()> {
        let mut b = tar::Builder::new(out);
        for (path, n) in &self.tree {
            if let Node::Dir(h, pax) = n {
                crate::sifwrite::write_pax(&mut b, pax)?;
                let mut h = (**h).clone();
                b.append_data(&mut h, crate::sifwrite::as_path(path), std::io::empty())?;
            }
        }
        let mut by_entry = self.paths_by_entry();
        for (layer, tar) in layers.enumerate() {
            let mut ar = tar::Archive::new(tar?);
            for (i, e) in ar.entries()?.enumerate() {
                let mut e = e?;
                let Some(mut paths) = by_entry.remove(&(layer, i)) else {
                    continue;
                };
                // The entry's own path carries the content when it still has it.
                let own = normalize(&e.path_bytes());
                if let Some(k) = paths.iter().position(|p| *p == own) {
                    let p = paths.remove(k);
                    paths.insert(0, p);
                }
                let pax = pax_of(&mut e)?;
                crate::sifwrite::write_pax(&mut b, &pax)?;
                let mut h = e.header().clone();
                let name = crate::sifwrite::as_path(&paths[0]);
                match e.link_name_bytes().map(|l| l.into_owned()) {
                    Some(l) if h.entry_type().is_symlink() => {
                        b.append_link(&mut h, name, crate::sifwrite::as_path(&l))?
                    }
                    _ => b.append_data(&mut h, name, &mut e)?,
                }
                for other in &paths[1..] {
                    let mut lh = e.header().clone();
                    lh.set_entry_type(tar::EntryType::Link);
                    lh.set_size(0);
                    b.append_link(&mut lh, crate::sifwrite::as_path(other), name)?;
                }
            }
        }
        b.into_inner()?.flush()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A layer's tar from (name, kind, content or link target, mode).
    fn layer(entries: &[(&str, char, &str, u32)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for &(name, kind, data, mode) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_mode(mode);
            h.set_mtime(1000);
            h.set_uid(0);
            h.set_gid(0);
            match kind {
                'd' => {
                    h.set_entry_type(tar::EntryType::Directory);
                    h.set_size(0);
                    b.append_data(&mut h, name, std::io::empty()).unwrap();
                }
                'f' => {
                    h.set_entry_type(tar::EntryType::Regular);
                    h.set_size(data.len() as u64);
                    b.append_data(&mut h, name, data.as_bytes()).unwrap();
                }
                'h' | 's' => {
                    h.set_entry_type(if kind == 'h' {
                        tar::EntryType::Link
                    } else {
                        tar::EntryType::Symlink
                    });
                    h.set_size(0);
                    b.append_link(&mut h, name, data).unwrap();
                }
                _ => unreachable!(),
            }
        }
        b.into_inner().unwrap()
    }

    /// Squash `layers` and list the result: (name, kind, content or link target, mode).
    fn squash(layers: &[Vec<u8>]) -> Vec<(String, char, String, u32)> {
        let tars = || {
            layers
                .iter()
                .map(|l| Ok(Box::new(std::io::Cursor::new(l.clone())) as Box<dyn Read>))
        };
        let plan = Plan::read(&mut tars()).unwrap();
        let mut out = Vec::new();
        plan.write(&mut tars(), &mut out).unwrap();
        let mut ar = tar::Archive::new(out.as_slice());
        ar.entries()
            .unwrap()
            .map(|e| {
                let mut e = e.unwrap();
                let name = String::from_utf8(e.path_bytes().into_owned()).unwrap();
                let kind = e.header().entry_type();
                let mode = e.header().mode().unwrap();
                let (k, v) = if kind.is_dir() {
                    ('d', String::new())
                } else if kind.is_hard_link() || kind.is_symlink() {
                    let l = String::from_utf8(e.link_name_bytes().unwrap().into_owned()).unwrap();
                    (if kind.is_hard_link() { 'h' } else { 's' }, l)
                } else {
                    let mut s = String::new();
                    e.read_to_string(&mut s).unwrap();
                    ('f', s)
                };
                (name.trim_end_matches('/').to_string(), k, v, mode)
            })
            .collect()
    }

    fn row(name: &str, k: char, v: &str, mode: u32) -> (String, char, String, u32) {
        (name.to_string(), k, v.to_string(), mode)
    }

    #[test]
    fn whiteouts_and_opaque_directories_take_away_lower_content() {
        let l1 = layer(&[
            ("a", 'd', "", 0o755),
            ("a/x", 'f', "x1", 0o644),
            ("a/y", 'f', "y1", 0o644),
            ("b", 'd', "", 0o755),
            ("b/old", 'f', "old", 0o644),
            ("c", 'f', "file", 0o644),
        ]);
        let l2 = layer(&[
            ("a/.wh.x", 'f', "", 0o644),
            ("b", 'd', "", 0o700),
            ("b/new", 'f', "new", 0o644),
            ("b/.wh..wh..opq", 'f', "", 0o644),
            ("c", 'd', "", 0o755),
            ("c/in", 's', "../a/y", 0o777),
        ]);
        assert_eq!(
            squash(&[l1, l2]),
            [
                row("a", 'd', "", 0o755),
                row("b", 'd', "", 0o700),
                row("c", 'd', "", 0o755),
                row("a/y", 'f', "y1", 0o644),
                row("b/new", 'f', "new", 0o644),
                row("c/in", 's', "../a/y", 0o777),
            ]
        );
    }

    #[test]
    fn hard_links_stay_links_across_layers() {
        let l1 = layer(&[
            ("d", 'd', "", 0o755),
            ("d/orig", 'f', "content", 0o600),
            ("d/gone", 'f', "gone-content", 0o644),
            ("d/replaced", 'f', "old", 0o644),
        ]);
        let l2 = layer(&[
            ("d/link", 'h', "d/orig", 0o600),
            ("d/keeps-gone", 'h', "d/gone", 0o644),
            ("d/keeps-old", 'h', "d/replaced", 0o644),
        ]);
        let l3 = layer(&[
            ("d/.wh.gone", 'f', "", 0o644),
            ("d/replaced", 'f', "new", 0o644),
            ("d/link2", 'h', "d/link", 0o600),
        ]);
        assert_eq!(
            squash(&[l1, l2, l3]),
            [
                row("d", 'd', "", 0o755),
                row("d/orig", 'f', "content", 0o600),
                row("d/link", 'h', "d/orig", 0o600),
                row("d/link2", 'h', "d/orig", 0o600),
                // Their targets went: the old content stays, under the link's name.
                row("d/keeps-gone", 'f', "gone-content", 0o644),
                row("d/keeps-old", 'f', "old", 0o644),
                row("d/replaced", 'f', "new", 0o644),
            ]
        );
    }

    #[test]
    fn a_link_to_nothing_is_refused() {
        let l1 = layer(&[("x", 'h', "nowhere", 0o644)]);
        let tars = || {
            [l1.clone()]
                .into_iter()
                .map(|l| Ok(Box::new(std::io::Cursor::new(l)) as Box<dyn Read>))
        };
        let err = Plan::read(&mut tars()).err().unwrap().to_string();
        assert!(err.contains("/x is a hard link to /nowhere"), "{err}");
    }
}
