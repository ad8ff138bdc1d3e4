#!/usr/bin/env bash
# The CPU measurements behind docs/PERFORMANCE.md, on the demo model, all in one run:
#   1. PyTorch eager vs the C++ engine at batch 1, same weights and thread count (lipsync compare)
#   2. Engine::Run vs a bare ONNX Runtime Run (bench/engine_overhead.cc)
#   3. the engine across batch sizes (lipsync bench)
# Usage: bench/run_cpu.sh [THREADS] (default 2). Results go to out/perf/*.json.
set -euo pipefail
cd "$(dirname "$0")/.."
THREADS="${1:-2}"
BIN=build/tools/lipsync/lipsync
OUT=out/perf
make build models/demo.onnx >/dev/null
mkdir -p "$OUT"
echo "== machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(date -u +%F)"

echo "== 1. PyTorch eager vs lipsync (ONNX Runtime CPU), batch 1, $THREADS threads"
"$BIN" compare --checkpoint models/demo.pth --onnx models/demo.onnx --mode ave --batch 1 \
  --threads "$THREADS" --iterations 20 --warmup 3 --json "$OUT/compare.json"

echo "== 2. Engine::Run vs bare OrtSession::Run, batch 1, $THREADS threads"
build/bench/engine_overhead_bench --model models/demo.onnx --threads "$THREADS" \
  --iterations 100 --warmup 5 --json "$OUT/overhead.json"

echo "== 3. lipsync bench across batch sizes, $THREADS threads"
"$BIN" bench --model models/demo.onnx --batch 1,2,4,8 --threads "$THREADS" --duration 15 \
  --warmup 3 --json "$OUT/bench_cpu.json"
