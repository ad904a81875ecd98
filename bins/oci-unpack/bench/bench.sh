#!/bin/sh
# Cold and warm unpack of a >= 100 MB (gzip) multi-layer image: oci-unpack side by side with
# `umoci unpack` and `tar -xzf` of the same layers in order, interleaved run by run, every run
# into a fresh directory (the disk mounts with `discard`: deletes happen only at the very end).
#
# usage: bins/oci-unpack/bench/bench.sh [RUNS]        (as root; default 5 runs)
# env:   WORK (default /var/tmp/oci-unpack-bench), OCI_UNPACK (default target/release/oci-unpack)
#
# The image is built once under $WORK/img from /usr subtrees (one gzip layer each, pigz -6).
# Prints one line per run and a summary of medians: seconds, peak RSS (KiB) from
# /usr/bin/time, and the warm (cached) unpack from hyperfine.
set -eu

RUNS=${1:-5}
HERE=$(cd "$(dirname "$0")" && pwd)
TOP=$(cd "$HERE/../../.." && pwd)
WORK=${WORK:-/var/tmp/oci-unpack-bench}
BIN=${OCI_UNPACK:-$TOP/target/release/oci-unpack}
SUBTREES="usr/lib/gcc usr/lib/python3.11 usr/share/locale usr/share/perl usr/include usr/bin usr/share/doc"

[ "$(id -u)" = 0 ] || { echo "FATAL: bench: run as root" >&2; exit 255; }
for t in umoci pigz hyperfine python3 /usr/bin/time; do
	command -v "$t" >/dev/null || { echo "FATAL: bench: $t is missing (scripts/setup installs it)" >&2; exit 255; }
done
[ -x "$BIN" ] || { echo "FATAL: bench: $BIN missing (cargo build --release -p oci-unpack)" >&2; exit 255; }

IMG=$WORK/img
if [ ! -f "$IMG/index.json" ]; then
	echo "building the image in $IMG (one-time)" >&2
	rm -rf "$IMG.tmp"
	mkdir -p "$IMG.tmp/blobs/sha256"
	# shellcheck disable=SC2086 # word splitting of the subtree list is intended
	python3 - "$IMG.tmp" $SUBTREES <<'PY'
import hashlib, json, os, subprocess, sys
out, subs = sys.argv[1], sys.argv[2:]
def put(data_path=None, data=None):
    h = hashlib.sha256()
    if data is None:
        with open(data_path, "rb") as f:
            for b in iter(lambda: f.read(1 << 20), b""):
                h.update(b)
        size = os.path.getsize(data_path)
        os.rename(data_path, f"{out}/blobs/sha256/{h.hexdigest()}")
    else:
        h.update(data)
        size = len(data)
        open(f"{out}/blobs/sha256/{h.hexdigest()}", "wb").write(data)
    return "sha256:" + h.hexdigest(), size
layers, diffs, total = [], [], 0
for s in subs:
    if not os.path.isdir("/" + s) or os.path.islink("/" + s):
        continue
    tarp, gzp = f"{out}/layer.tar", f"{out}/layer.tar.gz"
    subprocess.run(["tar", "-C", "/", "--numeric-owner", "-cf", tarp, s], check=True)
    diff, _ = put(tarp)  # moved into blobs; hash only
    os.rename(f"{out}/blobs/sha256/{diff.split(':')[1]}", tarp)
    subprocess.run(["pigz", "-6", "-f", tarp], check=True)
    d, size = put(gzp)
    layers.append({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": d, "size": size})
    diffs.append(diff)
    total += size
    print(f"  layer /{s}: {size/1e6:.1f} MB gz", file=sys.stderr)
    if total >= 110e6:
        break
if total < 100e6:
    sys.exit(f"FATAL: bench: only {total/1e6:.0f} MB from /usr")
cfg = json.dumps({"architecture": "amd64", "os": "linux", "config": {},
                  "rootfs": {"type": "layers", "diff_ids": diffs}}).encode()
c, cs = put(data=cfg)
man = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                  "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": c, "size": cs},
                  "layers": layers}).encode()
