#!/bin/sh
# Parse + compile (+ lint) a generated 1,000-instruction Dockerfile many
# times and print the median. Target: well under 10 ms. No peer tool is
# compared here: BuildKit's frontend does not run on its own.
set -eu
cd "$(dirname "$0")/.."
exec cargo run --quiet --release -p kiln-builder --example parse-bench
