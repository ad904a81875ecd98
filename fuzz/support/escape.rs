//! What the file-writing fuzz targets share: removing a scratch tree a case left behind, and
//! the escape marks (`/tmp/sioci-fuzz-escape*`) that seeds aim at and that must never appear.

use std::fs;
use std::path::Path;

/// Names in /tmp that start with `sioci-fuzz-escape`.
pub fn escape_marks() -> Vec<String> {
    fs::read_dir("/tmp")
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with("sioci-fuzz-escape"))
                .collect()
        })
        .unwrap_or_default()
}

pub fn remove_tree(p: &Path) {
    // Layers may leave directories without write or search permission; as root that does not
    // matter, as a user make everything writable first (never following symlinks).
    if fs::remove_dir_all(p).is_err() {
        let _ = std::process::Command::new("chmod")
            .arg("-R")
            .arg("u+rwx")
            .arg(p)
            .status();
        fs::remove_dir_all(p).expect("cannot clean the scratch rootfs");
    }
}

/// Abort (an ESCAPE, saved as a crash) unless `dir` holds exactly the entries `expected`.
pub fn assert_only_entries(dir: &Path, expected: &[&str]) {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names, expected,
        "ESCAPE: an entry appeared beside the rootfs"
    );
}
