//! SHA-256 digests as lowercase hex, computed by `sha256sum` (coreutils): a reference
//! implementation the code under test does not share.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

/// The SHA-256 of the file at `p`.
pub fn sha256_file(p: &Path) -> String {
    let out = Command::new("sha256sum")
        .arg(p)
        .output()
        .expect("sha256sum");
    assert!(out.status.success(), "sha256sum {}", p.display());
    first_word(&out.stdout)
}

/// The SHA-256 of `b`.
pub fn sha256_bytes(b: &[u8]) -> String {
    let mut child = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("sha256sum");
    child.stdin.take().unwrap().write_all(b).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "sha256sum of {} bytes", b.len());
    first_word(&out.stdout)
}

fn first_word(out: &[u8]) -> String {
    String::from_utf8_lossy(out)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}
