#!/usr/bin/env bash
# Server benchmarks for docs/PERFORMANCE.md, on the demo model, in one run:
#   1. overhead at batch 1: `lipsync bench` (the engine alone) against `lipsync serve` + one
#      closed-loop `lipsync loadtest` client (frame form), same threads; alternated ROUNDS times;
#   2. dynamic batching: the engine's best fixed batch (bench --batch 1,2,4,8) against 8
#      concurrent clients through the server's batcher.
# Usage: bench/server_overhead.sh [THREADS] [ROUNDS]. Results go to out/perf/server_*.json.
set -euo pipefail
cd "$(dirname "$0")/.."
THREADS="${1:-2}"
ROUNDS="${2:-3}"
BIN=build/tools/lipsync/lipsync
MODEL=models/demo.onnx
OUT=out/perf
make build "$MODEL" >/dev/null
mkdir -p "$OUT"
PORT=$(/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
echo "== machine: $(nproc) cores, $(date -u +%F), threads $THREADS"

serve() {  # max_batch delay_us
  "$BIN" serve --model "$MODEL" --listen "127.0.0.1:$PORT" --threads "$THREADS" \
    --max-batch "$1" --max-queue-delay-us "$2" --log-level warn &
  SERVER=$!
}
stop() { kill -INT "$SERVER"; wait "$SERVER"; }

echo "== 1. overhead at batch 1 (engine alone vs through the server, frame form)"
serve 1 0
for r in $(seq "$ROUNDS"); do
  "$BIN" bench --model "$MODEL" --threads "$THREADS" --batch 1 --iterations 20 --warmup 3 \
    --json "$OUT/server_engine_$r.json" >/dev/null 2>&1
  "$BIN" loadtest --target "127.0.0.1:$PORT" --concurrency 1 --requests 20 --duration 600 \
    --form frame --json "$OUT/server_loadtest_$r.json" >/dev/null
done
stop
/usr/bin/python3 - "$OUT" "$ROUNDS" <<'PY'
import json, sys, numpy as np
out, rounds = sys.argv[1], int(sys.argv[2])
eng = [json.load(open(f"{out}/server_engine_{r}.json"))["results"][0] for r in range(1, rounds + 1)]
srv = [json.load(open(f"{out}/server_loadtest_{r}.json")) for r in range(1, rounds + 1)]
e = np.median([x["latency_ms"]["median"] for x in eng])
s = np.median([x["latency_ms"]["median"] for x in srv])
e99 = np.median([x["latency_ms"]["p99"] for x in eng])
s99 = np.median([x["latency_ms"]["p99"] for x in srv])
print(f"engine alone      median {e:8.2f} ms  p99 {e99:8.2f} ms")
print(f"through server    median {s:8.2f} ms  p99 {s99:8.2f} ms")
print(f"server overhead   median {s - e:+8.2f} ms per request")
json.dump({"engine_median_ms": e, "server_median_ms": s, "overhead_ms": s - e,
           "engine_p99_ms": e99, "server_p99_ms": s99}, open(f"{out}/server_overhead.json", "w"))
PY

echo "== 2. dynamic batching with 8 clients vs the engine's best fixed batch"
"$BIN" bench --model "$MODEL" --threads "$THREADS" --batch 1,2,4,8 --duration 10 --warmup 2 \
  --json "$OUT/server_fixed.json" >/dev/null 2>&1
serve 8 2000
"$BIN" loadtest --target "127.0.0.1:$PORT" --concurrency 8 --duration 30 --form frame \
  --json "$OUT/server_batching.json"
stop
/usr/bin/python3 - "$OUT" <<'PY'
import json, sys
out = sys.argv[1]
fixed = json.load(open(f"{out}/server_fixed.json"))["results"]
best = max(fixed, key=lambda r: r["fps"])
srv = json.load(open(f"{out}/server_batching.json"))
print("engine fixed batch:", ", ".join(f"b{r['batch']} {r['fps']:.2f} fps" for r in fixed))
print(f"best fixed batch {best['batch']}: {best['fps']:.2f} frames/s; server with 8 clients: "
      f"{srv['frames_per_s']:.2f} frames/s ({100 * srv['frames_per_s'] / best['fps']:.1f}%)")
PY
