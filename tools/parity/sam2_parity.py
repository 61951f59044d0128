#!/usr/bin/env python3
"""vrseg's SAM2.1 memory attention against Meta's own module, and timed beside it.

The reference is `sam2.modeling.memory_attention.MemoryAttention` from the
sam2 package on PyPI (sdist 1.1.0; tools/parity/fetch_sam2.sh puts its
pure-Python modeling files in a folder), built from the package's
configs/sam2.1/sam2.1_hiera_t.yaml exactly as Hydra would build it (a small
`_target_` instantiator here, so neither Hydra nor sam2's CUDA extension is
needed). `sam2/__init__.py` only starts Hydra, so the package is registered
as a bare namespace instead of being run.

1. Weights: torch's default init under a fixed seed; then LayerNorm weights
   and biases drawn in [0.5, 1.5) and [-0.5, 0.5), and the q and k
   projections scaled by QK_SPREAD so that attention is selective (the
   default init gives near-uniform attention over 28,000 keys, where any
   kernel that averages would pass). The state dict goes to a safetensors file.
2. Inputs (seeded normal): curr and curr_pos [4096, 256], W memory frames
   and their spatial pos [W, 4096, 64], P object-pointer tokens and their pos
   [P, 64], and a temporal encoding maskmem_tpos_enc [7, 64]. The module gets
   memory_pos = spatial pos + maskmem_tpos_enc[age - 1] per frame, the last
   frame 1 frame old, as SAM2Base._prepare_memory_conditioned_features builds
   it (index num_maskmem - t_pos - 1 = t_rel - 1); vrseg gets the spatial
   pos and the table, and ages its ring's keys itself.
3. The module runs in FP32 (TF32 off) and in FP16 (SDPA flash) on the GPU;
   `vrseg dev sam2-attention` runs our stack on the same files with a ring
   of 7 frames (so W < 7 also checks the masking of a ring not yet full).
   Relative L2 = ||ours - ref|| / ||ref||; the check passes when ours against
   both FP32 and FP16 PyTorch is <= 1e-2 for every W.
4. --cpu-check also compares vrseg's plain-Rust CPU reference with the
   module (FP32) on a small map: that reference is what the GPU tests trust.
5. --bench: PyTorch FP16, SDPA restricted to flash, captured in one CUDA
   graph, against vrseg's stack (eager and as a CUDA graph), same inputs,
   same process run, per W.

Usage: sam2_parity.py --vrseg BIN --sam2 DIR --work DIR [--out DIR] [--bench]
                      [--cpu-check] [--device cuda|cpu] [--windows 1,3,7]
"""

import argparse
import importlib
import json
import subprocess
import sys
import time
import types
from pathlib import Path

import numpy as np
import torch

SEED = 2024
QK_SPREAD = 3.0
POINTER_TOKENS = 64  # 16 object pointers of 256 channels, each split into 4 tokens of 64 (SAM2Base)
RING = 7
TOLERANCE = 1e-2


def import_sam2(root: Path):
    """Registers `sam2` as a namespace over ROOT/sam2 without running its
    __init__ (which starts Hydra), then imports the modeling modules."""
    pkg_dir = root / "sam2"
    if not (pkg_dir / "modeling" / "memory_attention.py").exists():
        sys.exit(f"{root} holds no sam2/modeling/memory_attention.py: run tools/parity/fetch_sam2.sh first")
    pkg = types.ModuleType("sam2")
    pkg.__path__ = [str(pkg_dir)]
    sys.modules["sam2"] = pkg
    importlib.import_module("sam2.modeling.memory_attention")
    return pkg_dir


def instantiate(node):
    """Hydra's instantiate for plain configs: `_target_` dicts become objects,
    innermost first."""
    if isinstance(node, dict):
        args = {k: instantiate(v) for k, v in node.items() if k != "_target_"}
        if "_target_" not in node:
            return args
        module, name = node["_target_"].rsplit(".", 1)
        return getattr(importlib.import_module(module), name)(**args)
    if isinstance(node, list):
        return [instantiate(v) for v in node]
    return node


