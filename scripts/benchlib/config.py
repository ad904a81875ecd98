"""What the bench measures, where, and for how long: paths, users, run counts and time limits."""

import os

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# The release stages: $CARGO_TARGET_DIR/release when that is set, else target/release. The front
# is pointed at the same directory (SINGULARITY_OCI_LIBEXEC), so what is checked is what runs.
BIN = os.path.join(os.environ.get("CARGO_TARGET_DIR") or os.path.join(REPO, "target"), "release")
FRONT = os.path.join(REPO, "scripts", "singularity-oci")
MKIMAGES = os.path.join(REPO, "scripts", "mkimages")
STAGES = [
    "oci-fetch",
    "oci-unpack",
    "oci-mkspec",
    "oci-userns-starter",
    "oci-runtime-shim",
    "oci-conmon-create",
    "oci-attach",
    "oci-cgroup-fix",
    "oci-instance",
]
TEST_USER = "sioci-tester"
MiB = 1024 * 1024
# Bumped when a fixture recipe changes, so old fixtures are rebuilt (2: the big image comes from
# scripts/mkimages --big).
FIXTURE_VERSION = "2"
# Task counts for the concurrency measure.
CONCURRENCY = (16, 32)
# Longest any one command may take before it is killed and its series marked failed.
TIMEOUT = 600.0
# Untimed rounds before the light measures (page cache, first-exec effects).
WARMUP = 2
# Idle time before each warm-exec sample. A container start as root moves a process into new
# cgroup-v1 cgroups, and the kernel makes that move wait for an RCU grace period unless another
# cgroup move happened a few milliseconds earlier. Run back to back, whichever command directly
# follows another runtime's start skips that wait: bare `crun run` measured 13.6 ms back to back
# and 27.7 ms after 100 ms of idle time on the reference machine. The goal row is therefore
# measured the way a user starts one container: after the machine has been idle; the back-to-back
# figures are printed beside it.
SETTLE = 0.1
# ext4 without a journal (this machine's disk) does not reuse an inode freed in the last 60 s
# (360 s while its inode-table block is still dirty, hence the sync after every delete): each
# new inode is checked against the deletion times of the free ones before it. Creating 20 000
# files right after deleting 20 000 took six times as long, so the cold measures start at least
# this long after the bench's own last delete (kept in WORK/DELETED_STAMP across runs).
INODE_RECENCY = 65
DELETED_STAMP = ".last-delete"
CGROUP_CONTROLLERS = "/sys/fs/cgroup/unified/cgroup.controllers"

MT_MANIFEST = "application/vnd.oci.image.manifest.v1+json"

MEASURES = [
    "warm-exec",
    "warm-exec-user",
    "cold-unpack",
    "warm-unpack",
    "pull",
    "rss",
    "lifecycle",
    "concurrent",
    "sif",
    "instance",
    "oci-sif-write",
]
