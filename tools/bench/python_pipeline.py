#!/usr/bin/env python3
"""The Python reference pipeline that `vrseg run` is measured against (issue #6).

Usage: python_pipeline.py CLIP [--wheels DIR]... [--json] [--passes N] [--batch-frames F]
                               [--decoder threaded|inline] [--weights plain|spread] [--model YAML]
                               [--layout sbs|tb|mono] [--conf C] [--iou I] [--classes person|all|0,2]
                               [--frames N] [--warmup-batches K] [--gpu G]

Written as a strong Python user would on a GPU, with every frame kept in device memory:
  1. Decode: NVIDIA's PyNvVideoCodec (2.2.4) decodes on NVDEC and converts to planar RGB
     (OutputColorType.RGBP) in device memory; torch takes each frame through DLPack, no copy.
     --decoder threaded (default): PyNvVideoCodec's ThreadedDecoder decodes ahead on its own
     thread (buffer of 2 batches), as NVIDIA's samples do for inference pipelines, so decoding
     overlaps the GPU work (frames are used, as NVIDIA's samples use them, before the next
     get_batch_frames call). --decoder inline: CreateDemuxer + CreateDecoder in the main thread,
     each frame copied out of the decoder's buffer as it comes (its next Decode() may reuse it),
     decoder and torch on one stream. The threaded decoder gets a CUDA stream of its own
     (--decoder-stream own): the SDK synchronises its stream after each frame's conversion, and
     on stream 0 (torch's legacy default stream) that sync would also wait for the model's
     kernels. The frames come out already synchronised.
  2. Preprocess: both eyes of each frame are cut out (views), converted to FP16 and resized on the
     GPU with F.interpolate (bilinear, as Ultralytics' LetterBox resizes with cv2.INTER_LINEAR),
     placed with LetterBox's geometry (scale min(S/h, S/w), centred, pad 114) in a fixed
     [2F, 3, S, S] batch and scaled to [0, 1]. Same geometry for every eye, so one batch shape.
  3. Inference: YOLO11-seg from Ultralytics (8.4.190) built from its yaml with seeded random
     weights, `model.model.fuse().half().cuda().eval()`, cudnn.benchmark, torch.inference_mode;
     batch = the two eyes of F frames (default F = 8: 16 images, vrseg's plan batch).
     --weights plain: Ultralytics' own initialisation (its class-bias prior scores every anchor
     near 1e-5, so nothing passes conf 0.25: no detections, no masks; this is how the 78 fps in
     docs/world.md was measured). --weights spread: tools/export/export_yolo_seg.py's `randomize`
     (seed 1), the weights the repository's fixture was exported from, which score many anchors
     above 0.25 and so exercise NMS and the retina masks as vrseg's fixture plan does.
  4. Postprocess: Ultralytics' nms.non_max_suppression (conf 0.25, IoU 0.7, person only: vrseg's
     defaults), then per eye ops.scale_boxes + ops.process_mask_native (retina masks at eye
     resolution), exactly as SegmentationPredictor calls them with retina_masks=True.
  5. Matte: one 8-bit SBS/TB matte per frame on the GPU (0 outside people, 255 inside: the union
     of the eye's binary masks written where that eye is in the frame). Nothing goes to the host
     (vrseg's --output null).

Timing (time.perf_counter, CUDA events; the model is built and warmed up before any pass):
  * A pass is the whole clip: the decoder is created inside the clock (vrseg run creates its
    session inside its wall time too) and the clock stops after torch.cuda.synchronize() once
    the last matte is done. fps = frames / pass wall time. Closing the decoder comes after the
    clock (close_s, beside vrseg's NVDEC teardown after its output is done).
  * steady fps: frames after the first --warmup-batches batches over the time after them (the
    time is taken when the host has finished a batch's NMS, which waits for its inference).
  * GPU ms per frame per stage from CUDA events around each stage (letterbox, inference,
    postprocess = NMS + masks + matte; postprocess spans the host syncs NMS makes).
  * decode wait: host time blocked waiting for the decoder's frames.
With --json, stdout carries one JSON object (whatever native libraries print goes to stderr);
the human-readable line always goes to stderr.

On the GPU machine (Python 3.12, torch there): the wheels are installed offline with
`pip install --no-index --no-deps --target SITE` from each --wheels DIR (Ultralytics and its small
dependencies, PyNvVideoCodec); `bash bundle/run.sh bench-pipeline` runs it beside `vrseg run`.
"""

