#!/usr/bin/env bash
# Installs what kiln needs (Debian packages), builds it, and runs the demo:
# make the busybox base image, import it, list, inspect and save it, build
# testdata/hello on it and run it.
# Run as root: sudo ./demo.sh
set -euo pipefail
cd "$(dirname "$0")"
export DEBIAN_FRONTEND=noninteractive
if [ "$(id -u)" != 0 ]; then echo "demo.sh: run as root (kiln manages mounts, namespaces and cgroups)" >&2; exit 1; fi
apt-get update -qq
# shellcheck disable=SC2046
apt-get install -y -qq --no-install-recommends $(grep -v '^#' .ci/packages | grep -v '^docker.io$') >/dev/null
cargo build --release -q
kiln=${CARGO_TARGET_DIR:-target}/release/kiln
root=${KILN_ROOT:-/var/lib/kiln}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
set -x
testdata/base/make-busybox-rootfs.sh "$work/busybox.tar"
$kiln --root "$root" import --change 'CMD ["sh"]' "$work/busybox.tar" busybox:latest
$kiln --root "$root" images
$kiln --root "$root" inspect busybox | head -20
$kiln --root "$root" save -o "$work/busybox-saved.tar" busybox
tar -tf "$work/busybox-saved.tar"
$kiln --root "$root" build --progress plain -t hello:latest testdata/hello
$kiln --root "$root" build --progress plain -t hello:latest testdata/hello     # again: every step CACHED
$kiln --root "$root" images
$kiln --root "$root" run --rm hello:latest
$kiln --root "$root" run --rm -e WHO=you busybox:latest sh -c 'echo "hi $WHO from $(hostname)"'
$kiln --root "$root" system df
$kiln --root "$root" fsck
