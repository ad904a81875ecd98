"""Running, timing and cleaning up: every command the bench runs goes through `timed`, and
everything it starts or creates is registered with CLEANUP and undone, even on Ctrl-C."""

import os
import pwd
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

from .config import BIN, TIMEOUT


def log(msg):
    print(f"bench: {msg}", file=sys.stderr, flush=True)


class NotRunnable(Exception):
    """A part that cannot be measured (yet); the reason goes into the table."""


class Cleanup:
    def __init__(self):
        self.actions = []

    def push(self, fn, *args):
        """Register FN(*ARGS); returns a token for drop()."""
        token = (fn, args)
        self.actions.append(token)
        return token

    def drop(self, token):
        """Forget an action that is no longer needed (the thing was removed normally)."""
        for i in range(len(self.actions) - 1, -1, -1):
            if self.actions[i] is token:
                del self.actions[i]
                return

    def run(self):
        while self.actions:
            fn, args = self.actions.pop()
            try:
                fn(*args)
            except Exception as e:  # keep cleaning up whatever fails
                log(f"cleanup: {e}")


CLEANUP = Cleanup()


def on_signal(signum, _frame):
    raise KeyboardInterrupt(f"signal {signum}")


def kill_pid(pid, sig=signal.SIGTERM, wait=True):
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        return
    if not wait:
        return
    for _ in range(100):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.02)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def unmount_below(path):
    """Defensive: lazily unmount anything a failed run may have left mounted below PATH."""
    path = os.path.realpath(path)
    try:
        with open("/proc/self/mountinfo") as f:
            points = [line.split()[4] for line in f]
    except OSError:
        return
    for mp in sorted(points, key=len, reverse=True):
        if mp == path or mp.startswith(path + "/"):
            subprocess.run(["umount", "-l", mp], stderr=subprocess.DEVNULL)


def remove_tree(path):
    if os.path.lexists(path):
        unmount_below(path)
        # Cached root filesystems are read-only by contract: make them writable to delete them.
        subprocess.run(["chmod", "-R", "u+rwX", path], stderr=subprocess.DEVNULL)
        shutil.rmtree(path, ignore_errors=True)


class Result:
    def __init__(self, seconds, rc, maxrss_kib, stdout, stderr):
        self.seconds = seconds
        self.rc = rc
        self.maxrss_kib = maxrss_kib
        self.stdout = stdout
        self.stderr = stderr

    def last_err(self):
        lines = [l for l in self.stderr.decode(errors="replace").splitlines() if l.strip()]
        fatal = [l for l in lines if l.startswith("FATAL")]
        return (fatal or lines or [f"exit status {self.rc}"])[-1].strip()


def user_ids(user):
    pw = pwd.getpwnam(user)
    return pw.pw_uid, pw.pw_gid, pw.pw_dir


def kill_group(pid, sig):
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def timed(cmd, env=None, cwd=None, user=None, stdin=subprocess.DEVNULL, capture=False, timeout=TIMEOUT):
    """Run CMD to completion; wall time, exit status, peak RSS (os.wait4), output.

    stdout is discarded unless CAPTURE; stderr always goes to a temporary file (so a chatty
    child can never block on a pipe) and is kept for error messages. CMD runs in its own
    session, so a hang (TIMEOUT) or an interrupt can end its whole process group."""
    kw = {}
    if user is not None:
        uid, gid, _home = user_ids(user)
        kw.update(user=uid, group=gid, extra_groups=[])
    expired = []

    def expire(pid):
        expired.append(True)
        kill_group(pid, signal.SIGKILL)

    with tempfile.TemporaryFile() as err, tempfile.TemporaryFile() as out:
        t0 = time.perf_counter()
        p = subprocess.Popen(
            cmd,
            env=env,
            cwd=cwd,
            stdin=stdin,
            stdout=out if capture else subprocess.DEVNULL,
            stderr=err,
            start_new_session=True,
            **kw,
        )
        timer = threading.Timer(timeout, expire, (p.pid,))
        timer.start()
        try:
            _, status, ru = os.wait4(p.pid, 0)
        except BaseException:
            kill_group(p.pid, signal.SIGTERM)
            time.sleep(0.2)
            kill_group(p.pid, signal.SIGKILL)
            p.wait()
            raise
        finally:
            timer.cancel()
        t1 = time.perf_counter()
        p.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        out.seek(0)
        errtext = err.read()
        if expired:
            errtext += f"\ntimed out after {timeout:.0f} s: {' '.join(cmd[:3])} ...".encode()
            p.returncode = p.returncode or 124
        return Result(t1 - t0, p.returncode, ru.ru_maxrss, out.read(), errtext)


def check(cmd, what, **kw):
    """Run a command that must succeed (setup steps); NotRunnable with its error otherwise."""
    r = timed(cmd, **kw)
    if r.rc != 0:
        raise NotRunnable(f"{what}: {r.last_err()}")
    return r


def must(cmd, **kw):
    """Run a fixture-building command that must succeed, or stop the bench."""
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw)
    if r.returncode != 0:
        sys.exit(
            f"FATAL: bench: {' '.join(map(shlex.quote, cmd))} failed: "
            + r.stderr.decode(errors="replace").strip()[-500:]
        )
    return r.stdout


def base_env(home="/root", **extra):
    env = {
        "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "HOME": home,
        "LANG": "C.UTF-8",
        "SINGULARITY_OCI_LIBEXEC": BIN,
    }
    env.update({k: str(v) for k, v in extra.items()})
    return env


def fresh_dir(path, owner=None, mode=0o755):
    os.makedirs(path, mode=mode)
    os.chmod(path, mode)
    if owner is not None:
        uid, gid, _ = user_ids(owner)
        os.chown(path, uid, gid)
    return path


def bench_alive(scratch_name):
    """Whether the bench that made scratch dir run.PID.XXXX is still running (then keep it)."""
    try:
        pid = int(scratch_name.split(".")[1])
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return b"bench" in f.read()
    except (ValueError, IndexError, OSError):
        return False


def podman_cgroups():
    base = "/sys/fs/cgroup"
    try:
        hier = [os.path.join(base, h) for h in os.listdir(base)]
    except OSError:
        return []
    return [os.path.join(h, "libpod_parent") for h in hier if os.path.isdir(h) and not os.path.islink(h)]


def remove_empty_cgroups(paths):
    for p in paths:
        for d in (os.path.join(p, "conmon"), p):
            try:
                os.rmdir(d)
            except OSError:
                pass