import argparse
import ctypes
import json
import logging
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

PROG = "python_pipeline"
PAD_VALUE = 114.0  # Ultralytics LetterBox's padding grey


def die(msg, code=2):
    sys.stdout.flush()
    print(f"{PROG}: {msg}", file=sys.stderr, flush=True)
    sys.exit(code)


def first_line(exc):
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__


def install_wheels(dirs, site):
    """pip install --no-index --no-deps --target SITE every wheel in DIRS (once per wheel set)."""
    wheels = sorted(str(w) for d in dirs for w in Path(d).glob("*.whl"))
    if not wheels:
        die("no .whl in " + ", ".join(str(d) for d in dirs))
    site.mkdir(parents=True, exist_ok=True)
    marker = site / ".installed"
    names = "\n".join(Path(w).name for w in wheels)
    if not (marker.exists() and marker.read_text() == names):
        proc = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-index", "--no-deps",
                               "--upgrade", "--target", str(site), *wheels], stdout=sys.stderr, stderr=sys.stderr)
        if proc.returncode != 0:
            die(f"pip install --target {site} failed for {len(wheels)} wheels (see above)")
        marker.write_text(names)
    sys.path.insert(0, str(site))


def import_pynvc():
    log = logging.getLogger("PyNvVideoCodec")  # it logs multi-line diagnostics on failure
    was_disabled, log.disabled = log.disabled, True
    try:
        import PyNvVideoCodec as nvc  # noqa: N813
    except Exception as e:  # ImportError, OSError (libnvcuvid), RuntimeError (driver)
        die("cannot import PyNvVideoCodec (" + first_line(e) + "); pass --wheels with "
            "pynvvideocodec-2.2.4-cp312-*.whl and check libcuda/libnvcuvid are visible")
    finally:
        log.disabled = was_disabled
    return nvc


def current_cuda_context():
    """The CUcontext torch made current (the device's primary context), for PyNvVideoCodec."""
    cu = ctypes.CDLL("libcuda.so.1")
    ctx = ctypes.c_void_p()
    rc = cu.cuCtxGetCurrent(ctypes.byref(ctx))
    if rc != 0 or not ctx.value:
        die(f"cuCtxGetCurrent failed (CUresult {rc}) after torch initialised the GPU")
    return ctx.value


