#!/usr/bin/env python3
"""The native engine against ONNX Runtime and PyTorch, on the GPU machine.

For each model size asked (default n, s, m, x):
1. Builds YOLO11{size}-seg from its yaml with seeded random weights
   (`randomize` from tools/export, so anchors do not tie) and exports it to
   ONNX as tools/export/export_yolo_seg.py does (opset 17, simplified, 640).
2. `vrseg build-engine` turns it into a plan (batch 1).
3. Parity: INPUTS random images (FP16-representable, so both sides see the
   same numbers) through ONNX Runtime (CPU, FP32) and through `vrseg dev
   engine`. Reports the relative L2 error of output0 and output1 per image
   (goal <= 1e-2), then feeds both heads through vrseg's postprocess (`vrseg
   dev yolo-seg`, mono 640x640, all classes, a threshold about 60
   candidates clear) and compares the kept detections (same count, classes
   and order; boxes matched by IoU) and the matte (IoU).
4. Speed (--bench): `vrseg bench engine` on plans at batch 1 and 32 beside
   PyTorch FP16 on the same architecture (Ultralytics' model, Conv+BN fused,
   cudnn.benchmark, CUDA graph), in one run; writes engine-bench.json.

Exits non-zero when a parity goal is missed.
"""

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

_here = Path(__file__).resolve().parent
sys.path.insert(0, str(_here if (_here / "export_yolo_seg.py").exists() else _here.parent / "export"))
from export_yolo_seg import randomize  # noqa: E402

INPUT = 640
L2_GOAL = 1e-2
CANDIDATES = 60
MASK_IOU_MIN = 0.95


def install_wheels(wheels: Path, site: Path) -> None:
    site.mkdir(parents=True, exist_ok=True)
    found = sorted(str(w) for w in wheels.glob("*.whl"))
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-index", "--no-deps", "--target", str(site), *found],
        check=True,
    )
    sys.path.insert(0, str(site))


def export(size: str, work: Path, seed: int):
    import torch
    from ultralytics import YOLO

    torch.manual_seed(seed)
    model = YOLO(f"yolo11{size}-seg.yaml")
    randomize(model.model, seed)
    condition_class_logits(model.model)
    onnx_path = Path(model.export(format="onnx", imgsz=INPUT, opset=17, simplify=True)).resolve()
    target = work / f"yolo11{size}-seg.onnx"
    onnx_path.replace(target)
    return model, target


def condition_class_logits(net) -> None:
    """Scales the class branch's last convolutions so that class logits
    spread about 1.5 around their mean. Deep random networks saturate them
    (sigmoid == 1 for thousands of anchors in s and x), which leaves no
    score gap wider than FP16 noise to place a threshold in, so the kept
    detections could not be compared at all. The scaling is part of the
    model both sides run; it changes what is compared, not how."""
    import torch

    detect = net.model[-1]
    x = torch.rand(1, 3, INPUT, INPUT)
    with torch.no_grad():
        net.eval()
        feats = []
        hooks = [branch[-1].register_forward_hook(lambda m, i, o: feats.append(o)) for branch in detect.cv3]
        net(x)
        for h in hooks:
            h.remove()
        for branch, out in zip(detect.cv3, feats):
            conv = branch[-1]
            mean, std = out.mean().item(), out.std().item()
            scale = 1.5 / max(std, 1e-6)
            conv.weight.mul_(scale)
            if conv.bias is not None:
                # Centre the logits a little below 0: most anchors background.
                conv.bias.mul_(scale).add_(-(mean * scale) - 1.0)


def rel_l2(a: np.ndarray, b: np.ndarray) -> float:
    a = a.astype(np.float64)
    b = b.astype(np.float64)
    return float(np.sqrt(((a - b) ** 2).sum() / max((b**2).sum(), 1e-30)))


