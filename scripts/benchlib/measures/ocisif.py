"""Writing an OCI-SIF of the big image (`oci-fetch --save-oci-sif`, what `pull --name` and
`build` run), its layers squashed into one squashfs, against mksquashfs of the same tree by
hand: nearly all of either is squashfs-tools' gzip compression."""

import json
import os
import shutil

from ..build import stage_problem
from ..config import BIN
from ..proc import NotRunnable, base_env, check, log
from ..report import Goal, Row, Series


class OciSifMeasures:
    def oci_sif_write(self):
        for tool in ("sqfstar", "mksquashfs"):
            if shutil.which(tool) is None:
                raise NotRunnable(f"{tool} missing (scripts/setup installs squashfs-tools)")
        prob = stage_problem("oci-fetch", "oci-unpack")
        if prob:
            raise NotRunnable(prob)
        cache = self.sub("oci-sif-write", "cache", mode=0o700)
        env = base_env(SINGULARITY_CACHEDIR=cache)
        image = f"oci:{self.big}:latest"
        # The image in the cache (nothing is fetched while timed) and its tree for the reference.
        unpacked = check(["sh", "-c", f'"{BIN}/oci-fetch" "$1" | "{BIN}/oci-unpack"', "sh", image],
                         "oci-unpack of the big image", env=env, capture=True)
        tree = json.loads(unpacked.stdout.decode().strip().splitlines()[-1])["rootfs"]
        # Every output stays until the run's end, as everything the bench writes (deletes
        # distort timings).
        d = self.sub("oci-sif-write", "out")
        ours, ref = Series("oci-fetch --save-oci-sif"), Series("mksquashfs of the tree")

        def run_ours(i):
            out = os.path.join(d, f"ours-{i}.sif")
            self.sample(ours, [os.path.join(BIN, "oci-fetch"), "--save-oci-sif", out, image], env=env)

        def run_ref(i):
            out = os.path.join(d, f"ref-{i}.sqfs")
            self.sample(ref, ["mksquashfs", tree, out, "-comp", "gzip", "-quiet", "-no-progress", "-noappend"])

        n = self.n(True)
        log(f"oci-sif-write: {n} runs each, interleaved")
        self.interleave(n, [run_ours, run_ref])
        self.rows.append(Row("OCI-SIF write of the big image (layers squashed)", ours, [ref],
                             [Goal("ratio", 1.2, "mksquashfs of the tree", "<= 1.2x mksquashfs of the tree")]))
