#!/usr/bin/env bash
# Builds every test and bench binary and the vrseg binary in release mode,
# gathers them (packed in bundle/binaries.tar.xz, which run.sh unpacks) with
# their test data into bundle/ (git-ignored, < 63 MiB), and
# prints the command that runs them all on a GPU machine. There,
# `bash bundle/run.sh` runs each test binary with VRSEG_REQUIRE_GPU=1 (a
# missing GPU fails instead of skipping), runs `vrseg info` and `vrseg
# selftest`, checks the embedded SASS with cuobjdump when present, and ends
# with the plain line 'N passed, N failed'; the Ultralytics parity script
# (tools/parity) counts as one check. `bash bundle/run.sh bench` runs the
# criterion benches instead.
#
# TensorRT: the binaries are built with the TensorRT shim (required, as in
# CI), and the bundle carries what the shim's tests need on a machine with
# neither TensorRT nor a C++ compiler nor binutils: the shim's static archive
# (its symbols are checked against shim.h) and the stand-in libnvinfer /
# libnvonnxparser built here from tests/data/tensorrt/fake_tensorrt.cpp.
set -euo pipefail
cd "$(dirname "$0")/.."
tools/setup.sh
export VRSEG_REQUIRE_TENSORRT_SHIM=1

json=$(mktemp)
shim_out=$(mktemp)
trap 'rm -f "$json" "$shim_out"' EXIT
cargo build --release --quiet --bins
cargo test --release --no-run --message-format=json --quiet > "$json"
cargo bench --no-run --message-format=json --quiet >> "$json"

rm -rf bundle
mkdir -p bundle/bin bundle/tests bundle/benches
cp target/release/vrseg bundle/bin/
python3 - "$json" "$shim_out" <<'PY'
import json, shutil, sys, os
seen = set()
for line in open(sys.argv[1]):
    try:
        m = json.loads(line)
    except ValueError:
        continue
    if m.get("reason") == "build-script-executed" and os.path.isfile(
            os.path.join(m.get("out_dir", ""), "tensorrt_shim_paths.txt")):
        # vrseg's build script output: the TensorRT shim's archive and facts.
        open(sys.argv[2], "w").write(m["out_dir"])
    if m.get("reason") != "compiler-artifact" or not m.get("executable"):
        continue
    kind = m["target"]["kind"][0]
    name = m["target"]["name"]
    if kind == "bin" and not m["profile"]["test"]:
        continue  # the vrseg binary itself is copied separately
    dest = "benches" if kind == "bench" else "tests"
    label = name if kind in ("test", "bench") else f"{kind}-{name}"
    if (dest, label) in seen:
        continue
    seen.add((dest, label))
    shutil.copy2(m["executable"], os.path.join("bundle", dest, label))
