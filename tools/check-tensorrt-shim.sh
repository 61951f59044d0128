#!/usr/bin/env bash
# Compiles the TensorRT shim (src/engine/tensorrt/shim.cpp) against each
# TensorRT include directory given, with the warnings build.rs uses, and checks
# that the object references no TensorRT or CUDA symbol. For checking the
# shim against TensorRT releases other than the one a build uses, e.g. the
# headers of NVIDIA/TensorRT's git history (include/ at the "TensorRT 10.0 GA"
# ... "TensorRT 11.1" commits; for 10.0-10.13 NvOnnxParser.h comes from
# onnx/onnx-tensorrt at the matching release).
#
#   tools/check-tensorrt-shim.sh /opt/TensorRT-10.8.0/include /opt/TensorRT-11.4.0/include
#
# CUDA's cuda_runtime_api.h comes from $CUDA_INCLUDE, else beside nvcc.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ $# -eq 0 ]; then
    echo "usage: $0 TENSORRT_INCLUDE_DIR..." >&2
    exit 2
fi
cuda_include="${CUDA_INCLUDE:-}"
if [ -z "$cuda_include" ]; then
    for nvcc in "${NVCC:-}" "$(command -v nvcc || true)" .cuda/lib/python3*/site-packages/nvidia/cu13/bin/nvcc; do
        if [ -n "$nvcc" ] && [ -x "$nvcc" ] && [ -f "$(dirname "$nvcc")/../include/cuda_runtime_api.h" ]; then
            cuda_include="$(dirname "$nvcc")/../include"
            break
        fi
    done
fi
if [ -z "$cuda_include" ]; then
    echo "no cuda_runtime_api.h found: set CUDA_INCLUDE" >&2
    exit 1
fi
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
failed=0
for include in "$@"; do
    version=$(awk '/#define (NV_TENSORRT|TRT)_(MAJOR|MINOR|PATCH)(_ENTERPRISE)? [0-9]/ {print $3}' \
        "$include/NvInferVersion.h" | head -3 | paste -sd.)
    if c++ -std=c++17 -Wall -Wextra -Wpedantic -Werror -c src/engine/tensorrt/shim.cpp -o "$out/shim.o" \
        -I src/engine/tensorrt -isystem "$include" -isystem "$cuda_include" 2>"$out/log"; then
        if nm -u -C "$out/shim.o" | grep -E 'nvinfer1|nvonnxparser|_INTERNAL|getInfer|cuda' >"$out/refs"; then
            echo "FAIL TensorRT $version ($include): the object references $(paste -sd' ' "$out/refs")"
            failed=1
        else
            echo "ok   TensorRT $version ($include)"
        fi
    else
        echo "FAIL TensorRT $version ($include):"
        head -20 "$out/log"
        failed=1
    fi
done
exit $failed
