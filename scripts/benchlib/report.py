"""The results: series of samples, goals, the Markdown table, the facts about the machine and
the run, the results file and README.md's Benchmarks section."""

import datetime
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys

from . import history
from .build import release_text
from .config import MEASURES, REPO
from .proc import log


def median(xs):
    return statistics.median(xs) if xs else None


def fmt_time(s):
    if s is None:
        return "—"
    if s < 1.0:
        return f"{s * 1000:.1f} ms"
    return f"{s:.2f} s"


def fmt_rss(kib):
    return "—" if kib is None else f"{kib / 1024:.1f} MiB"


class Series:
    """Samples of one command (ours or an anchor), or the reason it could not run."""

    def __init__(self, label, unit="time"):
        self.label = label
        self.unit = unit
        self.samples = []
        self.error = None
        self.good_before_error = 0

    def fail(self, reason):
        if self.error is None:
            self.error = reason
            self.good_before_error = len(self.samples)

    @property
    def ok(self):
        return self.error is None and bool(self.samples)

    def value(self):
        return median(self.samples) if self.ok else None

    def fmt(self, with_range=True):
        if not self.ok:
            if self.error and self.good_before_error:
                return f"failed after {self.good_before_error} good runs: {self.error}"
            return f"not runnable: {self.error or 'no samples'}"
        f = fmt_time if self.unit == "time" else fmt_rss
        v = f(self.value())
        if with_range and len(self.samples) > 1:
            v += f" (n={len(self.samples)}, {f(min(self.samples))}–{f(max(self.samples))})"
        return v


class Goal:
    """One goal: `ratio` ours/anchor <= k, `faster` anchor/ours >= k, `below` ours < k,
    `atmost` ours <= k (absolute, in the series' unit: seconds or KiB)."""

    def __init__(self, kind, k, anchor=None, text=None):
        self.kind, self.k, self.anchor, self.text = kind, k, anchor, text

    def value(self, ours, anchors):
        """The figure compared with k (ours/anchor, anchor/ours, or ours), or None."""
        if not ours.ok:
            return None
        o = ours.value()
        if self.kind in ("below", "atmost"):
            return o
        a = anchors.get(self.anchor)
        if a is None or not a.ok:
            return None
        return o / a.value() if self.kind == "ratio" else a.value() / o

    def evaluate(self, ours, anchors):
        if not ours.ok:
            return "n/a (ours not runnable)"
        v = self.value(ours, anchors)
        if v is None:
            return f"n/a ({self.anchor} not runnable)"
        ok = {"below": v < self.k, "atmost": v <= self.k, "ratio": v <= self.k}.get(self.kind, v >= self.k)
        return "PASS" if ok else "FAIL"


class Row:
    def __init__(self, measure, ours, anchors=(), goals=(), note=""):
        self.measure = measure
        self.ours = ours
        self.anchors = {a.label: a for a in anchors}
        self.goals = list(goals)
        self.note = note

    def anchor_cells(self):
        cells = []
        for a in self.anchors.values():
            if a.ok and self.ours.ok:
                r = self.ours.value() / a.value()
                cells.append(f"{a.label}: {a.fmt(False)}, ratio {r:.2f}x")
            else:
                cells.append(f"{a.label}: {a.fmt(False)}")
        return "<br>".join(cells) if cells else "—"

    def goal_cells(self):
        if not self.goals:
            return "—", "—"
        texts = [g.text for g in self.goals]
        results = [f"{g.text}: {g.evaluate(self.ours, self.anchors)}" for g in self.goals]
        return "<br>".join(texts), "<br>".join(results)


def render_table(rows):
    out = [
        "| measure | ours (median) | anchors (median, ours/anchor) | goal | result |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        goal, result = r.goal_cells()
        m = r.measure + (f"<br>*{r.note}*" if r.note else "")
        cells = [m, r.ours.fmt(), r.anchor_cells(), goal, result]
        out.append("| " + " | ".join(c.replace("|", "\\|").replace("\n", " ") for c in cells) + " |")
    return "\n".join(out)


def summary_counts(rows):
    passed = failed = na = 0
    for r in rows:
        for g in r.goals:
            v = g.evaluate(r.ours, r.anchors)
            if v == "PASS":
                passed += 1
            elif v == "FAIL":
                failed += 1
            else:
                na += 1
    return passed, failed, na


def cpu_pressure():
    try:
        with open("/proc/pressure/cpu") as f:
            first = f.readline().split()
        return dict(kv.split("=") for kv in first[1:4])
    except OSError:
        return {}


def machine_facts():
    model = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "kernel": platform.release(),
        "cpu": model,
        "cores": os.cpu_count(),
        "host": socket.gethostname(),
    }


