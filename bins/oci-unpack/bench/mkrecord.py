#!/usr/bin/env python3
"""Print an image record (what oci-fetch prints) for LAYOUT:TAG, without oci-fetch.

Lets oci-unpack be run and benchmarked on its own. Usage: mkrecord.py LAYOUT [TAG]
"""
import json
import os
import sys


def blob(layout, digest):
    alg, hexd = digest.split(":", 1)
    return os.path.join(layout, "blobs", alg, hexd)


def main():
    layout = os.path.abspath(sys.argv[1])
    tag = sys.argv[2] if len(sys.argv) > 2 else "latest"
    index = json.load(open(os.path.join(layout, "index.json")))
    desc = next(m for m in index["manifests"]
                if m.get("annotations", {}).get("org.opencontainers.image.ref.name") == tag)
    manifest = json.load(open(blob(layout, desc["digest"])))
    config = json.load(open(blob(layout, manifest["config"]["digest"])))
    strip = lambda d: {k: d[k] for k in ("mediaType", "digest", "size", "annotations") if k in d}
    rec = {
        "schemaVersion": 1,
        "kind": "image",
        "reference": f"oci:{layout}:{tag}",
        "transport": "oci",
        "digest": desc["digest"],
        "layout": layout,
        "manifest": strip(desc),
        "config": strip(manifest["config"]),
        "layers": [strip(l) for l in manifest["layers"]],
        "platform": {"os": config.get("os", "linux"), "architecture": config.get("architecture", "amd64")},
        "imageConfig": config,
    }
    json.dump(rec, sys.stdout, separators=(",", ":"))
    sys.stdout.write("\n")


main()
