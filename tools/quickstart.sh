#!/usr/bin/env bash
# The main job on an embedded default. Until the pipeline lands that means:
# show what this machine's GPU offers vrseg, then run the GPU self-test
# (embedded kernels against CPU references, the VRAM pool, a frame loop that
# must not allocate).
set -euo pipefail
cd "$(dirname "$0")/.."
tools/setup.sh
cargo build --release --quiet
target/release/vrseg info
target/release/vrseg selftest