def tool_versions():
    """First line of each anchor's --version, so results from different machines compare."""
    out = []
    for tool in ("crun", "runc", "conmon", "umoci", "skopeo", "docker-registry", "podman", "tar"):
        if not shutil.which(tool):
            out.append(f"{tool} absent")
            continue
        try:
            r = subprocess.run([tool, "--version"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=10)
            line = r.stdout.decode(errors="replace").strip().splitlines()[0]
        except (OSError, IndexError, subprocess.TimeoutExpired):
            line = "?"
        out.append(line if tool in line.lower() else f"{tool} {line}")
    return "; ".join(out)


def source_version():
    try:
        head = subprocess.run(["git", "-C", REPO, "rev-parse", "--short", "HEAD"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL).stdout.decode().strip()
        dirty = subprocess.run(["git", "-C", REPO, "status", "--porcelain", "--untracked-files=no"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL).stdout.strip()
    except OSError:
        return "unknown"
    return head + (" + uncommitted changes" if dirty else "")


def load_facts():
    """The load now: (text for the results file, numbers for the history)."""
    la = os.getloadavg()
    p = cpu_pressure()
    s = f"loadavg {la[0]:.2f} {la[1]:.2f} {la[2]:.2f}"
    numbers = {"loadavg": [round(x, 2) for x in la]}
    if p:
        s += f", CPU pressure some avg10={p.get('avg10')}% avg60={p.get('avg60')}%"
        numbers["cpu_some_avg10"] = float(p.get("avg10", "nan"))
    return s, numbers


def report(opts, bench, facts, load_before, elapsed):
    """The table to stdout and the results file; one line to the history (load_before is
    load_facts() from before the run)."""
    table = render_table(bench.rows)
    passed, failed, na = summary_counts(bench.rows)
    load_after = load_facts()
    source = source_version()
    head = (
        f"# singularity-oci benchmarks\n\n"
        f"* date: {facts['date']}\n"
        f"* machine: {facts['host']}, kernel {facts['kernel']}, {facts['cpu']}, {facts['cores']} cores\n"
        f"* source: {source}; {release_text()}\n"
        f"* tools: {tool_versions()}\n"
        f"* load before: {load_before[0]}\n"
        f"* load after: {load_after[0]}\n"
        f"* command: `scripts/bench {' '.join(sys.argv[1:])}`; runs per command: "
        f"{bench.n(False)} light, {bench.n(True)} heavy; measuring took {elapsed:.0f} s\n"
        f"* goals: {passed} PASS, {failed} FAIL, {na} n/a\n\n"
    )
    text = head + table + "\n"
    print("\n" + text)
    outdir = os.path.join(REPO, "bench-results")
    os.makedirs(outdir, exist_ok=True)
    out = opts.out or os.path.join(
        outdir, "bench-" + datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ") + ".md"
    )
    with open(out, "w") as f:
        f.write(text)
    log(f"results written to {out}")
    # LATEST.md (the committed one) only ever holds a complete default run.
    latest = os.path.join(outdir, "LATEST.md")
    if not opts.out and set(opts.only) == set(MEASURES) and os.path.abspath(out) != latest:
        with open(latest, "w") as f:
            f.write(text)
        log(f"and to {latest}")
    if opts.readme:
        update_readme(text)
    # The history keeps complete runs (every measure) only, so its points compare.
    if not opts.no_history and set(opts.only) == set(MEASURES):
        runs = {"light": bench.n(False), "heavy": bench.n(True)}
        history.append(history.record(facts, source, load_before, load_after, opts, runs, elapsed, bench.rows))


README_BEGIN = "<!-- bench:begin (scripts/bench --readme writes between these markers) -->"


README_END = "<!-- bench:end -->"


def update_readme(text):
    """Replace the table between the markers of README.md's Benchmarks section."""
    path = os.path.join(REPO, "README.md")
    with open(path) as f:
        readme = f.read()
    a, b = readme.find(README_BEGIN), readme.find(README_END)
    if a < 0 or b < a:
        log("README.md has no bench markers; not updated")
        return
    # The results file's title is the README section's; keep the rest.
    body = text.split("\n", 2)[2].strip() if text.startswith("# ") else text.strip()
    new = readme[: a + len(README_BEGIN)] + "\n" + body + "\n" + readme[b:]
    tmp = path + ".bench-tmp"
    with open(tmp, "w") as f:
        f.write(new)
    os.rename(tmp, path)
    log("README.md: Benchmarks table updated")
