#!/usr/bin/env bash
# Installs what building and testing vrseg needs, and nothing when it is
# already there. Safe to run again. Used by tools/quickstart.sh, tools/test.sh
# and tools/gpu-bundle.sh.
#   - libclang (Debian: libclang-dev): the nvtx crate runs bindgen at build time.
#   - nvcc: from $NVCC, $CUDA_HOME, $CUDA_PATH or PATH if present; otherwise
#     PyPI's CUDA 13.0 compiler packages into ./.cuda (no GPU or driver needed).
#   - Rust dependencies: cargo fetch.
#   - TensorRT 11.4 headers (the crates.io crate trtx-sys vendors them) into
#     cargo's registry, for compiling the TensorRT shim where TensorRT itself is
#     not installed (build.rs, `tensorrt_shim`; tools/tensorrt-headers/).
set -euo pipefail
cd "$(dirname "$0")/.."

have_libclang() {
    [ -n "${LIBCLANG_PATH:-}" ] && return 0
    ls /usr/lib/llvm-*/lib/libclang*.so* /usr/lib/x86_64-linux-gnu/libclang*.so* >/dev/null 2>&1
}

if ! have_libclang; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "setup: installing libclang-dev (Debian)"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libclang-dev >/dev/null
    else
        echo "setup: libclang is missing; install it (Debian/Ubuntu: sudo apt-get install libclang-dev) and run this again" >&2
        exit 1
    fi
fi

find_nvcc() {
    if [ -n "${NVCC:-}" ] && [ -x "$NVCC" ]; then return 0; fi
    for root in "${CUDA_HOME:-}" "${CUDA_PATH:-}"; do
        [ -n "$root" ] && [ -x "$root/bin/nvcc" ] && return 0
    done
    command -v nvcc >/dev/null && return 0
    ls .cuda/lib/python3*/site-packages/nvidia/cu13/bin/nvcc >/dev/null 2>&1
}

if ! find_nvcc; then
    py=$(command -v python3 || true)
    if [ -z "$py" ]; then
        echo "setup: nvcc not found and python3 is missing to install it from PyPI; install python3 (with venv) or the CUDA toolkit" >&2
        exit 1
    fi
    echo "setup: installing the CUDA 13.0 compiler from PyPI into .cuda/"
    "$py" -m venv .cuda
    .cuda/bin/pip install -q --disable-pip-version-check \
        nvidia-cuda-nvcc==13.0.88 nvidia-nvvm==13.0.88 nvidia-cuda-crt==13.0.88 \
        nvidia-cuda-runtime==13.0.96 nvidia-cuda-cccl==13.0.85
fi

# tools/test.sh runs the engine-parity script's self-test (its NMS replay and
# the classification of differing detections), which needs numpy.
if ! python3 -c 'import numpy' 2>/dev/null && ! .venv-tools/bin/python3 -c 'import numpy' 2>/dev/null; then
    echo "setup: installing numpy into .venv-tools/ (the parity script's self-test)"
    python3 -m venv .venv-tools
    .venv-tools/bin/pip install -q --disable-pip-version-check numpy
fi

cargo fetch --quiet
if ! cargo fetch --quiet --locked --manifest-path tools/tensorrt-headers/Cargo.toml; then
    echo "setup: could not fetch the TensorRT headers (crate trtx-sys); vrseg builds without its TensorRT backend" \
         "unless TENSORRT_ROOT points at a TensorRT with include/" >&2
fi
