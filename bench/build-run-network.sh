#!/bin/sh
# What the default bridge network adds to a RUN step of `kiln build`: a
# Dockerfile of 20 `RUN echo N` steps FROM busybox, built with --no-cache
# with `--network default` (each RUN on kiln0) and `--network none`
# (loopback only), timed in one run with hyperfine; prints medians and the
# cost per RUN. With a docker engine answering (DOCKER_HOST as usual, e.g.
# eval "$(../shared/peers/dockerd.sh)"), the same with `docker build`
# (BuildKit) and its kiln/docker ratios; a missing busybox is loaded into
# it from kiln (`kiln save busybox:latest | docker load`).
#
# Needs root, busybox-static, hyperfine (Debian packages) and a release
# build of kiln (KILN=path, default target/release/kiln).
#
# The docker client is $DOCKER (default: docker); it must build with
# BuildKit (engine 20.10's built-in one, DOCKER_BUILDKIT=1, or buildx).
#
# Usage: bench/build-run-network.sh [RUNS]   (default 10)
set -eu

RUNS=${1:-10}
DOCKER=${DOCKER:-docker}
HERE=$(cd "$(dirname "$0")/.." && pwd)
KILN=${KILN:-$HERE/target/release/kiln}
[ -x "$KILN" ] || KILN=${CARGO_TARGET_DIR:-$HERE/target}/release/kiln
[ -x "$KILN" ] || { echo "no kiln release build (cargo build --release -p kiln, or set KILN)" >&2; exit 1; }
for tool in hyperfine python3; do
    command -v "$tool" >/dev/null || { echo "missing $tool" >&2; exit 1; }
done
[ "$(id -u)" = 0 ] || { echo "run as root" >&2; exit 1; }

STEPS=20
WORK=$(mktemp -d /tmp/kiln-bench.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
"$HERE/testdata/base/make-busybox-rootfs.sh" "$WORK/busybox.tar" >/dev/null
"$KILN" --root "$WORK/root" import "$WORK/busybox.tar" busybox:latest >/dev/null
mkdir "$WORK/ctx"
{
    echo "FROM busybox:latest"
    i=1
    while [ "$i" -le "$STEPS" ]; do echo "RUN echo $i"; i=$((i + 1)); done
} >"$WORK/ctx/Dockerfile"

B="$KILN --root $WORK/root build -q --no-cache"
hyperfine -N --warmup 2 --runs "$RUNS" --export-json "$WORK/kiln.json" \
    -n kiln-default "$B --network default $WORK/ctx" \
    -n kiln-none "$B --network none $WORK/ctx" >"$WORK/kiln.txt" 2>&1 ||
    { cat "$WORK/kiln.txt"; exit 1; }

echo '{"results": []}' >"$WORK/docker.json"
if command -v "$DOCKER" >/dev/null && timeout 5 "$DOCKER" info >/dev/null 2>&1; then
    if ! "$DOCKER" image inspect busybox:latest >/dev/null 2>&1; then
        "$KILN" --root "$WORK/root" save busybox:latest | "$DOCKER" load >/dev/null ||
            echo "note: loading busybox into docker failed"
    fi
    D="$DOCKER build -q --no-cache"
    hyperfine -N --warmup 1 --runs "$RUNS" --export-json "$WORK/docker.json" \
        -n docker-default "$D --network default $WORK/ctx" \
        -n docker-none "$D --network none $WORK/ctx" >"$WORK/docker.txt" 2>&1 ||
        { echo "note: docker build failed:"; tail -5 "$WORK/docker.txt"; echo '{"results": []}' >"$WORK/docker.json"; }
else
    echo "note: no docker engine answered (set DOCKER_HOST); no docker rows."
fi

python3 - "$WORK/kiln.json" "$WORK/docker.json" "$STEPS" <<'PY'
import json, sys
results = {}
for path in sys.argv[1:3]:
    for r in json.load(open(path))["results"]:
        results[r["command"]] = r
steps = int(sys.argv[3])
median = {name: r["median"] * 1000 for name, r in results.items()}
print("build of %d RUN steps, --no-cache, median (ms):" % steps)
for name in ("kiln-default", "kiln-none", "docker-default", "docker-none"):
    if name in median:
        print("  %-15s %9.1f" % (name, median[name]))
print("  kiln: default bridge over none, per RUN: %+.2f ms"
      % ((median["kiln-default"] - median["kiln-none"]) / steps))
if "docker-default" in median:
    print("  docker: default over none, per RUN: %+.2f ms"
          % ((median["docker-default"] - median["docker-none"]) / steps))
    for net in ("default", "none"):
        print("  kiln-%s/docker-%s = %.3f" % (net, net, median["kiln-" + net] / median["docker-" + net]))
PY
