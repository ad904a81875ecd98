//! `attach`: what a client of a conmon-monitored container needs besides the byte relay (which
//! is `oci-attach`'s own): where the container's socket and resize FIFO are, why it cannot be
//! attached, and the exit status a session ends with.
//!
//! | how the session ended | exit status |
//! |---|---|
//! | the output stream ended | the container's, from conmon's exit file |
//! | the detach keys | 0 (the container keeps running) |
//! | a terminating signal N | 128 + N |

use crate::lifecycle::statedir::{self, StateDir};
use crate::lifecycle::{monitor, root};
use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How long to wait for conmon's exit file after the output stream ends (conmon writes it right
/// after closing its clients; this only matters when conmon itself was killed).
pub const EXIT_FILE_WAIT: Duration = Duration::from_secs(10);

/// A container's attach endpoints.
#[derive(Debug)]
pub struct Endpoint {
    pub sd: StateDir,
    pub bundle: PathBuf,
}

impl Endpoint {
    /// conmon's attach socket.
    pub fn socket(&self) -> PathBuf {
        self.bundle.join(statedir::ATTACH_SOCKET)
    }
    /// conmon's resize FIFO.
    pub fn ctl(&self) -> PathBuf {
        self.bundle.join(statedir::CTL_FIFO)
    }
}

/// Find container `id`: the state root (`--root` or the rules, checked private either way),
/// its state directory, and its bundle.
pub fn locate(explicit_root: Option<&Path>, id: &str) -> Result<Endpoint> {
    statedir::check_container_id(id)?;
    let root = root::resolve(explicit_root)?;
    locate_in(&root, id)
}

/// [`locate`] under a known root.
pub fn locate_in(root: &Path, id: &str) -> Result<Endpoint> {
    let Some(sd) = StateDir::open(root, id)? else {
        bail!(
            "no container '{id}' (no state directory {})",
            statedir::container_dir(root, id)?.display()
        );
    };
    let bundle = sd
        .bundle_or_err()
        .with_context(|| format!("container '{id}' was not created by oci-conmon-create"))?;
    Ok(Endpoint { sd, bundle })
}

/// Why we cannot attach, in the user's terms: it has exited, or its conmon is gone.
pub fn not_attachable(id: &str, sd: &StateDir, e: anyhow::Error) -> anyhow::Error {
    match sd.exit_status() {
        Ok(Some(code)) => {
            anyhow::anyhow!("container '{id}' has exited (status {code}); its output is in its log")
        }
        _ => e.context(format!(
            "container '{id}' is not attachable (is its conmon still running?)"
        )),
    }
}

/// How a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// The output stream ended: the container exited (or conmon went away).
    StreamEnded,
    /// The detach keys were typed.
    Detached,
    /// A terminating signal arrived.
    Signalled(i32),
}

/// The exit status of a session that ended so.
pub fn exit_status(id: &str, sd: &StateDir, ending: Ending, wait: Duration) -> Result<i32> {
    match ending {
        Ending::Detached => Ok(0),
        Ending::Signalled(n) => Ok(128 + n),
        Ending::StreamEnded => match wait_exit(sd, wait)? {
            Some(code) => Ok(code),
            None => bail!(
                "the connection to conmon ended but container '{id}' left no exit status in {}",
                sd.exit_file().display()
            ),
        },
    }
}

/// The exit file, waiting (at most `wait`) while conmon is still alive to write it.
fn wait_exit(sd: &StateDir, wait: Duration) -> Result<Option<i32>> {
    let deadline = Instant::now() + wait;
    loop {
        let step = monitor::wait_exit_status(sd, Duration::from_millis(200).min(wait))?;
        if step.is_some() {
            // conmon still runs the exit command (cleanup of its files); let it finish so that
            // a `delete` typed right after this returns finds the container settled.
            monitor::wait_gone(sd, Duration::from_secs(5));
            return Ok(step);
        }
        if !monitor::running(sd) || Instant::now() >= deadline {
            return sd.exit_status();
        }
    }
}

