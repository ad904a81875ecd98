"""The release binaries under test: built with cargo only when missing or older than the
sources, and said in the results whether they match the sources."""

import os
import shutil
import subprocess

from .config import BIN, REPO, STAGES
from .proc import log


def newest_mtime(paths):
    newest = 0.0
    for top in paths:
        if os.path.isfile(top):
            newest = max(newest, os.stat(top).st_mtime)
            continue
        for dirpath, dirnames, filenames in os.walk(top):
            dirnames[:] = [d for d in dirnames if d != "target"]
            for fn in filenames:
                if fn.endswith(".rs") or fn in ("Cargo.toml",):
                    newest = max(newest, os.stat(os.path.join(dirpath, fn)).st_mtime)
    return newest


def dep_info_sources(binary):
    """The source files cargo recorded for BINARY (its `.d` dep-info file), or None."""
    try:
        with open(binary + ".d") as f:
            text = f.read()
    except OSError:
        return None
    line = text.split("\n", 1)[0]
    _, _, deps = line.partition(": ")
    # Spaces inside a path are escaped as "\ ".
    words = deps.replace("\\ ", "\0").split()
    return [w.replace("\0", " ") for w in words]


def release_state():
    """(missing, stale): stage binaries absent, and those older than one of their sources.
    Cargo relinks a binary only when a file it was built from changed, so each binary is
    compared with its own sources (from its dep-info file), not with the newest file anywhere."""
    bins = [os.path.join(BIN, s) for s in STAGES]
    missing = [b for b in bins if not os.path.exists(b)]
    fallback = None
    stale = []
    for b in bins:
        if not os.path.exists(b):
            continue
        deps = dep_info_sources(b)
        if deps is None:
            if fallback is None:
                fallback = newest_mtime(
                    [os.path.join(REPO, p) for p in ("common", "bins", "Cargo.toml", "Cargo.lock")]
                )
            src = fallback
        else:
            src = newest_mtime([d for d in deps if os.path.exists(d)] + [os.path.join(REPO, "Cargo.lock")])
        if os.stat(b).st_mtime < src:
            stale.append(b)
    return missing, stale


def release_text():
    missing, stale = release_state()
    if not missing and not stale:
        return f"{os.path.relpath(BIN, REPO)} up to date with the sources"
    parts = []
    if missing:
        parts.append("missing " + ", ".join(os.path.basename(b) for b in missing))
    if stale:
        parts.append("older than the sources: " + ", ".join(os.path.basename(b) for b in stale))
    return os.path.relpath(BIN, REPO) + " " + "; ".join(parts)


def ensure_release(no_build):
    missing, stale = release_state()
    if not missing and not stale:
        return
    why = f"missing {len(missing)}" if missing else f"{len(stale)} older than the sources"
    if no_build:
        log(f"release binaries: {why}; not building (--no-build)")
        return
    cargo = shutil.which("cargo") or os.path.expanduser("~/.cargo/bin/cargo")
    log(f"release binaries: {why}; cargo build --release --workspace")
    # --keep-going: one crate that does not build must not keep the others from being measured.
    r = subprocess.run([cargo, "build", "--release", "--workspace", "--keep-going", "--quiet"], cwd=REPO)
    if r.returncode != 0:
        log("cargo build --release failed; measuring whatever binaries exist")


def stage_problem(*names):
    """Why the given stages cannot run, or None."""
    for n in names:
        path = os.path.join(BIN, n)
        if not os.access(path, os.X_OK):
            return f"{os.path.relpath(path, REPO)} missing (cargo build --release --workspace)"
    return None