m, ms = put(data=man)
json.dump({"schemaVersion": 2, "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
           "digest": m, "size": ms, "annotations": {"org.opencontainers.image.ref.name": "latest"}}]},
          open(f"{out}/index.json", "w"))
open(f"{out}/oci-layout", "w").write('{"imageLayoutVersion":"1.0.0"}')
PY
	mv "$IMG.tmp" "$IMG"
fi
python3 "$HERE/mkrecord.py" "$IMG" latest > "$WORK/record.json"
LAYERS=$(python3 -c "
import json,sys; r=json.load(open('$WORK/record.json'))
print(' '.join('$IMG/blobs/sha256/'+l['digest'][7:] for l in r['layers']))")
SIZE=$(python3 -c "import json; r=json.load(open('$WORK/record.json')); print(round(sum(l['size'] for l in r['layers'])/1e6))")
NL=$(echo "$LAYERS" | wc -w)

RUN=$WORK/run.$$
mkdir -p "$RUN"
RES=$RUN/results
: > "$RES"
timed() { # name cmd...: appends "name seconds maxrss_kib"
	name=$1; shift
	/usr/bin/time -f "%e %M" -o "$RUN/t" "$@" >/dev/null
	echo "$name $(cat "$RUN/t")" >> "$RES"
	echo "  $name $(cat "$RUN/t")" >&2
}
echo "cold unpack: $NL layers, $SIZE MB gz, $RUNS runs each, interleaved" >&2
i=0
while [ "$i" -lt "$RUNS" ]; do
	i=$((i + 1))
	mkdir "$RUN/ours-$i" "$RUN/tar-$i"
	timed oci-unpack env SINGULARITY_CACHEDIR="$RUN/ours-$i" "$BIN" --input "$WORK/record.json"
	timed umoci umoci unpack --image "$IMG:latest" "$RUN/umoci-$i"
	# shellcheck disable=SC2086,SC2016 # $LAYERS splits on purpose; the inner script is sh's
	timed tar-xzf sh -c 'd=$1; shift; for l; do tar -xzf "$l" -C "$d" || exit 1; done' sh "$RUN/tar-$i" $LAYERS
done
echo "warm unpack (hyperfine):" >&2
hyperfine -N --warmup 5 --runs 100 --export-json "$RUN/warm.json" \
	"env SINGULARITY_CACHEDIR=$RUN/ours-1 $BIN --input $WORK/record.json" >/dev/null 2>&1
python3 - "$RES" "$RUN/warm.json" "$NL" "$SIZE" <<'PY'
import json, statistics, sys
rows = {}
for line in open(sys.argv[1]):
    n, s, rss = line.split()
    rows.setdefault(n, []).append((float(s), int(rss)))
med = {n: statistics.median(s for s, _ in v) for n, v in rows.items()}
rss = {n: max(r for _, r in v) for n, v in rows.items()}
w = json.load(open(sys.argv[2]))["results"][0]
print(f"cold unpack, {sys.argv[3]} layers, {sys.argv[4]} MB gz (median of {len(rows['oci-unpack'])}):")
for n in ("oci-unpack", "umoci", "tar-xzf"):
    print(f"  {n:11s} {med[n]:6.2f} s   (range {min(s for s,_ in rows[n]):.2f}-{max(s for s,_ in rows[n]):.2f})   peak RSS {rss[n]/1024:6.1f} MiB")
print(f"  oci-unpack / tar -xzf = {med['oci-unpack']/med['tar-xzf']:.2f}x   (target <= 1.0x)")
print(f"  umoci / oci-unpack    = {med['umoci']/med['oci-unpack']:.2f}x   (target >= 3x)")
print(f"warm (cached) oci-unpack: median {w['median']*1000:.2f} ms, mean {w['mean']*1000:.2f} ms (target < 5 ms)")
PY
echo "removing $RUN" >&2
rm -rf "$RUN"
