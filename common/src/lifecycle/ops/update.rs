//! `update`: new resource limits from a file or from stdin.
//!
//! The runtime's stdin is not the user's in every runtime (SingularityCE never passed it), so
//! stdin is copied to a private file in the container's state directory and the runtime gets
//! that file; it is removed afterwards whatever happens.

use super::{Target, checked, enter};
use crate::lifecycle::host::Host;
use crate::lifecycle::process::{Call, Output, Runtime};
use anyhow::{Context, Result, bail};
use std::io::Read;
use std::path::{Path, PathBuf};

/// At most this much is read from stdin.
const STDIN_LIMIT: u64 = 16 << 20;

/// Where the resources come from.
pub enum Resources<'a> {
    File(&'a Path),
    Stdin(&'a mut dyn Read),
}

pub fn update(rt: &dyn Runtime, host: &dyn Host, t: &Target, from: Resources) -> Result<Output> {
    let (file, temporary) = match from {
        Resources::File(p) => {
            let p = crate::fsutil::absolute(p)?;
            if !p.is_file() {
                bail!("resources file {} does not exist", p.display());
            }
            (p, false)
        }
        Resources::Stdin(input) => {
            let dir =
                t.sd.map(|s| s.dir.clone())
                    .unwrap_or_else(|| rt.root().to_path_buf());
            (copy_to_private_file(input, &dir)?, true)
        }
    };
    let result = (|| {
        enter(host, t, false)?;
        checked(
            rt,
            "update",
            &Call::new([
                "update".as_ref(),
                "--resources".as_ref(),
                file.as_os_str(),
                t.id.as_ref(),
            ]),
            "",
        )
    })();
    if temporary {
        let _ = std::fs::remove_file(&file);
    }
    result
}

fn copy_to_private_file(input: &mut dyn Read, dir: &Path) -> Result<PathBuf> {
    use std::os::unix::fs::OpenOptionsExt;
    let p = dir.join(format!(".update-{}.json", crate::fsutil::unique_suffix()));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&p)
        .with_context(|| format!("cannot create {}", p.display()))?;
    if let Err(e) = std::io::copy(&mut input.take(STDIN_LIMIT), &mut f) {
        let _ = std::fs::remove_file(&p);
        return Err(e).context("cannot read the resources from stdin");
    }
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lifecycle::fake::Status;
    use crate::lifecycle::host::FakeHost;
    use crate::lifecycle::ops::testing::World;

    const RES: &str = r#"{"memory":{"limit":1000000}}"#;

    #[test]
    fn from_a_file() {
        let w = World::new(FakeHost::user());
        let sd = w.container("c", Status::Running);
        let f = w.dir.path().join("res.json");
        std::fs::write(&f, RES).unwrap();
        update(&w.rt, &w.host, &Target::of(&sd), Resources::File(&f)).unwrap();
        assert_eq!(w.rt.container("c").unwrap().resources.as_deref(), Some(RES));
    }

    #[test]
    fn from_stdin_through_a_private_file_that_is_removed() {
        let w = World::new(FakeHost::user());
        let sd = w.container("c", Status::Running);
        let mut input = RES.as_bytes();
        update(
            &w.rt,
            &w.host,
            &Target::of(&sd),
            Resources::Stdin(&mut input),
        )
        .unwrap();
        assert_eq!(w.rt.container("c").unwrap().resources.as_deref(), Some(RES));
        let used = &w.rt.calls.borrow()[0][2];
        assert!(used.starts_with(&sd.dir.display().to_string()), "{used}");
        assert!(!Path::new(used).exists(), "the copy is removed");
    }

    #[test]
    fn the_copy_is_removed_when_the_update_fails() {
        let w = World::new(FakeHost::user());
        let sd = w.container("c", Status::Running);
        w.rt.fail_next("update", "level=error msg=\"bad resources\"\n");
        let mut input = RES.as_bytes();
        let e = update(
            &w.rt,
            &w.host,
            &Target::of(&sd),
            Resources::Stdin(&mut input),
        )
        .unwrap_err();
        assert_eq!(e.to_string(), "update failed: bad resources");
        let leftovers: Vec<_> = std::fs::read_dir(&sd.dir)
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with(".update-"))
            .collect();
        assert!(leftovers.is_empty());
    }

    #[test]
    fn a_missing_file_calls_nothing() {
        let w = World::new(FakeHost::user());
        let sd = w.container("c", Status::Running);
        let e = update(
            &w.rt,
            &w.host,
            &Target::of(&sd),
            Resources::File(Path::new("/nonexistent/res.json")),
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "resources file /nonexistent/res.json does not exist"
        );
        assert!(w.rt.calls.borrow().is_empty());
    }

    #[test]
    fn stdin_is_read_up_to_the_limit() {
        let d = tempfile::tempdir().unwrap();
        let mut big = std::io::repeat(b'x');
        let p = copy_to_private_file(&mut big, d.path()).unwrap();
        assert_eq!(std::fs::metadata(&p).unwrap().len(), STDIN_LIMIT);
    }

    #[test]
    fn a_broken_stdin_leaves_no_file() {
        struct Broken;
        impl Read for Broken {
            fn read(&mut self, _: &mut [u8]) -> std::io::Result<usize> {
                Err(std::io::Error::other("gone"))
            }
        }
        let d = tempfile::tempdir().unwrap();
        let e = copy_to_private_file(&mut Broken, d.path()).unwrap_err();
        assert_eq!(e.to_string(), "cannot read the resources from stdin");
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 0);
    }
}