PY
strip bundle/bin/* bundle/tests/* bundle/benches/* 2>/dev/null || true

# The TensorRT shim's archive and the stand-in TensorRT libraries (see the
# top). The compile line is testing::tensorrt_fakes::compile's.
shim_dir=$(cat "$shim_out")
if [ -z "$shim_dir" ]; then
    echo "gpu-bundle: cargo reported no TensorRT shim build (tensorrt_shim_paths.txt)" >&2
    exit 1
fi
mkdir -p bundle/tensorrt/fakes
cp "$shim_dir/libvrseg_tensorrt_shim.a" bundle/tensorrt/
strip --strip-debug bundle/tensorrt/libvrseg_tensorrt_shim.a
trt_include=$(sed -n 's/^include=//p' "$shim_dir/tensorrt_shim_paths.txt")
trt_cuda_include=$(sed -n 's/^cuda_include=//p' "$shim_dir/tensorrt_shim_paths.txt")
for fake in "nvinfer.so:" "nvinfer-bare.so:-DFAKE_NO_FACTORIES" "parser.so:-DFAKE_PARSER"; do
    ${CXX:-c++} -std=c++17 -shared -fPIC -O0 -w -o "bundle/tensorrt/fakes/${fake%%:*}" \
        -isystem "$trt_include" -isystem "$trt_cuda_include" ${fake#*:} tests/data/tensorrt/fake_tensorrt.cpp
done

# Tests read their data from VRSEG_TEST_DATA when set (run.sh sets it), else
# from tests/data in the source tree.
if [ -d tests/data ]; then
    cp -r tests/data bundle/data
    rm -rf bundle/data/generated
fi

# Decode benchmark extras (VRSEG_BUNDLE_DECODE_BENCH=1): the 8K clip from
# tools/bench/make-8k-clip.sh, NVIDIA's PyNvVideoCodec wheel (bundle-extra/
# wheels, fetched by `pip download PyNvVideoCodec==2.2.4 --no-deps
# --only-binary=:all: --python-version 3.12 --platform manylinux_2_28_x86_64`)
# and its driver script; `bash bundle/run.sh bench-decode` runs both decoders
# in one run.
if [ "${VRSEG_BUNDLE_DECODE_BENCH:-0}" = 1 ]; then
    clip=target/bench/sbs-8k-hevc8_LR.mp4
    [ -f "$clip" ] || tools/bench/make-8k-clip.sh "$clip" 2
    wheel=$(ls bundle-extra/wheels/pynvvideocodec-2.2.4-*.whl 2>/dev/null | head -1)
    if [ -z "$wheel" ]; then
        mkdir -p bundle-extra/wheels
        python3 -m pip download PyNvVideoCodec==2.2.4 --no-deps --only-binary=:all: --python-version 3.12 \
            --platform manylinux_2_28_x86_64 -d bundle-extra/wheels
        wheel=$(ls bundle-extra/wheels/pynvvideocodec-2.2.4-*.whl | head -1)
    fi
    mkdir -p bundle/extra
    cp "$clip" "$wheel" tools/bench/pynvc_decode.py tools/bench/decode_table.py bundle/extra/
    # The Python reference pipeline beside `vrseg run` (`bash bundle/run.sh bench-pipeline`):
    # it uses the same clip and wheel, plus the Ultralytics wheels in bundle/parity/wheels.
    cp tools/bench/python_pipeline.py tools/bench/pipeline_table.py bundle/extra/
fi

# Ultralytics parity (tools/parity): the script and the pinned wheels it
# installs offline on the GPU machine (torch, onnx, onnxruntime and opencv
# are there already), fetched once into bundle-extra/wheels.
parity_wheels="ultralytics==8.4.190 ultralytics-thop==2.2.3 ultralytics-platform==0.1.99 onnxslim==0.1.98"
mkdir -p bundle-extra/parity-wheels bundle/parity/wheels
for spec in $parity_wheels; do
    name=${spec%%==*}; version=${spec##*==}
    if ! ls bundle-extra/parity-wheels/"${name//-/_}"-"$version"-*.whl >/dev/null 2>&1; then
        python3 -m pip download "$spec" --no-deps --only-binary=:all: --python-version 3.12 \
            --platform manylinux_2_28_x86_64 -d bundle-extra/parity-wheels --quiet
    fi
    cp bundle-extra/parity-wheels/"${name//-/_}"-"$version"-*.whl bundle/parity/wheels/
done
cp tools/parity/ultralytics_parity.py tools/parity/engine_parity.py tools/export/export_yolo_seg.py bundle/parity/

cat > bundle/run.sh <<'RUN'
#!/usr/bin/env bash
# Runs the vrseg GPU bundle. Usage: bash bundle/run.sh [bench]
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# The binaries travel packed (see tools/gpu-bundle.sh); unpack them once.
if [ -f "$here/binaries.tar.xz" ] && ! [ "$here/bin/vrseg" -nt "$here/binaries.tar.xz" ]; then
    python3 -c 'import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2])' \
        "$here/binaries.tar.xz" "$here" && touch "$here/bin/vrseg" \
        || { echo "cannot unpack $here/binaries.tar.xz" >&2; exit 1; }
fi
export VRSEG_REQUIRE_GPU=1 VRSEG_BIN="$here/bin/vrseg" VRSEG_TEST_DATA="$here/data"
# The TensorRT shim's tests: its archive and the prebuilt stand-in TensorRT
# (this machine need have no compiler or binutils); a build without the shim fails.
export VRSEG_TEST_TENSORRT_SHIM_ARCHIVE="$here/tensorrt/libvrseg_tensorrt_shim.a"
export VRSEG_TEST_TENSORRT_FAKES="$here/tensorrt/fakes" VRSEG_REQUIRE_TENSORRT_SHIM=1
log=${OUT:-/tmp}/bundle-log.txt
: > "$log"

if [ "${1:-}" = bench-decode ]; then
    # vrseg and PyNvVideoCodec decode the same file, alternating, twice each.
    clip=${2:-$(ls "$here"/extra/*.mp4 | head -1)}
    site=/tmp/vrseg-pynvc-site
    python3 -m pip install --quiet --no-index --no-deps --target "$site" "$here"/extra/pynvvideocodec-*.whl >>"$log" 2>&1
    out=${OUT:-/tmp}
    for round in 1 2; do
        "$here/bin/vrseg" bench decode "$clip" --passes 5 --json > "$out/vrseg-$round.json"
        PYTHONPATH="$site" python3 "$here/extra/pynvc_decode.py" "$clip" --repeat 5 --json > "$out/pynvc-$round.json" 2>>"$log"
    done
    python3 "$here/extra/decode_table.py" "$out"/vrseg-*.json "$out"/pynvc-*.json
    exit 0
fi

if [ "${1:-}" = bench-pipeline ]; then
    # Issue #6's benchmark on a long many-GOP clip: the 8K SBS clip looped
    # VRSEG_LOOP_TIMES times (default 20: 1200 frames, 40 GOPs) by `vrseg dev
    # loop-clip`, then side by side in this one run: `vrseg run --output null`
    # with YOLO11n-seg (the fixture plan, batch 16 = 8 stereo frames) on 1 NVDEC
    # session and on all of them, the Python reference
    # (tools/bench/python_pipeline.py: PyNvVideoCodec RGBP, torch FP16,
    # Ultralytics NMS + retina masks) with YOLO11n-seg; then YOLO11x-seg (random
    # weights, exported here, batch 16) with vrseg on all sessions and the
    # Python reference. One table at the end; every file under $OUT.
    clip=${2:-$(ls "$here"/extra/*.mp4 | head -1)}
    out=${OUT:-/tmp}
    long=/tmp/vrseg-bench-long.mp4
    rm -f "$long"
    "$here/bin/vrseg" dev loop-clip "$clip" -o "$long" --times "${VRSEG_LOOP_TIMES:-20}" 2>&1 | tee -a "$log" \
        || { echo "loop-clip failed: see $log"; exit 1; }
    plan_n=/tmp/vrseg-bench-pipeline-n.plan
    "$here/bin/vrseg" build-engine "$here/data/models/yolo11n-seg-640.structure.onnx" -o "$plan_n" --batch 16 \
        --fill-stripped-weights 1 >>"$log" 2>&1 || { echo "vrseg build-engine (n) failed: see $log"; exit 1; }
    work=/tmp/vrseg-bench-x
    mkdir -p "$work"
    YOLO_OFFLINE=1 YOLO_CONFIG_DIR="$work/config" python3 - "$here/parity" "$work" >>"$log" 2>&1 <<'PY' \
        || { echo "YOLO11x-seg export failed: see $log"; exit 1; }
import sys
from pathlib import Path
sys.path.insert(0, sys.argv[1])
import engine_parity as e
e.install_wheels(Path(sys.argv[1]) / "wheels", Path(sys.argv[2]) / "site")
import os
os.chdir(sys.argv[2])
e.export("x", Path(sys.argv[2]), 1)
PY
    plan_x=/tmp/vrseg-bench-pipeline-x.plan
    "$here/bin/vrseg" build-engine "$work/yolo11x-seg.onnx" -o "$plan_x" --batch 16 >>"$log" 2>&1 \
        || { echo "vrseg build-engine (x) failed: see $log"; exit 1; }
    pyref() {  # pyref NAME ARGS...: one whole pass of the Python reference on the long clip
        python3 "$here/extra/python_pipeline.py" "$long" --wheels "$here/extra" --wheels "$here/parity/wheels" \
            --json --passes 1 "${@:2}" > "$out/$1.json" 2> >(tee -a "$log" >&2)
    }
    "$here/bin/vrseg" run "$long" --engine "$plan_n" --output null --decoders 1 --quiet --stats "$out/vrseg-n-1dec.json"
    "$here/bin/vrseg" run "$long" --engine "$plan_n" --output null --quiet --stats "$out/vrseg-n-all.json"
    pyref python-n
    "$here/bin/vrseg" run "$long" --engine "$plan_x" --output null --quiet --stats "$out/vrseg-x-all.json"
    pyref python-x --model yolo11x-seg.yaml
    for f in "$out"/vrseg-*.json; do
        python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print(sys.argv[1].split("/")[-1], "frames", r["frames_out"], "decoders", r["decoders"], "steady_fps %.1f" % r.get("steady_fps", 0), "wall_s %.2f" % r.get("wall_s", 0))' "$f"
    done
    python3 "$here/extra/pipeline_table.py" "$out"/vrseg-n-1dec.json "$out"/vrseg-n-all.json "$out"/python-n.json \
        "$out"/vrseg-x-all.json "$out"/python-x.json
    exit $?
fi

if [ "${1:-}" = bench-engine ]; then
    # The native engine beside PyTorch FP16 (CUDA graph) on YOLO11{n,x}-seg,
    # batch 1 and 32, with a per-layer breakdown at batch 32.
    python3 "$here/parity/engine_parity.py" --vrseg "$here/bin/vrseg" --wheels "$here/parity/wheels" \
        --work /tmp/vrseg-engine-bench --out "${OUT:-/tmp}" --sizes "${2:-n,x}" --bench --no-parity
    exit $?
fi

if [ "${1:-}" = bench ]; then
    for b in "$here"/benches/*; do
        echo "== $(basename "$b")"
        "$b" --bench "${@:2}" 2>&1 | tee -a "$log"
    done
    exit 0
fi

passed=0; failed=0
check() {  # check NAME COMMAND... : one pass/fail line for a non-libtest check
    if "${@:2}" >>"$log" 2>&1; then passed=$((passed+1)); echo "ok    $1"; else failed=$((failed+1)); echo "FAIL  $1"; fi
}

for t in "$here"/tests/*; do
    name=$(basename "$t")
    out=$("$t" --test-threads=1 2>&1); rc=$?
    printf '%s\n' "$out" >> "$log"
    line=$(printf '%s\n' "$out" | grep -E '^test result:' | tail -1)
    p=$(printf '%s' "$line" | sed -nE 's/.* ([0-9]+) passed.*/\1/p'); p=${p:-0}
    f=$(printf '%s' "$line" | sed -nE 's/.* ([0-9]+) failed.*/\1/p'); f=${f:-0}
    if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then f=1; fi   # crashed before its summary
    passed=$((passed+p)); failed=$((failed+f))
    printf '%-28s %4s passed %4s failed\n' "$name" "$p" "$f"
    if [ "$f" -ne 0 ]; then printf '%s\n' "$out" | grep -E -A12 -- '---- |panicked' | head -60; fi
