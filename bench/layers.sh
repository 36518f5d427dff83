#!/usr/bin/env bash
# Layer apply and diff: kiln (store/examples/layer-tool) against GNU tar and
# umoci on the same ~300 MB tree and the same gzip layer, in one run.
#
#   bench/layers.sh [REPETITIONS]        default 5
#
# Needs: cargo, python3, tar, gzip, jq, bc, sha256sum, umoci (Debian: tar gzip bc
# jq coreutils umoci python3). Optional: zstd (adds the zstd rows). Run as
# root: umoci unpack and kiln apply keep owners.
# Env: BENCH_DIR (scratch space, default /var/tmp/kiln-bench-layers; the tree
# is kept there between runs), CARGO_TARGET_DIR (default: the project's target/).
#
# Each repetition runs every tool once, interleaved, after `sync`, with warm
# page caches; the figures are medians. Compare ratios, not absolute times:
# these machines are noisy (shared/MACHINE-NOTES.md).
set -euo pipefail

REPS=${1:-5}
HERE=$(cd "$(dirname "$0")/.." && pwd)
BENCH_DIR=${BENCH_DIR:-/var/tmp/kiln-bench-layers}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$(cd "$(dirname "$0")/.." && pwd)/target}

for tool in python3 tar gzip jq bc sha256sum umoci; do
    command -v "$tool" >/dev/null || { echo "missing: $tool" >&2; exit 1; }
done
HAVE_ZSTD=0
command -v zstd >/dev/null && HAVE_ZSTD=1

echo "== building layer-tool (release)" >&2
(cd "$HERE" && cargo build --release -q -p kiln-store --example layer-tool)
KILN="$CARGO_TARGET_DIR/release/examples/layer-tool"

mkdir -p "$BENCH_DIR"
TREE="$BENCH_DIR/tree"
WORK="$BENCH_DIR/work"
rm -rf "$WORK"
mkdir -p "$WORK"

# --- the tree: ~150 MB in ~15,000 small files, ~150 MB in 8 large ones ----
if [[ ! -f "$TREE/.complete" ]]; then
    echo "== generating the tree in $TREE" >&2
    rm -rf "$TREE"
    python3 - "$TREE" <<'PY'
import os, random, sys
root = sys.argv[1]
rng = random.Random(42)
# A vocabulary of pseudo-words: text that gzip shrinks about 3:1.
vocab = ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(2, 10)))
         for _ in range(5000)]
words = []
size = 0
while size < 8 << 20:
    w = rng.choice(vocab)
    words.append(w)
    size += len(w) + 1
pool = (" ".join(words)).encode()

def text(n):
    start = rng.randrange(0, len(pool) - n - 1)
    return pool[start:start + n]

for d in range(150):
    sub = os.path.join(root, "usr", "lib", f"pkg{d:03}", "share")
    os.makedirs(sub)
    for f in range(100):
        n = int(rng.lognormvariate(8.6, 1.0))  # median ~5.4 KB, mean ~9 KB
        n = max(1, min(n, 1 << 20))
        with open(os.path.join(sub, f"file{f:03}.txt"), "wb") as fh:
            fh.write(text(n))
    os.symlink("share/file000.txt", os.path.join(root, "usr", "lib", f"pkg{d:03}", "link"))
big = os.path.join(root, "opt", "big")
os.makedirs(big)
for i in range(6):
    with open(os.path.join(big, f"text{i}.dat"), "wb") as fh:
        for _ in range(20):
            fh.write(text(1 << 20))
for i in range(2):
    with open(os.path.join(big, f"random{i}.bin"), "wb") as fh:
        fh.write(os.urandom(15 << 20))
PY
    touch "$TREE/.complete"
fi
# The marker file is part of the tree for every tool alike.
echo "tree: $(du -sh --apparent-size "$TREE" | cut -f1), $(find "$TREE" | wc -l) paths" >&2

# --- the shared gzip layer, and an OCI layout holding it for umoci --------
LAYER="$WORK/layer.tar.gz"
tar -C "$TREE" --numeric-owner -czf "$LAYER" .
LAYOUT="$WORK/oci"
mkdir -p "$LAYOUT/blobs/sha256"
layer_digest=$(sha256sum "$LAYER" | cut -d' ' -f1)
diff_id=$(gzip -dc "$LAYER" | sha256sum | cut -d' ' -f1)
cp "$LAYER" "$LAYOUT/blobs/sha256/$layer_digest"
put_blob() { # stdin -> blob; prints digest and size
    local tmp="$LAYOUT/blob.tmp" digest
    cat >"$tmp"
    digest=$(sha256sum "$tmp" | cut -d' ' -f1)
    mv "$tmp" "$LAYOUT/blobs/sha256/$digest"
    echo "$digest $(stat -c %s "$LAYOUT/blobs/sha256/$digest")"
}
read -r config_digest config_size < <(jq -nc --arg d "sha256:$diff_id" \
    '{architecture:"amd64",os:"linux",config:{},rootfs:{type:"layers",diff_ids:[$d]}}' | put_blob)
