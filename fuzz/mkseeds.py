#!/usr/bin/env python3
"""Write the checked-in seed corpora of the fuzz targets (fuzz/corpus/<target>/).

usage: fuzz/mkseeds.py            (rewrites fuzz/corpus; deterministic output)

The unpack_layer seeds are two tar layers in one input (the target splits it in half), many of
them hostile: `..` and absolute names, symlinks and hardlinks aimed outside, writes through a
symlink, whiteouts naming `..`, deep and long names, devices and FIFOs. The squashfs_image
seeds are small mksquashfs images (every compressor the reader knows, plain and hostile trees).
"""

import io
import os
import tarfile

HERE = os.path.dirname(os.path.abspath(__file__))
CORPUS = os.path.join(HERE, "corpus")
ESC = "/tmp/sioci-fuzz-escape"


def entry(kind, name, data=b"", target="", mode=0o644):
    ti = tarfile.TarInfo(name)
    ti.mtime = 1767225600
    ti.mode = mode
    if kind == "file":
        ti.size = len(data)
    elif kind == "dir":
        ti.type = tarfile.DIRTYPE
        ti.mode = 0o755
    elif kind == "sym":
        ti.type = tarfile.SYMTYPE
        ti.linkname = target
    elif kind == "hard":
        ti.type = tarfile.LNKTYPE
        ti.linkname = target
    elif kind == "fifo":
        ti.type = tarfile.FIFOTYPE
    elif kind == "chr":
        ti.type = tarfile.CHRTYPE
        ti.devmajor, ti.devminor = 1, 3
    return ti, (data if kind == "file" else None)


def tar(entries, fmt=tarfile.GNU_FORMAT):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as t:
        for ti, data in entries:
            t.addfile(ti, io.BytesIO(data) if data is not None else None)
    raw = buf.getvalue().rstrip(b"\0")
    # Round up to a block, then the two-block end-of-archive marker.
    raw += b"\0" * (-len(raw) % 512)
    return raw + b"\0" * 1024


def two_layers(a, b):
    """Pad both layers to one length so the target's split lands between them."""
    n = max(len(a), len(b))
    return a + b"\0" * (n - len(a)) + b + b"\0" * (n - len(b))


F, D, S, H = "file", "dir", "sym", "hard"
base = [entry(D, "etc"), entry(F, "etc/passwd", b"root:x:0:0::/root:/bin/sh\n"), entry(D, "tmp")]

LAYERS = {
    "plain": (base, []),
    "dotdot-file": ([entry(F, "../escape", b"x")], []),
    "dotdot-deep": ([entry(F, "a/../../sentinel/file", b"pwned")], []),
    "absolute": ([entry(F, ESC + "-abs", b"x")], []),
    "absolute-dir": ([entry(D, "/tmp"), entry(F, "/tmp/sioci-fuzz-escape-dir", b"x")], []),
    "symlink-up-write": ([entry(S, "up", target=".."), entry(F, "up/escape", b"x")], []),
    "symlink-abs-write": ([entry(S, "t", target="/tmp"), entry(F, "t/sioci-fuzz-escape-sym", b"x")], []),
    "symlink-sentinel": ([entry(S, "s", target="../sentinel"), entry(F, "s/file", b"pwned")], []),
    "symlink-next-layer": ([entry(S, "s", target="../sentinel")], [entry(F, "s/file", b"pwned")]),
    "symlink-dir-chain": ([entry(S, "a", target="b"), entry(S, "b", target="../../sentinel/sub"),
                           entry(F, "a/inner", b"pwned")], []),
    "hardlink-outside": ([entry(H, "h", target="../sentinel/file")], []),
    "hardlink-abs": ([entry(H, "h", target="/etc/passwd")], []),
    "hardlink-then-write": ([entry(S, "s", target="../sentinel/file"), entry(H, "h", target="s"),
                             entry(F, "h", b"pwned")], []),
    "hardlink-lower": (base, [entry(H, "etc/passwd2", target="etc/passwd")]),
    "whiteout-dotdot": ([entry(F, ".wh...", b"")], []),
    "whiteout-sentinel": ([entry(F, "../.wh.sentinel", b"")], []),
    "whiteout-opaque-root": (base, [entry(F, ".wh..wh..opq", b"")]),
    "whiteout-lower": (base, [entry(F, "etc/.wh.passwd", b""), entry(F, "etc/new", b"y")]),
    "opaque-after-sibling": (base, [entry(F, "etc/mine", b"m"), entry(F, "etc/.wh..wh..opq", b"")]),
    "dir-replaces-file": (base, [entry(D, "etc/passwd"), entry(F, "etc/passwd/x", b"x")]),
    "file-replaces-dir": (base, [entry(F, "etc", b"flat")]),
    "file-over-symlink": ([entry(S, "l", target="../sentinel/file")], [entry(F, "l", b"pwned")]),
    "fifo-and-dev": ([entry("fifo", "p"), entry("chr", "null")], []),
    "setuid": ([entry(F, "su", b"#!", mode=0o4755)], []),
    "long-name": ([entry(F, "d/" + "n" * 300, b"x")], []),
    "deep": ([entry(F, "/".join(["d"] * 200) + "/f", b"x")], []),
    "empty-name": ([entry(F, "", b"x"), entry(F, ".", b"x"), entry(F, "./", b"x")], []),
}


