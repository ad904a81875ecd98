//! Unpacking inside the caller's user namespace.
//!
//! An unprivileged caller with subordinate IDs runs containers in a user namespace that maps
//! its uid to 0 and its subordinate range to 1..N (oci-userns-starter). Built there, a tree keeps
//! the image's owners: they land on the host as the mapped subordinate IDs, which the container
//! sees as the image's own. So on a cache miss oci-unpack runs itself once more under
//! oci-userns-starter with `--ownership keep`, hands it the image record on stdin, and takes back
//! its rootfs record. A warm start never gets here: the cached tree is found by one stat.

use anyhow::{Context, Result, bail};
use common::record::{ImageRecord, RootfsRecord};
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

/// What the unpack in the namespace ended with.
pub enum Outcome {
    Built(Box<RootfsRecord>),
    /// It failed and said why on stderr (one FATAL line): exit with this status, adding nothing.
    Failed(i32),
}

/// The directory of the stages: `SINGULARITY_OCI_LIBEXEC` when it holds the starter (the
/// front's override, which also lets a test wrap the stages), else this executable's own
/// directory (the stages are installed together).
fn stages_dir() -> Result<PathBuf> {
    if let Some(d) = std::env::var_os("SINGULARITY_OCI_LIBEXEC").filter(|d| !d.is_empty()) {
        let d = PathBuf::from(d);
        if d.join(STARTER).is_file() {
            return Ok(d);
        }
    }
    let me = std::env::current_exe().context("cannot find this executable's path")?;
    Ok(me
        .parent()
        .context("this executable has no directory")?
        .to_path_buf())
}

const STARTER: &str = "oci-userns-starter";

/// The starter, and the oci-unpack to run under it (the one in the same directory, else this
/// executable).
fn programs() -> Result<(PathBuf, PathBuf)> {
    let dir = stages_dir()?;
    let starter = dir.join(STARTER);
    if !starter.is_file() {
        bail!(
            "{} is missing: it is needed to keep image owners with subordinate IDs (install the stages together, or pass --ownership flatten)",
            starter.display()
        );
    }
    let unpack = dir.join("oci-unpack");
    let unpack = if unpack.is_file() {
        unpack
    } else {
        std::env::current_exe().context("cannot find this executable's path")?
    };
    Ok((starter, unpack))
}

/// Unpack `record` into the cache as root of a user namespace with the caller's subordinate IDs.
pub fn unpack_cached_in_userns(record: &ImageRecord, max_bytes: u64) -> Result<Outcome> {
    let (starter, unpack) = programs()?;
    let mut child = Command::new(starter)
        .arg("--")
        .arg(unpack)
        .args(["--ownership", "keep", "--max-size", &max_bytes.to_string()])
        .args(common::progress::quiet().then_some("--quiet"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("cannot start oci-userns-starter to unpack inside the user namespace")?;
    let json = serde_json::to_vec(record)?;
    let mut stdin = child.stdin.take().expect("piped stdin");
    // A child that failed early closes its stdin: its own message says why.
    let _ = stdin.write_all(&json).and_then(|_| stdin.write_all(b"\n"));
    drop(stdin);
    let out = child
        .wait_with_output()
        .context("cannot wait for the unpack inside the user namespace")?;
    match out.status.code() {
        Some(0) => {}
        Some(code) => return Ok(Outcome::Failed(code)),
        None => bail!(
            "the unpack inside the user namespace was killed ({})",
            out.status
        ),
    }
    let rec: RootfsRecord = serde_json::from_slice(&out.stdout)
        .context("the unpack inside the user namespace printed no rootfs record")?;
    Ok(Outcome::Built(Box::new(rec)))
}
