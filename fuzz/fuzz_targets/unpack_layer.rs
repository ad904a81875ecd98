//! The layer extractor on arbitrary tar bytes, applied into a scratch rootfs.
//!
//! Beside the rootfs sits a sentinel directory (a file, a directory and a symlink back into the
//! root). After every case the sentinel must be byte-for-byte what it was and the scratch
//! directory must hold nothing but `root` and `sentinel`; seeds aim `..`, absolute names,
//! symlinks and hardlinks at both, and at `/tmp/sioci-fuzz-escape*`, which must never appear.
//! Any of these is an escape and aborts the run (libFuzzer saves the input as a crash).
#![no_main]

#[path = "../support/escape.rs"]
mod escape;

use escape::{assert_only_entries, escape_marks, remove_tree};
use libfuzzer_sys::fuzz_target;
use oci_unpack::apply::Applier;
use oci_unpack::ownership::Ownership;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

struct Scratch {
    dir: PathBuf,
    root: PathBuf,
    sentinel: PathBuf,
    snapshot: Vec<(String, Vec<u8>)>,
}

fn snapshot(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut v = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).expect("sentinel readable").flatten() {
            let p = e.path();
            let md = fs::symlink_metadata(&p).unwrap();
            let rel = p.strip_prefix(dir).unwrap().display().to_string();
            let content = if md.file_type().is_symlink() {
                fs::read_link(&p)
                    .unwrap()
                    .into_os_string()
                    .into_encoded_bytes()
            } else if md.is_dir() {
                stack.push(p.clone());
                b"<dir>".to_vec()
            } else {
                fs::read(&p).unwrap()
            };
            use std::os::unix::fs::MetadataExt;
            let mut c = content;
            c.extend_from_slice(format!("|{:o}|{}|{}", md.mode(), md.uid(), md.gid()).as_bytes());
            v.push((rel, c));
        }
    }
    v.sort();
    v
}

fn scratch() -> &'static Scratch {
    static S: OnceLock<Scratch> = OnceLock::new();
    S.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("sioci-fuzz-unpack-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let sentinel = dir.join("sentinel");
        fs::create_dir_all(sentinel.join("sub")).unwrap();
        fs::write(sentinel.join("file"), b"sentinel").unwrap();
        fs::write(sentinel.join("sub/inner"), b"inner").unwrap();
        std::os::unix::fs::symlink("../root", sentinel.join("to-root")).unwrap();
        let snap = snapshot(&sentinel);
        Scratch {
            root: dir.join("root"),
            dir,
            sentinel,
            snapshot: snap,
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let s = scratch();
    if s.root.exists() {
        remove_tree(&s.root);
    }
    fs::create_dir(&s.root).unwrap();
    let own = if rustix_is_root() {
        Ownership::Keep
    } else {
        Ownership::Flatten
    };
    if let Ok(mut a) = Applier::new(&s.root, own) {
        // Two layers from one input: the second half is applied over the first, so whiteouts
        // and links can point at what a "lower layer" made.
        let mid = data.len() / 2;
        let first_ok = a.apply_layer(&data[..mid]).is_ok();
        if first_ok {
            let _ = a.apply_layer(&data[mid..]);
        }
        let _ = a.finish();
    }
    assert_only_entries(&s.dir, &["root", "sentinel"]);
    assert!(
        snapshot(&s.sentinel) == s.snapshot,
        "ESCAPE: the sentinel directory beside the rootfs was changed"
    );
    let marks = escape_marks();
    assert!(
        marks.is_empty(),
        "ESCAPE: created outside the rootfs: /tmp/{marks:?}"
    );
});

fn rustix_is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe extern "C" {
        fn geteuid() -> u32;
    }
    unsafe { geteuid() == 0 }
}
