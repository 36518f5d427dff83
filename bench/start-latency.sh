#!/bin/sh
# Container start latency, timed in one run; prints medians and kiln/peer
# ratios.
#
# Two bundles over the same busybox root filesystem:
# - "minimal": the spec `runc spec` writes (args ["true"], no terminal): no
#   seccomp filter, few masked paths. `kiln runtime run`, `crun run` and
#   `runc run` of it compare the runtimes alone (kiln, crun, runc).
# - "docker": the spec `kiln run --network none busybox true` itself runs,
#   taken from a container kiln creates: docker's default seccomp profile,
#   capabilities, masked and read-only paths, devices, rlimits (clamped to
#   the hard limit, as kiln does at start), /etc/hostname, resolv.conf and
#   hosts bind-mounted, a new network namespace. This is the bundle
#   equivalent to `kiln run --rm busybox true`; `kiln runtime run`, crun
#   and runc run it as kiln-docker, crun-docker and runc-docker.
#
# Then `kiln run --rm busybox true` (image -> overlay rootfs -> that spec
# -> container record, log, removal) on the default bridge network and with
# `--network none`, and `docker run --rm busybox true` (docker's default
# bridge network) plus the same with `--network none` when a docker engine
# answers (DOCKER_HOST as usual, e.g. eval "$(../shared/peers/dockerd.sh)");
# a missing busybox is loaded into it from kiln
# (`kiln save busybox:latest | docker load`).
#
# Needs root, busybox-static, hyperfine, runc, crun (Debian packages) and a
# release build of kiln (KILN=path, default target/release/kiln).
#
# crun 1.8 refuses hybrid cgroup hosts ("cgroups in hybrid mode not
# supported") when the cgroup2 mount at /sys/fs/cgroup/unified holds a
# controller. Then every runtime is timed inside one private mount namespace
# where that mount is detached (cgroup v1 as such is untouched), so all
# three see the same host; the script says so. If crun still fails it
# retries with `crun --cgroup-manager=disabled` and says that too.
#
# Usage: bench/start-latency.sh [RUNS]   (default 100; ROUNDS=N, default 5)
set -eu

RUNS=${1:-100}
HERE=$(cd "$(dirname "$0")/.." && pwd)
KILN=${KILN:-$HERE/target/release/kiln}
[ -x "$KILN" ] || KILN=${CARGO_TARGET_DIR:-$HERE/target}/release/kiln
[ -x "$KILN" ] || { echo "no kiln release build (cargo build --release -p kiln, or set KILN)" >&2; exit 1; }
for tool in hyperfine runc crun busybox python3; do
    command -v "$tool" >/dev/null || { echo "missing $tool" >&2; exit 1; }
done
[ "$(id -u)" = 0 ] || { echo "run as root" >&2; exit 1; }