def build_module(pkg_dir: Path, device: str):
    import yaml

    config = yaml.safe_load((pkg_dir / "configs" / "sam2.1" / "sam2.1_hiera_t.yaml").read_text())
    torch.manual_seed(SEED)
    module = instantiate(config["model"]["memory_attention"])
    gen = torch.Generator().manual_seed(SEED + 1)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if ".norm" in name or name.startswith("norm"):
                lo, hi = (0.5, 1.5) if name.endswith("weight") else (-0.5, 0.5)
                p.copy_(torch.rand(p.shape, generator=gen) * (hi - lo) + lo)
            elif name.endswith(("q_proj.weight", "k_proj.weight")):
                p.mul_(QK_SPREAD)
    return module.eval().to(device)


def save_safetensors(path: Path, tensors: dict):
    from safetensors.torch import save_file

    save_file({k: v.detach().float().cpu().contiguous() for k, v in tensors.items()}, str(path))


def load_out(path: Path) -> torch.Tensor:
    from safetensors.torch import load_file

    return load_file(str(path))["out"]


def make_inputs(side: int, frames: int, pointers: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    t = side * side
    return {
        "curr": torch.randn(t, 256, generator=g),
        "curr_pos": torch.randn(t, 256, generator=g),
        "memory": torch.randn(frames, t, 64, generator=g),
        "memory_pos": torch.randn(frames, t, 64, generator=g),
        "obj_ptrs": torch.randn(pointers, 64, generator=g),
        "obj_ptr_pos": torch.randn(pointers, 64, generator=g),
        "maskmem_tpos_enc": torch.randn(RING, 64, generator=g),
    }


def module_args(inputs: dict, device: str, dtype):
    """The module's calling convention: sequence-first [L, B=1, C] tensors;
    frame i of F is F - i frames old and its pos gains maskmem_tpos_enc[age - 1]."""
    frames = inputs["memory"].shape[0]
    ages = torch.arange(frames, 0, -1)
    frame_pos = inputs["memory_pos"] + inputs["maskmem_tpos_enc"][ages - 1].unsqueeze(1)
    mem = torch.cat([inputs["memory"].flatten(0, 1), inputs["obj_ptrs"]])
    mem_pos = torch.cat([frame_pos.flatten(0, 1), inputs["obj_ptr_pos"]])
    to = lambda x: x.unsqueeze(1).to(device=device, dtype=dtype).contiguous()  # noqa: E731
    return dict(
        curr=to(inputs["curr"]),
        memory=to(mem),
        curr_pos=to(inputs["curr_pos"]),
        memory_pos=to(mem_pos),
        num_obj_ptr_tokens=inputs["obj_ptrs"].shape[0],
    )


def run_module(module, inputs: dict, device: str, dtype) -> torch.Tensor:
    with torch.no_grad():
        out = module.to(dtype)(**module_args(inputs, device, dtype))
    module.float()
    return out.squeeze(1).float().cpu()


def rel_l2(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double(), b.double()
    return float((a - b).norm() / b.norm())


def run_vrseg(vrseg: str, weights: Path, inputs: Path, extra: list) -> str:
    cmd = [vrseg, "dev", "sam2-attention", "--weights", str(weights), "--inputs", str(inputs), *extra]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stderr}")
    if done.stderr.strip():
        print(done.stderr.strip(), file=sys.stderr)
    return done.stdout


def bench_torch(module, inputs: dict, iters: int) -> float:
    """PyTorch FP16, SDPA flash only, one CUDA graph; ms per forward."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    module.half()
    args = module_args(inputs, "cuda", torch.float16)
    with torch.no_grad(), sdpa_kernel(SDPBackend.FLASH_ATTENTION):
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(3):
                module(**args)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            module(**args)
        for _ in range(3):
            graph.replay()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(iters):
            graph.replay()
        end.record()
        torch.cuda.synchronize()
    module.float()
    return start.elapsed_time(end) / iters


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--vrseg", required=True)
    ap.add_argument("--sam2", required=True, type=Path, help="folder holding the sam2 package (fetch_sam2.sh)")
    ap.add_argument("--work", required=True, type=Path)
    ap.add_argument("--out", type=Path)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--windows", default="1,3,7")
    ap.add_argument("--side", type=int, default=64)
    ap.add_argument("--bench", action="store_true")
    ap.add_argument("--bench-iters", type=int, default=50)
    ap.add_argument("--cpu-check", action="store_true", help="also check vrseg's CPU reference on a 12x12 map")
    ap.add_argument("--no-gpu-parity", action="store_true", help="skip the GPU comparison (CPU-only machines)")
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False

    pkg_dir = import_sam2(args.sam2)
    module = build_module(pkg_dir, args.device)
    weights = args.work / "sam2_memory_attention.safetensors"
    save_safetensors(weights, module.state_dict())
    report = {"seed": SEED, "qk_spread": QK_SPREAD, "pointer_tokens": POINTER_TOKENS, "ring": RING, "cases": []}
    ok = True

    if args.cpu_check:
        # vrseg's CPU reference (what tests/gpu/sam2_stack.rs trusts) against the module, FP32.
        for frames, pointers in [(3, 16), (1, 0), (9, 5)]:
            inputs = make_inputs(12, frames, pointers, SEED + 100 + frames)
            path = args.work / f"cpu_inputs_{frames}.safetensors"
            save_safetensors(path, inputs)
            ref_path = args.work / f"cpu_ref_{frames}.safetensors"
            run_vrseg(args.vrseg, weights, path, ["--window", str(RING), "--cpu-reference", str(ref_path)])
            # A ring of 7 keeps the last 7 of 9 frames.
            kept = dict(inputs, memory=inputs["memory"][-RING:], memory_pos=inputs["memory_pos"][-RING:])
            want = run_module(module, kept, args.device, torch.float32)
            err = rel_l2(load_out(ref_path), want)
            passed = err <= 1e-4
            ok &= passed
            print(f"cpu reference 12x12, {frames} frame(s), {pointers} pointer tokens: rel L2 {err:.2e} "
                  f"({'ok' if passed else 'FAIL'}, <= 1e-4)")
            report["cases"].append({"cpu_reference": True, "frames": frames, "pointers": pointers, "rel_l2": err})

    windows = [int(w) for w in args.windows.split(",") if w]
    if not args.no_gpu_parity:
        print(f"{'W':>2} {'ours vs fp32':>13} {'ours vs fp16':>13} {'torch fp16 vs fp32':>19}")
        for w in windows:
            inputs = make_inputs(args.side, w, POINTER_TOKENS, SEED + w)
            path = args.work / f"inputs_w{w}.safetensors"
            save_safetensors(path, inputs)
            ours_path = args.work / f"ours_w{w}.safetensors"
            run_vrseg(args.vrseg, weights, path, ["--window", str(RING), "-o", str(ours_path)])
            ours = load_out(ours_path)
            ref32 = run_module(module, inputs, args.device, torch.float32)
            ref16 = run_module(module, inputs, args.device, torch.float16)
            e32, e16, t16 = rel_l2(ours, ref32), rel_l2(ours, ref16), rel_l2(ref16, ref32)
            finite = bool(torch.isfinite(ours).all())
            passed = finite and e32 <= TOLERANCE and e16 <= TOLERANCE
            ok &= passed
            print(f"{w:>2} {e32:>13.2e} {e16:>13.2e} {t16:>19.2e}  {'ok' if passed else 'FAIL'}")
            report["cases"].append({"frames": w, "rel_l2_fp32": e32, "rel_l2_fp16": e16, "torch_fp16_vs_fp32": t16,
                                    "finite": finite})

    if args.bench:
        print(f"\nbench (ms per frame, {torch.cuda.get_device_name()}, {POINTER_TOKENS} pointer tokens)")
        print(f"{'W':>2} {'torch fp16 flash graph':>23} {'vrseg eager':>12} {'vrseg graph':>12} {'speed-up':>9} {'TFLOP/s':>8}")
        bench = []
        for w in windows:
            inputs = make_inputs(64, w, POINTER_TOKENS, SEED + w)
            path = args.work / f"inputs_w{w}.safetensors"
            save_safetensors(path, inputs)
            torch_ms = bench_torch(module, inputs, args.bench_iters)
            line = run_vrseg(args.vrseg, weights, path, ["--window", str(RING), "-o", str(args.work / "bench_out.safetensors"),
                                                         "--bench", str(args.bench_iters)])
            ours = json.loads(line.strip().splitlines()[-1])
            speedup = torch_ms / ours["graph_ms"]
            print(f"{w:>2} {torch_ms:>23.3f} {ours['eager_ms']:>12.3f} {ours['graph_ms']:>12.3f} {speedup:>8.2f}x "
                  f"{ours['tflops_graph']:>8.1f}")
            bench.append({"frames": w, "torch_ms": torch_ms, **ours, "speedup": speedup})
        report["bench"] = bench
        report["date"] = time.strftime("%Y-%m-%d")
        report["torch"] = torch.__version__

    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "sam2_parity.json").write_text(json.dumps(report, indent=1) + "\n")
    print("sam2 parity:", "ok" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
