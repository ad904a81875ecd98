"""Instances: `instance start` and `exec instance://NAME true` against a plain warm
`exec IMAGE true` (root and the test user, crun)."""

import os

from ..build import stage_problem
from ..config import FRONT, SETTLE, TEST_USER, WARMUP
from ..proc import CLEANUP, base_env, log, timed, user_ids
from ..report import Row, Series


class InstanceMeasures:
    def instance(self):
        for user in (None, TEST_USER):
            self.instance_as(user)

    def instance_as(self, user):
        who = f"as {user}" if user else "as root"
        tag = f"instance-{user or 'root'}"
        start, joined, plain = (
            Series("singularity-oci instance start"),
            Series("singularity-oci exec instance://NAME"),
            Series("singularity-oci exec IMAGE"),
        )
        series = (start, joined, plain)
        prob = stage_problem("oci-fetch", "oci-unpack", "oci-mkspec", "oci-userns-starter", "oci-instance", "oci-conmon-create")
        try:
            if user:
                user_ids(user)
        except KeyError:
            prob = f"user {user} missing (run scripts/setup)"
        if prob:
            for s in series:
                s.fail(prob)
        d = self.sub(tag, owner=user)
        # A home, a cache and a state root of the measure's own: the instances' log files stay
        # in the scratch tree, and stop --all reaches only the instances started here.
        home = self.sub(tag, "home", owner=user, mode=0o700)
        env = base_env(
            home,
            SINGULARITY_CACHEDIR=self.sub(tag, "cache", owner=user, mode=0o700),
            TMPDIR=self.sub(tag, "tmp", owner=user, mode=0o700),
            SINGULARITY_OCI_STATE_ROOT=self.sub(tag, "state", owner=user, mode=0o700),
            SINGULARITY_OCI_RUNTIME="crun",
        )
        image = f"oci:{self.busybox}:latest"
        stop_all = [FRONT, "instance", "stop", "--all", "--force"]
        CLEANUP.push(timed, stop_all, env, d, user)

        def run(cmd):
            return timed(cmd, env=env, cwd=d, user=user)

        if not prob:
            # Warm the cache and start the instance the exec runs join (untimed).
            for s, cmd in (
                (plain, [FRONT, "exec", image, "true"]),
                (joined, [FRONT, "instance", "start", image, "resident", "sleep", "86400"]),
            ):
                r = run(cmd)
                if r.rc != 0:
                    s.fail(r.last_err())

        def start_one(_i):
            name = self.uid("inst")
            self.sample(start, [FRONT, "instance", "start", image, name, "sleep", "86400"], env=env, cwd=d, user=user)
            # Untimed: the instance goes again at once.
            run([FRONT, "instance", "stop", "--force", name])

        n = self.n(False)
        log(f"instance ({who}): {n} runs each, interleaved, {SETTLE * 1000:.0f} ms idle before each")
        self.interleave(n, [
            start_one,
            lambda _i: self.sample(joined, [FRONT, "exec", "instance://resident", "true"], env=env, cwd=d, user=user),
            lambda _i: self.sample(plain, [FRONT, "exec", image, "true"], env=env, cwd=d, user=user),
        ], WARMUP, settle=SETTLE)
        run(stop_all)
        left = os.listdir(os.path.join(env["SINGULARITY_OCI_STATE_ROOT"], "containers")) if os.path.isdir(
            os.path.join(env["SINGULARITY_OCI_STATE_ROOT"], "containers")) else []
        if left:
            start.fail(f"instances left after stop --all: {', '.join(left)}")
        self.rows.append(Row(f"instance start ({who}, crun)", start, [plain], [],
                             note="informational: returns once the instance runs"))
        self.rows.append(Row(f"exec instance://NAME `true` ({who}, crun)", joined, [plain], [],
                             note="informational"))