done

for b in "$here"/benches/*; do
    check "bench $(basename "$b") runs once (--test)" "$b" --test
done

if [ -d "$here/parity" ]; then
    echo "== ultralytics parity (tools/parity/ultralytics_parity.py)"
    if python3 "$here/parity/ultralytics_parity.py" --vrseg "$here/bin/vrseg" --wheels "$here/parity/wheels" \
        --work /tmp/vrseg-parity --out "${OUT:-/tmp}" 2>>"$log" | tee -a "$log"; then
        passed=$((passed+1)); echo "ok    ultralytics parity"
    else
        failed=$((failed+1)); echo "FAIL  ultralytics parity (stderr in the bundle log)"; tail -20 "$log"
    fi
fi

if [ -d "$here/parity" ]; then
    echo "== native engine vs ONNX Runtime (tools/parity/engine_parity.py)"
    if python3 "$here/parity/engine_parity.py" --vrseg "$here/bin/vrseg" --wheels "$here/parity/wheels" \
        --work /tmp/vrseg-engine-parity --out "${OUT:-/tmp}" --sizes "${VRSEG_PARITY_SIZES:-n,s,m,x}" \
        --inputs 20 2>>"$log" | grep -E "yolo11|engine parity" | tee -a "$log"; [ "${PIPESTATUS[0]}" -eq 0 ]; then
        passed=$((passed+1)); echo "ok    engine parity"
    else
        failed=$((failed+1)); echo "FAIL  engine parity (details in the bundle log)"
    fi
fi

echo "== vrseg run on the demo clip"
demo_plan=/tmp/vrseg-demo.plan
check "vrseg build-engine (demo plan)" "$here/bin/vrseg" build-engine "$here/data/models/yolo11n-seg-640.structure.onnx" \
    -o "$demo_plan" --batch 16 --fill-stripped-weights 1
check "vrseg run --output null (demo clip)" "$here/bin/vrseg" run "$here/data/demo/sbs-demo_LR.mp4" --engine "$demo_plan" \
    --output null --stats "${OUT:-/tmp}/demo-stats.json"
grep -h "vrseg run:" "$log" | tail -1
demo_plan32=/tmp/vrseg-demo-fp32.plan
check "vrseg build-engine --precision fp32 (demo plan)" "$here/bin/vrseg" build-engine \
    "$here/data/models/yolo11n-seg-640.structure.onnx" -o "$demo_plan32" --batch 4 --precision fp32 \
    --fill-stripped-weights 1
check "vrseg run --output null (demo clip, FP32 plan: FP16 letterbox converted in)" "$here/bin/vrseg" run \
    "$here/data/demo/sbs-demo_LR.mp4" --engine "$demo_plan32" --output null --frames 24

echo "== vrseg info"
"$here/bin/vrseg" info | tee -a "$log"
check "vrseg info --json" "$here/bin/vrseg" info --json
# vrseg info's TensorRT line against the loader's own view of this machine.
tensorrt_line() {
    local line
    line=$("$here/bin/vrseg" info | grep '^TensorRT')
    if ldconfig -p 2>/dev/null | grep -q 'libnvinfer\.so' || [ -n "${TENSORRT_ROOT:-}" ]; then
        echo "TensorRT may be installed here; vrseg info says: $line"
        case "$line" in TensorRT*available*) return 0 ;; *) return 1 ;; esac
    fi
    echo "no libnvinfer in the loader cache; vrseg info says: $line"
    case "$line" in "TensorRT: not found"*) return 0 ;; *) return 1 ;; esac
}
check "vrseg info: TensorRT line matches this machine" tensorrt_line
check "vrseg selftest" "$here/bin/vrseg" selftest
if command -v cuobjdump >/dev/null; then
    cuobjdump --list-elf "$here/bin/vrseg" > "${log%.txt}-elf.txt" 2>&1
    for arch in sm_86 sm_90; do
        check "cuobjdump: $arch code embedded" grep -q "$arch" "${log%.txt}-elf.txt"
    done
    grep -o 'sm_[0-9]*' "${log%.txt}-elf.txt" | sort | uniq -c
fi
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
RUN
chmod +x bundle/run.sh

# Every binary embeds all kernel fatbins (SASS for four architectures and
# PTX: about 18 MiB each), so the binaries together pass 190 MiB. The
# fatbins are the same bytes in every binary: xz with a dictionary larger
# than the whole tar stores them once. They travel as one .tar.xz that
# run.sh unpacks on first use (with Python's lzma, so no xz is needed there).
tar -C bundle -cf - bin tests benches | xz -T2 -6 --lzma2=preset=6,dict=256MiB > bundle/binaries.tar.xz
rm -rf bundle/bin bundle/tests bundle/benches
size=$(du -sm bundle | cut -f1)
echo "bundle/: ${size} MiB"
if [ "$size" -ge 63 ]; then echo "bundle is over 63 MiB (the device tool carries 64 MiB)" >&2; exit 1; fi
echo "On the GPU machine, from the repository root: bash bundle/run.sh"
echo "(with the device tool: run command='bash bundle/run.sh', carry=['bundle'])"
