#!/usr/bin/env python3
"""vrseg's preprocess and YOLO-seg postprocess kernels against Ultralytics itself.

Runs on the GPU machine (Python 3.12 with torch, onnx, onnxruntime, numpy and
opencv there; Ultralytics 8.4.190 and its small dependencies installed from
the wheels in WHEELS, offline):

1. Builds YOLO11n-seg from its yaml with seeded random weights and exports it
   to ONNX as Ultralytics does for users (opset 17, simplified).
2. For each synthetic stereo frame (NV12, BT.709 limited range):
   a. Preprocess. `vrseg dev letterbox` turns the NV12 frame into the model
      input; Ultralytics' LetterBox does the same to the frame as a decoder
      hands it over (NV12 -> RGB with the stream's matrix, bilinear chroma,
      8-bit). The max / mean / 99.9th-percentile absolute differences are
      reported, against LetterBox's default cv2.INTER_LINEAR and against
      cv2.INTER_AREA (vrseg downscales with an area filter; bilinear at
      4096 -> 640 aliases, so the INTER_LINEAR figure is dominated by
      aliasing, not by a bug).
   b. Postprocess. ONNX Runtime (CPU, FP32) runs the model on vrseg's tensor;
      the same output0/output1 go to `vrseg dev yolo-seg --binary` and to
      Ultralytics' non_max_suppression + scale_boxes + process_mask_native
      (retina masks), exactly as its SegmentationPredictor calls them.
      Checked: the kept anchors (same set, same order), boxes and scores,
      and the union of the instance masks per eye: IoU >= 0.99.
   Random weights score every class low, so `conf` is set per frame so that
   about 60 candidates enter NMS (see choose_conf; `randomize` in
   tools/export/export_yolo_seg.py says why the weights are spread out first).

Prints a table and writes parity.json to OUT_DIR; exits 1 when a check fails.
Usage: ultralytics_parity.py --vrseg BIN --wheels DIR --work DIR [--out DIR]
"""

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

# The seeded weight spreading is the export tool's (tools/export; the GPU
# bundle copies it beside this script): one definition for both.
_here = Path(__file__).resolve().parent
sys.path.insert(0, str(_here if (_here / "export_yolo_seg.py").exists() else _here.parent / "export"))
from export_yolo_seg import randomize  # noqa: E402

# (name, layout, width, height, classes): 16:9 eyes side by side (letterbox
# padding top and bottom), square eyes (none), 16:9 eyes top/bottom.
FRAMES = [
    ("sbs-3840x1080", "sbs", 3840, 1080, "all"),
    ("sbs-4096x2048", "sbs", 4096, 2048, "person"),
    ("tb-1920x2160", "tb", 1920, 2160, "all"),
]
INPUT = 640
IOU_THRESHOLD = 0.7
MASK_IOU_MIN = 0.99
CANDIDATES = 60

KR, KB = 0.2126, 0.0722  # BT.709
KG = 1.0 - KR - KB


def install_wheels(wheels: Path, site: Path) -> None:
    site.mkdir(parents=True, exist_ok=True)
    found = sorted(str(w) for w in wheels.glob("*.whl"))
    if not any("ultralytics-" in Path(w).name for w in found):
        sys.exit(f"no ultralytics wheel in {wheels}: tools/gpu-bundle.sh fetches them")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-index", "--no-deps", "--target", str(site), *found],
        check=True,
    )
    sys.path.insert(0, str(site))


