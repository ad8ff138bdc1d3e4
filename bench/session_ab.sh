#!/usr/bin/env bash
# Live-session latency of two builds of `lipsync serve`, alternated in one run. Each round serves
# AVATAR (a folder; its parent is `--avatars`, the avatar preloaded) with build A, then with build
# B, and holds SESSIONS live sessions one after another, each streaming SPEECH in 200 ms chunks at
# real time, with a pause of PAUSE seconds (3 unless set) before each, in which the server is
# idle (and gives its cached memory back, as a quiet server does); AT_ONCE (1 unless set) sessions
# run together each time. It prints, per build, the medians over the sessions of p50, p99 and max
# frame latency and of the first frame's latency (`lipsync loadtest --api sessions`: from the chunk
# that completes a frame's audio to the frame; the client is build B's, or CLIENT's when set), and
# the server's CPU time per frame over the sessions of each round (user + system, from /proc).
# FLAGS_A and FLAGS_B, when set, are serve flags for one build only (e.g. the same binary twice,
# FLAGS_B="--avatar-frames encoded").
# Usage: bench/session_ab.sh BIN_A BIN_B AVATAR SPEECH [ROUNDS] [SESSIONS] [serve flags...]
set -euo pipefail
A="$1" B="$2" AVATAR="$3" SPEECH="$4"
ROUNDS="${5:-3}" SESSIONS="${6:-4}" PAUSE="${PAUSE:-3}" CLIENT="${CLIENT:-$B}" AT_ONCE="${AT_ONCE:-1}"
shift $(($# < 6 ? $# : 6))
NAME="$(basename "$AVATAR")"
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT
PY=/usr/bin/python3
# shellcheck source=bench/serve_helpers.sh
. "$(dirname "$(readlink -f "$0")")/serve_helpers.sh"  # free_port, wait_ready
PORT=$(free_port) METRICS=$(free_port)
echo "== $(nproc) cores, $(date -u +%F), $ROUNDS rounds of $SESSIONS times $AT_ONCE sessions," \
  "${PAUSE}s apart"

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }  # user + system, in clock ticks

round() {  # BIN TAG ROUND
  "$1" serve --avatars "$(dirname "$AVATAR")" --preload "$NAME" --listen "127.0.0.1:$PORT" \
    --metrics "127.0.0.1:$METRICS" --log-level warn "${@:4}" &
  local server=$!
  if ! wait_ready "$METRICS" "$server"; then
    echo "the server ($1) did not start" >&2
    exit 1
  fi
  local ticks=0 before
  for s in $(seq "$SESSIONS"); do
    sleep "$PAUSE"
    before=$(cpu_ticks "$server")
    "$CLIENT" loadtest --api sessions --target "127.0.0.1:$PORT" --models "$NAME" --audio "$SPEECH" \
      --sessions-per-model "$AT_ONCE" --encoder "$AVATAR/audio_encoder.onnx" \
      --json "$OUT/$2_$3_$s.json" >/dev/null || true
    ticks=$((ticks + $(cpu_ticks "$server") - before))
  done
  echo "$ticks $(getconf CLK_TCK)" >"$OUT/cpu_$2_$3"
  kill -INT "$server"
  wait "$server" || true
}

read -ra FLAGS_A <<<"${FLAGS_A:-}"
read -ra FLAGS_B <<<"${FLAGS_B:-}"
for r in $(seq "$ROUNDS"); do
  round "$A" a "$r" "${FLAGS_A[@]}" "$@"
  round "$B" b "$r" "${FLAGS_B[@]}" "$@"
done
"$PY" - "$OUT" <<'PY'
import glob, json, os, statistics, sys
out = sys.argv[1]
for tag in "ab":
    runs = [json.load(open(f)) for f in sorted(glob.glob(f"{out}/{tag}_*.json"))]
    kept = sum(r["kept_up"] for r in runs)
    def med(key, field):
        return statistics.median(r[key][field] for r in runs)
    cpu = []  # per round: server CPU ms per frame
    for f in sorted(glob.glob(f"{out}/cpu_{tag}_*")):
        ticks, hz = map(int, open(f).read().split())
        r = os.path.basename(f).split("_")[2]
        frames = sum(json.load(open(j))["frames"] for j in glob.glob(f"{out}/{tag}_{r}_*.json"))
        cpu.append(1000.0 * ticks / hz / max(frames, 1))
    sessions = sum(r["sessions"] for r in runs)
    print(f"{tag}: {sessions} sessions in {len(runs)} runs, {kept} kept up; "
          "frame latency ms, medians over runs: "
          f"p50 {med('latency_ms', 'median'):.1f} p99 {med('latency_ms', 'p99'):.1f} "
          f"max {med('latency_ms', 'max'):.1f}; first frame {med('first_frame_latency_ms', 'median'):.1f}; "
          "server CPU ms per frame per round " + " ".join(f"{c:.2f}" for c in cpu))
PY
