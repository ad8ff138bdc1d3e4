#!/usr/bin/env bash
# Two builds of `lipsync serve --model` against each other, alternated in one run: each round
# serves MODEL with build A, then with build B, under the same closed-loop load (CONCURRENCY
# `lipsync loadtest` clients, frame form, the v1 API, SECONDS each), and prints each round's
# frames/s and the ratio B/A of the medians.
# Usage: bench/server_ab.sh BIN_A BIN_B MODEL [ROUNDS] [SECONDS] [CONCURRENCY] [serve flags...]
set -euo pipefail
A="$1" B="$2" MODEL="$3"
ROUNDS="${4:-3}" SECONDS_EACH="${5:-10}" CONCURRENCY="${6:-8}"
shift $(($# < 6 ? $# : 6))
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT
PORT=$(/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
echo "== $(nproc) cores, $(date -u +%F), $ROUNDS rounds of ${SECONDS_EACH}s, $CONCURRENCY clients"

round() {  # BIN TAG ROUND
  "$1" serve --model "$MODEL" --listen "127.0.0.1:$PORT" --log-level warn "${@:4}" &
  local server=$!
  # Ready once a request is answered.
  for _ in $(seq 600); do
    "$A" loadtest --target "127.0.0.1:$PORT" --requests 1 --form frame >/dev/null 2>&1 && break
    sleep 0.1
  done
  "$A" loadtest --target "127.0.0.1:$PORT" --concurrency "$CONCURRENCY" --duration "$SECONDS_EACH" \
    --form frame --json "$OUT/$2_$3.json" >/dev/null
  kill -INT "$server"
  wait "$server" || true
}

for r in $(seq "$ROUNDS"); do
  round "$A" a "$r" "$@"
  round "$B" b "$r" "$@"
done
/usr/bin/python3 - "$OUT" "$ROUNDS" <<'PY'
import json, statistics, sys
out, rounds = sys.argv[1], int(sys.argv[2])
fps = {t: [json.load(open(f"{out}/{t}_{r}.json"))["frames_per_s"] for r in range(1, rounds + 1)]
       for t in "ab"}
for t in "ab":
    print(f"{t}: frames/s per round " + " ".join(f"{x:.1f}" for x in fps[t]) +
          f"; median {statistics.median(fps[t]):.1f}")
print(f"ratio b/a of the medians: {statistics.median(fps['b']) / statistics.median(fps['a']):.3f}")
PY
