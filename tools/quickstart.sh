#!/usr/bin/env bash
# The main job on its embedded default: builds vrseg, builds a native engine
# plan from the bundled YOLO11n-seg fixture (random weights: the masks are
# meaningless, the speed is real), and runs `vrseg run` on the bundled
# 3840x1080 side-by-side HEVC clip (tests/data/demo, 90 frames), printing the
# throughput. The mattes go to target/demo/: an alpha video when NVENC or an
# ffmpeg is available, else one PNG per frame.
#
# For real masks, export a trained model (tools/export/export_yolo_seg.py,
# see the README) and pass its plan with --engine.
set -euo pipefail
cd "$(dirname "$0")/.."
tools/setup.sh
cargo build --release --quiet
vrseg=target/release/vrseg
plan=engines/yolo11n-seg-demo.plan
clip=tests/data/demo/sbs-demo_LR.mp4
mkdir -p target/demo
"$vrseg" info
if [ ! -f "$plan" ]; then
    # 16 images = 8 stereo frames per batch.
    "$vrseg" build-engine tests/data/models/yolo11n-seg-640.structure.onnx -o "$plan" --batch 16 \
        --fill-stripped-weights 1
fi
echo "== throughput, nothing written (--output null)"
"$vrseg" run "$clip" --engine "$plan" --output null --stats target/demo/stats.json
rm -rf target/demo/matte.mp4 target/demo/masks
echo "== mattes"
if ! "$vrseg" run "$clip" --engine "$plan" --output matte -o target/demo/matte.mp4 2>target/demo/matte.err; then
    cat target/demo/matte.err
    echo "(no video encoder here: writing PNG masks instead)"
    "$vrseg" run "$clip" --engine "$plan" --output masks -o target/demo/masks
else
    cat target/demo/matte.err
fi
echo "random weights: the mattes are meaningless; export a trained model for real ones (README: Building an engine)"
