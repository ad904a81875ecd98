#!/usr/bin/env python3
"""Build a multi-layer OCI layout of real files (>= 100 MB compressed) for the fetch benchmark.

usage: mkimage.py OUTDIR [SUBTREE...]

Each SUBTREE (default: a few big ones under /usr) becomes one gzip layer (tar | pigz), so the
image looks like a real distribution image: binaries, libraries, scripts. OUTDIR becomes an OCI
layout tagged `latest`. Only the standard library, GNU tar and pigz (or gzip) are used.
"""

import hashlib
import json
import os
import shutil
import subprocess
import sys

DEFAULT = ["/usr/bin", "/usr/lib/x86_64-linux-gnu", "/usr/lib/python3.11", "/usr/share/perl",
           "/usr/libexec", "/usr/share/locale"]


def put(blobs, data_path=None, data=None):
    h = hashlib.sha256()
    if data is not None:
        h.update(data)
        size = len(data)
    else:
        with open(data_path, "rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
        size = os.path.getsize(data_path)
    hx = h.hexdigest()
    dst = os.path.join(blobs, hx)
    if data is not None:
        with open(dst, "wb") as f:
            f.write(data)
    else:
        os.replace(data_path, dst)
    return "sha256:" + hx, size


def main(argv):
    if len(argv) < 2:
        sys.exit(__doc__)
    out = argv[1]
    trees = [t for t in (argv[2:] or DEFAULT) if os.path.isdir(t)]
    blobs = os.path.join(out, "blobs", "sha256")
    os.makedirs(blobs, exist_ok=True)
    gz = "pigz" if shutil.which("pigz") else "gzip"
    layers, diff_ids = [], []
    for t in trees:
        tmp = os.path.join(out, "layer.tmp")
        # Hash the uncompressed stream for the diff_id while compressing it.
        tar = subprocess.Popen(["tar", "-C", "/", "-cf", "-", "--sort=name", "--mtime=@0",
                                "--owner=0", "--group=0", t.lstrip("/")],
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        with open(tmp, "wb") as f:
            z = subprocess.Popen([gz, "-n", "-6", "-c"], stdin=subprocess.PIPE, stdout=f)
            h = hashlib.sha256()
            while chunk := tar.stdout.read(1 << 20):
                h.update(chunk)
                z.stdin.write(chunk)
            z.stdin.close()
            z.wait()
        tar.wait()
        d, size = put(blobs, data_path=tmp)
        layers.append({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                       "digest": d, "size": size})
        diff_ids.append("sha256:" + h.hexdigest())
        print(f"layer {t}: {size / 1e6:.1f} MB", file=sys.stderr)
    config = json.dumps({"architecture": "amd64", "os": "linux",
                         "config": {"Env": ["PATH=/usr/bin:/bin"], "Cmd": ["/usr/bin/sh"]},
                         "rootfs": {"type": "layers", "diff_ids": diff_ids}}).encode()
    cd, cs = put(blobs, data=config)
    manifest = json.dumps({"schemaVersion": 2,
                           "mediaType": "application/vnd.oci.image.manifest.v1+json",
                           "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                                      "digest": cd, "size": cs},
                           "layers": layers}).encode()
    md, ms = put(blobs, data=manifest)
    with open(os.path.join(out, "index.json"), "w") as f:
        json.dump({"schemaVersion": 2, "manifests": [
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": md, "size": ms,
             "annotations": {"org.opencontainers.image.ref.name": "latest"}}]}, f)
    with open(os.path.join(out, "oci-layout"), "w") as f:
        f.write('{"imageLayoutVersion":"1.0.0"}')
    total = sum(l["size"] for l in layers)
    print(f"{len(layers)} layers, {total / 1e6:.1f} MB compressed, manifest {md}", file=sys.stderr)


if __name__ == "__main__":
    main(sys.argv)
