"""Concurrent cold execs on one empty cache, plainly and under srun."""

import os
import shutil
import signal
import subprocess
import tempfile
import time

from ..build import stage_problem
from ..config import CONCURRENCY, FRONT, REPO, TIMEOUT
from ..proc import CLEANUP, base_env, kill_group, log, timed
from ..report import Goal, Row, Series


def slurm_problem(conf):
    """Why srun cannot be used with SLURM_CONF=CONF (None: default), or None when it can."""
    if not shutil.which("srun"):
        return "srun not installed (slurm-wlm)"
    env = dict(base_env())
    if conf:
        env["SLURM_CONF"] = conf
    r = timed(["sinfo", "-h", "-o", "%T"], env=env, capture=True, timeout=15)
    if r.rc != 0:
        return f"no Slurm cluster answers (sinfo: {r.last_err()}); start one and set SLURM_CONF"
    if not any(st.startswith(("idle", "mix", "alloc")) for st in r.stdout.decode().split()):
        return f"no usable Slurm node (sinfo states: {r.stdout.decode().split() or 'none'})"
    return None


def run_concurrently(cmd, count, env, cwd):
    """Start COUNT copies at once; wall time until the last one ends, or the first error."""
    errs = []
    with tempfile.TemporaryFile() as errf:
        t0 = time.perf_counter()
        procs = [
            subprocess.Popen(cmd, env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=errf, start_new_session=True)
            for _ in range(count)
        ]
        try:
            rcs = [p.wait(timeout=max(1.0, TIMEOUT - (time.perf_counter() - t0))) for p in procs]
        except BaseException as e:
            for p in procs:
                kill_group(p.pid, signal.SIGTERM)
            time.sleep(0.2)
            for p in procs:
                kill_group(p.pid, signal.SIGKILL)
                p.wait()
            if isinstance(e, subprocess.TimeoutExpired):
                return time.perf_counter() - t0, f"timed out after {TIMEOUT:.0f} s"
            raise
        t = time.perf_counter() - t0
        bad = [rc for rc in rcs if rc != 0]
        if bad:
            errf.seek(0)
            lines = [l for l in errf.read().decode(errors="replace").splitlines() if l.strip()]
            fatal = [l for l in lines if l.startswith("FATAL")]
            errs.append(f"{len(bad)}/{count} failed: " + ((fatal or lines or ["?"])[-1]))
    return t, (errs[0] if errs else None)


class ConcurrencyMeasures:
    def slurm_cluster(self):
        """A Slurm cluster for the srun rows: the caller's ($SLURM_CONF or the system's), else a
        private one-node cluster started with tests/slurm/cluster and stopped at the end.
        Returns why there is none, or None (self.slurm_conf is then set)."""
        self.slurm_conf = os.environ.get("SLURM_CONF") or None
        problem = slurm_problem(self.slurm_conf)
        if problem is None:
            return None
        script = os.path.join(REPO, "tests", "slurm", "cluster")
        if not os.access(script, os.X_OK):
            return problem
        d = os.path.join(self.scratch, "slurm")
        log("concurrent: starting a private Slurm cluster (tests/slurm/cluster)")
        CLEANUP.push(timed, [script, "stop", d], base_env(), REPO)
        r = timed([script, "start", d, str(os.getpid())], env=base_env(), cwd=REPO, capture=True, timeout=120)
        confs = [l.split("=", 1)[1] for l in r.stdout.decode().splitlines() if l.startswith("SLURM_CONF=")]
        if r.rc != 0 or not confs:
            return f"tests/slurm/cluster start: {r.last_err()}"
        self.slurm_conf = confs[-1]
        return slurm_problem(self.slurm_conf)

    def concurrent(self):
        """N cold execs of one image on one empty cache, started at once, against one cold exec:
        plainly, and under srun when a Slurm cluster answers."""
        n = self.n(True)
        image = f"oci:{self.big}:latest"
        cmd = [FRONT, "exec", image, "true"]
        prob = stage_problem("oci-fetch", "oci-unpack", "oci-mkspec", "oci-userns-starter", "oci-runtime-shim")
        one = Series("one cold exec")
        many = {k: Series(f"{k} concurrent cold execs") for k in CONCURRENCY}
        srun_one = Series("srun -n 1 cold exec")
        srun_many = {k: Series(f"srun -n {k} cold execs") for k in CONCURRENCY}
        srun_problem = prob or self.slurm_cluster()
        for series in [one, *many.values()]:
            if prob:
                series.fail(prob)
        for series in [srun_one, *srun_many.values()]:
            if srun_problem:
                series.fail(srun_problem)

        def fresh(tag, i):
            c = self.sub("conc", f"{tag}-{i}", mode=0o700)
            env = base_env(SINGULARITY_CACHEDIR=c, TMPDIR=self.sub("conc", f"{tag}-{i}-tmp"))
            if self.slurm_conf:
                env["SLURM_CONF"] = self.slurm_conf
            return c, env

        def run_one(i):
            if one.error is None:
                c, env = fresh("one", i)
                self.sample(one, cmd, env=env, cwd=c)

        def run_many(i, k):
            if many[k].error is None:
                c, env = fresh(f"many{k}", i)
                t, err = run_concurrently(cmd, k, env, c)
                if err:
                    many[k].fail(err)
                else:
                    many[k].samples.append(t)

        def run_srun(i, k, series):
            if series.error is None:
                c, env = fresh(f"srun{k}", i)
                # -O: a 2-core node takes more tasks than it has CPUs.
                self.sample(series, ["srun", "-O", "-n", str(k)] + cmd, env=env, cwd=c)

        jobs = [run_one] + [lambda i, k=k: run_many(i, k) for k in CONCURRENCY]
        if not srun_problem:
            jobs.append(lambda i: run_srun(i, 1, srun_one))
            jobs += [lambda i, k=k: run_srun(i, k, srun_many[k]) for k in CONCURRENCY]
        log(f"concurrent: {n} runs each, interleaved")
        self.interleave(n, jobs)
        for k in CONCURRENCY:
            if one.error and not many[k].error:
                many[k].fail(f"single cold exec: {one.error}")
            self.rows.append(Row(f"{k} concurrent cold exec (empty cache, big image)", many[k], [one], [Goal("ratio", 1.5, one.label, "<= 1.5x one cold exec")]))
        for k in CONCURRENCY:
            self.rows.append(Row(f"srun -n {k} cold exec (empty cache, big image)", srun_many[k], [srun_one], [Goal("ratio", 1.5, srun_one.label, "<= 1.5x srun -n 1")]))
