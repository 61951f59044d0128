#!/usr/bin/env python3
"""Exports an Ultralytics YOLO-seg model to the ONNX that `vrseg build-engine`
expects.

    python3 tools/export/export_yolo_seg.py yolo11n-seg.pt -o yolo11n-seg.onnx
    vrseg build-engine yolo11n-seg.onnx -o engines/yolo11n-seg.plan --batch 8

Needs `pip install ultralytics onnx onnxslim` (and torch). The settings are the
ones the engine is built and tested for: opset 17, graph simplified (onnxslim
folds the shape arithmetic), a fixed image size (640, or 1280 for small
subjects in 8K eyes), FP32 weights (the engine converts them to FP16 itself),
no NMS in the graph (vrseg runs its own on the GPU). The batch is left at 1:
`vrseg build-engine --batch N` pins it.

MODEL is a trained checkpoint (`yolo11n-seg.pt` ... `yolo11x-seg.pt`) or a
model yaml (`yolo11n-seg.yaml`), which builds the network with random weights:
masks are then meaningless, but speed and numerical parity are not. With
`--randomize SEED` the random weights are spread out (He-normal convolutions,
perturbed batch-norm statistics) so that anchors do not tie exactly, as the
parity tests need.

`--strip-weights` writes the graph with every initializer's data removed
(shapes kept): the test fixture in tests/data/models, whose weights the tests
regenerate from a seed, so the repository does not carry 11 MB of random
numbers.
"""

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path


def randomize(model, seed: int) -> None:
    """He-normal convolutions and perturbed batch-norm statistics (the DFL
    convolution, fixed and not trainable, is left alone): a fresh model
    scores most anchors at exactly sigmoid(bias)."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.Conv2d) and m.weight.requires_grad:
                fan_in = m.weight[0].numel()
                m.weight.copy_(torch.randn(m.weight.shape, generator=gen) * (2.0 / fan_in) ** 0.5)
                if m.bias is not None:
                    m.bias.copy_(torch.randn(m.bias.shape, generator=gen) * 0.5)
            elif isinstance(m, torch.nn.BatchNorm2d):
                m.weight.copy_(0.8 + 0.4 * torch.rand(m.weight.shape, generator=gen))
                m.bias.copy_(0.2 * torch.randn(m.bias.shape, generator=gen))
                m.running_mean.copy_(0.2 * torch.randn(m.running_mean.shape, generator=gen))
                m.running_var.copy_(0.8 + 0.4 * torch.rand(m.running_var.shape, generator=gen))


def strip_weights(src: Path, dst: Path) -> None:
    """Removes the data of convolution weights (a Conv or ConvTranspose's
    second input), keeping names, types and dims. Biases, the anchor and
    stride tables and small weights (under 4096 values, e.g. the fixed DFL
    convolution) keep their data: they are structure, not random numbers."""
    import onnx

    model = onnx.load(str(src))
    weights = {n.input[1] for n in model.graph.node if n.op_type in ("Conv", "ConvTranspose")}
    for init in model.graph.initializer:
        count = 1
        for d in init.dims:
            count *= d
        if init.name in weights and init.data_type == onnx.TensorProto.FLOAT and count >= 4096:
            init.ClearField("raw_data")
            init.ClearField("float_data")
    onnx.save(model, str(dst))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="yolo11{n,s,m,l,x}-seg.pt (trained) or .yaml (random weights)")
    parser.add_argument("-o", "--output", required=True, help="the .onnx file to write")
    parser.add_argument("--imgsz", type=int, default=640, help="square input size (default 640)")
    parser.add_argument("--randomize", type=int, metavar="SEED", help="spread random weights out (yaml models)")
    parser.add_argument("--strip-weights", action="store_true", help="keep shapes, drop weight data (test fixture)")
    args = parser.parse_args()

    os.environ.setdefault("YOLO_OFFLINE", "1")
    import torch
    from ultralytics import YOLO

    out = Path(args.output).resolve()
    with tempfile.TemporaryDirectory() as work:
        os.environ.setdefault("YOLO_CONFIG_DIR", str(Path(work) / "config"))
        model_arg = args.model
        if Path(model_arg).exists():
            model_arg = str(Path(model_arg).resolve())
        cwd = os.getcwd()
        os.chdir(work)
        try:
            torch.manual_seed(0)
            model = YOLO(model_arg)
            if args.randomize is not None:
                randomize(model.model, args.randomize)
            exported = Path(model.export(format="onnx", imgsz=args.imgsz, opset=17, simplify=True, dynamic=False))
            exported = exported.resolve()  # relative to the work directory
        finally:
            os.chdir(cwd)
        out.parent.mkdir(parents=True, exist_ok=True)
        if args.strip_weights:
            strip_weights(exported, out)
        else:
            shutil.copyfile(exported, out)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
