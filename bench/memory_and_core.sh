#!/usr/bin/env bash
# The avatar server's resident memory, and the inference core against the commit before it, in one
# run (docs/PERFORMANCE.md, "Server memory, and the inference core against the commit before it"):
#   1. `lipsync serve --avatars` with 8 copies of the demo avatar preloaded: resident memory idle,
#      the peak during a batch-32 InferBatchComposite on each in turn, and at rest afterwards
#      (bench/server_memory.py)
#   2. render and one live session, frames/s (bench/session_bench.cc), of this tree and of the
#      commit before the inference core (8e24ef8^1, built in a worktree under /tmp, CUDA and tests
#      off), run alternately RUNS times each (each run renders once and runs one session before it
#      measures: the warm-up is left out); medians and their ratio (this tree / before)
# Usage: bench/memory_and_core.sh [RUNS] (default 3). Results go to out/perf/.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS="${1:-3}"
OUT=out/perf
BEFORE=/tmp/lipsync-before
LAUNCHER=()
if command -v ccache >/dev/null; then
  LAUNCHER=(-DCMAKE_C_COMPILER_LAUNCHER=ccache -DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
fi
make build models/demo.onnx models/demo_avatar/avatar.json >/dev/null
cmake --build build --target session_bench >/dev/null
if [ ! -d "$BEFORE" ]; then
  git worktree add --detach "$BEFORE" "$(git rev-parse '8e24ef8^1')" >/dev/null
fi
ln -sfn "$(readlink -f .deps)" "$BEFORE/.deps"  # the same ONNX Runtime
(
  cd "$BEFORE"
  export CCACHE_BASEDIR="$BEFORE"
  cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release -DLIPSYNC_ENABLE_CUDA=OFF \
    -DLIPSYNC_BUILD_TESTS=OFF "${LAUNCHER[@]}" >/dev/null
  cmake --build build --target session_bench >/dev/null
)
mkdir -p "$OUT"
echo "== machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)," \
  "$(free -g | awk '/Mem:/ {print $2}') GiB, load $(cut -d' ' -f1-3 /proc/loadavg), $(date -u '+%F %H:%M') UTC"

echo "== 1. server memory: 8 demo avatars, batch 32 on each in turn"
/usr/bin/python3 bench/server_memory.py --bin build/tools/lipsync/lipsync \
  --avatar models/demo_avatar --count 8 --batch 32 --json "$OUT/server_memory.json"

echo "== 2. render and one live session, frames/s: 8e24ef8^1 and this tree, alternately"
for i in $(seq 1 "$RUNS"); do
  for side in before this; do
    bin=build/bench/session_bench
    [ "$side" = before ] && bin="$BEFORE/build/bench/session_bench"
    "$bin" --avatars models --avatar demo_avatar --audio models/demo_speech.wav --rounds 1 \
      --threads 2 --batch 4 --sessions 1 --json "$OUT/core_${side}_$i.json" >/dev/null
  done
done
/usr/bin/python3 - "$OUT" "$RUNS" <<'EOF'
import json, statistics, sys
out, runs = sys.argv[1], int(sys.argv[2])
fps = {"before": {}, "this": {}}
for side in fps:
    for i in range(1, runs + 1):
        for path, values in json.load(open(f"{out}/core_{side}_{i}.json"))["fps"].items():
            fps[side].setdefault(path, []).extend(values)
print(f"{'path':<14} {'8e24ef8^1':>10} {'this tree':>10} {'ratio':>7}   ({runs} runs each)")
summary = {}
for path in sorted(fps["this"]):
    b, t = statistics.median(fps["before"][path]), statistics.median(fps["this"][path])
    summary[path] = {"before": fps["before"][path], "this": fps["this"][path], "ratio": t / b}
    print(f"{path:<14} {b:>10.2f} {t:>10.2f} {t / b:>7.3f}")
json.dump(summary, open(f"{out}/core_before_after.json", "w"), indent=2)
EOF