def synthetic_rgb(width: int, height: int, rng: np.random.Generator) -> np.ndarray:
    """An RGB float image in [0, 1]: smooth gradients, random filled shapes
    with hard edges, and a patch of fine stripes (what aliasing shows on)."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    img = np.stack([xx / width, yy / height, 0.5 + 0.5 * np.sin(xx / 37.0 + yy / 53.0)], axis=-1)
    for _ in range(60):
        cx, cy = rng.uniform(0, width), rng.uniform(0, height)
        rx, ry = rng.uniform(20, width / 6), rng.uniform(20, height / 4)
        inside = ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 < 1.0
        img[inside] = rng.uniform(0, 1, 3).astype(np.float32)
    x0, y0 = width // 3, height // 3
    stripes = 0.5 + 0.5 * np.sin(xx[y0 : y0 + height // 6, x0 : x0 + width // 6] * 1.3)
    img[y0 : y0 + height // 6, x0 : x0 + width // 6] = stripes[..., None]
    return np.clip(img, 0.0, 1.0)


def rgb_to_nv12(rgb: np.ndarray) -> bytes:
    """BT.709 limited-range NV12, chroma the mean of each 2x2 block."""
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    y = KR * r + KG * g + KB * b
    pb = (b - y) / (2 * (1 - KB))
    pr = (r - y) / (2 * (1 - KR))
    h, w = y.shape
    y8 = np.clip(np.round(16 + 219 * y), 0, 255).astype(np.uint8)
    pb2 = pb.reshape(h // 2, 2, w // 2, 2).mean(axis=(1, 3))
    pr2 = pr.reshape(h // 2, 2, w // 2, 2).mean(axis=(1, 3))
    uv = np.empty((h // 2, w), np.uint8)
    uv[:, 0::2] = np.clip(np.round(128 + 224 * pb2), 0, 255)
    uv[:, 1::2] = np.clip(np.round(128 + 224 * pr2), 0, 255)
    return y8.tobytes() + uv.tobytes()


def nv12_to_bgr8(nv12: bytes, width: int, height: int) -> np.ndarray:
    """The frame as a decoder hands it to Python: BT.709 limited range,
    chroma upsampled bilinearly (sample centres at 2x2 block centres), 8-bit BGR."""
    import cv2

    buf = np.frombuffer(nv12, np.uint8)
    y = buf[: width * height].reshape(height, width).astype(np.float32)
    uv = buf[width * height :].reshape(height // 2, width // 2, 2).astype(np.float32)
    cb = cv2.resize(uv[..., 0], (width, height), interpolation=cv2.INTER_LINEAR)
    cr = cv2.resize(uv[..., 1], (width, height), interpolation=cv2.INTER_LINEAR)
    yn = (y - 16) / 219
    pb = (cb - 128) / 224
    pr = (cr - 128) / 224
    r = yn + 2 * (1 - KR) * pr
    g = yn - 2 * (1 - KB) * KB / KG * pb - 2 * (1 - KR) * KR / KG * pr
    b = yn + 2 * (1 - KB) * pb
    rgb = np.clip(np.stack([r, g, b], -1) * 255 + 0.5, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(rgb[..., ::-1])


def eye_rects(layout: str, width: int, height: int):
    """vrseg's eye rectangles (x, y, w, h): src/ops/letterbox.rs eye_rects."""
    if layout == "sbs":
        e = width // 2
        return [(0, 0, e, height), (width - e, 0, e, height)]
    if layout == "tb":
        e = height // 2
        return [(0, 0, width, e), (0, height - e, width, e)]
    return [(0, 0, width, height)]


def ultralytics_tensor(bgr_eye: np.ndarray, interpolation: int) -> np.ndarray:
    """SegmentationPredictor.preprocess for one image: LetterBox, BGR -> RGB, HWC -> CHW, / 255."""
    from ultralytics.data.augment import LetterBox

    lb = LetterBox(new_shape=(INPUT, INPUT), auto=False, scaleup=True, center=True, interpolation=interpolation)
    im = lb(image=bgr_eye)
    return im[..., ::-1].transpose(2, 0, 1).astype(np.float32) / 255.0


def diff_stats(a: np.ndarray, b: np.ndarray) -> dict:
    d = np.abs(a.astype(np.float64) - b.astype(np.float64))
    return {"max": float(d.max()), "mean": float(d.mean()), "p999": float(np.quantile(d, 0.999))}


def choose_conf(output0: np.ndarray, person_only: bool) -> float:
    """A threshold about CANDIDATES candidate scores (argmax class score,
    person-only when asked, over both eyes' heads) lie above, placed midway
    between two distinct score values so that no score equals it."""
    scores = output0[:, 4 : 4 + 80, :]
    best = scores.max(axis=1)
    cls = scores.argmax(axis=1)
    pool = best[cls == 0] if person_only else best.ravel()
    values = np.unique(pool)[::-1]  # distinct, descending
    above = 0
    for hi, lo in zip(values[:-1], values[1:]):
        above += int((pool == hi).sum())
        if above >= CANDIDATES:
            return float((np.float64(hi) + np.float64(lo)) / 2)
    return float(values[-1]) - 1e-6


