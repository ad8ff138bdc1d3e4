#!/usr/bin/env bash
# Two builds of `lipsync serve` against each other, alternated in one run: each round serves
# MODEL with build A, then with build B, under the same closed-loop load (CONCURRENCY
# `lipsync loadtest` clients, SECONDS each), and prints each round's frames/s and the ratio B/A of
# the medians. MODEL is a model file (`serve --model`, the v1 API, frame form) or an avatar folder
# (`serve --avatars` of its parent with `--monolithic`, InferBatchComposite requests of BATCH
# frames, 25 unless set, as the Go clients send them).
# Usage: bench/server_ab.sh BIN_A BIN_B MODEL [ROUNDS] [SECONDS] [CONCURRENCY] [serve flags...]
set -euo pipefail
A="$1" B="$2" MODEL="$3"
ROUNDS="${4:-3}" SECONDS_EACH="${5:-10}" CONCURRENCY="${6:-8}"
shift $(($# < 6 ? $# : 6))
if [ -d "$MODEL" ]; then
  AVATAR="$(basename "$MODEL")"
  SERVE=(--avatars "$(dirname "$MODEL")" --monolithic --preload "$AVATAR")
  LOAD=(--api monolithic --model "$AVATAR" --batch "${BATCH:-25}")
else
  SERVE=(--model "$MODEL")
  LOAD=(--form frame)
fi
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT
PY=/usr/bin/python3
# shellcheck source=bench/serve_helpers.sh
. "$(dirname "$(readlink -f "$0")")/serve_helpers.sh"  # free_port
PORT=$(free_port)
echo "== $(nproc) cores, $(date -u +%F), $ROUNDS rounds of ${SECONDS_EACH}s, $CONCURRENCY clients"

round() {  # BIN TAG ROUND
  "$1" serve "${SERVE[@]}" --listen "127.0.0.1:$PORT" --log-level warn "${@:4}" &
  local server=$!
  # Ready once a request is answered.
  for _ in $(seq 600); do
    "$A" loadtest --target "127.0.0.1:$PORT" --requests 1 "${LOAD[@]}" >/dev/null 2>&1 && break
    sleep 0.1
  done
  "$A" loadtest --target "127.0.0.1:$PORT" --concurrency "$CONCURRENCY" --duration "$SECONDS_EACH" \
    "${LOAD[@]}" --json "$OUT/$2_$3.json" >/dev/null
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
