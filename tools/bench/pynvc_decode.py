#!/usr/bin/env python3
"""Decode-throughput baseline with NVIDIA's PyNvVideoCodec 2.2.4 (NVDEC, NV12 in device memory).

Usage: pynvc_decode.py FILE [--warmup-frames N] [--repeat R] [--json]
                            [--gpu G] [--no-decode-only] [--decoder-per-pass]

Install on the GPU machine (offline, Python 3.12; the wheel has no Requires-Dist):
    pip install --no-index --no-deps bundle-extra/wheels/pynvvideocodec-2.2.4-cp312-cp312-manylinux_2_28_x86_64.whl

What is measured (all in one process, one CUDA primary context, one decoder):
  * The decoder is created once (CreateDecoder, usedevicememory=True) and reused for every pass.
    Each pass opens a fresh FFmpeg demuxer (CreateDemuxer, inside the timed region), feeds every
    packet to Decode() including the demuxer's final empty packet (bsl == 0), which sends
    CUVID_PKT_ENDOFSTREAM and drains the decoder; the next pass starts a new stream on the same
    decoder (the parser sees the sequence header again; same format, so no re-create).
    --decoder-per-pass creates a new decoder per pass instead (creation outside the clock; the
    lazy NVDEC session set-up on the first sequence header is then inside every pass).
  * "demux+decode" passes: FFmpeg demux and NVDEC decode run in this one Python thread, so the
    rate includes demux, bitstream filter (mp4toannexb) and Python per-packet overhead.
  * "decode only" passes: all packets are demuxed and copied into Python-owned buffers first
    (untimed), then only Decode() calls are timed. Copies are required: the demuxer returns the
    same PacketData object for every packet and its bsl_data points into FFmpeg's reusable
    packet buffer. Needs RAM about the size of the file; --no-decode-only skips it.
  * Decoded frames are only counted; they stay NV12 (or P016/YUV444 per stream) in device memory
    and are never copied to host. Decode() is synchronous: each returned frame is a packed copy
    (pitch = width) out of the mapped NVDEC surface whose copy the SDK helper has already waited
    for (cuStreamSynchronize per frame unless enableasyncallocations is set, which this script
    does not use; the frames' __cuda_array_interface__ reports stream 0). Before the clock stops the
    script still calls decoder.SyncOnCUStream() and cuCtxSynchronize() on the primary context
    (the equivalent of torch.cuda.synchronize(), without importing torch).
  * Wall time: time.perf_counter(); CPU time: getrusage(RUSAGE_SELF) user+sys of the whole
    process (all threads, driver threads included); cpu_cores = cpu_s / wall_s.

With --json, stdout carries exactly one JSON object (anything the native library prints while
decoding is redirected to stderr) and the human-readable line goes to stderr.
"""

import argparse
import ctypes
import json
import logging
import os
import resource
import statistics
import sys
import time

PROG = "pynvc_decode"

# PacketData fields copied verbatim for the decode-only packet list (bsl/bsl_data are replaced).
_PACKET_FIELDS = ("key", "pts", "dts", "pos", "duration", "decode_flag", "bDiscontinuity",
                  "seek_pts", "stream_index", "is_video", "discardable")


def die(msg, code=2):
    sys.stdout.flush()
    print(f"{PROG}: {msg}", file=sys.stderr, flush=True)
    sys.exit(code)


def first_line(exc):
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__


def import_pynvc():
    # PyNvVideoCodec/__init__.py logs multi-line diagnostics on failure; keep the error one line.
    log = logging.getLogger("PyNvVideoCodec")
    was_disabled = log.disabled
    log.disabled = True
    try:
        import PyNvVideoCodec as nvc  # noqa: N813
    except Exception as e:  # ImportError, OSError (libnvcuvid/libcuda), RuntimeError (driver)
        die("cannot import PyNvVideoCodec (" + first_line(e) + "); install "
            "bundle-extra/wheels/pynvvideocodec-2.2.4-cp312-*.whl into this Python 3.12 and "
            "check the NVIDIA driver (libcuda, libnvcuvid, libnvidia-encode) is visible")
    finally:
        log.disabled = was_disabled
    return nvc


