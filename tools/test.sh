#!/usr/bin/env bash
# The whole test suite, as CI runs it (.ci/run). Installs what it needs first.
# GPU tests skip with 'skipped: no CUDA device' where there is no GPU; set
# VRSEG_REQUIRE_GPU=1 to make them fail instead.
set -euo pipefail
cd "$(dirname "$0")/.."
tools/setup.sh
# Lints first: clippy.toml forbids device allocation outside the VRAM pool.
cargo clippy --all-targets --quiet -- -D warnings
cargo test --all-targets
# The engine-parity script's own checks (numpy only; the GPU parity runs in the bundle).
py=python3
python3 -c 'import numpy' 2>/dev/null || py=.venv-tools/bin/python3
"$py" tools/parity/engine_parity.py --self-test
