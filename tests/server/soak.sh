#!/usr/bin/env bash
# Soak: steady load on `lipsync serve` for SOAK_SECONDS (default 30; 600 for the full soak); the
# server's resident memory at the end must be within 5% of what it was after warm-up.
# Usage: soak.sh LIPSYNC_BIN MODEL
set -euo pipefail
BIN="$1"
MODEL="$2"
SECONDS_TOTAL="${SOAK_SECONDS:-30}"
PORT=$(/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')

"$BIN" serve --model "$MODEL" --listen "127.0.0.1:$PORT" --threads 1 --max-batch 4 \
  --max-queue-delay-us 1000 --log-level warn &
SERVER=$!
trap 'kill -INT $SERVER 2>/dev/null || true' EXIT
rss_kb() { awk '/VmRSS/ {print $2}' "/proc/$SERVER/status"; }

# Warm-up: the same mix as the soak, so that allocator pools reach their steady size.
"$BIN" loadtest --target "127.0.0.1:$PORT" --concurrency 4 --duration 5 --form frame >/dev/null
"$BIN" loadtest --target "127.0.0.1:$PORT" --streams 2 --duration 3 --form tensor >/dev/null
WARM=$(rss_kb)
echo "RSS after warm-up: ${WARM} KiB; soaking for ${SECONDS_TOTAL} s"

HALF=$((SECONDS_TOTAL / 2))
"$BIN" loadtest --target "127.0.0.1:$PORT" --concurrency 4 --duration "$HALF" --form frame &
"$BIN" loadtest --target "127.0.0.1:$PORT" --streams 2 --duration "$HALF" --form tensor >/dev/null
wait %2 2>/dev/null || true
"$BIN" loadtest --target "127.0.0.1:$PORT" --rate 50 --duration "$HALF" --form frame \
  --api lipsync | tail -3
"$BIN" loadtest --target "127.0.0.1:$PORT" --concurrency 2 --duration 2 --api kserve \
  --form tensor >/dev/null
END=$(rss_kb)
GROWTH=$(/usr/bin/python3 -c "print(round(100.0 * ($END - $WARM) / $WARM, 2))")
echo "RSS at the end: ${END} KiB (growth ${GROWTH}%)"

kill -INT $SERVER
wait $SERVER
trap - EXIT
/usr/bin/python3 -c "import sys; sys.exit(0 if $END <= $WARM * 1.05 else 1)" || {
  echo "FAIL: resident memory grew by ${GROWTH}% (limit 5%)"
  exit 1
}
echo "PASS: resident memory within 5% of warm-up"