class PrimaryContext:
    """The device's CUDA primary context through the driver API (ctypes, no torch/pycuda)."""

    def __init__(self, gpu):
        try:
            self.cu = ctypes.CDLL("libcuda.so.1")
        except OSError as e:
            die("cannot load libcuda.so.1 (" + first_line(e) + ")")
        self.dev = ctypes.c_int()
        self.ctx = ctypes.c_void_p()
        self._check(self.cu.cuInit(0), "cuInit")
        self._check(self.cu.cuDeviceGet(ctypes.byref(self.dev), gpu), f"cuDeviceGet({gpu})")
        self._check(self.cu.cuDevicePrimaryCtxRetain(ctypes.byref(self.ctx), self.dev),
                    "cuDevicePrimaryCtxRetain")

    @staticmethod
    def _check(rc, what):
        if rc != 0:
            die(f"{what} failed with CUresult {rc}")

    @property
    def handle(self):
        return self.ctx.value

    def synchronize(self):
        self._check(self.cu.cuCtxPushCurrent_v2(self.ctx), "cuCtxPushCurrent")
        try:
            self._check(self.cu.cuCtxSynchronize(), "cuCtxSynchronize")
        finally:
            popped = ctypes.c_void_p()
            self.cu.cuCtxPopCurrent_v2(ctypes.byref(popped))

    def release(self):
        self.cu.cuDevicePrimaryCtxRelease_v2(self.dev)


def cpu_seconds():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def pass_record(frames, wall, cpu):
    return {"frames": frames, "wall_s": round(wall, 6), "fps": round(frames / wall, 3),
            "cpu_s": round(cpu, 6), "cpu_cores": round(cpu / wall, 3)}


def summary(passes):
    fps = [p["fps"] for p in passes]
    return max(fps), statistics.median(fps)


class Bench:
    def __init__(self, nvc, path, gpu):
        self.nvc = nvc
        self.path = path
        self.gpu = gpu
        self.ctx = PrimaryContext(gpu)
        probe = nvc.CreateDemuxer(filename=path)
        self.codec = probe.GetNvCodecId()
        self.stream_info = {"codec": self.codec.name, "width": probe.Width(),
                            "height": probe.Height(), "bit_depth": probe.BitDepth(),
                            "container": probe.GetContainerName()}
        del probe
        self.dec = None
        self.new_decoder()

    def new_decoder(self):
        self.dec = None  # destroy the old session first
        t0 = time.perf_counter()
        # This CreateDecoder overload (no enableasyncallocations kwarg) = synchronous output copies.
        self.dec = self.nvc.CreateDecoder(gpuid=self.gpu, codec=self.codec,
                                          cudacontext=self.ctx.handle, cudastream=0,
                                          usedevicememory=True)
        self.create_s = time.perf_counter() - t0

    def flush(self):
        # An empty packet (bsl == 0) is what the demuxer yields at EOF: ENDOFSTREAM, drains the DPB.
        return len(self.dec.Decode(self.nvc.PacketData()))

    def sync(self):
        self.dec.SyncOnCUStream()
        self.ctx.synchronize()

    def warmup(self, n):
        decoded = 0
        drained = False
        for pkt in self.nvc.CreateDemuxer(filename=self.path):
            decoded += len(self.dec.Decode(pkt))
            if pkt.bsl == 0:
                drained = True
                break
            if decoded >= n:
                break
        if not drained:
            decoded += self.flush()
        self.sync()
        return decoded

    def demux_decode_pass(self):
        c0 = cpu_seconds()
        t0 = time.perf_counter()
        frames = 0
        saw_eos = False
        for pkt in self.nvc.CreateDemuxer(filename=self.path):
            frames += len(self.dec.Decode(pkt))
            if pkt.bsl == 0:
                saw_eos = True
        if not saw_eos:
            frames += self.flush()
        self.sync()
        t1 = time.perf_counter()
        c1 = cpu_seconds()
        return pass_record(frames, t1 - t0, c1 - c0)

    def demux_to_memory(self):
        """Owned copies of every video packet (the demuxer reuses one PacketData + buffer)."""
        nvc = self.nvc
        packets, buffers = [], []
        for pkt in nvc.CreateDemuxer(filename=self.path):
            if pkt.bsl == 0:
                break
            buf = ctypes.create_string_buffer(pkt.bsl)
            ctypes.memmove(buf, pkt.bsl_data, pkt.bsl)
            copy = nvc.PacketData()
            for field in _PACKET_FIELDS:
                if hasattr(pkt, field):
                    setattr(copy, field, getattr(pkt, field))
            copy.bsl = pkt.bsl
            copy.bsl_data = ctypes.addressof(buf)
            packets.append(copy)
            buffers.append(buf)
        return packets, buffers

    def decode_only_pass(self, packets):
        dec = self.dec
        c0 = cpu_seconds()
        t0 = time.perf_counter()
        frames = 0
        for pkt in packets:
            frames += len(dec.Decode(pkt))
        frames += self.flush()
        self.sync()
        t1 = time.perf_counter()
        c1 = cpu_seconds()
        return pass_record(frames, t1 - t0, c1 - c0)

    def close(self):
        self.dec = None
        self.ctx.release()


