#!/usr/bin/env python3
"""Side-by-side table of `vrseg run --stats` files and python_pipeline.py --json results.

Usage: pipeline_table.py FILE...   (in run order; any mix of)
  * vrseg run --stats JSON (has "frames_out");
  * python_pipeline.py --json output (has "tool": "python-reference");
  * vrseg run --detections JSON lines (*.jsonl): counted for detections per eye.

Columns:
  whole fps  vrseg: frames / the run's wall time, from opening the GPU to the output complete
             (loading the plan, reserving the pool, capturing the engine's CUDA graph and
             creating the NVDEC sessions are inside it). Python: the median pass (decoder
             created inside each pass; torch start-up, model build and warm-up outside, in
             "setup"). The strict comparison: vrseg's set-up counts, Python's does not.
  pass fps   The same span on both sides: from creating the decoder(s), with the model
             loaded and ready, to the last matte done. vrseg: frames / (wall - the decode
             thread's start). Python: the median pass, as in "whole".
  decode fps vrseg: frames / the decode thread's time (it starts after set-up, creates the
             NVDEC sessions and ends once they are torn down). Python: frames / time blocked
             on the decoder (where that is most of the pass, the pipeline is decode-bound).
  steady     frames after the first batch / time after it.
  setup s    vrseg: the decode thread's start (GPU, plan, pool, graph). Python: torch init,
             model build, warm-up.
  after s    Outside both clocks, after the output: vrseg: NVDEC teardown still running when
             the output was complete; Python: closing the decoder.
  GPU ms per frame per stage, from CUDA events (vrseg: its stats; Python: events around
  each stage).
"""
import json
import re
import statistics
import sys


def vrseg_pass_start(r):
    """Seconds of a vrseg run before its decode thread started (set-up)."""
    return r.get("phases", {}).get("decode_start_at_s", 0.0)


def vrseg_after(r):
    """Seconds the run went on after its output was complete (NVDEC teardown)."""
    phases = r.get("phases", {})
    return max(phases.get("run_end_at_s", 0.0) - phases.get("output_done_at_s", 0.0), 0.0)


def main():
    vrseg, python, detections = [], [], []
    for path in sys.argv[1:]:
        if path.endswith(".jsonl"):
            with open(path) as f:
                lines = [json.loads(line) for line in f if line.strip()]
            detections.append((len(lines), sum(len(r["detections"]) for r in lines)))
            continue
        with open(path) as f:
            r = json.load(f)
        if r.get("tool") == "python-reference":
            python.append(r)
        elif "frames_out" in r:
            vrseg.append(r)
        else:
            sys.exit(f"pipeline_table: {path} is neither vrseg run --stats nor python_pipeline.py --json")

    print(f"{'run':<48} {'frames':>6} {'whole':>6} {'pass':>6} {'decode':>6} {'steady':>6} {'setup':>6} "
          f"{'after':>6} {'letterbox':>9} {'inference':>9} {'postproc':>9} {'det/eye':>7}")
    print(f"{'':<48} {'':>6} {'fps':>6} {'fps':>6} {'fps':>6} {'fps':>6} {'s':>6} {'s':>6} {'GPU ms per frame':>29}")
    for i, r in enumerate(vrseg, 1):
        n = r["frames_out"]
        eyes = 1 if r.get("layout") == "mono" else 2
        det = ""
        if detections:
            frames, boxes = detections[-1]
            det = f"{boxes / max(frames * eyes, 1):.1f}"
        label = f"vrseg {r['engine'].split('/')[-1]}, {r.get('decoders', 1)} NVDEC"
        steady = f"{r['steady_fps']:.1f}" if r.get("steady_fps") else ""
        start, after = vrseg_pass_start(r), vrseg_after(r)
        print(f"{label:<48} {n:>6} {r['fps']:>6.1f} {n / (r['wall_s'] - start):>6.1f} {n / r['decode_s']:>6.1f} "
              f"{steady:>6} {start:>6.2f} {after:>6.2f} {1e3 * r['letterbox_gpu_s'] / n:>9.3f} "
              f"{1e3 * r['inference_gpu_s'] / n:>9.3f} {1e3 * r['postprocess_gpu_s'] / n:>9.3f} {det:>7}")
    for i, r in enumerate(python, 1):
        label = f"python {r.get('model', '')} {r['decoder']} {r['weights']}"
        g = r["gpu_ms_per_frame"]
        steady = f"{r['median_steady_fps']:.1f}" if r.get("median_steady_fps") else ""
        decode = 1e3 / r["decode_wait_ms_per_frame"] if r["decode_wait_ms_per_frame"] > 0 else float("inf")
        close = statistics.median(p.get("close_s", 0.0) for p in r["passes"])
        print(f"{label:<48} {r['passes'][0]['frames']:>6} {r['median_fps']:>6.1f} {r['median_fps']:>6.1f} "
              f"{decode:>6.1f} {steady:>6} {r['setup_s']:>6.2f} {close:>6.2f} {g['letterbox']:>9.3f} "
              f"{g['inference']:>9.3f} {g['postprocess']:>9.3f} {r['detections_per_eye']:>7.1f}")
    # Each run's own pool: the parallel decoder's reorder window makes the
    # all-sessions pool far larger than the one-session one.
    for r in vrseg:
        print(f"vrseg {r['engine'].split('/')[-1]}, {r.get('decoders', 1)} NVDEC: batch {r['batch_frames']} frames, "
              f"VRAM pool {r['vram_pool_bytes'] / 2**30:.2f} GiB, "
              f"{r['bitstream_bytes_per_frame'] / 1e3:.0f} kB host->device per frame")
    if python:
        r = python[0]
        print(f"python: {r['versions']}, batch {r['batch_frames']} frames, {len(r['passes'])} passes per run "
              f"(first pass {r['first_pass_fps']:.1f} fps), peak torch memory "
              f"{r['passes'][-1]['peak_torch_allocated_bytes'] / 2**30:.2f} GiB")
    # Ratios per model size (the letter in the plan's file name or the yaml).
    def size(name):
        m = re.search(r"yolo11([nsmlx])|-([nsmlx])[.-]", name)
        return (m.group(1) or m.group(2)) if m else ""

    for r in vrseg:
        mine = size(r["engine"].split("/")[-1])
        theirs = [p for p in python if size(p.get("model", "")) == mine]
        if not theirs:
            continue
        c = statistics.median(p["median_fps"] for p in theirs)
        pass_fps = r["frames_out"] / (r["wall_s"] - vrseg_pass_start(r))
        print(f"vrseg ({r['engine'].split('/')[-1]}, {r.get('decoders', 1)} NVDEC) / python (yolo11{mine}): "
              f"whole run {r['fps']:.1f} / {c:.1f} = {r['fps'] / c:.2f}x; "
              f"pass {pass_fps:.1f} / {c:.1f} = {pass_fps / c:.2f}x")


if __name__ == "__main__":
    main()
