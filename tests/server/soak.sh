#!/usr/bin/env bash
# Soak: steady load on `lipsync serve` for SOAK_SECONDS (default 30; 600 for the full soak); the
# server's resident memory at the end must be within SOAK_LIMIT_PCT (default 5%) of what it was
# after warm-up.
# Usage: soak.sh LIPSYNC_BIN MODEL
set -euo pipefail
BIN="$1"
MODEL="$2"
SECONDS_TOTAL="${SOAK_SECONDS:-30}"
free_port() {
  /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
PORT=$(free_port)
METRICS_PORT=$(free_port)

"$BIN" serve --model "$MODEL" --listen "127.0.0.1:$PORT" --metrics "127.0.0.1:$METRICS_PORT" \
  --threads 1 --max-batch 4 --max-queue-delay-us 1000 --log-level warn &
SERVER=$!
trap 'kill -INT $SERVER 2>/dev/null || true' EXIT
rss_kb() { awk '/VmRSS/ {print $2}' "/proc/$SERVER/status"; }

# The same closed-loop mix (unary frames, streams of tensors, KServe) for the warm-up and the soak:
# closed-loop clients send as fast as the server answers, so the load is steady on any machine.
load() {  # seconds
  "$BIN" loadtest --target "127.0.0.1:$PORT" --concurrency 3 --duration "$1" --form frame \
    >/dev/null &
  local frames=$!
  "$BIN" loadtest --target "127.0.0.1:$PORT" --streams 2 --window 2 --duration "$1" \
    --form tensor >/dev/null &
  local streams=$!
  "$BIN" loadtest --target "127.0.0.1:$PORT" --concurrency 1 --duration "$1" --api kserve \
    --form tensor | sed -n 2,3p
  wait "$frames" "$streams"
}
# 1 once the server is idle and has given its cached memory back (lipsync_memory_idle_trimmed).
idle_trimmed() {
  /usr/bin/python3 - "$METRICS_PORT" <<'PY'
import sys, urllib.request
text = urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/metrics", timeout=30).read().decode()
print(next(int(float(l.split()[1])) for l in text.splitlines()
           if l.startswith("lipsync_memory_idle_trimmed ")))
PY
}
# RSS is compared at rest, after each phase's clients are done: buffers of frames in flight do not
# count, memory the server kept does. Once idle for a second the server gives back its pool's
# cached blocks and trims its heap; RSS is read after that (waited for on the server's gauge,
# however slow the machine), the median of three samples half a second apart.
idle_rss() {
  local waited=0
  while [ "$(idle_trimmed)" != 1 ]; do
    sleep 0.2
    waited=$((waited + 1))
    if [ "$waited" -gt 600 ]; then
      echo "FAIL: the server did not trim its memory within 120 s of going idle" >&2
      exit 1
    fi
  done
  for _ in 1 2 3; do rss_kb; sleep 0.5; done | sort -n | sed -n 2p
}
load 15
WARM=$(idle_rss)
load "$SECONDS_TOTAL"
END=$(idle_rss)
GROWTH=$(/usr/bin/python3 -c "print(round(100.0 * ($END - $WARM) / $WARM, 2))")
echo "RSS after warm-up: ${WARM} KiB, at the end of ${SECONDS_TOTAL} s: ${END} KiB (growth ${GROWTH}%)"

kill -INT $SERVER
wait $SERVER
trap - EXIT
LIMIT="${SOAK_LIMIT_PCT:-5}"
/usr/bin/python3 -c "import sys; sys.exit(0 if $END <= $WARM * (1 + $LIMIT / 100) else 1)" || {
  echo "FAIL: resident memory grew by ${GROWTH}% (limit ${LIMIT}%)"
  exit 1
}
echo "PASS: resident memory within ${LIMIT}% of warm-up"