def run(args, nvc):
    bench = Bench(nvc, args.file, args.gpu)
    result = {"tool": "PyNvVideoCodec", "version": getattr(nvc, "__version__", "unknown"),
              "file": args.file, "gpu": args.gpu, **bench.stream_info,
              "decoder_create_s": round(bench.create_s, 6), "decoder_reused": not args.decoder_per_pass,
              "warmup_frames": 0}
    if args.warmup_frames > 0:
        result["warmup_frames"] = bench.warmup(args.warmup_frames)

    passes = []
    for i in range(args.repeat):
        if args.decoder_per_pass and i > 0:
            bench.new_decoder()
        passes.append(bench.demux_decode_pass())
    frames = passes[0]["frames"]
    if frames == 0:
        die("decoded 0 frames (is FILE a video NVDEC supports on this GPU?)", 1)
    warnings = []
    if any(p["frames"] != frames for p in passes):
        warnings.append("frame count differs between passes: "
                        + ",".join(str(p["frames"]) for p in passes))
    best, median = summary(passes)
    try:
        result["pixel_format"] = bench.dec.GetPixelFormat().name
        result["session_init_ms"] = bench.dec.GetSessionInitTime()
    except Exception:  # informational only
        pass
    result.update({"frames": frames, "passes": passes, "best_fps": best, "median_fps": median})

    if not args.no_decode_only:
        t0 = time.perf_counter()
        packets, buffers = bench.demux_to_memory()
        demux_s = time.perf_counter() - t0
        only = []
        for i in range(args.repeat):
            if args.decoder_per_pass:
                bench.new_decoder()
            only.append(bench.decode_only_pass(packets))
        if any(p["frames"] != frames for p in only):
            warnings.append("decode-only frame counts differ from demux+decode: "
                            + ",".join(str(p["frames"]) for p in only))
        best_o, median_o = summary(only)
        result["decode_only"] = {"packets": len(packets),
                                 "packet_bytes": sum(len(b) for b in buffers),
                                 "demux_copy_s": round(demux_s, 6), "passes": only,
                                 "best_fps": best_o, "median_fps": median_o}
        del packets, buffers
    if warnings:
        result["warnings"] = warnings
    bench.close()
    return result


def human_line(r):
    s = (f"PyNvVideoCodec {r['version']} {r['codec']} {r['width']}x{r['height']} "
         f"{r.get('pixel_format', '?')} (device memory): {r['frames']} frames x "
         f"{len(r['passes'])} passes, demux+decode best {r['best_fps']:.1f} fps, "
         f"median {r['median_fps']:.1f} fps, "
         f"{statistics.median(p['cpu_cores'] for p in r['passes']):.2f} CPU cores")
    d = r.get("decode_only")
    if d:
        s += (f"; decode only best {d['best_fps']:.1f} fps, median {d['median_fps']:.1f} fps, "
              f"{statistics.median(p['cpu_cores'] for p in d['passes']):.2f} CPU cores")
    for w in r.get("warnings", []):
        s += f"; WARNING: {w}"
    return s


def main():
    ap = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    ap.add_argument("file", metavar="FILE", help="video file (any container FFmpeg demuxes)")
    ap.add_argument("--warmup-frames", type=int, default=0, metavar="N",
                    help="decode N frames (then drain) before the timed passes (default 0)")
    ap.add_argument("--repeat", type=int, default=3, metavar="R",
                    help="timed passes over the whole file (default 3)")
    ap.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    ap.add_argument("--gpu", type=int, default=0, help="CUDA device ordinal (default 0)")
    ap.add_argument("--no-decode-only", action="store_true",
                    help="skip the decode-only passes (packets held in RAM)")
    ap.add_argument("--decoder-per-pass", action="store_true",
                    help="create a new decoder for every pass instead of reusing one")
    args = ap.parse_args()
    if args.repeat < 1 or args.warmup_frames < 0:
        die("--repeat must be >= 1 and --warmup-frames >= 0")
    if not os.path.isfile(args.file):
        die(f"no such file: {args.file}")

    nvc = import_pynvc()

    saved_stdout = None
    if args.json:  # keep stdout for the JSON object only
        sys.stdout.flush()
        saved_stdout = os.dup(1)
        os.dup2(2, 1)
    try:
        result = run(args, nvc)
    except Exception as e:  # PyNvVCException, RuntimeError, ... : one line, no traceback
        die("decode failed: " + first_line(e), 1)
    finally:
        if saved_stdout is not None:
            sys.stdout.flush()
            os.dup2(saved_stdout, 1)
            os.close(saved_stdout)

    line = human_line(result)
    if args.json:
        print(line, file=sys.stderr, flush=True)
        print(json.dumps(result), flush=True)
    else:
        print(line, flush=True)


if __name__ == "__main__":
    main()
