//! The squashfs reader on arbitrary bytes: the image is read in place from a scratch file and
//! applied through the layer applier into a scratch rootfs, as oci-unpack does for a SIF
//! partition (`oci_unpack::sif::apply_squashfs`).
//!
//! Beside the rootfs sits a sentinel file; after every case the scratch directory must hold
//! nothing but `root`, `image` and `sentinel`, the sentinel must be unchanged and no
//! `/tmp/sioci-fuzz-escape*` may exist. Output is bounded (`--max-size` of 16 MiB) so a crafted
//! size cannot fill the disk. Seeds: small mksquashfs images with every compressor, hard links,
//! symlinks, devices and the pseudo-file hostile trees (fuzz/mkseeds.py).
#![no_main]

#[path = "../support/escape.rs"]
mod escape;

use common::record::SifObject;
use escape::{assert_only_entries, escape_marks, remove_tree};
use libfuzzer_sys::fuzz_target;
use oci_unpack::apply::Applier;
use oci_unpack::ownership::Ownership;
use std::fs;
use std::path::PathBuf;
use std::sync::OnceLock;

struct Scratch {
    dir: PathBuf,
    root: PathBuf,
    image: PathBuf,
}

const SENTINEL: &[u8] = b"sentinel";

fn scratch() -> &'static Scratch {
    static S: OnceLock<Scratch> = OnceLock::new();
    S.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("sioci-fuzz-squashfs-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("sentinel"), SENTINEL).unwrap();
        Scratch {
            root: dir.join("root"),
            image: dir.join("image"),
            dir,
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let s = scratch();
    if s.root.exists() {
        remove_tree(&s.root);
    }
    fs::create_dir(&s.root).unwrap();
    fs::write(&s.image, data).unwrap();
    let file = fs::File::open(&s.image).unwrap();
    let obj = SifObject {
        offset: 0,
        size: data.len() as u64,
    };
    if let Ok(mut a) = Applier::new(&s.root, Ownership::Flatten) {
        // OCI-SIF layers carry overlayfs whiteouts, native SIF partitions do not: the input's
        // length picks which reading a case gets, so mutations explore both.
        let overlay_whiteouts = data.len() % 2 == 1;
        if oci_unpack::sif::apply_squashfs(&mut a, &file, obj, 16 << 20, overlay_whiteouts, None)
            .is_ok()
        {
            let _ = a.finish();
        }
    }
    assert_only_entries(&s.dir, &["image", "root", "sentinel"]);
    assert_eq!(
        fs::read(s.dir.join("sentinel")).unwrap(),
        SENTINEL,
        "ESCAPE: the sentinel beside the rootfs was changed"
    );
    let marks = escape_marks();
    assert!(
        marks.is_empty(),
        "ESCAPE: created outside the rootfs: /tmp/{marks:?}"
    );
});