def write(target, name, data):
    d = os.path.join(CORPUS, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def main():
    for name, (a, b) in LAYERS.items():
        fmt = tarfile.PAX_FORMAT if name in ("long-name", "deep") else tarfile.GNU_FORMAT
        write("unpack_layer", name, two_layers(tar(a, fmt), tar(b, fmt)))

    refs = ["alpine", "docker://alpine", "docker://library/alpine:3.19", "docker://localhost:5000/a/b:t",
            "docker://127.0.0.1:5000/x@sha256:" + "a" * 64, "docker://Upper/case", "docker://a:b:c",
            "oci:/tmp/layout", "oci:/tmp/layout:tag", "oci:dir@sha256:" + "b" * 64,
            "oci-archive:/tmp/x.tar:latest", "docker-archive:/tmp/x.tar:repo/name:tag",
            "docker://[::1]:5000/x:y", "docker://host/a//b", "docker://x/" + "a" * 300]
    for i, r in enumerate(refs):
        write("image_reference", f"ref{i:02}", r.encode())

    auths = ['Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/alpine:pull"',
             'Bearer realm="https://r/token",scope="repository:a:pull,push repository:b:pull"',
             'Basic realm="Registry Realm"', 'Basic realm="x", Bearer realm="y",service=z',
             'Bearer realm="esc\\"aped\\\\",service=unquoted', 'Bearer', 'Bearer ,,,=,="', 'NEGOTIATE abc==']
    for i, a in enumerate(auths):
        write("www_authenticate", f"auth{i:02}", a.encode())

    dg = "sha256:" + "c" * 64
    docs = [
        b"\x01" + ('{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"%s","size":10},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"%s","size":20}]}' % (dg, dg)).encode(),
        b"\x02" + ('{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"%s","size":1,"platform":{"os":"linux","architecture":"amd64"}},{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"%s","size":1,"platform":{"os":"linux","architecture":"arm","variant":"v7"}}]}' % (dg, dg)).encode(),
        b"\x00" + b'{"schemaVersion":1,"name":"x"}',
        b"\x05" + b'{"architecture":"amd64","os":"linux","variant":"v8","config":{"Env":["A=b"]},"rootfs":{"type":"layers","diff_ids":[]}}',
        b"\x00" + b'{"schemaVersion":1,"kind":"image","reference":"x"}',
        b"\x03" + b'{"config":{},"layers":[]}',
    ]
    for i, d in enumerate(docs):
        write("manifest_parse", f"doc{i:02}", d)

    binds = ["/a", "/a:/b", "/a:/b:ro", "/a:/b:ro,/c:/d:rw", "/a:/b,ro", "/a:/b:image-src=/x,id=2",
             "type=bind,source=/a,destination=/b,readonly", "type=bind,src=/a,dst=/b,ro=false\ntype=bind,src=/c,target=/d",
             "type=tmpfs,dst=/t", ":", ",", "type=bind,src=\"/a,b\",dst=/c"]
    for i, b in enumerate(binds):
        write("bind_options", f"bind{i:02}", b.encode())

    envs = ["A=1\n", "export B='two words'\n# c\nC=\"$B and ${HOME}\"\n", "D=${UNSET:-default} E=${UNSET-x}\n",
            "F=$(id)\n", "G=`id`\n", "H=a\\\nb\n", "I=\"unterminated\n", "=novar\n", "J==x\n", "K=a,L=b,M=c",
            "readonly N=1; O=2\n", "P=${HOME:?err}\n"]
    for i, e in enumerate(envs):
        write("env_file", f"env{i:02}", e.encode())

    subids = ["tester:100000:65536\n", "# c\n\ntester:1:1\n", "1000:200000:65536\n", "tester:100000\n",
              "tester:-1:65536\n", "tester:4294967295:2\n", "tester:100000:0\n", "tester:x:y\n", "tester::\n"]
    for i, s in enumerate(subids):
        write("subid_file", f"subid{i:02}", s.encode())

    squashfs_seeds()


def squashfs_seeds():
    """Small squashfs images from mksquashfs pseudo-file definitions, one per compressor, with
    4 KiB blocks so files span blocks and fragments; the hostile ones aim symlinks out of the
    tree and give a directory a file and a device. Skipped (and said so) without mksquashfs."""
    import shutil
    import subprocess
    import tempfile

    if shutil.which("mksquashfs") is None:
        print("mkseeds: mksquashfs missing: squashfs_image seeds not rewritten")
        return
    trees = {
        "plain": ["d d 755 0 0", "d/f f 644 0 0 echo hello", "d/big f 644 1 2 head -c 9000 /dev/zero",
                  "s s 777 0 0 d/f", "p i 600 0 0 f", "h L d/f"],
        "hostile": ["esc s 777 0 0 " + ESC, "up s 777 0 0 ../../..", "dev c 666 0 0 1 3",
                    "blk b 660 0 6 8 0", "d d 700 0 0", "d/x f 4755 0 0 echo x"],
    }
    with tempfile.TemporaryDirectory() as tmp:
        empty = os.path.join(tmp, "empty")
        os.mkdir(empty)
        comps = [("gzip",), ("lzma",), ("xz",), ("xz", "-Xbcj", "x86"), ("lz4",), ("zstd",)]
        for comp in comps:
            for name, pseudo in trees.items():
                out = os.path.join(tmp, "img")
                args = ["mksquashfs", empty, out, "-noappend", "-quiet", "-no-progress", "-comp", *comp,
                        "-b", "4096", "-mkfs-time", "0", "-all-time", "1767225600", "-processors", "1"]
                for p in pseudo:
                    args += ["-p", p]
                subprocess.run(args, check=True, stdout=subprocess.DEVNULL)
                with open(out, "rb") as fh:
                    write("squashfs_image", "-".join((name, comp[0], *comp[2:])), fh.read())
                os.unlink(out)


if __name__ == "__main__":
    main()
