#!/usr/bin/env bash
# Runs every test suite, privileged and registry ones included (run as root).
# One build of the whole workspace, then the tests; ends with one summary
# line over all suites.
set -euo pipefail
cd "$(dirname "$0")"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
cargo test --workspace --all-features --no-fail-fast "$@" 2>&1 | tee "$log" || status=$?
passed=$(grep -Eo '^test result: [a-zA-Z]+\. [0-9]+ passed' "$log" | awk '{s += $4} END {print s + 0}')
failed=$(grep -Eo '; [0-9]+ failed' "$log" | awk '{s += $2} END {print s + 0}')
echo
echo "total: $passed passed, $failed failed"
exit "$status"
