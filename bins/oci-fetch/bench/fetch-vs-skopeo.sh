#!/bin/sh
# Benchmark: oci-fetch vs `skopeo copy` pulling one multi-layer image from a loopback registry.
#
#   bins/oci-fetch/bench/fetch-vs-skopeo.sh OCI_FETCH REGISTRY_REF [RUNS]
#
# REGISTRY_REF is docker://127.0.0.1:PORT/REPO:TAG on a plain-HTTP registry (push an image made
# by bench/mkimage.py with skopeo first). Each run starts from an empty cache / empty layout, so
# both tools download, verify and write every blob. Prints wall time and peak RSS per run
# (GNU time -v), then the best wall time of each tool and their ratio. CPU time (user+sys) is
# printed too: on a loaded 2-core host it is steadier than wall time.
set -eu
fetch=$1 ref=$2 runs=${3:-3}
[ -x /usr/bin/time ] || { echo "FATAL: bench: install GNU time (apt-get install time)" >&2; exit 255; }
work=$(mktemp -d /tmp/fetch-bench.XXXXXX)
trap 'rm -rf "$work"' EXIT

measure() { # label cmd...
    label=$1; shift
    /usr/bin/time -v "$@" >/dev/null 2>"$work/time" || { cat "$work/time" >&2; exit 1; }
    wall=$(awk -F': ' '/Elapsed \(wall clock\)/ {n=split($2,a,":"); s=0; for(i=1;i<=n;i++) s=s*60+a[i]; print s}' "$work/time")
    rss=$(awk -F': ' '/Maximum resident set size/ {printf "%.1f", $2/1024}' "$work/time")
    cpu=$(awk -F': ' '/User time|System time/ {s+=$2} END {printf "%.2f", s}' "$work/time")
    echo "$label wall=${wall}s cpu=${cpu}s maxrss=${rss}MiB"
}

i=0
while [ $i -lt "$runs" ]; do
    i=$((i + 1))
    rm -rf "$work/cache" "$work/skopeo"; sync
    SINGULARITY_CACHEDIR=$work/cache measure oci-fetch "$fetch" --quiet --no-https "$ref"
    sync
    measure skopeo skopeo copy -q --src-tls-verify=false "$ref" "oci:$work/skopeo:latest"
done | tee "$work/results"
awk '{split($2,w,"="); sub("s","",w[2]); t=$1; if(!(t in best) || w[2]+0<best[t]) best[t]=w[2]+0}
     END {printf "best: oci-fetch %.2fs, skopeo %.2fs, ratio %.2f\n", best["oci-fetch"], best["skopeo"], best["oci-fetch"]/best["skopeo"]}' "$work/results"
