"""The benchmark history: every run that measured to the end appends one JSON line to
bench-results/history.jsonl (date, commit, machine, load, and each row's medians and goal
values), and `scripts/bench --plot` draws each goal's value over time against its goal line."""

import datetime
import json
import os
import re
import sys

from .config import REPO
from .proc import log

HISTORY = os.path.join(REPO, "bench-results", "history.jsonl")
PLOT = os.path.join(REPO, "bench-results", "history.svg")
# What a goal's value is, per kind (Goal in report.py): the figure its threshold is compared with.
VALUE_OF = {"ratio": "ours / anchor", "faster": "anchor / ours"}


def goal_entry(goal, row):
    """A goal as the history keeps it: its text, kind, threshold, value and result."""
    return {
        "goal": goal.text,
        "kind": goal.kind,
        "k": goal.k,
        "anchor": goal.anchor,
        "value": goal.value(row.ours, row.anchors),
        "result": goal.evaluate(row.ours, row.anchors),
    }


def row_entry(row):
    return {
        "measure": row.measure,
        "unit": row.ours.unit,
        "ours": row.ours.value(),
        "n": len(row.ours.samples),
        "error": row.ours.error,
        "anchors": {label: a.value() for label, a in row.anchors.items()},
        "goals": [goal_entry(g, row) for g in row.goals],
    }


def load_entry(text_and_numbers):
    text, numbers = text_and_numbers
    return {"text": text, **numbers}


def record(facts, source, load_before, load_after, opts, runs, elapsed, rows):
    """One run, as one JSON object."""
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "commit": source,
        "machine": {k: facts[k] for k in ("host", "kernel", "cpu", "cores")},
        "load_before": load_entry(load_before),
        "load_after": load_entry(load_after),
        "measures": list(opts.only),
        "runs": runs,
        "seconds": round(elapsed, 1),
        "rows": [row_entry(r) for r in rows],
    }


def append(entry, path=HISTORY):
    """Append ENTRY as one line, in one write (O_APPEND), so concurrent runs do not interleave."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    line = (json.dumps(entry, sort_keys=True) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)
    log(f"history: appended to {path}")


def read(path=HISTORY):
    entries = []
    with open(path) as f:
        for n, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                entries.append(json.loads(line))
            except ValueError as e:
                raise ValueError(f"{path}:{n}: not JSON: {e}") from None
    return entries


def measure_key(measure):
    """A row's name without the parenthesised facts that change with the fixtures or the run
    count ("(4 layers, 130 MB gz)", "(max of 5 runs)"), so one measure stays one series."""
    return re.sub(r"\s*\([^()]*\d[^()]*\)", "", measure).strip()


def series(entries):
    """{(measure, kind, anchor): [(date, value, k, goal text, unit, seeded, row name)]} over
    every entry, oldest first. A goal keeps its series when its threshold, its wording or the
    facts in its row's name change (those are kept per point)."""
    out = {}
    for e in sorted(entries, key=lambda e: e["date"]):
        when = datetime.datetime.fromisoformat(e["date"])
        for row in e["rows"]:
            for g in row["goals"]:
                if g.get("value") is None:
                    continue
                out.setdefault((measure_key(row["measure"]), g["kind"], g["anchor"]), []).append(
                    (when, g["value"], g["k"], g["goal"], row.get("unit", "time"), bool(e.get("seeded")), row["measure"])
                )
    return out


def axis_label(kind, unit):
    if kind in ("ratio", "faster"):
        return VALUE_OF[kind]
    return "ours (s)" if unit == "time" else "ours (KiB)"


def plot(path=HISTORY, out=PLOT):
    """Draw every goal's value over time, one panel per goal, with its goal line; points of
    seeded (re-read, not measured by this code) entries hollow. Returns the file written."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        # Debian's python3-matplotlib belongs to /usr/bin/python3; `python3` on PATH may be
        # another interpreter (pyenv, a venv): draw with the system one.
        system = "/usr/bin/python3"
        if os.path.exists(system) and os.path.realpath(sys.executable) != os.path.realpath(system):
            os.execv(system, [system] + sys.argv)
        raise SystemExit("FATAL: bench: --plot needs matplotlib (apt-get install python3-matplotlib; scripts/setup does)")
    if not os.path.exists(path):
        raise SystemExit(f"FATAL: bench: no history yet ({path}): run scripts/bench first")
    data = series(read(path))
    if not data:
        raise SystemExit(f"FATAL: bench: {path} holds no goal values to draw")
    keys = sorted(data, key=lambda k: (k[0], k[1], k[2] or ""))
    cols = 2 if len(keys) > 1 else 1
    rows = (len(keys) + cols - 1) // cols
    # One time axis for every panel, so runs line up across goals.
    fig, axes = plt.subplots(rows, cols, figsize=(7 * cols, 2.6 * rows), squeeze=False, sharex=True)
    first = min(p[0] for pts in data.values() for p in pts)
    last = max(p[0] for pts in data.values() for p in pts)
    pad = max((last - first) / 20, datetime.timedelta(hours=6))
    for ax, key in zip([a for r in axes for a in r], keys):
        pts = data[key]
        whens = [p[0] for p in pts]
        ax.plot(whens, [p[1] for p in pts], color="tab:blue", linewidth=1, zorder=1)
        for filled in (True, False):
            sel = [p for p in pts if p[5] != filled]
            if sel:
                ax.scatter([p[0] for p in sel], [p[1] for p in sel], s=18, zorder=2,
                           facecolors="tab:blue" if filled else "none", edgecolors="tab:blue",
                           label="measured" if filled else "seeded from an earlier table")
        # The goal line: each threshold from the run that first had it to the next change, the
        # current one across the whole panel.
        ks = [p[2] for p in pts]
        ax.axhline(ks[-1], color="tab:red", linestyle="--", linewidth=1, label="goal")
        for i in range(len(pts) - 1):
            if ks[i] != ks[-1]:
                ax.hlines(ks[i], whens[i], whens[i + 1], color="tab:red", linestyle=":", linewidth=1)
        ax.set_title(f"{pts[-1][6]}\n{pts[-1][3]}", fontsize=8)
        ax.set_ylabel(axis_label(key[1], pts[-1][4]), fontsize=7)
        ax.tick_params(labelsize=6)
        ax.set_ylim(0, 1.15 * max([p[1] for p in pts] + ks))
        ax.set_xlim(first - pad, last + pad)
        ax.legend(fontsize=6, loc="best")
        fig.autofmt_xdate()
    for ax in [a for r in axes for a in r][len(keys):]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(out)
    log(f"plot: {len(keys)} goal(s) from {len(read(path))} run(s) drawn to {out}")
    return out
