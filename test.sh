#!/usr/bin/env bash
# Runs every test suite, privileged and registry ones included (run as root).
# One build of the whole workspace, then the tests.
set -euo pipefail
cd "$(dirname "$0")"
cargo test --workspace --all-features --no-fail-fast "$@"
