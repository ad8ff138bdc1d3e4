#!/usr/bin/env bash
# Server benchmarks for docs/PERFORMANCE.md, on the demo model, in one run:
#   1. overhead at batch 1: `lipsync bench` (the engine alone) against `lipsync serve` + one
#      closed-loop `lipsync loadtest` client (frame form), same threads; alternated ROUNDS times;
#   2. dynamic batching: the engine's best fixed batch (bench --batch 1,2,4,8) against 8
#      concurrent clients through the server's batcher, with the default --preferred-batch auto
#      and with --preferred-batch 8.
# Usage: bench/server_overhead.sh [THREADS] [ROUNDS]. Results go to out/perf/server_*.json.
set -euo pipefail
cd "$(dirname "$0")/.."
THREADS="${1:-2}"
ROUNDS="${2:-3}"
BIN=build/tools/lipsync/lipsync
MODEL=models/demo.onnx
OUT=out/perf
make build "$MODEL" >/dev/null
[[ -f build/tests/data/tiny.onnx ]] ||
  /usr/bin/python3 tests/data/make_test_models.py --out-dir build/tests/data >/dev/null
mkdir -p "$OUT"
PORT=$(/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
echo "== machine: $(nproc) cores, $(date -u +%F), threads $THREADS"

serve() {  # MODEL serve-flags...
  local model="$1"
  shift
  "$BIN" serve --model "$model" --listen "127.0.0.1:$PORT" --threads "$THREADS" --log-level warn "$@" &
  SERVER=$!
}
stop() { kill -INT "$SERVER"; wait "$SERVER"; }

# overhead MODEL ITERATIONS TAG: the engine alone against one closed-loop client through the
# server, alternated ROUNDS times.
overhead() {
  local model="$1" n="$2" tag="$3"
  serve "$model" --max-batch 1 --max-queue-delay-us 0
  for r in $(seq "$ROUNDS"); do
    "$BIN" bench --model "$model" --threads "$THREADS" --batch 1 --iterations "$n" --warmup 5 \
      --json "$OUT/server_engine_${tag}_$r.json" >/dev/null 2>&1
    "$BIN" loadtest --target "127.0.0.1:$PORT" --concurrency 1 --requests "$n" --duration 600 \
      --form frame --json "$OUT/server_loadtest_${tag}_$r.json" >/dev/null
  done
  stop
  /usr/bin/python3 - "$OUT" "$ROUNDS" "$tag" <<'PY'
import json, sys, numpy as np
out, rounds, tag = sys.argv[1], int(sys.argv[2]), sys.argv[3]
eng = [json.load(open(f"{out}/server_engine_{tag}_{r}.json"))["results"][0] for r in range(1, rounds + 1)]
srv = [json.load(open(f"{out}/server_loadtest_{tag}_{r}.json")) for r in range(1, rounds + 1)]
e = np.median([x["latency_ms"]["median"] for x in eng])
s = np.median([x["latency_ms"]["median"] for x in srv])
e99 = np.median([x["latency_ms"]["p99"] for x in eng])
s99 = np.median([x["latency_ms"]["p99"] for x in srv])
b = np.median([x["beyond_engine_ms"]["median"] for x in srv])
b90 = np.median([x["beyond_engine_ms"]["p90"] for x in srv])
print(f"[{tag}] engine alone      median {e:8.2f} ms  p99 {e99:8.2f} ms")
print(f"[{tag}] through server    median {s:8.2f} ms  p99 {s99:8.2f} ms")
print(f"[{tag}] difference of medians     {s - e:+8.2f} ms per request")
print(f"[{tag}] round trip minus the server's engine time, per request: median {b:.3f} ms, p90 {b90:.3f} ms")
json.dump({"engine_median_ms": e, "server_median_ms": s, "difference_ms": s - e,
           "engine_p99_ms": e99, "server_p99_ms": s99, "beyond_engine_median_ms": b,
           "beyond_engine_p90_ms": b90}, open(f"{out}/server_overhead_{tag}.json", "w"))
PY
}

echo "== 1. overhead at batch 1 (engine alone vs through the server, frame form)"
overhead "$MODEL" 20 demo
# The same on the test suite's tiny model (same input and output shapes, so the same bytes on the
# wire and the same pre- and post-processing, but a 1x1 convolution instead of the UNet): the
# engine's share is small enough that the server's own cost is not lost in the model's noise.
overhead build/tests/data/tiny.onnx 300 tiny

echo "== 2. dynamic batching with 8 clients vs the engine's best fixed batch"
# Throughput on both sides is frames over wall time (bench's throughput_fps, loadtest's
# frames_per_s), so the engine's slow iterations count as the server's do.
"$BIN" bench --model "$MODEL" --threads "$THREADS" --batch 1,2,4,8 --duration 10 --warmup 2 \
  --json "$OUT/server_fixed.json" >/dev/null 2>&1
# The default (--max-batch 8, --preferred-batch auto: the size the server measures as the
# engine's most efficient) and --preferred-batch 8 (always group up to 8 frames).
for pb in auto 8; do
  serve "$MODEL" --max-batch 8 --preferred-batch "$pb" --max-queue-delay-us 2000
  "$BIN" loadtest --target "127.0.0.1:$PORT" --concurrency 8 --duration 30 --form frame \
    --json "$OUT/server_batching_$pb.json" >/dev/null
  stop
done
/usr/bin/python3 - "$OUT" <<'PY'
import json, sys
out = sys.argv[1]
fixed = json.load(open(f"{out}/server_fixed.json"))["results"]
best = max(fixed, key=lambda r: r["throughput_fps"])
print("engine fixed batch:", ", ".join(f"b{r['batch']} {r['throughput_fps']:.2f}" for r in fixed),
      "frames/s")
summary = {"engine": {str(r["batch"]): r["throughput_fps"] for r in fixed},
           "best_batch": best["batch"], "best_fps": best["throughput_fps"]}
for pb in ("auto", "8"):
    srv = json.load(open(f"{out}/server_batching_{pb}.json"))
    pct = 100 * srv["frames_per_s"] / best["throughput_fps"]
    print(f"server --preferred-batch {pb}, 8 clients: {srv['frames_per_s']:.2f} frames/s = "
          f"{pct:.1f}% of the best fixed batch ({best['batch']}: {best['throughput_fps']:.2f})")
    summary[f"server_preferred_batch_{pb}"] = {"fps": srv["frames_per_s"], "percent_of_best": pct}
json.dump(summary, open(f"{out}/server_batching.json", "w"), indent=2)
PY