def choose_conf(output0: np.ndarray, min_gap: float):
    """A score threshold in the widest gap between consecutive reference
    candidate scores, with 5 to 200 candidates above it and none of them
    saturated (sigmoid == 1 ties every anchor): FP16 inference moves scores
    by about 1e-4, so a threshold in a narrow gap would compare noise, not
    the engine. Returns (threshold, gap), or (None, 0) when no such gap exists."""
    best = np.sort(output0[:, 4 : 4 + 80, :].max(axis=1).ravel())[::-1]
    best_gap, conf = 0.0, None
    for k in range(5, min(200, len(best) - 1)):
        hi, lo = float(best[k - 1]), float(best[k])
        if hi >= 0.999:
            continue
        if hi - lo > best_gap:
            best_gap, conf = hi - lo, (hi + lo) / 2
    if best_gap < min_gap:
        return None, best_gap
    return conf, best_gap


def box_iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 1.0


def postprocess(vrseg: str, out0: np.ndarray, out1: np.ndarray, conf: float, work: Path):
    work.mkdir(parents=True, exist_ok=True)
    out0.astype("<f4").tofile(work / "o0.f32")
    out1.astype("<f4").tofile(work / "o1.f32")
    subprocess.run(
        [vrseg, "dev", "yolo-seg", "--output0", str(work / "o0.f32"), "--output1", str(work / "o1.f32"),
         "--size", f"{INPUT}x{INPUT}", "--layout", "mono", "--input", str(INPUT), "--conf", repr(conf),
         "--all-classes", "--binary", "-o", str(work)],
        check=True, capture_output=True,
    )
    dets = json.loads((work / "detections.json").read_text())["detections"][0]
    matte = np.fromfile(work / "matte.gray", dtype=np.uint8)
    return dets, matte


