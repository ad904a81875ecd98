//! Unit tests of the applier on in-memory layers (ownership `flatten`, so they run as anyone).

use super::*;
use std::os::unix::fs::{MetadataExt, PermissionsExt};

enum E<'a> {
    F(&'a str, &'a [u8]),
    D(&'a str, u32),
    L(&'a str, &'a str),
    H(&'a str, &'a str),
}

fn layer(entries: &[E]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        let mut h = tar::Header::new_gnu();
        h.set_mtime(1_000_000);
        h.set_uid(0);
        h.set_gid(0);
        match e {
            E::F(p, data) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(0o644);
                h.set_size(data.len() as u64);
                b.append_data(&mut h, p, *data).unwrap();
            }
            E::D(p, mode) => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(*mode);
                h.set_size(0);
                b.append_data(&mut h, p, &[][..]).unwrap();
            }
            E::L(p, t) => {
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_size(0);
                b.append_link(&mut h, p, t).unwrap();
            }
            E::H(p, t) => {
                h.set_entry_type(tar::EntryType::Link);
                h.set_size(0);
                b.append_link(&mut h, p, t).unwrap();
            }
        }
    }
    b.into_inner().unwrap()
}

fn apply(layers: &[Vec<u8>]) -> tempfile::TempDir {
    let t = tempfile::tempdir().unwrap();
    let mut a = Applier::new(t.path(), Ownership::Flatten).unwrap();
    for l in layers {
        a.apply_layer(&l[..]).unwrap();
    }
    a.finish().unwrap();
    t
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn opaque_spares_this_layers_entries_wherever_the_marker_is() {
    let t = apply(&[
        layer(&[
            E::D("d", 0o755),
            E::F("d/old", b"o"),
            E::D("d/oldsub", 0o755),
        ]),
        layer(&[
            E::F("d/before", b"b"),
            E::D("d/newsub", 0o755),
            E::F("d/.wh..wh..opq", b""),
            E::F("d/after", b"a"),
        ]),
    ]);
    assert_eq!(names(&t.path().join("d")), ["after", "before", "newsub"]);
}

#[test]
fn whiteout_spares_its_own_layer_and_removes_lower() {
    let t = apply(&[
        layer(&[E::F("a", b"lower"), E::F("b", b"lower")]),
        layer(&[
            E::F("a", b"upper"),
            E::F(".wh.a", b""),
            E::F(".wh.b", b""),
            E::F(".wh.missing", b""),
        ]),
    ]);
    assert_eq!(std::fs::read(t.path().join("a")).unwrap(), b"upper");
    assert!(!t.path().join("b").exists());
}

#[test]
fn replacements_and_lower_hardlinks() {
    let t = apply(&[
        layer(&[
            E::F("f", b"file"),
            E::D("d", 0o755),
            E::F("d/x", b"x"),
            E::F("lower", b"L"),
        ]),
        layer(&[
            E::D("f", 0o700),
            E::F("d", b"now file"),
            E::H("up", "lower"),
            E::L("s", "/lower"),
        ]),
    ]);
    assert!(t.path().join("f").is_dir());
    assert_eq!(std::fs::read(t.path().join("d")).unwrap(), b"now file");
    let (a, b) = (
        std::fs::metadata(t.path().join("up")).unwrap(),
        std::fs::metadata(t.path().join("lower")).unwrap(),
    );
    assert_eq!(a.ino(), b.ino());
    assert_eq!(
        std::fs::read_link(t.path().join("s")).unwrap(),
        Path::new("/lower")
    );
}

#[test]
fn readonly_dirs_get_their_mode_only_at_the_end() {
    let t = apply(&[
        layer(&[E::D("ro", 0o555), E::F("ro/a", b"a")]),
        layer(&[E::F("ro/b", b"b"), E::F("implicit/parent/f", b"f")]),
    ]);
    let m = |p: &str| std::fs::metadata(t.path().join(p)).unwrap();
    assert_eq!(m("ro").permissions().mode() & 0o7777, 0o555);
    assert!(t.path().join("ro/b").exists());
    assert_eq!(m("implicit/parent").permissions().mode() & 0o7777, 0o755);
    assert_eq!(m("").permissions().mode() & 0o7777, 0o755);
    assert_eq!(m("ro").mtime(), 1_000_000);
    // let the TempDir clean up
    std::fs::set_permissions(t.path().join("ro"), std::fs::Permissions::from_mode(0o755)).unwrap();
}

#[test]
fn dotdot_is_refused_before_anything_is_written() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("root");
    std::fs::create_dir(&root).unwrap();
    let mut a = Applier::new(&root, Ownership::Flatten).unwrap();
    let mut raw = layer(&[E::F("xx/evil", b"x")]);
    // tar::Builder refuses `..`; patch the stored name instead ("xx" -> "..").
    raw[0] = b'.';
    raw[1] = b'.';
    let sum: u32 = raw[..512]
        .iter()
        .enumerate()
        .map(|(i, &b)| {
            if (148..156).contains(&i) {
                32
            } else {
                b as u32
            }
        })
        .sum();
    raw[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    let e = a.apply_layer(&raw[..]).unwrap_err();
    assert!(format!("{e:#}").contains("'..'"), "{e:#}");
    assert!(!t.path().join("evil").exists());
    assert_eq!(names(&root), Vec::<String>::new());
}

#[test]
fn files_larger_than_a_chunk_and_empty_ones_reach_the_writer_whole() {
    // Several chunks, a partial last one, then an empty file and a small one: the writer
    // thread gets them in order and each ends with its own metadata.
    let big: Vec<u8> = (0..(2 * writer::CHUNK + 12345))
        .map(|i| (i % 251) as u8)
        .collect();
    let t = apply(&[layer(&[
        E::F("big", &big),
        E::F("empty", b""),
        E::F("small", b"s"),
    ])]);
    assert_eq!(std::fs::read(t.path().join("big")).unwrap(), big);
    assert_eq!(std::fs::read(t.path().join("empty")).unwrap(), b"");
    assert_eq!(std::fs::read(t.path().join("small")).unwrap(), b"s");
    for f in ["big", "empty", "small"] {
        let m = std::fs::metadata(t.path().join(f)).unwrap();
        assert_eq!(m.mtime(), 1_000_000, "{f}");
        assert_eq!(m.permissions().mode() & 0o7777, 0o644, "{f}");
    }
}

#[test]
fn a_layer_ending_inside_a_file_is_an_error_naming_it() {
    let data = vec![7u8; writer::CHUNK + 100];
    let mut raw = layer(&[E::F("first", b"1"), E::F("cut", &data)]);
    // Keep the headers and half of the second file's data.
    raw.truncate(3 * 512 + writer::CHUNK / 2);
    let t = tempfile::tempdir().unwrap();
    let mut a = Applier::new(t.path(), Ownership::Flatten).unwrap();
    let e = a.apply_layer(&raw[..]).unwrap_err();
    let msg = format!("{e:#}");
    assert!(msg.contains("cannot unpack /cut"), "{msg}");
    assert!(msg.contains("truncated tar"), "{msg}");
    drop(a);
    assert_eq!(std::fs::read(t.path().join("first")).unwrap(), b"1");
}
