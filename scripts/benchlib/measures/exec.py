"""Warm exec (root and the test user) against bare crun/runc and podman; native SIF exec."""

import json
import os
import shlex
import shutil
import subprocess

from ..build import stage_problem
from ..config import FRONT, SETTLE, WARMUP
from ..fixtures import blob_path, build_big_sif, crun_prefix, layout_manifest, make_bundle, runc_prefix
from ..proc import CLEANUP, fresh_dir, NotRunnable, base_env, check, log, must, podman_cgroups, remove_empty_cgroups, timed, user_ids
from ..report import Goal, Row, Series


class ExecMeasures:
    def warm_exec(self, user=None):
        name = "warm-exec-user" if user else "warm-exec"
        who = f"as {user}" if user else "as root"
        n = self.n(False)
        rootless = user is not None
        d = self.sub(name, owner=user)
        if user:
            _, _, home = user_ids(user)
        else:
            home = "/root"
        tmp = self.sub(name, "tmp", owner=user, mode=0o700)
        cache = self.sub(name, "cache", owner=user, mode=0o700)
        # A logged-in user's runtime directory (logind's /run/user/UID: a tmpfs of the user's,
        # 0700), where our state root and bundle go by default and where a rootless runtime
        # keeps its state: ours and the anchors keep their state there alike.
        rundir = self.runtime_dir(name, user)
        state = os.path.join(rundir, "singularity-oci")
        env = base_env(home, SINGULARITY_CACHEDIR=cache, TMPDIR=tmp, XDG_RUNTIME_DIR=rundir, SINGULARITY_OCI_STATE_ROOT=state, SINGULARITY_OCI_RUNTIME="crun")
        image = f"oci:{self.busybox}:latest"
        ours = Series("singularity-oci exec")
        ours_runc = Series("singularity-oci exec (runc)")
        crun, runc = Series("crun run"), Series("runc run")
        podman = Series("podman run --rm")
        bundle = make_bundle(os.path.join(d, "bundle"), rootless, self.rootfs)
        crun_root = fresh_dir(os.path.join(rundir, "crun"), owner=user, mode=0o700)
        runc_root = fresh_dir(os.path.join(rundir, "runc"), owner=user, mode=0o700)
        CLEANUP.push(self.delete_all, crun_prefix(rootless), crun_root, user)
        CLEANUP.push(self.delete_all, runc_prefix(rootless), runc_root, user)

        def ours_cmd():
            return [FRONT, "exec", image, "true"]

        env_runc = dict(env, SINGULARITY_OCI_RUNTIME="runc")
        prob = stage_problem("oci-fetch", "oci-unpack", "oci-mkspec", "oci-userns-starter", "oci-runtime-shim")
        for s, e in ((ours, env), (ours_runc, env_runc)):
            if prob:
                s.fail(prob)
                continue
            # Warm the cache (untimed); a failure here says which stage is not there yet.
            r = timed(ours_cmd(), env=e, cwd=d, user=user)
            if r.rc != 0:
                s.fail(r.last_err())
        podman_cmd = None if rootless else self.podman_setup(podman)
        def crun_cmd():
            return crun_prefix(rootless) + ["--root", crun_root, "run", "-b", bundle, self.uid("c")]

        log(f"{name}: {n} runs each, interleaved, {SETTLE * 1000:.0f} ms idle before each, after {WARMUP} warm-up round(s)")
        jobs = [
            lambda _i: self.sample(ours, ours_cmd(), env=env, cwd=d, user=user),
            lambda _i: self.sample(ours_runc, ours_cmd(), env=env_runc, cwd=d, user=user),
            lambda _i: self.sample(crun, crun_cmd(), env=base_env(home), cwd=d, user=user),
            lambda _i: self.sample(runc, runc_prefix(rootless) + ["--root", runc_root, "run", "-b", bundle, self.uid("r")], env=base_env(home), cwd=d, user=user),
        ]
        if podman_cmd:
            jobs.append(lambda _i: self.sample(podman, podman_cmd, env=self.podman_env, cwd=d))
        self.interleave(n, jobs, WARMUP, settle=SETTLE)
        # The same two commands back to back, for comparison (see SETTLE).
        ours_b2b, crun_b2b = Series("singularity-oci exec"), Series("crun run")
        for s, e in ((ours_b2b, ours), (crun_b2b, crun)):
            if e.error is not None:
                s.fail(e.error)
        log(f"{name}: {n} runs each, back to back")
        self.interleave(n, [
            lambda _i: self.sample(ours_b2b, ours_cmd(), env=env, cwd=d, user=user),
            lambda _i: self.sample(crun_b2b, crun_cmd(), env=base_env(home), cwd=d, user=user),
        ], WARMUP)
        # Unprivileged, the anchor is a rootless spec run by crun inside `unshare -U -r -m` with
        # the cgroup fix (crun_prefix), the same 100 ms idle before each sample.
        if rootless:
            goals = [Goal("ratio", 1.5, "crun run", "<= 1.5x bare rootless crun")]
        else:
            goals = [Goal("ratio", 2.0, "crun run", "<= 2.0x bare crun")]
        anchors = [crun, runc]
        if not rootless:
            goals.append(Goal("faster", 5.0, "podman run --rm", ">= 5x faster than podman"))
            anchors.append(podman)
        self.rows.append(Row(f"warm exec `true` ({who}, crun)", ours, anchors, goals))
        self.rows.append(
            Row(f"warm exec `true` ({who}, runc)", ours_runc, [runc], [], note="informational")
        )
        self.rows.append(
            Row(f"warm exec `true` ({who}, crun), back to back", ours_b2b, [crun_b2b], [],
                note="informational: no idle time between runs")
        )

    def runtime_dir(self, name, user):
        """A tmpfs of USER's (root when None), mode 0700, unmounted when the bench ends."""
        d = self.sub(name, "run-user")
        uid, gid = (user_ids(user)[:2]) if user else (0, 0)
        must(["mount", "-t", "tmpfs", "-o", f"mode=0700,uid={uid},gid={gid},size=64m", "tmpfs", d])
        CLEANUP.push(lambda: subprocess.run(["umount", "-l", d], check=False))
        return d

    def sif_cold(self, sif, tag):
        """Cold `exec SIF true` (a fresh cache each run) and `unsquashfs -d` of its partition,
        interleaved; returns both series and the partition's size."""
        probe = self.sub("sif", f"probe-{tag}", mode=0o700)
        rec = json.loads(self.fetch_record(probe, sif, f"oci-fetch of {os.path.basename(sif)}"))
        offset, size = rec["sif"]["objects"][0]["offset"], rec["sif"]["objects"][0]["size"]
        d = self.sub("sif", tag)
        cold = Series(f"singularity-oci exec {os.path.basename(sif)} (cold)")
        unsq = Series("unsquashfs -d")

        def run_cold(i):
            c = self.sub("sif", f"{tag}-cache-{i}", mode=0o700)
            self.sample(cold, [FRONT, "exec", sif, "true"], env=base_env(SINGULARITY_CACHEDIR=c, SINGULARITY_OCI_RUNTIME="crun"), cwd=d, after_sync=True)

        def run_unsquashfs(i):
            self.sample(unsq, ["unsquashfs", "-quiet", "-no-progress", "-o", str(offset), "-d", os.path.join(d, f"unsq-{i}"), sif], after_sync=True)

        n = self.n(True)
        log(f"sif: cold, {tag}, {n} runs each, interleaved")
        self.interleave(n, [run_cold, run_unsquashfs])
        return cold, unsq, size

    def podman_setup(self, series):
        """podman with private storage and a containers.conf of its own: cgroupfs (no systemd
        here), events to a file, no network, and ulimits below the host's hard limits (podman's
        defaults exceed them and every container fails)."""
        if not shutil.which("podman"):
            series.fail("podman not installed")
            return None
        pd = os.path.join(self.work, "podman")
        os.makedirs(pd, exist_ok=True)
        # podman leaves empty libpod_parent cgroups behind: remove the ones
        # it creates here.
        fresh = [c for c in podman_cgroups() if not os.path.exists(c)]
        CLEANUP.push(remove_empty_cgroups, fresh)
        conf = os.path.join(pd, "containers.conf")
        with open(conf, "w") as f:
            f.write(
                '[engine]\ncgroup_manager="cgroupfs"\nevents_logger="file"\n'
                f'events_logfile_path="{pd}/events.log"\nruntime="runc"\n'
                '[containers]\ndefault_ulimits=["nofile=20000:20000","nproc=4096:4096"]\nnetns="none"\n'
            )
        self.podman_env = base_env(CONTAINERS_CONF=conf)
        p = ["podman", "--root", f"{pd}/storage", "--runroot", f"{pd}/run", "--tmpdir", f"{pd}/tmp"]
        r = timed(p + ["pull", "-q", f"oci:{self.busybox}:latest"], env=self.podman_env, capture=True)
        if r.rc != 0:
            series.fail(f"podman pull: {r.last_err()}")
            return None
        image = r.stdout.decode().strip().splitlines()[-1]
        cmd = p + ["run", "--rm", "--pull=never", image, "true"]
        if timed(cmd, env=self.podman_env).rc != 0:
            series.fail(f"podman run: {timed(cmd, env=self.podman_env).last_err()}")
            return None
        return cmd

    def sif(self):
        """Cold exec of a SIF against unsquashfs of its partition; warm exec of the SIF against
        warm exec of the same tree from its OCI layout."""
        for tool in ("sqfstar", "siftool", "unsquashfs"):
            if shutil.which(tool) is None:
                raise NotRunnable(f"{tool} missing (scripts/setup installs squashfs-tools and siftool)")
        manifest, _ = layout_manifest(self.busybox)
        layer = blob_path(self.busybox, manifest["layers"][0]["digest"])
        d = self.sub("sif")
        part, sif = os.path.join(d, "busybox.sqfs"), os.path.join(d, "busybox.sif")
        must(["sh", "-c", f"gzip -dc {shlex.quote(layer)} | sqfstar -quiet -no-progress -comp gzip {shlex.quote(part)}"])
        must(["siftool", "new", sif])
        must(["siftool", "add", "--datatype", "4", "--parttype", "2", "--partfs", "1",
              "--partarch", {"aarch64": "4"}.get(os.uname().machine, "2"), "--groupid", "1", sif, part])
        cold, unsq, _ = self.sif_cold(sif, "busybox")
        # 1 MB of squashfs unpacks faster than any container starts: informational.
        self.rows.append(Row("cold exec of a native SIF (busybox)", cold, [unsq], [],
                             note="informational: the container start alone outlasts unsquashfs of 1 MB"))
        # The big image's tree, where unpacking, not the container start, is what costs.
        cold, unsq, size = self.sif_cold(build_big_sif(self.work, self.big), "big")
        self.rows.append(Row(f"cold exec of a native SIF (big image, {size / 1e6:.0f} MB gzip squashfs)", cold, [unsq],
                             [Goal("ratio", 1.0, "unsquashfs -d", "<= 1.0x unsquashfs -d")]))
        warm, oci = Series("singularity-oci exec X.sif"), Series("singularity-oci exec oci:")
        c = self.sub("sif", "warm-cache", mode=0o700)
        env = base_env(SINGULARITY_CACHEDIR=c, SINGULARITY_OCI_RUNTIME="crun")
        image = f"oci:{self.busybox}:latest"
        for cmd in ([FRONT, "exec", sif, "true"], [FRONT, "exec", image, "true"]):
            check(cmd, "warm-up", env=env, cwd=d)
        n = self.n(False)
        log(f"sif: warm, {n} runs each, interleaved, {SETTLE * 1000:.0f} ms idle before each")
        self.interleave(n, [
            lambda _i: self.sample(warm, [FRONT, "exec", sif, "true"], env=env, cwd=d),
            lambda _i: self.sample(oci, [FRONT, "exec", image, "true"], env=env, cwd=d),
        ], WARMUP, settle=SETTLE)
        self.rows.append(Row("warm exec of a native SIF (busybox)", warm, [oci], [Goal("ratio", 1.3, "singularity-oci exec oci:", "<= 1.3x the OCI layout")]))
