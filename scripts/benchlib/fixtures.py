"""Fixtures, built once, offline, and reused: the busybox and big images (scripts/mkimages),
the bare-runtime rootfs and bundles, and the runtime wrappers of the anchors."""

import json
import os
import subprocess
import tempfile

from .config import CGROUP_CONTROLLERS, FIXTURE_VERSION, MKIMAGES
from .proc import CLEANUP, log, must, remove_tree


def read_json(path):
    with open(path) as f:
        return json.load(f)


def layout_manifest(layout, tag="latest"):
    idx = read_json(os.path.join(layout, "index.json"))
    for m in idx["manifests"]:
        if m.get("annotations", {}).get("org.opencontainers.image.ref.name") == tag:
            return read_json(blob_path(layout, m["digest"])), m["digest"]
    raise RuntimeError(f"{layout} has no tag {tag}")


def blob_path(layout, digest):
    algo, hexd = digest.split(":", 1)
    return os.path.join(layout, "blobs", algo, hexd)


def build_dir_for(out):
    """OUT.tmp, empty, to build OUT in and rename into place (removed at the end when an
    interrupted build leaves it)."""
    tmp = out + ".tmp"
    remove_tree(tmp)
    CLEANUP.push(remove_tree, tmp)
    return tmp


def build_busybox(work):
    out = os.path.join(work, "img", "busybox")
    index = os.path.join(out, "index.json")
    if os.path.exists(index):
        built = os.stat(index).st_mtime
        if all(os.stat(p).st_mtime <= built for p in (MKIMAGES, "/bin/busybox")):
            return out
        remove_tree(out)
    log("fixture: busybox image (scripts/mkimages --demo)")
    tmp = build_dir_for(out)
    must([MKIMAGES, "--demo", tmp])
    os.rename(tmp, out)
    return out


def fixture_stamp(busybox):
    """What a derived fixture was built from: the recipe version and the busybox image."""
    _, digest = layout_manifest(busybox)
    return f"{FIXTURE_VERSION} {digest}\n"


def build_big_sif(work, big):
    """The big image's layers extracted in order with tar (they have no whiteouts), made into a
    gzip squashfs by mksquashfs and a SIF by siftool, as SingularityCE's builder would."""
    out = os.path.join(work, "img", "big-sif")
    sif = os.path.join(out, "big.sif")
    stamp = os.path.join(out, ".bench-fixture")
    want = open(os.path.join(big, ".bench-fixture")).read()
    if os.path.exists(stamp) and open(stamp).read() == want:
        return sif
    log("fixture: the big image as a native SIF (one-time, ~1 min)")
    remove_tree(out)
    tree = os.path.join(out, "tree")
    os.makedirs(tree)
    CLEANUP.push(remove_tree, tree)  # only left when interrupted
    manifest, _ = layout_manifest(big)
    for layer in manifest["layers"]:
        must(["tar", "-xzf", blob_path(big, layer["digest"]), "-C", tree])
    part = os.path.join(out, "big.sqfs")
    must(["mksquashfs", tree, part, "-comp", "gzip", "-quiet", "-no-progress", "-noappend"])
    remove_tree(tree)
    must(["siftool", "new", sif])
    must(["siftool", "add", "--datatype", "4", "--parttype", "2", "--partfs", "1",
          "--partarch", {"aarch64": "4"}.get(os.uname().machine, "2"), "--groupid", "1", sif, part])
    os.unlink(part)
    with open(stamp, "w") as f:
        f.write(want)
    return sif


def build_big(work, busybox):
    """The big multi-layer gzip image, >= 100 MB compressed (`scripts/mkimages --big`: busybox's
    layer, so `true` runs, and layers tarred from /usr subtrees)."""
    out = os.path.join(work, "img", "big")
    stamp = os.path.join(out, ".bench-fixture")
    want = fixture_stamp(busybox)
    if os.path.exists(stamp) and open(stamp).read() == want:
        return out
    log("fixture: big multi-layer image from /usr subtrees (scripts/mkimages --big, one-time, ~1 min)")
    remove_tree(out)
    tmp = build_dir_for(out)
    must([MKIMAGES, "--big", tmp])
    with open(os.path.join(tmp, ".bench-fixture"), "w") as f:
        f.write(want)
    os.rename(tmp, out)
    return out


def runtime_config(rootless, rootfs, args):
    """`runc spec` (or --rootless) adapted for a run in our own namespaces."""
    with tempfile.TemporaryDirectory() as d:
        must(["runc", "spec"] + (["--rootless"] if rootless else []), cwd=d)
        c = read_json(os.path.join(d, "config.json"))
    c["process"]["terminal"] = False
    c["process"]["args"] = args
    c["root"] = {"path": rootfs, "readonly": True}
    c["hostname"] = "bench"
    if rootless:
        # The outer `unshare -U -r` is the user namespace (as oci-userns-starter's is ours): no
        # nested one, no devpts gid=5 (unmapped), no resources.
        lx = c["linux"]
        lx["namespaces"] = [n for n in lx["namespaces"] if n["type"] != "user"]
        lx.pop("uidMappings", None)
        lx.pop("gidMappings", None)
        lx.pop("resources", None)
        for m in c["mounts"]:
            if m["type"] == "devpts":
                m["options"] = [o for o in m.get("options", []) if o != "gid=5"]
    return c


def build_bundle_rootfs(work, busybox):
    """The busybox image's layers extracted once with tar: the rootfs of the bare-runtime bundles."""
    rootfs = os.path.join(work, "bundle", "rootfs")
    stamp = rootfs + ".stamp"
    want = fixture_stamp(busybox)
    if os.path.isdir(rootfs) and os.path.exists(stamp) and open(stamp).read() == want:
        return rootfs
    remove_tree(rootfs)
    log("fixture: bare-runtime rootfs (busybox)")
    tmp = build_dir_for(rootfs)
    os.makedirs(tmp)
    manifest, _ = layout_manifest(busybox)
    for desc in manifest["layers"]:
        must(["tar", "-xzf", blob_path(busybox, desc["digest"]), "-C", tmp])
    subprocess.run(["chmod", "a+rx", tmp])
    os.rename(tmp, rootfs)
    with open(stamp, "w") as f:
        f.write(want)
    return rootfs


def make_bundle(path, rootless, rootfs, args=("true",)):
    os.makedirs(path)
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(runtime_config(rootless, rootfs, list(args)), f)
    return path


def host_needs_cgroup_fix():
    try:
        with open(CGROUP_CONTROLLERS) as f:
            return bool(f.read().strip())
    except OSError:
        return False


def crun_prefix(rootless):
    """crun, wrapped in a private mount namespace that hides the cgroup2 controllers on a
    hybrid-cgroup host (crun refuses hybrid mode while the unified hierarchy has controllers)."""
    if rootless:
        fix = f"mount --bind /dev/null {CGROUP_CONTROLLERS} && " if host_needs_cgroup_fix() else ""
        return ["unshare", "-U", "-r", "-m", "sh", "-c", fix + 'exec crun "$@"', "crun"]
    if host_needs_cgroup_fix():
        return [
            "unshare", "-m", "--propagation", "private", "sh", "-c",
            f'mount --bind /dev/null {CGROUP_CONTROLLERS} && exec crun "$@"', "crun",
        ]
    return ["crun"]


def runc_prefix(rootless):
    return ["unshare", "-U", "-r", "runc"] if rootless else ["runc"]
