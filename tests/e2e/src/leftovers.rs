//! What a finished run must not leave behind: bundles, runtime state, mounts.

use crate::Ctx;
use std::path::Path;

/// Every leftover found, one description each (empty: clean).
pub(crate) fn find(ctx: &Ctx) -> Vec<String> {
    let mut problems = Vec::new();
    let state_root = ctx.state_root();

    // 1. The test's TMPDIR holds nothing but (for users) the state root itself.
    if let Ok(rd) = std::fs::read_dir(ctx.tmpdir()) {
        for e in rd.flatten() {
            if e.path() != state_root {
                problems.push(format!("left in TMPDIR: {}", e.path().display()));
            }
        }
    }

    // 2. Runtime state. A private state root (inside TMPDIR) must hold no container at all; the
    //    shared one of root must hold nothing that mentions this test's directory (the bundle
    //    path appears in crun's and runc's state files and in our `bundle` symlinks).
    if state_root.starts_with(ctx.dir()) {
        for sub in ["containers", ""] {
            let d = state_root.join(sub);
            if let Ok(rd) = std::fs::read_dir(&d) {
                for e in rd.flatten() {
                    let p = e.path();
                    let name = e.file_name();
                    if sub.is_empty() && (name == "containers" || !p.is_dir()) {
                        continue;
                    }
                    problems.push(format!("runtime state left: {}", p.display()));
                }
            }
        }
    } else {
        let needle = ctx.dir().to_string_lossy().into_owned();
        mentions(&state_root, &needle, 4, &mut problems);
    }

    // 3. Mounts under the test's directory (in the harness's own, i.e. the host's, namespace).
    let dir = ctx.dir();
    for mp in common::mountns::mount_points().unwrap_or_default() {
        if mp.starts_with(dir) {
            problems.push(format!("still mounted: {}", mp.display()));
        }
    }
    problems
}

/// Files and symlinks below `dir` (to `depth`) whose target or (small) contents mention
/// `needle`.
fn mentions(dir: &Path, needle: &str, depth: u32, problems: &mut Vec<String>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let p = e.path();
        let Ok(ft) = e.file_type() else { continue };
        if ft.is_symlink() {
            if let Ok(t) = std::fs::read_link(&p)
                && t.to_string_lossy().contains(needle)
            {
                problems.push(format!(
                    "runtime state left: {} -> {}",
                    p.display(),
                    t.display()
                ));
            }
        } else if ft.is_dir() {
            if depth > 0 {
                mentions(&p, needle, depth - 1, problems);
            }
        } else if ft.is_file() {
            let small = e.metadata().map(|m| m.len() < 1 << 20).unwrap_or(false);
            if small
                && let Ok(bytes) = std::fs::read(&p)
                && String::from_utf8_lossy(&bytes).contains(needle)
            {
                problems.push(format!("runtime state left: {}", p.display()));
            }
        }
    }
}
