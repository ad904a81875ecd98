"""The detached lifecycle (oci-conmon-create, start, exit, delete) against conmon driven
directly."""

import json
import os
import shutil
import subprocess
import tempfile
import time

from ..build import stage_problem
from ..config import BIN, CGROUP_CONTROLLERS, TEST_USER, WARMUP
from ..fixtures import crun_prefix, host_needs_cgroup_fix, make_bundle, runc_prefix
from ..proc import CLEANUP, NotRunnable, base_env, check, log, timed, user_ids
from ..report import Goal, Row, Series


def wait_for_file(path, timeout=20.0):
    deadline = time.perf_counter() + timeout
    while not os.path.exists(path):
        if time.perf_counter() > deadline:
            raise NotRunnable(f"the container did not exit within {timeout:.0f} s ({path} missing)")
        time.sleep(0.0005)


class LifecycleMeasures:
    def lifecycle(self):
        n = self.n(False)
        log(f"lifecycle: {n} runs each, interleaved, after {WARMUP} warm-up round(s)")
        variants = [("crun", None), ("runc", None)]
        try:
            user_ids(TEST_USER)
            variants.append(("crun", TEST_USER))
        except KeyError:
            missing = Series("oci-conmon-create/shim")
            missing.fail(f"user {TEST_USER} missing (run scripts/setup)")
            self.rows.append(Row("detached lifecycle (unprivileged)", missing, []))
        for runtime, user in variants:
            tag = f"{runtime}-{user or 'root'}"
            who = f"as {user}" if user else "as root"
            ours = Series(f"oci-conmon-create/shim ({runtime})")
            bare = Series(f"bare conmon + {runtime}")
            prob = stage_problem("oci-conmon-create", "oci-runtime-shim", "oci-userns-starter")
            if prob:
                ours.fail(prob)
            d = self.sub(f"life-{tag}", owner=user)
            ctx = {
                "user": user,
                "runtime": runtime,
                "dir": d,
                "home": user_ids(user)[2] if user else "/root",
                "state": self.sub(f"life-{tag}", "state", owner=user, mode=0o700),
                "tmp": self.sub(f"life-{tag}", "tmp", owner=user, mode=0o700),
                "rroot": self.sub(f"life-{tag}", "runtime-root", owner=user, mode=0o700),
                "exits": self.sub(f"life-{tag}", "exits", owner=user),
                "socks": self.sub(f"life-{tag}", "socks", owner=user),
            }
            ctx["prefix"] = crun_prefix(bool(user)) if runtime == "crun" else runc_prefix(bool(user))
            ctx["wrapper"] = self.runtime_wrapper(d, runtime, bool(user))
            CLEANUP.push(self.delete_all, ctx["prefix"], ctx["rroot"], user)

            def run(i, series, fn, ctx=ctx):
                if series.error is None:
                    try:
                        t = fn(ctx, i)
                        if not self.warming:
                            series.samples.append(t)
                    except NotRunnable as e:
                        series.fail(str(e))

            self.interleave(
                n,
                [
                    lambda i, ours=ours, run=run: run(i, ours, self.ours_lifecycle),
                    lambda i, bare=bare, run=run: run(i, bare, self.bare_lifecycle),
                ],
                WARMUP,
            )
            goal = Goal("ratio", 1.3, bare.label, f"<= 1.3x bare conmon+{runtime}")
            self.rows.append(Row(f"detached lifecycle create→start→exit→delete ({who}, {runtime})", ours, [bare], [goal]))

    def runtime_wrapper(self, d, runtime, rootless):
        """The runtime conmon runs. As root, crun needs the hybrid-cgroup fix in its own mount
        namespace; unprivileged, conmon already runs inside `unshare -U -r -m` with the fix."""
        if runtime != "crun" or rootless or not host_needs_cgroup_fix():
            return shutil.which(runtime)
        w = os.path.join(d, "crun-hybrid")
        with open(w, "w") as f:
            f.write(
                "#!/bin/sh\nexec unshare -m --propagation private sh -c "
                f"'mount --bind /dev/null {CGROUP_CONTROLLERS} && exec crun \"$@\"' crun \"$@\"\n"
            )
        os.chmod(w, 0o755)
        return w

    def life_bundle(self, ctx, name):
        b = make_bundle(os.path.join(ctx["dir"], name), bool(ctx["user"]), self.rootfs)
        if ctx["user"]:
            uid, gid, _ = user_ids(ctx["user"])
            os.chown(b, uid, gid)  # conmon puts its FIFOs, pid files and log there
        return b

    def ours_lifecycle(self, ctx, i):
        user, runtime = ctx["user"], ctx["runtime"]
        bundle = self.life_bundle(ctx, f"o-{i}")
        cid = self.uid("life")
        env = base_env(ctx["home"], SINGULARITY_OCI_STATE_ROOT=ctx["state"], SINGULARITY_OCI_RUNTIME=runtime, TMPDIR=ctx["tmp"])
        shim = os.path.join(BIN, "oci-runtime-shim")
        create = [os.path.join(BIN, "oci-conmon-create"), "--bundle", bundle, "--runtime", runtime, cid]
        if user:
            # Unprivileged, conmon lives in the user's outer namespaces (oci-conmon-create(1)).
            create = [os.path.join(BIN, "oci-userns-starter"), "--"] + create
        undo = CLEANUP.push(timed, [shim, "delete", "--force", cid], env, ctx["dir"], user)
        t0 = time.perf_counter()
        r = check(create, "oci-conmon-create", env=env, capture=True, user=user, cwd=ctx["dir"])
        try:
            rec = json.loads(r.stdout.decode().strip().splitlines()[-1])
        except (ValueError, IndexError):
            raise NotRunnable("oci-conmon-create printed no JSON record")
        exit_file = rec.get("exitFile") or os.path.join(rec.get("stateDir", ""), "exit")
        check([shim, "start", cid], "oci-runtime-shim start", env=env, user=user, cwd=ctx["dir"])
        wait_for_file(exit_file)
        check([shim, "delete", cid], "oci-runtime-shim delete", env=env, user=user, cwd=ctx["dir"])
        t = time.perf_counter() - t0
        CLEANUP.drop(undo)
        return t

    def bare_lifecycle(self, ctx, i):
        """conmon driven with the sync/start pipes (as oci-conmon-create does), then start, wait for the
        exit file, delete. Unprivileged, conmon runs inside `unshare -U -r -m` with the crun fix,
        and start/delete in fresh ones (as podman-less rootless users would)."""
        user, runtime, rroot = ctx["user"], ctx["runtime"], ctx["rroot"]
        bundle = self.life_bundle(ctx, f"b-{i}")
        cid = self.uid("bare")
        rt = ctx["prefix"]
        undo = CLEANUP.push(timed, rt + ["--root", rroot, "delete", "-f", cid], base_env(ctx["home"]), ctx["dir"], user)
        t0 = time.perf_counter()
        sync_r, sync_w = os.pipe()
        start_r, start_w = os.pipe()
        env = base_env(ctx["home"], _OCI_SYNCPIPE=sync_w, _OCI_STARTPIPE=start_r, TMPDIR=ctx["tmp"])
        conmon = [
            "conmon", "--api-version", "1", "-c", cid, "-u", cid, "-n", cid,
            "-r", ctx["wrapper"], f"--runtime-arg=--root={rroot}",
            "-b", bundle, "-p", os.path.join(bundle, "pidfile"),
            "-P", os.path.join(bundle, "conmon.pid"),
            "--exit-dir", ctx["exits"], "--socket-dir-path", ctx["socks"],
            "-l", f"k8s-file:{os.path.join(bundle, 'ctr.log')}", "--log-level", "error",
        ]
        if user:
            fix = f"mount --bind /dev/null {CGROUP_CONTROLLERS} && " if runtime == "crun" and host_needs_cgroup_fix() else ""
            conmon = ["unshare", "-U", "-r", "-m", "sh", "-c", fix + 'exec "$@"', "sh"] + conmon
        kw = {}
        if user:
            uid, gid, _ = user_ids(user)
            kw.update(user=uid, group=gid, extra_groups=[])
        with tempfile.TemporaryFile() as errf:
            try:
                p = subprocess.Popen(conmon, env=env, cwd=ctx["dir"], pass_fds=(sync_w, start_r), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=errf, **kw)
            finally:
                os.close(sync_w)
                os.close(start_r)
            os.write(start_w, b"0")
            os.close(start_w)
            with os.fdopen(sync_r, "rb") as f:
                line = f.readline()
            p.wait()
            errf.seek(0)
            err = errf.read().decode(errors="replace").strip()
        try:
            msg = json.loads(line)
            pid = msg["data"]
        except (ValueError, KeyError):
            raise NotRunnable(f"conmon: no sync message ({err[-200:]})")
        if pid < 0:
            raise NotRunnable(f"conmon: {msg.get('message', '')[:200]}")
        check(rt + ["--root", rroot, "start", cid], f"{runtime} start", env=base_env(ctx["home"]), user=user, cwd=ctx["dir"])
        wait_for_file(os.path.join(ctx["exits"], cid))
        check(rt + ["--root", rroot, "delete", cid], f"{runtime} delete", env=base_env(ctx["home"]), user=user, cwd=ctx["dir"])
        t = time.perf_counter() - t0
        CLEANUP.drop(undo)
        return t