read -r manifest_digest manifest_size < <(jq -nc \
    --arg c "sha256:$config_digest" --argjson cs "$config_size" \
    --arg l "sha256:$layer_digest" --argjson ls "$(stat -c %s "$LAYER")" \
    '{schemaVersion:2,mediaType:"application/vnd.oci.image.manifest.v1+json",
      config:{mediaType:"application/vnd.oci.image.config.v1+json",digest:$c,size:$cs},
      layers:[{mediaType:"application/vnd.oci.image.layer.v1.tar+gzip",digest:$l,size:$ls}]}' | put_blob)
echo '{"imageLayoutVersion":"1.0.0"}' >"$LAYOUT/oci-layout"
jq -nc --arg m "sha256:$manifest_digest" --argjson ms "$manifest_size" \
    '{schemaVersion:2,manifests:[{mediaType:"application/vnd.oci.image.manifest.v1+json",
      digest:$m,size:$ms,annotations:{"org.opencontainers.image.ref.name":"bench"}}]}' \
    >"$LAYOUT/index.json"
if [[ $HAVE_ZSTD == 1 ]]; then
    ZLAYER="$WORK/layer.tar.zst"
    tar -C "$TREE" --numeric-owner -cf - . | zstd -q -3 -T0 -o "$ZLAYER"
fi

# --- timing ----------------------------------------------------------------
declare -A TIMES
# time_it NAME PREPARE COMMAND: runs PREPARE and sync untimed, then COMMAND.
time_it() {
    local name=$1 prepare=$2 cmd=$3 start end
    eval "$prepare"
    sync
    start=$(date +%s.%N)
    eval "$cmd" >/dev/null
    end=$(date +%s.%N)
    TIMES[$name]+="$(echo "$end - $start" | bc -l) "
}
median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {m=(NR%2)?a[(NR+1)/2]:(a[NR/2]+a[NR/2+1])/2; printf "%.3f", m}'; }

D="$WORK/dest"
fresh="rm -rf '$D' '$WORK/bundle' '$WORK/out'*; mkdir -p '$D'"
for ((rep = 1; rep <= REPS; rep++)); do
    echo "== repetition $rep/$REPS" >&2
    time_it apply_kiln "$fresh" "'$KILN' apply '$LAYER' '$D'"
    time_it apply_tar "$fresh" "tar -C '$D' --numeric-owner -xzf '$LAYER'"
    time_it apply_umoci "$fresh" "umoci unpack --image '$LAYOUT:bench' '$WORK/bundle'"
    time_it diff_kiln_gzip "$fresh" "'$KILN' diff '$TREE' '$WORK/out.tar.gz' --compression gzip"
    time_it diff_tar_gzip "$fresh" "tar -C '$TREE' --numeric-owner -czf '$WORK/out.tar.gz' ."
    time_it diff_kiln_none "$fresh" "'$KILN' diff '$TREE' '$WORK/out.tar' --compression none"
    time_it diff_tar_none "$fresh" "tar -C '$TREE' --numeric-owner -cf '$WORK/out.tar' ."
    # kiln also hashes what it writes (the diff_id); so does this peer.
    time_it diff_tar_none_sha "$fresh" "tar -C '$TREE' --numeric-owner -cf - . | tee '$WORK/out.tar' | sha256sum"
    if [[ $HAVE_ZSTD == 1 ]]; then
        time_it apply_kiln_zstd "$fresh" "'$KILN' apply '$ZLAYER' '$D'"
        time_it apply_tar_zstd "$fresh" "tar -C '$D' --numeric-owner -I zstd -xf '$ZLAYER'"
        time_it diff_kiln_zstd "$fresh" "'$KILN' diff '$TREE' '$WORK/out.tar.zst' --compression zstd"
        time_it diff_tar_zstd "$fresh" "tar -C '$TREE' --numeric-owner -I 'zstd -3 -T0' -cf '$WORK/out.tar.zst' ."
    fi
done

# Sizes of one more kiln and tar gzip diff, for the record.
"$KILN" diff "$TREE" "$WORK/out.tar.gz" --compression gzip >/dev/null
kiln_gz=$(stat -c %s "$WORK/out.tar.gz")
tar_gz=$(stat -c %s "$LAYER")

row() { # label kiln-key peer-key
    local k p
    k=$(echo "${TIMES[$2]}" | median)
    p=$(echo "${TIMES[$3]}" | median)
    printf "%-34s %8ss %8ss %8.2f\n" "$1" "$k" "$p" "$(echo "$k / $p" | bc -l)"
}
echo
echo "median of $REPS runs; ratio = kiln / peer (below 1: kiln faster)"
printf "%-34s %9s %9s %8s\n" "" "kiln" "peer" "ratio"
row "apply gzip   vs tar -xzf" apply_kiln apply_tar
row "apply gzip   vs umoci unpack" apply_kiln apply_umoci
row "diff  gzip   vs tar -czf" diff_kiln_gzip diff_tar_gzip
row "diff  plain  vs tar -cf" diff_kiln_none diff_tar_none
row "diff  plain  vs tar -cf | sha256sum" diff_kiln_none diff_tar_none_sha
if [[ $HAVE_ZSTD == 1 ]]; then
    row "apply zstd   vs tar -I zstd -x" apply_kiln_zstd apply_tar_zstd
    row "diff  zstd   vs tar -I 'zstd -T0'" diff_kiln_zstd diff_tar_zstd
fi
echo "gzip layer size: kiln $kiln_gz bytes, tar -czf $tar_gz bytes"
