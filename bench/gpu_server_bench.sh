#!/usr/bin/env bash
# The avatar server on a GPU, end to end, driven as the users' clients drive it, in one run:
#   1. frames: monolithic InferBatchComposite answered by a float32 server on the backend measured
#      and by an ONNX Runtime CPU server, compared pixel by pixel (`lipsync compare-servers`);
#   2. the server's own overhead at batch 1 (lipsync.v1 Infer, one closed-loop client: round trip
#      minus the server's engine time);
#   3. monolithic InferBatchComposite at batch 25 as the Go clients send it (one client, as their
#      test does, then four at once), and lipsyncsrv GenerateBatchInference as the JS clients send
#      it: frames per second end to end (request in, JPEG frames out);
#   4. live sessions on 1, 8, 32, ... distinct avatars, each streaming speech in 200 ms chunks at
#      real time: frames/s, p50/p99 latency from the chunk that completes a frame's audio to the
#      frame's arrival, how many sessions kept up, GPU memory and utilisation while they run.
# It prints one table and keeps every JSON and log under results/server/.
#
#   bench/gpu_server_bench.sh run [--seconds 8] [--sessions "1 8 32 64 128"]
#
# Runs in an unpacked GPU pack (bench/gpu_product.sh pack) or in a source checkout with a built
# `lipsync` (then on the CPU: BACKEND=ort PRECISION=fp32 ... run --seconds 3 --sessions "1 2").
# Environment: BACKEND (cuda), PRECISION (fp16), PYTHON (python3), LIPSYNC (the program).
set -euo pipefail

HERE="$(dirname "$(readlink -f "$0")")"

# free_port, wait_ready
# shellcheck source=bench/serve_helpers.sh
. "$HERE/serve_helpers.sh"

# gpu_sampler FILE: GPU utilisation and memory every 250 ms until killed (nothing without a GPU).
gpu_sampler() {
  if command -v nvidia-smi >/dev/null; then
    nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used --format=csv,noheader,nounits \
      -lms 250 >"$1" 2>/dev/null &
    echo $!
  else
    echo 0
  fi
}

gpu_memory_mib() {
  command -v nvidia-smi >/dev/null &&
    nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits | head -1 || echo 0
}

run() {
  local seconds=8 sessions="1 8 32 64 128"
  while [ $# -gt 0 ]; do
    case "$1" in
      --seconds) seconds="$2"; shift 2 ;;
      --sessions) sessions="$2"; shift 2 ;;
      *) echo "error: unknown option $1" >&2; exit 2 ;;
    esac
  done
  local dir
  dir="$(cd "$HERE/.." && pwd)"
  PY="${PYTHON:-python3}"
  local backend="${BACKEND:-cuda}" precision="${PRECISION:-fp16}"
  local bin="${LIPSYNC:-}"
  if [ -z "$bin" ]; then
    if [ -x "$dir/lipsync" ]; then bin="$dir/lipsync"; else bin="$dir/build/tools/lipsync/lipsync"; fi
  fi
  local results="$dir/results/server" models="$dir/models/server"
  rm -rf "$results" "$models"
  mkdir -p "$results" "$models"
  export PYTHONPATH="$dir/python" LIPSYNC_BIN="$bin"
  exec > >(tee "$results/run.log") 2>&1
  echo "== server on $backend/$precision; $(nproc) CPU cores; sessions: $sessions; $seconds s of speech"

  echo "== demo model, audio encoder and avatar (this machine's PyTorch)"
  timeout 600 "$PY" -m lipsync.demo --out-dir "$models" --engine "$bin" --exporter legacy \
    >"$results/demo_model.log" 2>&1 || { tail -20 "$results/demo_model.log"; exit 1; }
  timeout 300 "$PY" -m lipsync.demo_avatar --out-dir "$models/base" --model "$models/demo.onnx" \
    --encoder "$models/demo_audio_encoder.onnx" --engine "$bin" \
    >"$results/demo_avatar.log" 2>&1 || { tail -20 "$results/demo_avatar.log"; exit 1; }
  local base="$models/base/demo_avatar" speech="$models/speech.wav"
  "$PY" -c '
