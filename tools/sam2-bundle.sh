#!/usr/bin/env bash
# Builds the SAM2.1 memory-attention GPU bundle into sam2-bundle/ (git-ignored,
# about 30 MiB): the vrseg binary, the GPU test binary, the sam2 criterion
# bench, tools/parity/sam2_parity.py and Meta's sam2 modeling files
# (tools/parity/fetch_sam2.sh). On a GPU machine, from the repository root:
#
#   bash sam2-bundle/run.sh           # sam2 GPU tests, parity (W = 1, 3, 7), CPU-reference check
#   bash sam2-bundle/run.sh bench     # the same, then PyTorch vs vrseg side by side, criterion, ncu breakdown
#
# (with the device tool: run command='bash sam2-bundle/run.sh bench', carry=['sam2-bundle']).
# Needs python3 with torch, numpy, pyyaml, pillow, tqdm and safetensors there.
set -euo pipefail
cd "$(dirname "$0")/.."

json=$(mktemp)
trap 'rm -f "$json"' EXIT
cargo build --release --quiet --bins
cargo test --release --no-run --message-format=json --quiet --test gpu > "$json"
cargo bench --no-run --message-format=json --quiet --bench sam2 >> "$json"

rm -rf sam2-bundle
mkdir -p sam2-bundle/bin sam2-bundle/parity
cp target/release/vrseg sam2-bundle/bin/
python3 - "$json" <<'PY'
import json, shutil, sys
for line in open(sys.argv[1]):
    try:
        m = json.loads(line)
    except ValueError:
        continue
    if m.get("reason") == "compiler-artifact" and m.get("executable"):
        kind, name = m["target"]["kind"][0], m["target"]["name"]
        if (kind, name) in (("test", "gpu"), ("bench", "sam2")):
            shutil.copy2(m["executable"], f"sam2-bundle/bin/{name}-{kind}")
PY
strip sam2-bundle/bin/* 2>/dev/null || true
tools/parity/fetch_sam2.sh sam2-bundle/parity/sam2-src
cp tools/parity/sam2_parity.py sam2-bundle/parity/
git rev-parse --short HEAD > sam2-bundle/commit 2>/dev/null || echo unknown > sam2-bundle/commit

cat > sam2-bundle/run.sh <<'RUN'
#!/usr/bin/env bash
# Runs the SAM2 memory-attention bundle. Usage: bash sam2-bundle/run.sh [bench]
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=${OUT:-/tmp}
export VRSEG_REQUIRE_GPU=1 PYTHONUNBUFFERED=1
status=0
echo "== commit $(cat "$here/commit"); $(nvidia-smi -L 2>/dev/null | head -1)"
echo "== sam2 GPU tests"
"$here/bin/gpu-test" sam2 --test-threads=1 > "$out/sam2-tests.txt" 2>&1 || status=1
grep -E '^test |test result|relative L2|worst error|10000 appends' "$out/sam2-tests.txt"
grep -E -A15 -- '---- .* stdout ----' "$out/sam2-tests.txt" | head -80
echo "== parity"
work=/tmp/sam2-parity
extra=()
[ "${1:-}" = bench ] && extra=(--bench)
python3 "$here/parity/sam2_parity.py" --vrseg "$here/bin/vrseg" --sam2 "$here/parity/sam2-src" --work "$work" \
    --out "$out" --cpu-check "${extra[@]}" || status=1
if [ "${1:-}" = bench ]; then
    echo "== criterion (eager forward)"
    "$here/bin/sam2-bench" --bench 2>&1 | grep -E 'sam2 |W = |time:|thrpt:' > "$out/sam2-criterion.txt"
    cat "$out/sam2-criterion.txt"
    if command -v ncu >/dev/null && [ -f "$work/inputs_w7.safetensors" ]; then
        echo "== ncu: one forward at W = 7 (real clocks), per kernel"
        profile() {
            ncu --clock-control none --metrics "$1" --csv --page raw "$here/bin/vrseg" dev sam2-attention \
                --weights "$work/sam2_memory_attention.safetensors" --inputs "$work/inputs_w7.safetensors" \
                -o "$work/ncu_out.safetensors" > "$out/sam2-ncu.csv" 2>"$out/sam2-ncu.err"
        }
        base=gpu__time_duration.sum,sm__throughput.avg.pct_of_peak_sustained_elapsed,launch__registers_per_thread,launch__occupancy_limit_registers,launch__occupancy_limit_shared_mem,sm__warps_active.avg.pct_of_peak_sustained_active
        profile "$base,sm__pipe_tensor_op_hmma_cycles_active.avg.pct_of_peak_sustained_active" || profile "$base" || tail -5 "$out/sam2-ncu.err"
        python3 - "$out/sam2-ncu.csv" <<'PY' || true
import csv, sys, collections
rows = [r for r in csv.reader(open(sys.argv[1])) if len(r) > 10]
head = rows[0]; data = [r for r in rows[2:] if r[0].isdigit()]
ix = {h: i for i, h in enumerate(head)}
agg = collections.defaultdict(lambda: [0, 0.0, []])
for r in data:
    name = r[ix["Kernel Name"]]
    t = float(r[ix["gpu__time_duration.sum"]].replace(",", "")) / 1e3
    a = agg[name]; a[0] += 1; a[1] += t
    tc = ix.get("sm__pipe_tensor_op_hmma_cycles_active.avg.pct_of_peak_sustained_active", ix["sm__throughput.avg.pct_of_peak_sustained_elapsed"])
    a[2].append(r[tc])
total = sum(a[1] for a in agg.values())
for name, (n, t, tc) in sorted(agg.items(), key=lambda kv: -kv[1][1]):
    print(f"{name:32} {n:3} launches {t:9.1f} us ({100*t/total:4.1f}%)  tensor pipe (else SM throughput) {tc[0]}%")
print(f"total {total:.1f} us")
for r in [d for d in data if "attention_f16" in d[ix["Kernel Name"]]][:1] + [d for d in data if "linear" in d[ix["Kernel Name"]]][:1]:
    print({k: r[ix[k]] for k in ("Kernel Name", "launch__registers_per_thread", "launch__occupancy_limit_registers", "launch__occupancy_limit_shared_mem", "sm__warps_active.avg.pct_of_peak_sustained_active") if k in ix})
PY
    fi
fi
echo "sam2 bundle: $([ $status = 0 ] && echo ok || echo FAIL)"
exit $status
RUN
chmod +x sam2-bundle/run.sh
echo "sam2-bundle/: $(du -sm sam2-bundle | cut -f1) MiB"