def parity(args, size: str, model_onnx: Path, plan: Path, work: Path) -> dict:
    import onnxruntime as ort

    rng = np.random.default_rng(args.seed)
    inputs = []
    for k in range(args.inputs):
        # Smooth random images (a few octaves of noise), FP16-representable.
        base = rng.random((1, 3, 20, 20), dtype=np.float32)
        img = np.kron(base, np.ones((32, 32), dtype=np.float32))
        img = 0.7 * img + 0.3 * rng.random((1, 3, INPUT, INPUT), dtype=np.float32)
        inputs.append(img.astype(np.float16).astype(np.float32))
    paths = []
    for k, x in enumerate(inputs):
        p = work / f"in{k}.f32"
        x.astype("<f4").tofile(p)
        paths.append(p)
    outdir = work / "ours"
    cmd = [args.vrseg, "dev", "engine", str(plan), "-o", str(outdir)]
    for p in paths:
        cmd += ["--input", str(p)]
    subprocess.run(cmd, check=True)
    sess = ort.InferenceSession(str(model_onnx), providers=["CPUExecutionProvider"])
    rows = []
    for k, x in enumerate(inputs):
        ref0, ref1 = sess.run(None, {sess.get_inputs()[0].name: x})
        sub = outdir / str(k) if len(inputs) > 1 else outdir
        got0 = np.fromfile(sub / "output0.f32", dtype="<f4").reshape(ref0.shape)
        got1 = np.fromfile(sub / "output1.f32", dtype="<f4").reshape(ref1.shape)
        e0, e1 = rel_l2(got0, ref0), rel_l2(got1, ref1)
        noise = float(np.abs(ref0[:, 4:84, :].max(axis=1) - got0[:, 4:84, :].max(axis=1)).max())
        # The widest unsaturated gap, however narrow: detections whose score
        # lies within the noise band of the threshold may legitimately differ.
        conf, gap = choose_conf(ref0, 0.0)
        if conf is None:
            rows.append({"input": k, "output0_rel_l2": e0, "output1_rel_l2": e1, "conf": None, "score_noise": noise,
                         "same_detections": None, "mask_iou": None})
            continue
        d_ref, m_ref = postprocess(args.vrseg, ref0, ref1, conf, work / f"pp-ref-{k}")
        d_got, m_got = postprocess(args.vrseg, got0, got1, conf, work / f"pp-got-{k}")
        # Match kept detections as sets (equal scores may swap order): same
        # class and box IoU >= 0.9, greedily.
        unmatched = list(d_got)
        ious = []
        for a in d_ref:
            scored = [(box_iou((a["x1"], a["y1"], a["x2"], a["y2"]), (b["x1"], b["y1"], b["x2"], b["y2"])), i)
                      for i, b in enumerate(unmatched) if b["class"] == a["class"]]
            if scored:
                iou, i = max(scored)
                if iou >= 0.9:
                    ious.append(iou)
                    unmatched.pop(i)
        same = len(ious) == len(d_ref) == len(d_got)
        # Every detection only one side kept must be explained by noise: its
        # score within twice the engines' largest best-score difference of
        # the threshold (a candidate that crossed it). Anything else, a box in
        # the wrong place, a wrong class, a missing confident person, is a
        # real difference.
        band = 2.0 * noise
        ref_only = [a for a in d_ref if not any(
            b["class"] == a["class"] and box_iou((a["x1"], a["y1"], a["x2"], a["y2"]),
                                                 (b["x1"], b["y1"], b["x2"], b["y2"])) >= 0.9 for b in d_got)]
        unexplained = [d for d in ref_only + unmatched if abs(d["score"] - conf) > band]
        inter = np.logical_and(m_ref > 0, m_got > 0).sum()
        union = np.logical_or(m_ref > 0, m_got > 0).sum()
        mask_iou = float(inter / union) if union else 1.0
        rows.append({
            "input": k, "output0_rel_l2": e0, "output1_rel_l2": e1, "conf": conf, "score_gap": gap,
            "score_noise": noise,
            "kept_ref": len(d_ref), "kept_ours": len(d_got), "same_detections": bool(same),
            "differing": len(ref_only) + len(unmatched), "unexplained": len(unexplained),
            "min_box_iou": min(ious, default=1.0), "mask_iou": mask_iou,
        })
    worst0 = max(r["output0_rel_l2"] for r in rows)
    worst1 = max(r["output1_rel_l2"] for r in rows)
    compared = [r for r in rows if r["same_detections"] is not None]
    same = sum(r["same_detections"] and r["mask_iou"] >= MASK_IOU_MIN for r in compared)
    within_noise = sum(r["unexplained"] == 0 for r in compared)
    differing = sum(r["differing"] for r in compared)
    kept = [r["kept_ref"] for r in compared]
    worst_mask = min((r["mask_iou"] for r in compared), default=float("nan"))
    print(f"yolo11{size}-seg: {len(rows)} inputs, worst relative L2 output0 {worst0:.2e}, output1 {worst1:.2e}; "
          f"detections and masks identical on {same}/{len(compared)} comparable inputs, the same up to "
          f"threshold-crossing candidates on {within_noise}/{len(compared)} ({differing} such detections in all; "
          f"{len(rows) - len(compared)} inputs without an unsaturated score; kept per input {kept}, "
          f"worst mask IoU {worst_mask:.4f})", flush=True)
    return {"size": size, "rows": rows, "worst_output0": worst0, "worst_output1": worst1, "same": same,
            "compared": len(compared),
            "within_noise": within_noise,
            # Identical kept sets on every input is the bar; random
            # weights give scores denser than FP16 noise, so the check that
            # gates is "identical up to candidates that crossed the threshold
            # by noise"; identical counts are reported beside it. No
            # comparable input proves nothing: that fails too.
            "passed": worst0 <= L2_GOAL and worst1 <= L2_GOAL and len(compared) > 0
            and within_noise == len(compared)}