def eye_rects(layout, width, height):
    """(x, y, w, h) of each eye in the frame, left/top eye first."""
    if layout == "sbs":
        return [(0, 0, width // 2, height), (width // 2, 0, width - width // 2, height)]
    if layout == "tb":
        return [(0, 0, width, height // 2), (0, height // 2, width, height - height // 2)]
    return [(0, 0, width, height)]


def letterbox_geometry(w, h, side):
    """Ultralytics LetterBox (auto=False, center=True, scaleup=True): resized size and top/left pad."""
    r = min(side / h, side / w)
    nw, nh = max(round(w * r), 1), max(round(h * r), 1)
    dw, dh = (side - nw) / 2, (side - nh) / 2
    return nw, nh, round(dh - 0.1), round(dw - 0.1)


def parse_classes(text):
    if text == "person":
        return [0]
    if text == "all":
        return None
    try:
        classes = [int(c) for c in text.split(",")]
    except ValueError:
        classes = []
    if not classes or any(not 0 <= c < 80 for c in classes):
        die(f"--classes: `{text}` is not `person`, `all` or COCO class indices 0..79 separated by commas")
    return classes


def find_randomize():
    here = Path(__file__).resolve().parent
    for d in (here, here.parent / "export", here.parent / "parity", here.parent.parent / "parity"):
        if (d / "export_yolo_seg.py").exists():
            sys.path.insert(0, str(d))
            from export_yolo_seg import randomize
            return randomize
    die("--weights spread needs tools/export/export_yolo_seg.py (its `randomize`) next to this script")


class Frames:
    """Batches of decoded frames as torch uint8 [3, H, W] views of PyNvVideoCodec's RGBP buffers.
    Each batch keeps its DecodedFrame objects alive until the caller drops it."""

    def __init__(self, nvc, torch, path, kind, batch_frames, gpu, context, stream, width, height):
        self.nvc, self.torch, self.kind, self.batch_frames = nvc, torch, kind, batch_frames
        self.width, self.height = width, height
        rgbp = nvc.OutputColorType.RGBP
        self.fallback = None
        if kind == "threaded":
            try:
                self.dec = nvc.ThreadedDecoder(path, buffer_size=2 * batch_frames, gpu_id=gpu, cuda_context=context,
                                               cuda_stream=stream, use_device_memory=True, output_color_type=rgbp)
            except (TypeError, ValueError, RuntimeError) as e:  # then let it pick the context and stream
                self.fallback = "default context and stream after: " + first_line(e)
                self.dec = nvc.ThreadedDecoder(path, buffer_size=2 * batch_frames, gpu_id=gpu,
                                               use_device_memory=True, output_color_type=rgbp)
        else:
            # Decode() returns frames in the decoder's own buffers, which its next Decode() call may
            # reuse: each frame is copied out at once, on torch's stream, which the decoder also
            # uses here, so the copy is ordered before any later write into that buffer.
            self.demuxer = nvc.CreateDemuxer(filename=path)
            self.dec = nvc.CreateDecoder(gpuid=gpu, codec=self.demuxer.GetNvCodecId(), cudacontext=context,
                                         cudastream=torch.cuda.current_stream().cuda_stream, usedevicememory=True,
                                         outputColorType=rgbp)
            self.packets = iter(self.demuxer)
            self.pending = []
        self.decode_wait_s = 0.0

    def tensor(self, frame):
        if isinstance(frame, self.torch.Tensor):
            return frame  # already copied out (inline decoder)
        try:
            t = self.torch.from_dlpack(frame)
        except (TypeError, AttributeError, RuntimeError, BufferError):  # then through __cuda_array_interface__
            t = self.torch.as_tensor(frame, device="cuda")
        h, w = self.height, self.width
        if t.dim() == 2 and t.shape[0] == 3 * h and t.shape[1] == w:
            return t.view(3, h, w)  # planes stacked as rows
        if t.dim() == 3 and tuple(t.shape) == (3, h, w):
            return t
        if t.dim() == 3 and tuple(t.shape) == (h, w, 3):
            return t.permute(2, 0, 1)  # interleaved after all: a view, the resize reads it strided
        raise RuntimeError(f"decoded frame has shape {tuple(t.shape)} dtype {t.dtype}; expected planar RGB "
                           f"[3, {h}, {w}] or [{3 * h}, {w}] uint8")

    def next_batch(self):
        t0 = time.perf_counter()
        if self.kind == "threaded":
            frames = list(self.dec.get_batch_frames(self.batch_frames))
        else:
            while len(self.pending) < self.batch_frames and self.packets is not None:
                pkt = next(self.packets, None)
                if pkt is None:  # iterator ended without the empty EOS packet: drain explicitly
                    self.pending.extend(self.tensor(f).clone() for f in self.dec.Decode(self.nvc.PacketData()))
                    self.packets = None
                    break
                self.pending.extend(self.tensor(f).clone() for f in self.dec.Decode(pkt))
                if pkt.bsl == 0:  # the demuxer's last, empty packet: end of stream, decoder drained
                    self.packets = None
            frames, self.pending = self.pending[:self.batch_frames], self.pending[self.batch_frames:]
        self.decode_wait_s += time.perf_counter() - t0
        return frames

    def close(self):
        if self.kind == "threaded":
            self.dec.end()
        self.dec = None


class Pipeline:
    def __init__(self, torch, nms, ops, model, args, width, height, device="cuda"):
        F = torch.nn.functional
        self.torch, self.F, self.nms, self.ops, self.model, self.args = torch, F, nms, ops, model, args
        self.width, self.height = width, height
        self.eyes = eye_rects(args.layout, width, height)
        self.side = args.imgsz
        geoms = {letterbox_geometry(w, h, self.side) for (_, _, w, h) in self.eyes}
        if len(geoms) != 1:
            die(f"the eyes of a {width}x{height} {args.layout} frame differ in size; use an even width/height")
        self.nw, self.nh, self.top, self.left = geoms.pop()
        self.padded = (self.nw, self.nh) != (self.side, self.side)
        images = args.batch_frames * len(self.eyes)
        self.input = torch.full((images, 3, self.side, self.side), PAD_VALUE / 255.0, device=device,
                                dtype=torch.float16)
        self.mattes = torch.zeros((args.batch_frames, height, width), device=device, dtype=torch.uint8)
        self.classes = parse_classes(args.classes)
        self.detections = 0
        self.fallback = None

    def letterbox(self, frames):
        """frames: list of uint8 [3, H, W] (views of the decoder's buffers) -> the model input.
        The batch keeps its full size (a short last batch leaves stale images in the unused
        slots, whose results are not read), so the model sees one shape, as vrseg's plan does."""
        F = self.F
        i = 0
        for frame in frames:
            for (x, y, w, h) in self.eyes:
                eye = frame[:, y:y + h, x:x + w].unsqueeze(0).half()  # contiguous FP16 copy of one eye
                resized = F.interpolate(eye, size=(self.nh, self.nw), mode="bilinear", align_corners=False)
                self.input[i, :, self.top:self.top + self.nh, self.left:self.left + self.nw] = resized[0] / 255.0
                i += 1
        return self.input

    def infer(self, x):
        return self.model(x)

    def postprocess(self, preds, n_frames):
        """NMS + retina masks + the SBS matte of each frame, all on the GPU."""
        ops = self.ops
        (det, proto) = preds[0] if isinstance(preds[0], tuple) else preds
        images = n_frames * len(self.eyes)
        kept = self.nms.non_max_suppression(det[:images], self.args.conf, self.args.iou, classes=self.classes, nc=80,
                                       max_det=self.args.max_det)
        mattes = self.mattes[:n_frames]
        mattes.zero_()
        for i, pred in enumerate(kept):
            if pred.shape[0] == 0:
                continue
            self.detections += pred.shape[0]
            f, e = divmod(i, len(self.eyes))
            x, y, w, h = self.eyes[e]
            # As SegmentationPredictor.construct_result does with retina_masks=True:
            pred[:, :4] = ops.scale_boxes((self.side, self.side), pred[:, :4], (h, w))
            masks = ops.process_mask_native(proto[i], pred[:, 6:], pred[:, :4], (h, w))  # uint8 0/1 [n, h, w]
            mattes[f, y:y + h, x:x + w] = masks.amax(0) * 255
        return mattes


def run_pass(nvc, torch, pipe, args, context, stream):
    """One pass over the whole clip; the decoder is created inside the clock."""
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    pipe.detections = 0
    t0 = time.perf_counter()
    source = Frames(nvc, torch, args.clip, args.decoder, args.batch_frames, args.gpu, context, stream,
                    pipe.width, pipe.height)
    marks, events, frames_done = [], [], 0
    with torch.inference_mode():
        while args.frames is None or frames_done < args.frames:
            batch = source.next_batch()
            if args.frames is not None:
                batch = batch[:args.frames - frames_done]
            if not batch:
                break
            ev = [torch.cuda.Event(enable_timing=True) for _ in range(4)]
            ev[0].record()
            x = pipe.letterbox([source.tensor(f) for f in batch])
            ev[1].record()
            preds = pipe.infer(x)
            ev[2].record()
            pipe.postprocess(preds, len(batch))
            ev[3].record()
            events.append(ev)
            frames_done += len(batch)
            marks.append((frames_done, time.perf_counter()))
            del batch, preds  # the decoder's buffers go back once the batch is done with them
    torch.cuda.synchronize()
    t1 = time.perf_counter()
    source.close()
    close_s = time.perf_counter() - t1
    if frames_done == 0:
        die(f"decoded no frames from {args.clip}", 1)
    if source.fallback:
        pipe.fallback = source.fallback
    stage = [0.0, 0.0, 0.0]
    for ev in events:
        for s in range(3):
            stage[s] += ev[s].elapsed_time(ev[s + 1])
    wall = t1 - t0
    rec = {"frames": frames_done, "batches": len(marks), "wall_s": round(wall, 6), "fps": round(frames_done / wall, 3),
           "close_s": round(close_s, 6),
           "decode_wait_ms_per_frame": round(1e3 * source.decode_wait_s / frames_done, 3),
           "gpu_ms_per_frame": {name: round(stage[s] / frames_done, 4)
                                for s, name in enumerate(("letterbox", "inference", "postprocess"))},
           "detections_per_eye": round(pipe.detections / (frames_done * len(pipe.eyes)), 3),
           "peak_torch_allocated_bytes": torch.cuda.max_memory_allocated()}
    k = args.warmup_batches
    if len(marks) > k:
        f0, s0 = marks[k - 1] if k > 0 else (0, t0)
        rec["steady_frames"] = frames_done - f0
        rec["steady_fps"] = round((frames_done - f0) / (t1 - s0), 3)
    free, total = torch.cuda.mem_get_info()
    rec["device_used_bytes_after"] = total - free
    return rec


def build_model(torch, args):
    from ultralytics import YOLO

    torch.manual_seed(args.seed)
    yolo = YOLO(args.model)
    if args.weights == "spread":
        find_randomize()(yolo.model, 1)
    model = yolo.model.fuse().half().cuda().eval()
    return model


def warm_up(torch, pipe):
    """cudnn.benchmark picks its algorithms and the caching allocator fills (one batch shape)."""
    n = pipe.args.batch_frames
    frame = torch.randint(0, 256, (3, pipe.height, pipe.width), dtype=torch.uint8, device="cuda")
    with torch.inference_mode():
        for _ in range(3):
            pipe.postprocess(pipe.infer(pipe.letterbox([frame] * n)), n)
    torch.cuda.synchronize()


def run(args, nvc, torch):
    import ultralytics
    from ultralytics.utils import nms, ops

    t_setup = time.perf_counter()
    torch.backends.cudnn.benchmark = True
    torch.cuda.set_device(args.gpu)
    torch.zeros(1, device="cuda")  # initialise the primary context, so PyNvVideoCodec can share it
    context = current_cuda_context()
    probe = nvc.CreateDemuxer(filename=args.clip)
    width, height, codec = probe.Width(), probe.Height(), probe.GetNvCodecId().name
    del probe
    model = build_model(torch, args)
    pipe = Pipeline(torch, nms, ops, model, args, width, height)
    warm_up(torch, pipe)
    setup_s = time.perf_counter() - t_setup

    # The decoder's own stream: its per-frame stream syncs then wait for its own copies only, not
    # for the model's kernels queued on torch's (legacy default) stream.
    decoder_stream = torch.cuda.Stream() if args.decoder_stream == "own" else None
    stream = decoder_stream.cuda_stream if decoder_stream is not None else 0
    passes = [run_pass(nvc, torch, pipe, args, context, stream) for _ in range(args.passes)]
    steady = [p["steady_fps"] for p in passes if "steady_fps" in p]
    result = {
        "tool": "python-reference", "clip": args.clip, "codec": codec, "width": width, "height": height,
        "layout": args.layout, "eyes": len(pipe.eyes), "model": args.model, "weights": args.weights,
        "imgsz": args.imgsz, "batch_frames": args.batch_frames, "batch_images": args.batch_frames * len(pipe.eyes),
        "decoder": args.decoder, "decoder_stream": args.decoder_stream if args.decoder == "threaded" else "torch's", "conf": args.conf, "iou": args.iou, "classes": args.classes,
        "letterbox": {"resized": [pipe.nw, pipe.nh], "top": pipe.top, "left": pipe.left},
        "versions": {"python": sys.version.split()[0], "torch": torch.__version__,
                     "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version(),
                     "ultralytics": ultralytics.__version__, "PyNvVideoCodec": getattr(nvc, "__version__", "?")},
        "device": torch.cuda.get_device_name(args.gpu), "setup_s": round(setup_s, 3),
        "warmup_batches": args.warmup_batches, "passes": passes,
        "first_pass_fps": passes[0]["fps"], "median_fps": statistics.median(p["fps"] for p in passes),
        "median_steady_fps": statistics.median(steady) if steady else None,
        "gpu_ms_per_frame": {k: round(statistics.median(p["gpu_ms_per_frame"][k] for p in passes), 4)
                             for k in ("letterbox", "inference", "postprocess")},
        "decode_wait_ms_per_frame": round(statistics.median(p["decode_wait_ms_per_frame"] for p in passes), 3),
        "detections_per_eye": passes[-1]["detections_per_eye"],
    }
    if pipe.fallback:
        result["decoder_fallback"] = pipe.fallback
    counts = {p["frames"] for p in passes}
    if len(counts) != 1:
        result["warning"] = "frame count differs between passes: " + ",".join(str(p["frames"]) for p in passes)
    return result


def human_line(r):
    g = r["gpu_ms_per_frame"]
    s = (f"python reference ({r['decoder']} (stream: {r['decoder_stream']}) PyNvVideoCodec {r['versions']['PyNvVideoCodec']} RGBP, torch "
         f"{r['versions']['torch']} FP16 {Path(r['model']).stem} ({r['weights']} weights), Ultralytics "
         f"{r['versions']['ultralytics']} NMS + retina masks, batch {r['batch_frames']} frames): "
         f"{r['passes'][0]['frames']} frames of {r['width']}x{r['height']} {r['layout']} x {len(r['passes'])} passes, "
         f"{r['median_fps']:.1f} fps (median; first pass {r['first_pass_fps']:.1f}")
    if r["median_steady_fps"] is not None:
        s += f", steady {r['median_steady_fps']:.1f}"
    s += (f") on {r['device']}; GPU per frame: letterbox {g['letterbox']:.3f} ms, inference {g['inference']:.3f} ms, "
          f"postprocess {g['postprocess']:.3f} ms; decode wait {r['decode_wait_ms_per_frame']:.2f} ms/frame; "
          f"{r['detections_per_eye']:.1f} detections per eye; setup {r['setup_s']:.1f} s")
    if "decoder_fallback" in r:
        s += "; decoder: " + r["decoder_fallback"]
    if "warning" in r:
        s += "; WARNING: " + r["warning"]
    return s


def main():
    ap = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    ap.add_argument("clip", metavar="CLIP", help="stereo video (8192x4096 SBS HEVC for the issue #6 benchmark)")
    ap.add_argument("--wheels", action="append", default=[], metavar="DIR",
                    help="install every wheel in DIR offline into --site first (repeatable)")
    ap.add_argument("--site", default="/tmp/vrseg-pyref-site", type=Path, help="pip --target directory")
    ap.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    ap.add_argument("--passes", type=int, default=3, help="whole-clip passes (default 3)")
    ap.add_argument("--batch-frames", type=int, default=8, metavar="F",
                    help="frames per batch; the model sees 2F images for stereo (default 8)")
    ap.add_argument("--warmup-batches", type=int, default=1, metavar="K",
                    help="batches left out of the steady-state rate (default 1)")
    ap.add_argument("--decoder", choices=("threaded", "inline"), default="threaded")
    ap.add_argument("--decoder-stream", choices=("own", "default"), default="own",
                    help="the decoder's CUDA stream: its own (default) or stream 0, torch's")
    ap.add_argument("--weights", choices=("plain", "spread"), default="plain")
    ap.add_argument("--model", default="yolo11n-seg.yaml", help="Ultralytics model yaml (default yolo11n-seg.yaml)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--imgsz", type=int, default=640)
    ap.add_argument("--layout", choices=("sbs", "tb", "mono"), default="sbs")
    ap.add_argument("--conf", type=float, default=0.25)
    ap.add_argument("--iou", type=float, default=0.7)
    ap.add_argument("--classes", default="person", help="person (default), all, or COCO indices like 0,2")
    ap.add_argument("--max-det", type=int, default=300)
    ap.add_argument("--frames", type=int, default=None, help="stop after N frames per pass")
    ap.add_argument("--gpu", type=int, default=0)
    args = ap.parse_args()
    if args.passes < 1 or args.batch_frames < 1 or args.warmup_batches < 0 or (args.frames is not None and args.frames < 1):
        die("--passes, --batch-frames and --frames must be >= 1, --warmup-batches >= 0")
    if not 0 <= args.conf <= 1 or not 0 <= args.iou <= 1:
        die("--conf and --iou are between 0 and 1")
    if not os.path.isfile(args.clip):
        die(f"no such file: {args.clip}")
    args.clip = os.path.abspath(args.clip)

    os.environ.setdefault("YOLO_OFFLINE", "1")
    os.environ.setdefault("YOLO_VERBOSE", "False")
    os.environ.setdefault("YOLO_CONFIG_DIR", str(args.site.parent / "vrseg-pyref-yolo-config"))
    if args.wheels:
        install_wheels(args.wheels, args.site)
    elif args.site.is_dir():
        sys.path.insert(0, str(args.site))

    saved_stdout = None
    if args.json:  # stdout carries the JSON object only
        sys.stdout.flush()
        saved_stdout = os.dup(1)
        os.dup2(2, 1)
    try:
        try:
            import torch
        except ImportError as e:
            die("cannot import torch (" + first_line(e) + ")")
        if not torch.cuda.is_available():
            die("torch sees no CUDA GPU")
        try:
            import ultralytics  # noqa: F401
        except ImportError as e:
            die("cannot import ultralytics (" + first_line(e) + "); pass --wheels with the ultralytics 8.4.190, "
                "ultralytics-thop and ultralytics-platform wheels")
        nvc = import_pynvc()
        result = run(args, nvc, torch)
    finally:
        if saved_stdout is not None:
            sys.stdout.flush()
            os.dup2(saved_stdout, 1)
            os.close(saved_stdout)

    print(human_line(result), file=sys.stderr, flush=True)
    if args.json:
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
