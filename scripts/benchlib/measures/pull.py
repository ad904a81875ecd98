"""Pull from a loopback docker-registry against skopeo copy; the peak-RSS rows."""

import json
import os
import socket
import subprocess
import time
import urllib.error
import urllib.request

from ..build import stage_problem
from ..config import BIN, MT_MANIFEST
from ..fixtures import layout_manifest
from ..proc import CLEANUP, NotRunnable, base_env, kill_pid, log, must
from ..report import Goal, Row, Series


class PullMeasures:
    def start_registry(self):
        data = os.path.join(self.work, "registry-data")
        os.makedirs(data, exist_ok=True)
        d = self.sub("registry")
        for attempt in range(5):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
            s.close()
            cfg = os.path.join(d, f"config-{port}.yml")
            with open(cfg, "w") as f:
                f.write(
                    "version: 0.1\nlog: {level: warn}\n"
                    f"storage: {{filesystem: {{rootdirectory: {data}}}, delete: {{enabled: true}}}}\n"
                    f"http: {{addr: 127.0.0.1:{port}}}\n"
                )
            logf = open(os.path.join(d, f"registry-{port}.log"), "wb")
            p = subprocess.Popen(["docker-registry", "serve", cfg], stdout=logf, stderr=logf, stdin=subprocess.DEVNULL, start_new_session=True)
            CLEANUP.push(self.stop_registry, p)
            for _ in range(100):
                if p.poll() is not None:
                    break
                try:
                    urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/", timeout=1).read()
                    return port
                except (urllib.error.URLError, ConnectionError, OSError):
                    time.sleep(0.05)
            self.stop_registry(p)
        raise NotRunnable("docker-registry did not start (see WORK/run.*/registry/*.log)")

    @staticmethod
    def stop_registry(p):
        if p.poll() is None:
            kill_pid(p.pid)
        p.wait()

    def registry_has(self, port, digest):
        req = urllib.request.Request(
            f"http://127.0.0.1:{port}/v2/bench/manifests/latest",
            method="HEAD",
            headers={"Accept": MT_MANIFEST},
        )
        try:
            with urllib.request.urlopen(req, timeout=5) as r:
                return r.headers.get("Docker-Content-Digest") == digest
        except (urllib.error.URLError, OSError):
            return False

    def pull(self):
        n = self.n(True)
        ours, skopeo = Series("oci-fetch"), Series("skopeo copy")
        try:
            port = self.start_registry()
        except NotRunnable as e:
            ours.fail(str(e))
            skopeo.fail(str(e))
            port = None
        if port is not None:
            _, digest = layout_manifest(self.big)
            if not self.registry_has(port, digest):
                log("pull: pushing the big image to the loopback registry (one-time)")
                must(["skopeo", "copy", "-q", "--dest-tls-verify=false", f"oci:{self.big}:latest", f"docker://127.0.0.1:{port}/bench:latest"])
            ref = f"docker://127.0.0.1:{port}/bench:latest"
            prob = stage_problem("oci-fetch")
            if prob:
                ours.fail(prob)
            log(f"pull: {n} runs each, interleaved, after 1 warm-up round")

            def run_ours(i):
                c = self.sub("pull", f"cache-{i}", mode=0o700)
                cmd = [os.path.join(BIN, "oci-fetch"), "--no-https", ref]
                r = self.sample(ours, cmd, env=base_env(SINGULARITY_CACHEDIR=c), capture=True)
                if r is None:
                    return
                try:
                    got = json.loads(r.stdout.decode().strip().splitlines()[-1]).get("digest")
                except (ValueError, IndexError):
                    got = None
                if got != digest:
                    ours.fail(f"oci-fetch's image record names digest {got}, not the pushed {digest}")
                elif not self.warming:
                    self.fetch_rss.samples.append(r.maxrss_kib)

            def run_skopeo(i):
                dest = os.path.join(self.scratch, "pull", f"skopeo-{i}")
                self.sample(skopeo, ["skopeo", "copy", "-q", "--src-tls-verify=false", ref, f"oci:{dest}:latest"])

            self.interleave(n, [run_ours, run_skopeo], 1)
        if ours.error:
            self.fetch_rss.fail(ours.error)
        self.rows.append(Row("pull from loopback registry (empty cache)", ours, [skopeo], [Goal("ratio", 0.5, "skopeo copy", "<= 0.5x skopeo")]))

    def rss_rows(self):
        for s, why in ((self.fetch_rss, "pull"), (self.unpack_rss, "cold-unpack")):
            if not s.samples and s.error is None:
                s.fail(f"needs the {why} measure")
            # The goal holds for the worst run, not the median.
            worst = Series(s.label, unit="rss")
            worst.error = s.error
            worst.samples = [max(s.samples)] if s.samples else []
            self.rows.append(Row(f"{s.label} (max of {len(s.samples)} runs)", worst, [], [Goal("atmost", 32 * 1024, text="<= 32 MiB")]))