def ultralytics_postprocess(out0: np.ndarray, out1: np.ndarray, conf: float, person_only: bool, eye_hw):
    """What SegmentationPredictor (retina_masks=True) does with one image's heads."""
    import torch
    from ultralytics.utils import nms, ops

    pred = torch.from_numpy(out0[None])
    dets, keepi = nms.non_max_suppression(
        pred,
        conf,
        IOU_THRESHOLD,
        classes=[0] if person_only else None,
        agnostic=False,
        max_det=300,
        nc=80,
        return_idxs=True,
    )
    det, anchors = dets[0], keepi[0].tolist()
    if det.shape[0] == 0:
        return anchors, det.numpy(), np.zeros(eye_hw, bool)
    det[:, :4] = ops.scale_boxes((INPUT, INPUT), det[:, :4], (*eye_hw, 3))
    masks = ops.process_mask_native(torch.from_numpy(out1), det[:, 6:], det[:, :4], eye_hw)
    return anchors, det.numpy(), masks.bool().any(0).numpy()


def run(args) -> int:
    work = Path(args.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    out_dir = Path(args.out or work).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("YOLO_OFFLINE", "1")
    os.environ.setdefault("YOLO_CONFIG_DIR", str(work / "yolo-config"))
    install_wheels(Path(args.wheels), work / "site")

    import cv2
    import onnxruntime as ort
    import torch
    import ultralytics
    from ultralytics import YOLO

    torch.manual_seed(0)
    os.chdir(work)
    model = YOLO("yolo11n-seg.yaml")
    randomize(model.model, 1)
    onnx_path = Path(model.export(format="onnx", imgsz=INPUT, opset=17, simplify=True))
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    print(f"ultralytics {ultralytics.__version__}, torch {torch.__version__}, onnxruntime {ort.__version__}, "
          f"model {onnx_path.name} (random weights, seeds 0 and 1)")

    rng = np.random.default_rng(2026)
    report, failed = [], False
    for name, layout, width, height, classes in FRAMES:
        person_only = classes == "person"
        frame_dir = work / name
        frame_dir.mkdir(exist_ok=True)
        nv12 = rgb_to_nv12(synthetic_rgb(width, height, rng))
        (frame_dir / "frame.nv12").write_bytes(nv12)
        size = f"{width}x{height}"

        # a. Preprocess.
        tensor_path = frame_dir / "input.f16"
        subprocess.run(
            [args.vrseg, "dev", "letterbox", str(frame_dir / "frame.nv12"), "--size", size, "--layout", layout,
             "--input", str(INPUT), "--matrix", "bt709", "-o", str(tensor_path)],
            check=True,
        )
        eyes = eye_rects(layout, width, height)
        ours = np.fromfile(tensor_path, np.float16).astype(np.float32).reshape(len(eyes), 3, INPUT, INPUT)
        bgr = nv12_to_bgr8(nv12, width, height)
        linear, area = [], []
        for i, (x, y, w, h) in enumerate(eyes):
            eye = np.ascontiguousarray(bgr[y : y + h, x : x + w])
            linear.append(diff_stats(ours[i], ultralytics_tensor(eye, cv2.INTER_LINEAR)))
            area.append(diff_stats(ours[i], ultralytics_tensor(eye, cv2.INTER_AREA)))

        # b. Postprocess on the same heads.
        heads = [session.run(None, {session.get_inputs()[0].name: ours[i : i + 1]}) for i in range(len(eyes))]
        out0 = np.concatenate([h[0] for h in heads]).astype(np.float32)
        out1 = np.concatenate([h[1] for h in heads]).astype(np.float32)
        out0.tofile(frame_dir / "output0.f32")
        out1.tofile(frame_dir / "output1.f32")
        conf = choose_conf(out0, person_only)
        result_dir = frame_dir / "vrseg"
        cmd = [args.vrseg, "dev", "yolo-seg", "--output0", str(frame_dir / "output0.f32"), "--output1",
               str(frame_dir / "output1.f32"), "--size", size, "--layout", layout, "--input", str(INPUT),
               "--conf", repr(conf), "--iou", str(IOU_THRESHOLD), "--binary", "-o", str(result_dir)]
        if not person_only:
            cmd.append("--all-classes")
        subprocess.run(cmd, check=True)
        got = json.loads((result_dir / "detections.json").read_text())
        matte = np.fromfile(result_dir / "matte.gray", np.uint8).reshape(height, width)

        eyes_report = []
        for i, (x, y, w, h) in enumerate(eyes):
            anchors, det, union = ultralytics_postprocess(out0[i], out1[i], conf, person_only, (h, w))
            mine = got["detections"][i]
            our_anchors = [d["anchor"] for d in mine]
            same_order = our_anchors == anchors
            same_set = sorted(our_anchors) == sorted(anchors)
            box_diff = score_diff = 0.0
            if same_order and anchors:
                ours_boxes = np.array([[d["sx1"], d["sy1"], d["sx2"], d["sy2"]] for d in mine])
                box_diff = float(np.abs(ours_boxes - det[:, :4]).max())
                score_diff = float(np.abs(np.array([d["score"] for d in mine]) - det[:, 4]).max())
            ours_mask = matte[y : y + h, x : x + w] > 127
            inter = np.logical_and(ours_mask, union).sum()
            uni = np.logical_or(ours_mask, union).sum()
            iou = float(inter / uni) if uni else 1.0
            ok = same_order and iou >= MASK_IOU_MIN
            failed |= not ok
            eyes_report.append({
                "eye": i, "kept_vrseg": len(our_anchors), "kept_ultralytics": len(anchors),
                "same_kept_set": same_set, "same_order": same_order, "max_box_diff_px": box_diff,
                "max_score_diff": score_diff, "mask_pixels_ultralytics": int(union.sum()),
                "mask_pixels_vrseg": int(ours_mask.sum()), "mask_iou": iou, "ok": ok,
                "letterbox_vs_inter_linear": linear[i], "letterbox_vs_inter_area": area[i],
            })
        scores = out0[:, 4:84, :]
        best, cls = scores.max(axis=1), scores.argmax(axis=1)
        candidates = int(((best > conf) & ((cls == 0) | (not person_only))).sum())
        report.append({"frame": name, "layout": layout, "width": width, "height": height, "classes": classes,
                       "conf": conf, "candidates": candidates, "eyes": eyes_report})

    print(f"{'frame':<15} {'eye':>3} {'kept':>9} {'order':>5} {'box px':>7} {'mask IoU':>8} "
          f"{'lb max/mean (linear)':>22} {'lb max/mean (area)':>20}")
    for f in report:
        print(f"{f['frame']}: {f['classes']} classes, conf {f['conf']:.6g}, {f['candidates']} candidates over both eyes")
    for f in report:
        for e in f["eyes"]:
            lin, ar = e["letterbox_vs_inter_linear"], e["letterbox_vs_inter_area"]
            print(f"{f['frame']:<15} {e['eye']:>3} {e['kept_vrseg']:>4}/{e['kept_ultralytics']:<4} "
                  f"{'same' if e['same_order'] else 'DIFF':>5} {e['max_box_diff_px']:>7.4f} {e['mask_iou']:>8.5f} "
                  f"{lin['max']:>11.4f}/{lin['mean']:<10.5f} {ar['max']:>9.4f}/{ar['mean']:<10.5f}")
    (out_dir / "parity.json").write_text(json.dumps(report, indent=1) + "\n")
    verdict = "FAILED" if failed else "passed"
    print(f"ultralytics parity {verdict}: kept anchors identical and mask IoU >= {MASK_IOU_MIN} required per eye")
    return 1 if failed else 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vrseg", required=True, help="the vrseg binary")
    parser.add_argument("--wheels", required=True, help="folder with the ultralytics wheels")
    parser.add_argument("--work", required=True, help="scratch folder")
    parser.add_argument("--out", help="where parity.json goes (default: --work)")
    sys.exit(run(parser.parse_args()))