/// The message that detaching prints.
pub fn detached_message(id: &str) -> String {
    format!("detached from container {id} (it keeps running; re-attach with: oci-attach {id})")
}

/// conmon's control message for a resize: type 1, then height and width.
pub fn resize_message(rows: u16, cols: u16) -> String {
    format!("1 {rows} {cols}\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root() -> tempfile::TempDir {
        tempfile::tempdir().unwrap()
    }

    fn made(r: &Path, id: &str) -> StateDir {
        let sd = StateDir::create(r, id).unwrap();
        sd.link_bundle(Path::new("/b/bundle")).unwrap();
        sd
    }

    #[test]
    fn endpoints_are_in_the_bundle() {
        let r = root();
        made(r.path(), "c");
        let e = locate_in(r.path(), "c").unwrap();
        assert_eq!(e.socket(), PathBuf::from("/b/bundle/attach"));
        assert_eq!(e.ctl(), PathBuf::from("/b/bundle/ctl"));
    }

    #[test]
    fn no_state_directory() {
        let r = root();
        let e = locate_in(r.path(), "c").unwrap_err().to_string();
        assert_eq!(
            e,
            format!(
                "no container 'c' (no state directory {}/containers/c)",
                r.path().display()
            )
        );
    }

    #[test]
    fn no_bundle_link_means_not_ours() {
        let r = root();
        StateDir::create(r.path(), "c").unwrap();
        let e = locate_in(r.path(), "c").unwrap_err().to_string();
        assert_eq!(e, "container 'c' was not created by oci-conmon-create");
    }

    #[test]
    fn a_bad_id_is_refused_before_any_lookup() {
        let e = locate(Some(Path::new("/nonexistent")), "../c").unwrap_err();
        assert!(e.to_string().starts_with("invalid container id"), "{e}");
    }

    #[test]
    fn a_root_writable_by_others_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let r = root();
        let shared = r.path().join("shared");
        std::fs::create_dir(&shared).unwrap();
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o777)).unwrap();
        assert!(locate(Some(&shared), "c").is_err());
    }

    #[test]
    fn an_exited_container_says_so() {
        let r = root();
        let sd = made(r.path(), "c");
        std::fs::write(sd.exit_file(), "3").unwrap();
        let e = not_attachable("c", &sd, anyhow::anyhow!("refused"));
        assert_eq!(
            e.to_string(),
            "container 'c' has exited (status 3); its output is in its log"
        );
    }

    #[test]
    fn a_gone_conmon_says_so() {
        let r = root();
        let sd = made(r.path(), "c");
        let e = not_attachable("c", &sd, anyhow::anyhow!("connection refused"));
        assert_eq!(
            e.to_string(),
            "container 'c' is not attachable (is its conmon still running?)"
        );
        assert_eq!(format!("{e:#}").matches("connection refused").count(), 1);
    }

    #[test]
    fn detach_is_zero_and_signals_128_plus() {
        let r = root();
        let sd = made(r.path(), "c");
        assert_eq!(
            exit_status("c", &sd, Ending::Detached, Duration::ZERO).unwrap(),
            0
        );
        assert_eq!(
            exit_status("c", &sd, Ending::Signalled(2), Duration::ZERO).unwrap(),
            130
        );
    }

    #[test]
    fn stream_end_takes_the_containers_status() {
        let r = root();
        let sd = made(r.path(), "c");
        std::fs::write(sd.exit_file(), "42").unwrap();
        assert_eq!(
            exit_status("c", &sd, Ending::StreamEnded, Duration::ZERO).unwrap(),
            42
        );
    }

    #[test]
    fn stream_end_without_status_is_an_error() {
        let r = root();
        let sd = made(r.path(), "c");
        let e = exit_status("c", &sd, Ending::StreamEnded, Duration::from_millis(10))
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("the connection to conmon ended but container 'c' left no exit status"),
            "{e}"
        );
    }

    #[test]
    fn messages() {
        assert_eq!(resize_message(50, 120), "1 50 120\n");
        assert_eq!(
            detached_message("c"),
            "detached from container c (it keeps running; re-attach with: oci-attach c)"
        );
    }
}
