"""One bench run: its options, its scratch directory, the rows measured so far, and how
commands are sampled (interleaved rounds, warm-up rounds, idle time)."""

import os
import subprocess
import tempfile
import time

from .config import BIN, DELETED_STAMP, INODE_RECENCY
from .fixtures import build_big, build_bundle_rootfs, build_busybox
from .proc import CLEANUP, base_env, bench_alive, check, fresh_dir, log, remove_tree, timed
from .report import Series


class Session:
    def __init__(self, opts):
        self.opts = opts
        self.work = opts.workdir
        os.makedirs(self.work, exist_ok=True)
        os.chmod(self.work, 0o755)
        self.remove_leftovers()
        self.scratch = tempfile.mkdtemp(prefix=f"run.{os.getpid()}.", dir=self.work)
        os.chmod(self.scratch, 0o755)
        CLEANUP.push(self.remove_scratch)
        self.rows = []
        self.counter = 0
        self.warming = False
        self.unpack_rss = Series("peak RSS oci-unpack", unit="rss")
        self.fetch_rss = Series("peak RSS oci-fetch", unit="rss")
        self.busybox = None
        self.warm_cache = None
        self.slurm_conf = None
        self.big = None
        self.rootfs = None

    def remove_scratch(self):
        log(f"removing {self.scratch} (slow: the disk mounts with discard)")
        remove_tree(self.scratch)
        self.deleted_now()

    def deleted_now(self):
        """After deleting trees: let the discards finish now rather than slow down whatever runs
        next, and note the time for settle_after_deletes (the next run's too)."""
        subprocess.run(["sync"])
        with open(os.path.join(self.work, DELETED_STAMP), "w") as f:
            f.write(f"{time.time()}\n")

    def settle_after_deletes(self):
        """Wait until inodes this bench freed are old enough to be reused (INODE_RECENCY):
        before that, every file a cold measure creates costs a search past them."""
        try:
            with open(os.path.join(self.work, DELETED_STAMP)) as f:
                when = float(f.read().strip())
        except (OSError, ValueError):
            return
        wait = when + INODE_RECENCY - time.time()
        if wait > 0:
            log(f"waiting {wait:.0f} s: trees deleted {INODE_RECENCY - wait:.0f} s ago slow down file creation on this disk")
            time.sleep(wait)

    def remove_leftovers(self):
        """Scratch trees of an earlier run that was killed before it could clean up (deleting
        them slows file creation down for a while: settle_after_deletes waits for that)."""
        old = [e for e in os.listdir(self.work) if e.startswith("run.") and not bench_alive(e)]
        if not old:
            return
        log(f"removing {len(old)} leftover scratch dir(s) of an earlier run")
        for e in old:
            remove_tree(os.path.join(self.work, e))
        self.deleted_now()

    def n(self, heavy):
        if self.opts.runs:
            return self.opts.runs
        if self.opts.quick:
            return 3 if heavy else 10
        return 5 if heavy else 30

    def uid(self, prefix):
        self.counter += 1
        return f"{prefix}-{os.getpid()}-{self.counter}"

    def sub(self, *parts, owner=None, mode=0o755):
        return fresh_dir(os.path.join(self.scratch, *parts), owner=owner, mode=mode)

    def fixtures(self):
        self.busybox = build_busybox(self.work)
        self.rootfs = build_bundle_rootfs(self.work, self.busybox)
        if self.wants("cold-unpack", "warm-unpack", "pull", "rss", "concurrent", "sif", "oci-sif-write"):
            self.big = build_big(self.work, self.busybox)

    def wants(self, *names):
        return any(n in self.opts.only for n in names)

    def interleave(self, n, jobs, warmup=0, settle=0.0):
        """Run each job once per round, N rounds after WARMUP untimed ones; the order rotates
        every round so no command always runs straight after the same other one. SETTLE seconds
        of idle time go before each job."""
        for i in range(warmup + n):
            self.warming = i < warmup
            k = i % len(jobs)
            for job in jobs[k:] + jobs[:k]:
                if settle:
                    time.sleep(settle)
                job(i)
        self.warming = False

    def sample(self, series, cmd, after_sync=False, **kw):
        """Time CMD once into SERIES (not while warming up); the Result, or None on failure.
        AFTER_SYNC: first write back everything dirty (untimed), so a cold sample does not pay
        for the tree the command before it left in memory: oci-unpack syncs its tree before
        publishing it, and a `syncfs` writes back the whole filesystem; the anchors never sync,
        and the flusher writing their trees back competes with whatever runs next."""
        if series.error is not None:
            return None
        if after_sync:
            subprocess.run(["sync"])
        r = timed(cmd, **kw)
        if r.rc != 0:
            series.fail(r.last_err())
            return None
        if not self.warming:
            series.samples.append(r.seconds)
        return r

    def delete_all(self, prefix, root, user):
        """Remove any container left in a runtime state root (after an interrupt)."""
        if not os.path.isdir(root):
            return
        r = timed(prefix + ["--root", root, "list", "-q"], user=user, capture=True, env=base_env())
        for cid in r.stdout.decode().split():
            timed(prefix + ["--root", root, "delete", "-f", cid], user=user, env=base_env())

    def fetch_record(self, cachedir, image, what):
        r = check(
            [os.path.join(BIN, "oci-fetch"), image],
            what,
            env=base_env(SINGULARITY_CACHEDIR=cachedir),
            capture=True,
        )
        return r.stdout