def torch_bench(model, batch: int, seconds: float = 2.0) -> dict:
    """PyTorch FP16 on the GPU, as a strong user runs it: Conv+BN fused,
    cudnn.benchmark, the forward captured in a CUDA graph."""
    import torch

    torch.backends.cudnn.benchmark = True
    net = model.model.fuse().half().cuda().eval()
    x = torch.rand(batch, 3, INPUT, INPUT, device="cuda", dtype=torch.float16)
    with torch.inference_mode():
        s = torch.cuda.Stream()
        s.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(s):
            for _ in range(5):
                net(x)
        torch.cuda.current_stream().wait_stream(s)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            net(x)
        for _ in range(10):
            graph.replay()
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        n = 0
        while time.perf_counter() - t0 < 0.3:
            graph.replay()
            n += 1
        torch.cuda.synchronize()
        per = (time.perf_counter() - t0) / n
        reps = max(5, int(seconds / 5 / per))
        times = []
        for _ in range(5):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(reps):
                graph.replay()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / reps)
    times.sort()
    ms = times[len(times) // 2]
    return {"batch": batch, "ms_per_batch": ms, "images_per_s": batch / (ms / 1e3)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--vrseg", required=True)
    ap.add_argument("--wheels", required=True, type=Path)
    ap.add_argument("--work", default="/tmp/vrseg-engine-parity", type=Path)
    ap.add_argument("--out", default="/tmp", type=Path)
    ap.add_argument("--sizes", default="n,s,m,x")
    ap.add_argument("--inputs", type=int, default=20)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--bench", action="store_true", help="also time vrseg and PyTorch, batch 1 and 32")
    ap.add_argument("--no-parity", action="store_true")
    ap.add_argument("--layers", default="32", help="batches to break down per layer: a comma list, 'all' or 'none'")
    ap.add_argument("--batches", default="1,32", help="batches to time with --bench")
    args = ap.parse_args()

    import os
    os.environ.setdefault("YOLO_OFFLINE", "1")
    args.work.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("YOLO_CONFIG_DIR", str(args.work / "config"))
    install_wheels(args.wheels, args.work / "site")
    os.chdir(args.work)

    results, bench = [], []
    ok = True
    for size in args.sizes.split(","):
        work = args.work / size
        work.mkdir(parents=True, exist_ok=True)
        model, onnx_path = export(size, work, args.seed)
        plans = {}
        for batch in ([int(b) for b in args.batches.split(",")] if args.bench else [1]):
            plan = work / f"yolo11{size}-seg-b{batch}.plan"
            subprocess.run([args.vrseg, "build-engine", str(onnx_path), "-o", str(plan), "--batch", str(batch)],
                           check=True, capture_output=True)
            plans[batch] = plan
        if not args.no_parity:
            if 1 not in plans:
                plan = work / f"yolo11{size}-seg-b1.plan"
                subprocess.run([args.vrseg, "build-engine", str(onnx_path), "-o", str(plan), "--batch", "1"],
                               check=True, capture_output=True)
                plans[1] = plan
            r = parity(args, size, onnx_path, plans[1], work)
            results.append(r)
            ok = ok and r["passed"]
        if args.bench:
            for batch, plan in plans.items():
                wanted = args.layers.split(",")
                layers = ["--layers"] if "all" in wanted or str(batch) in wanted else []
                ours = json.loads(subprocess.run([args.vrseg, "bench", "engine", str(plan), "--json", *layers],
                                                 check=True, capture_output=True, text=True).stdout)
                theirs = torch_bench(model, batch)
                row = {"size": size, "batch": batch, "vrseg": ours, "torch": theirs,
                       "speedup": ours["images_per_s"] / theirs["images_per_s"]}
                bench.append(row)
                print(f"yolo11{size}-seg batch {batch}: vrseg {ours['images_per_s']:.0f} img/s "
                      f"({ours['ms_per_batch']:.3f} ms, {ours['tflops']:.1f} TFLOP/s), PyTorch CUDA graph "
                      f"{theirs['images_per_s']:.0f} img/s ({theirs['ms_per_batch']:.3f} ms): {row['speedup']:.2f}x",
                      flush=True)
                if ours.get("layers"):
                    total = sum(layer["ms"] for layer in ours["layers"])
                    print(f"    per-layer (eager, one event pair each): {len(ours['layers'])} nodes, sum {total:.3f} ms")
                for layer in ours.get("layers", [])[:12]:
                    ms = layer["ms"]
                    print(f"    {ms:8.3f} ms {layer['flop'] / ms / 1e9:7.1f} TFLOP/s "
                          f"{layer['bytes'] / ms / 1e6:7.0f} GB/s  {layer['op']:<40} {layer['kernels']}")
        del model
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "engine-parity.json").write_text(json.dumps({"parity": results, "bench": bench}, indent=1))
    if not args.no_parity:
        print("engine parity:", "passed" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
