//! Finding the host programs the tests need. A missing tool fails the test and names what
//! installs it: a test never skips silently.

use std::path::{Path, PathBuf};

/// The first `DIR/name` that is a file, trying `dirs` in order.
pub fn find_in<'a>(dirs: impl IntoIterator<Item = &'a str>, name: &str) -> Option<PathBuf> {
    dirs.into_iter()
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
}

/// The host's `name` (e.g. `setpriv`, `crun`, `python3`); panics when it is not installed.
pub fn require_tool(name: &str) -> PathBuf {
    // The system directories, never the `PATH` that `cargo test` happens to run with.
    find_in(common::runtime::FALLBACK_DIRS, name)
        .unwrap_or_else(|| panic!("{name} is not installed: run scripts/setup (it installs it)"))
}