import sys
from lipsync.demo import synthetic_speech, wav_bytes, write_atomic
write_atomic(sys.argv[1], wav_bytes(synthetic_speech(seconds=float(sys.argv[2])), 16000))
' "$speech" "$seconds"
  local frames
  frames="$(find "$base/frames" -maxdepth 1 -type f | wc -l)"
  # Distinct avatars (each loads its own UNet), as hard links of one avatar's files.
  local most=1 n
  for n in $sessions; do [ "$n" -gt "$most" ] && most="$n"; done
  mkdir -p "$models/avatars"
  local names=()
  for n in $(seq 0 $((most - 1))); do
    names+=("$(printf 'a%03d' "$n")")
    cp -al "$base" "$models/avatars/${names[-1]}"
  done
  echo "  $most avatars of $frames frames; speech $speech"

  local status=0
  # serve NAME FLAGS...: a server in the background, its ports in PORT_* variables.
  serve() {
    local name="$1"
    shift
    PORT_GRPC="$(free_port)" PORT_METRICS="$(free_port)" PORT_MONO="$(free_port)"
    PORT_SRV="$(free_port)"
    "$bin" serve --listen "127.0.0.1:$PORT_GRPC" --metrics "127.0.0.1:$PORT_METRICS" \
      --monolithic --monolithic-listen "127.0.0.1:$PORT_MONO" --lipsyncsrv \
      --lipsyncsrv-listen "127.0.0.1:$PORT_SRV" --log-level warn "$@" \
      >"$results/serve_$name.log" 2>&1 &
    SERVER_PID=$!
    local t0=$SECONDS
    if ! wait_ready "$PORT_METRICS" "$SERVER_PID"; then
      echo "  server $name did not start:"; tail -5 "$results/serve_$name.log"; return 1
    fi
    echo "  server $name ready in $((SECONDS - t0)) s"
  }
  stop() { kill -TERM "$SERVER_PID" 2>/dev/null; wait "$SERVER_PID" 2>/dev/null || true; }

  echo "== frames: $backend float32 against ONNX Runtime CPU (monolithic, batch 8)"
  local cpu_pid cpu_mono
  if serve cpu --avatars "$models/avatars" --model "$base/unet.onnx" --backend ort --preload a000; then
    cpu_pid=$SERVER_PID cpu_mono=$PORT_MONO
    if serve f32 --avatars "$models/avatars" --model "$base/unet.onnx" --backend "$backend" \
      --precision fp32 --preload a000; then
      if timeout 300 "$bin" compare-servers --old "127.0.0.1:$cpu_mono" --new "127.0.0.1:$PORT_MONO" \
        --model a000 --batch 8 --requests 2 --tolerance 1 --max-abs-tolerance 12 --json \
        >"$results/frames_monolithic.json" 2>"$results/frames_monolithic.log"; then
        echo "  monolithic frames match"
      else
        echo "  FAILED"; tail -3 "$results/frames_monolithic.log"; status=1
      fi
      stop
    else
      status=1
    fi
    SERVER_PID=$cpu_pid stop
  else
    status=1
  fi

  echo "== the server on $backend/$precision, $most avatars preloaded"
  local before after preload
  before="$(gpu_memory_mib)"
  preload="$(IFS=,; echo "${names[*]}")"
  local t_load=$SECONDS
  if ! serve main --avatars "$models/avatars" --model "$base/unet.onnx" --backend "$backend" \
    --precision "$precision" --preload "$preload" --max-avatars "$((most + 8))" \
    --max-sessions "$((most + 8))"; then
    echo "  FAILED: the server did not start"
    exit 1
  fi
  after="$(gpu_memory_mib)"
  echo "{\"avatars\": $most, \"load_s\": $((SECONDS - t_load)), \"gpu_mib_before\": $before," \
    "\"gpu_mib_after\": $after}" >"$results/memory.json"
  echo "  GPU memory: $before MiB before, $after MiB with $most avatars loaded"

  # load NAME ARGS...: one `lipsync loadtest` into results/NAME.json.
  load() {
    local name="$1"
    shift
    if timeout 300 "$bin" loadtest --json "$results/$name.json" "$@" >"$results/$name.log" 2>&1; then
      echo "  $name: $(grep -E 'frames/s|frame latency' "$results/$name.log" | tr '\n' ' ')"
    else
      echo "  $name: FAILED"; tail -3 "$results/$name.log"; status=1
    fi
  }
  echo "== server overhead at batch 1 (lipsync.v1 Infer, one client)"
  load overhead_b1 --target "127.0.0.1:$PORT_GRPC" --batch 1 --form frame --concurrency 1 \
    --duration 5
  echo "== monolithic InferBatchComposite, batch 25, as the Go clients send it"
  load monolithic_b25_c1 --api monolithic --target "127.0.0.1:$PORT_MONO" --model a000 --batch 25 \
    --avatar-frames "$frames" --concurrency 1 --duration "$seconds"
  load monolithic_b25_c4 --api monolithic --target "127.0.0.1:$PORT_MONO" --model a000 --batch 25 \
    --avatar-frames "$frames" --concurrency 4 --duration "$seconds"
  echo "== lipsyncsrv GenerateBatchInference, as the JS clients send it (base64 PCM override)"
  load lipsyncsrv_b8_c4 --api lipsyncsrv --target "127.0.0.1:$PORT_SRV" --model a000 --batch 8 \
    --avatar-frames "$frames" --concurrency 4 --duration "$seconds"

  echo "== live sessions, each on its own avatar, 200 ms chunks at real time"
  for n in $sessions; do
    local sampler
    sampler="$(gpu_sampler "$results/gpu_sessions_$n.csv")"
    load "sessions_$n" --api sessions --target "127.0.0.1:$PORT_GRPC" \
      --models "$(IFS=,; echo "${names[*]:0:$n}")" --audio "$speech" \
      --encoder "$base/audio_encoder.onnx" --chunk-ms 200 --keep-up-ms 1000
    [ "$sampler" != 0 ] && kill "$sampler" 2>/dev/null || true
  done
  "$PY" -c "import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:$PORT_METRICS/metrics').read().decode())" \
    >"$results/metrics.txt" 2>/dev/null || true
  stop

  echo
  "$PY" "$dir/bench/gpu_server_table.py" "$results" | tee "$results/table.txt" || status=1
  echo "server run took $SECONDS s; results in $results"
  return $status
}

case "${1:-}" in
  run) shift; run "$@" ;;
  *) sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
