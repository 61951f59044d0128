#!/usr/bin/env python3
"""Side-by-side table of `vrseg bench decode --json` and pynvc_decode.py --json results.

Usage: decode_table.py RESULT.json...   (any mix of the two tools, in run order)

Rates compared: vrseg's steady rate (frames after the first over the time after the
first; its NVDEC session is created inside each pass) against PyNvVideoCodec's median
pass rate (its decoder is created once and reused, so session start-up is outside its
passes). Both include demux in the same thread and keep frames in device memory.
"""
import json
import statistics
import sys


def main():
    ours, theirs = [], []
    for path in sys.argv[1:]:
        with open(path) as f:
            r = json.load(f)
        if r.get("tool") == "vrseg":
            ours.append(r)
        else:
            theirs.append(r)
    print(f"{'tool':<28} {'frames':>6} {'median fps':>11} {'best fps':>9} {'CPU cores':>10}")
    for r in ours:
        print(f"{'vrseg (steady)':<28} {r['passes'][0]['frames']:>6} {r['median_steady_fps']:>11.1f} "
              f"{r['best_steady_fps']:>9.1f} {r['median_cpu_cores']:>10.2f}")
        print(f"{'vrseg (incl. session start)':<28} {r['passes'][0]['frames']:>6} {r['median_fps']:>11.1f} "
              f"{r['best_fps']:>9.1f}")
    for r in theirs:
        cores = statistics.median(p["cpu_cores"] for p in r["passes"])
        print(f"{'PyNvVideoCodec ' + str(r.get('version', '')):<28} {r['frames']:>6} {r['median_fps']:>11.1f} "
              f"{r['best_fps']:>9.1f} {cores:>10.2f}")
        if "decode_only" in r and r["decode_only"]:
            d = r["decode_only"]
            print(f"{'PyNvVideoCodec decode-only':<28} {r['frames']:>6} {d.get('median_fps', 0):>11.1f} "
                  f"{d.get('best_fps', 0):>9.1f}")
    if ours and theirs:
        a = statistics.median(r["median_steady_fps"] for r in ours)
        b = statistics.median(r["median_fps"] for r in theirs)
        print(f"vrseg / PyNvVideoCodec (median of rounds): {a:.1f} / {b:.1f} fps = {100 * a / b:.1f}%")


if __name__ == "__main__":
    main()
