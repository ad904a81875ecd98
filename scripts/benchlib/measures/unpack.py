"""Cold and warm oci-unpack of the big image, against umoci unpack and tar -xzf."""

import json
import os
import shlex

from ..build import stage_problem
from ..config import BIN, WARMUP
from ..fixtures import blob_path, layout_manifest
from ..proc import NotRunnable, base_env, check, log, must
from ..report import Goal, Row, Series


def rootfs_problem(stdout, cached):
    """Check that an oci-unpack run really did what is being timed; a reason if not."""
    try:
        rec = json.loads(stdout.decode().strip().splitlines()[-1])
    except (ValueError, IndexError):
        return "oci-unpack printed no rootfs record"
    if bool(rec.get("cached")) != cached:
        return f"oci-unpack reported cached={rec.get('cached')} (expected {cached})"
    root = rec.get("rootfs") or ""
    for p in ("bin/busybox", "usr"):
        if not os.path.lexists(os.path.join(root, p)):
            return f"oci-unpack's rootfs {root} lacks /{p}"
    return None


class UnpackMeasures:
    def cold_unpack(self):
        n = self.n(True)
        ours = self.unpack_rss_series = Series("oci-unpack")
        umoci, tar = Series("umoci unpack"), Series("tar -xzf")
        image = f"oci:{self.big}:latest"
        manifest, _ = layout_manifest(self.big)
        layers = [blob_path(self.big, l["digest"]) for l in manifest["layers"]]
        size = sum(l["size"] for l in manifest["layers"])
        master = self.sub("unpack", "master-cache", mode=0o700)
        prob = stage_problem("oci-fetch", "oci-unpack")
        if prob:
            ours.fail(prob)
        else:
            try:
                self.fetch_record(master, image, "oci-fetch (to fill the cache)")
            except NotRunnable as e:
                ours.fail(str(e))
        self.warm_cache = None
        log(f"cold-unpack: {n} runs each, interleaved ({len(layers)} layers, {size / 1e6:.0f} MB gz)")
        def run_ours(i):
            if ours.error is not None:
                return
            # A fresh cache holding the same blobs as hard links (no data written), and the
            # image record for it (a warm fetch, untimed).
            c = os.path.join(self.scratch, "unpack", f"cache-{i}")
            must(["cp", "-al", master, c])
            rec = os.path.join(self.scratch, "unpack", f"image-{i}.json")
            try:
                with open(rec, "wb") as f:
                    f.write(self.fetch_record(c, image, "oci-fetch (warm, untimed)"))
            except NotRunnable as e:
                ours.fail(str(e))
                return
            r = self.sample(
                ours,
                [os.path.join(BIN, "oci-unpack"), "--input", rec],
                env=base_env(SINGULARITY_CACHEDIR=c),
                capture=True,
                after_sync=True,
            )
            if r is not None:
                problem = rootfs_problem(r.stdout, cached=False)
                if problem:
                    ours.fail(problem)
                    return
                self.unpack_rss.samples.append(r.maxrss_kib)
                self.warm_cache = (c, rec)

        def run_umoci(i):
            dest = os.path.join(self.scratch, "unpack", f"umoci-{i}")
            self.sample(umoci, ["umoci", "unpack", "--image", f"{self.big}:latest", dest], after_sync=True)

        def run_tar(i):
            dest = os.path.join(self.scratch, "unpack", f"tar-{i}")
            script = f"mkdir {shlex.quote(dest)}" + "".join(
                f" && tar -xzf {shlex.quote(l)} -C {shlex.quote(dest)}" for l in layers
            )
            self.sample(tar, ["sh", "-c", script], after_sync=True)

        self.interleave(n, [run_ours, run_umoci, run_tar])
        if ours.error:
            self.unpack_rss.fail(ours.error)
        self.rows.append(
            Row(
                f"cold unpack ({len(layers)} layers, {size / 1e6:.0f} MB gz)",
                ours,
                [umoci, tar],
                [
                    Goal("ratio", 1.0, "tar -xzf", "<= 1.0x tar -xzf"),
                    Goal("faster", 3.0, "umoci unpack", ">= 3x faster than umoci"),
                ],
            )
        )

    def warm_unpack(self):
        ours = Series("oci-unpack (warm)")
        n = max(self.n(False), 10)
        if self.warm_cache is None:
            # Without a cold-unpack run before, unpack once (untimed) into a fresh cache.
            prob = stage_problem("oci-fetch", "oci-unpack")
            try:
                if prob:
                    raise NotRunnable(prob)
                c = self.sub("warm-unpack", "cache", mode=0o700)
                rec = os.path.join(self.scratch, "warm-unpack", "image.json")
                with open(rec, "wb") as f:
                    f.write(self.fetch_record(c, f"oci:{self.big}:latest", "oci-fetch"))
                check([os.path.join(BIN, "oci-unpack"), "--input", rec], "oci-unpack (cold, untimed)", env=base_env(SINGULARITY_CACHEDIR=c))
                self.warm_cache = (c, rec)
            except NotRunnable as e:
                ours.fail(str(e))
        if ours.error is None:
            c, rec = self.warm_cache
            log(f"warm-unpack: {n} runs, after {WARMUP} warm-up run(s)")
            cmd = [os.path.join(BIN, "oci-unpack"), "--input", rec]

            def run(_i):
                r = self.sample(ours, cmd, env=base_env(SINGULARITY_CACHEDIR=c), capture=True)
                problem = r and rootfs_problem(r.stdout, cached=True)
                if problem:
                    ours.fail(problem)

            self.interleave(n, [run], WARMUP)
        self.rows.append(Row("warm (cached) oci-unpack, big image", ours, [], [Goal("below", 0.005, text="< 5 ms")]))
