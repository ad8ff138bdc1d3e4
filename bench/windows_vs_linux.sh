#!/usr/bin/env bash
# lipsync bench on the demo model: the native Linux binary and lipsync.exe under Wine, on the same
# machine in one run, alternating (Linux, Wine, Linux, Wine) so that load from elsewhere falls on
# both; prints each run's frames/s and the ratio of the medians. CPU provider, batch 1.
#   bench/windows_vs_linux.sh [MODEL] [SECONDS] [THREADS]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
MODEL="${1:-$ROOT/models/demo.onnx}"
SECONDS_EACH="${2:-15}"
THREADS="${3:-2}"
LINUX="${LIPSYNC_BIN:-$ROOT/build/tools/lipsync/lipsync}"
WINDOWS="${LIPSYNC_EXE:-$ROOT/build-windows/bin/lipsync.exe}"
OUT="$ROOT/out/windows_vs_linux"
mkdir -p "$OUT"
args=(bench --model "$MODEL" --batch 1 --threads "$THREADS" --duration "$SECONDS_EACH" --warmup 3)
for round in 1 2; do
  "$LINUX" "${args[@]}" --json "$OUT/linux_$round.json" >/dev/null 2>&1
  "$ROOT/scripts/wine-run.sh" "$WINDOWS" "${args[@]}" --json "Z:$OUT/wine_$round.json" >/dev/null 2>&1
done
python3 - "$OUT" <<'PY'
import json, statistics, sys
out = sys.argv[1]
fps = {k: [json.load(open(f"{out}/{k}_{r}.json"))["results"][0]["fps"] for r in (1, 2)]
       for k in ("linux", "wine")}
for k, v in fps.items():
    print(f"{k:6s} frames/s: " + ", ".join(f"{x:.2f}" for x in v))
ratio = statistics.median(fps["wine"]) / statistics.median(fps["linux"])
print(f"lipsync.exe under Wine / native Linux: {ratio:.2f}")
PY