WORK=$(mktemp -d /tmp/kiln-bench.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
BUNDLE=$WORK/bundle
mkdir -p "$BUNDLE/rootfs/bin"
cp "$(command -v busybox)" "$BUNDLE/rootfs/bin/busybox"
for applet in $("$BUNDLE/rootfs/bin/busybox" --list); do
    [ -e "$BUNDLE/rootfs/bin/$applet" ] || ln -s busybox "$BUNDLE/rootfs/bin/$applet"
done
(cd "$BUNDLE" && runc spec)
python3 - "$BUNDLE/config.json" <<'EOF'
import json, sys
path = sys.argv[1]
spec = json.load(open(path))
spec["process"]["terminal"] = False
spec["process"]["args"] = ["true"]
json.dump(spec, open(path, "w"), indent=1)
EOF

# Runs "$@" in a private mount namespace without the hybrid cgroup2 mount.
WRAP=""
if [ -n "$(cat /sys/fs/cgroup/unified/cgroup.controllers 2>/dev/null)" ]; then
    echo "note: hybrid cgroups (cgroup2 at /sys/fs/cgroup/unified holds: $(cat /sys/fs/cgroup/unified/cgroup.controllers));"
    echo "      crun refuses that layout, so all three run in a private mount namespace without that mount."
    WRAP="unshare --mount --propagation private sh -c 'umount -l /sys/fs/cgroup/unified && exec \"\$0\" \"\$@\"'"
fi
wrapped() { if [ -n "$WRAP" ]; then eval "$WRAP" '"$@"'; else "$@"; fi; }

CRUN="crun run -b $BUNDLE bench-crun"
if ! wrapped crun run -b "$BUNDLE" bench-crun-probe >/dev/null 2>&1; then
    echo "note: crun run failed here; using crun --cgroup-manager=disabled (crun then makes no cgroup)."
    CRUN="crun --cgroup-manager=disabled run -b $BUNDLE bench-crun"
    wrapped sh -c "$CRUN" >/dev/null 2>&1 || { echo "crun cannot run the bundle at all" >&2; exit 1; }
fi
wrapped "$KILN" runtime run -b "$BUNDLE" bench-kiln-probe >/dev/null || { echo "kiln cannot run the bundle" >&2; exit 1; }
wrapped runc run -b "$BUNDLE" bench-runc-probe >/dev/null || { echo "runc cannot run the bundle" >&2; exit 1; }

# An image store with busybox:latest for `kiln run`.
"$HERE/testdata/base/make-busybox-rootfs.sh" "$WORK/busybox.tar" >/dev/null
"$KILN" --root "$WORK/root" import "$WORK/busybox.tar" busybox:latest >/dev/null
wrapped "$KILN" --root "$WORK/root" run --rm busybox true || { echo "kiln run cannot run busybox" >&2; exit 1; }

# The docker bundle: the spec of a container `kiln create` makes (kept in
# its record, containers/ID/config.json), on the minimal bundle's rootfs.
DBUNDLE=$WORK/docker-bundle
mkdir -p "$DBUNDLE" "$BUNDLE/rootfs/etc"
for f in hostname resolv.conf hosts; do touch "$BUNDLE/rootfs/etc/$f"; done
ID=$("$KILN" --root "$WORK/root" create --network none busybox true)
python3 - "$WORK/root/containers/$ID/config.json" "$DBUNDLE" "$BUNDLE/rootfs" "$(ulimit -Hn)" <<'EOF'
import json, sys
record, bundle, rootfs, hard = sys.argv[1:5]
spec = json.load(open(record))["spec"]
assert spec["linux"].get("seccomp"), "kiln's spec has no seccomp profile"
spec["root"] = {"path": rootfs, "readonly": False}
# Each runtime picks its own cgroup, as with the minimal bundle.
spec["linux"].pop("cgroupsPath", None)
if hard != "unlimited":
    for r in spec["process"].get("rlimits", []):
        r["hard"] = min(r["hard"], int(hard))
        r["soft"] = min(r["soft"], r["hard"])
# kiln bind-mounts these from the container's directory at start.
files = (("hostname", spec["hostname"] + "\n"),
         ("resolv.conf", open("/etc/resolv.conf").read()),
         ("hosts", "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"))
for name, text in files:
    open("%s/%s" % (bundle, name), "w").write(text)
    spec["mounts"].append({"destination": "/etc/" + name, "type": "bind",
                           "source": "%s/%s" % (bundle, name), "options": ["rbind", "rprivate"]})
json.dump(spec, open(bundle + "/config.json", "w"), indent=1)
EOF
"$KILN" --root "$WORK/root" rm "$ID" >/dev/null
CRUN_DOCKER=$(echo "$CRUN" | sed "s|-b $BUNDLE bench-crun|-b $DBUNDLE bench-crun-docker|")
for cmd in "$KILN runtime run -b $DBUNDLE bench-probe" "$CRUN_DOCKER" "runc run -b $DBUNDLE bench-probe"; do
    wrapped sh -c "$cmd" >/dev/null || { echo "cannot run the docker bundle: $cmd" >&2; exit 1; }
done

# The machine's speed drifts over minutes: the runs are split into ROUNDS
# rounds, the commands in turn (in reverse order every other round), so
# drift falls on every command alike rather than on whichever ran last.
ROUNDS=${ROUNDS:-5}
PER_ROUND=$(( (RUNS + ROUNDS - 1) / ROUNDS ))
[ "$PER_ROUND" -ge 2 ] || PER_ROUND=2
set -- \
    kiln "$KILN runtime run -b $BUNDLE bench-kiln" \
    kiln-run "$KILN --root $WORK/root run --rm busybox true" \
    kiln-run-none "$KILN --root $WORK/root run --rm --network none busybox true" \
    crun "$CRUN" \
    runc "runc run -b $BUNDLE bench-runc" \
    kiln-docker "$KILN runtime run -b $DBUNDLE bench-kiln-docker" \
    crun-docker "$CRUN_DOCKER" \
    runc-docker "runc run -b $DBUNDLE bench-runc-docker"
round=1
while [ "$round" -le "$ROUNDS" ]; do
    args=""
    i=1
    while [ "$i" -lt "$#" ]; do
        eval "name=\${$i} cmd=\${$((i + 1))}"
        entry="-n '$name' '$cmd'"
        if [ $((round % 2)) = 0 ]; then args="$entry $args"; else args="$args $entry"; fi
        i=$((i + 2))
    done
    warmup=3
    [ "$round" = 1 ] && warmup=10
    eval wrapped hyperfine -N --warmup "$warmup" --runs "$PER_ROUND" \
        --export-json "$WORK/result-$round.json" "$args" >"$WORK/hyperfine.txt" 2>&1 ||
        { cat "$WORK/hyperfine.txt"; exit 1; }
    round=$((round + 1))
done

# docker, when an engine answers (fewer runs: it is slow). busybox comes
# from kiln's store when the engine lacks it, so both run the same image.
echo '{"results": []}' >"$WORK/docker.json"
if command -v docker >/dev/null && timeout 5 docker info >/dev/null 2>&1; then
    if ! docker image inspect busybox:latest >/dev/null 2>&1; then
        "$KILN" --root "$WORK/root" save busybox:latest | docker load >/dev/null ||
            echo "note: loading busybox into docker failed"
    fi
    hyperfine -N --warmup 3 --runs 20 --export-json "$WORK/docker.json" \
        -n docker-run "docker run --rm busybox true" \
        -n docker-none "docker run --rm --network none busybox true" >"$WORK/docker.txt" 2>&1 ||
        { echo "note: docker run failed:"; tail -5 "$WORK/docker.txt"; echo '{"results": []}' >"$WORK/docker.json"; }
else
    echo "note: no docker engine answered (set DOCKER_HOST); no docker rows."
fi

python3 - "$WORK/docker.json" "$WORK"/result-*.json <<'EOF'
import json, statistics, sys
times = {}
for path in sys.argv[1:]:
    for r in json.load(open(path))["results"]:
        times.setdefault(r["command"], []).extend(r["times"])
median = {name: statistics.median(t) * 1000 for name, t in times.items()}
rounds = len(sys.argv) - 2
print("container start, median of %d runs in %d rounds (ms):" % (len(times["kiln"]), rounds))
for name in ("kiln", "crun", "runc", "kiln-docker", "crun-docker", "runc-docker",
             "kiln-run", "kiln-run-none", "docker-run", "docker-none"):
    if name not in median:
        continue
    print("  %-13s %7.2f ms  (mean %.2f, min %.2f)" % (
        name, median[name], statistics.mean(times[name]) * 1000, min(times[name]) * 1000))
print("the runtimes alone:")
for ours, peers in (("kiln", ("crun", "runc")), ("kiln-docker", ("crun-docker", "runc-docker"))):
    for peer in peers:
        print("  %s/%s = %.2f" % (ours, peer, median[ours] / median[peer]))
# The issue's target: `kiln run --rm busybox true` at or below crun running
# the equivalent bundle (crun-docker); the minimal bundle for comparison.
print("kiln run against the runtimes:")
for run in ("kiln-run-none", "kiln-run"):
    for peer in ("crun-docker", "runc-docker", "crun", "runc"):
        print("  %s/%s = %.2f" % (run, peer, median[run] / median[peer]))
print("  default bridge over --network none: %+.2f ms" % (median["kiln-run"] - median["kiln-run-none"]))
for peer in ("docker-run", "docker-none"):
    if peer in median:
        print("  kiln-run/%s = %.3f" % (peer, median["kiln-run"] / median[peer]))
if "docker-none" in median:
    print("  kiln-run-none/docker-none = %.3f" % (median["kiln-run-none"] / median["docker-none"]))
EOF
