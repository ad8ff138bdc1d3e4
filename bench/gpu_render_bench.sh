#!/usr/bin/env bash
# `lipsync render` end to end on a GPU (speech -> audio features -> UNet -> paste -> H.264 MP4) at
# batch 1, 8 and 25, beside the avatar's UNet alone (`lipsync bench`) at the same batches, printed
# as one table: render frames/s, each stage's busy time per frame, the stage that limits render
# (the most busy time per frame) and the UNet-only frames/s. At the largest batch four more
# renders show what render's GPU defaults bring: faces as float tensors built on the CPU instead
# of uint8 frames converted on the GPU (--face-input tensors), one model run instead of two
# overlapping ones (--model-runs 1), and every avatar frame decoded as the walk reaches it (no
# frame kept, as for an avatar longer than the frame cache), on the decode threads and by the
# frames stage alone (--frame-cache-mb 0, --frame-threads 0). First, a check: 3 s rendered to PNG frames in float32 by the
# backend measured and by ONNX Runtime on the CPU must match (`lipsync frames-diff`: at most 2
# apart, 99.9% of values within 1).
#
# The GPU machine needs only the NVIDIA driver and a python3 with PyTorch, numpy and onnx; nothing
# is built there. The pack is the whole product's (bench/gpu_product.sh pack: the full `lipsync`
# CLI built with CUDA on a Debian machine with nvcc, and the real shared libraries it needs), and
# this script is in it. The pack holds no model: `run` makes the demo model, audio encoder and
# avatar with the GPU machine's PyTorch, checked by the packed lipsync.
#
#   bench/gpu_render_bench.sh pack [PACK.tar.xz]   # the same as bench/gpu_product.sh pack
#   # copy PACK.tar.xz to the GPU machine, unpack it, then there:
#   ./gpu_render_bench.sh run [--seconds 60] [--iterations 30] [--frame-size 480x352]
#
# Environment: BACKEND (cuda), PRECISION (fp16), BATCHES ("1 8 25"), PYTHON (python3). Results go
# to results/<frame size>/ (a run at another --frame-size keeps the others).
set -euo pipefail

HERE="$(dirname "$(readlink -f "$0")")"
# What every Linux with an NVIDIA driver has; everything else must come from the pack.
SYSTEM_LIBS='^(linux-vdso|ld-linux[^ ]*|libc|libm|libstdc\+\+|libgcc_s|libpthread|libdl|librt|libcuda)\.so'

# Libraries the program resolves outside DIR other than SYSTEM_LIBS, and ones not found at all.
missing_libs() {
  local dir="$1" program="$2"
  LD_LIBRARY_PATH="$dir" ldd "$program" | awk '{name = $1; sub(".*/", "", name); print name, $3}' |
    grep -Ev "$SYSTEM_LIBS" | grep -v " $dir/" || true
}

pack() {
  exec "$HERE/gpu_product.sh" pack "$@"
}

run() {
  local seconds=60 iterations=30 frame_size=480x352
  while [ $# -gt 0 ]; do
    case "$1" in
      --seconds) seconds="$2"; shift 2 ;;
      --frame-size) frame_size="$2"; shift 2 ;;
      --iterations) iterations="$2"; shift 2 ;;
      *) echo "error: unknown option $1" >&2; exit 2 ;;
    esac
  done
  local dir
  dir="$(cd "$HERE/.." && pwd)"
  if [ ! -f "$dir/BUILD_INFO" ]; then
    echo "error: run works in an unpacked pack: run 'bench/gpu_render_bench.sh pack' on a Debian" \
      "build machine and unpack its output here" >&2
    exit 2
  fi
  local py="${PYTHON:-python3}" backend="${BACKEND:-cuda}" precision="${PRECISION:-fp16}"
  if ! [[ "$frame_size" =~ ^([0-9]+)x([0-9]+)$ ]]; then
    echo "error: --frame-size takes WIDTHxHEIGHT, e.g. 1280x720" >&2
    exit 2
  fi
  local width="${BASH_REMATCH[1]}" height="${BASH_REMATCH[2]}"
  local batches="${BATCHES:-1 8 25}" bin="$dir/lipsync" models="$dir/models"
  local results="$dir/results/$frame_size"
  export PYTHONPATH="$dir/python" LIPSYNC_BIN="$bin"
  rm -rf "$results"
  mkdir -p "$results" "$models"
  exec > >(tee "$results/run.log") 2>&1
  cat "$dir/BUILD_INFO"
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 || true
  echo "$(nproc) CPU cores; backend $backend, precision $precision, batches $batches"
  "$py" -c 'import torch; print("PyTorch", torch.__version__, "CUDA", torch.version.cuda)'

  echo "== libraries the program misses here (must be none)"
  local missing
  missing="$(missing_libs "$dir/lib" "$dir/bin/lipsync")"
  if [ -n "$missing" ]; then
    echo "$missing"
    exit 1
  fi
  echo "  none"

  echo "== demo model, audio encoder and avatar (this machine's PyTorch, checked by lipsync)"
  # The TorchScript-based exporter: the dynamo one (PyTorch 2.9+'s default) needs onnxscript.
  timeout 600 "$py" -m lipsync.demo --out-dir "$models" --engine "$bin" --exporter legacy \
    >"$results/demo_model.log" 2>&1 || { tail -20 "$results/demo_model.log"; exit 1; }
  # One avatar folder per frame size, so that runs at several sizes keep theirs.
  local avatar_dir="$models/avatar_$frame_size"
  timeout 300 "$py" -m lipsync.demo_avatar --out-dir "$avatar_dir" --model "$models/demo.onnx" \
    --encoder "$models/demo_audio_encoder.onnx" --engine "$bin" --width "$width" \
    --height "$height" >"$results/demo_avatar.log" 2>&1 ||
    { tail -20 "$results/demo_avatar.log"; exit 1; }
  local avatar="$avatar_dir/demo_avatar"
  # write_speech PATH SECONDS: the demo's synthetic speech as a 16 kHz WAV.
  write_speech() {
    timeout 120 "$py" -c '
import sys
from lipsync.demo import synthetic_speech, wav_bytes, write_atomic
write_atomic(sys.argv[1], wav_bytes(synthetic_speech(seconds=float(sys.argv[2])), 16000))
' "$1" "$2"
  }
  local speech="$models/speech_${seconds}s.wav"
  write_speech "$speech" "$seconds"
  echo "  avatar $avatar ($frame_size frames), speech $speech ($seconds s)"

  local batch csv
  csv="$(echo "$batches" | tr ' ' ',')"
  # A step that fails is reported and the run goes on, so that the table always comes.
  local status=0
  # render_once NAME BATCH [FLAGS...]: one render into results/render_NAME.{json,log,mp4}.
  render_once() {
    local name="$1" batch="$2"
    shift 2
    if timeout 300 "$bin" render --avatar "$avatar" --audio "$speech" \
      --out "$results/render_$name.mp4" --backend "$backend" --precision "$precision" \
      --batch "$batch" --json --quiet "$@" >"$results/render_$name.json" \
      2>"$results/render_$name.log"; then
      echo "  $name: done"
    else
      echo "  $name: FAILED"; tail -5 "$results/render_$name.log"; status=1
      rm -f "$results/render_$name.json"
    fi
  }
  # The same 3 s of speech rendered to PNG frames by the backend measured here (float32, its
  # defaults: frames form and overlapping runs on cuda) and by ONNX Runtime on the CPU, compared
  # pixel by pixel: the faces may differ by float rounding, one 8-bit step before pasting.
  echo "== correctness: $backend float32 against ONNX Runtime CPU, 3 s of speech, batch 8"
  local check_speech="$models/speech_3s.wav"
  write_speech "$check_speech" 3
  rm -rf "$results/check_$backend" "$results/check_cpu"
  if timeout 300 "$bin" render --avatar "$avatar" --audio "$check_speech" --batch 8 --quiet \
      --frames-out "$results/check_$backend" --backend "$backend" --precision fp32 \
      >"$results/check.log" 2>&1 &&
    timeout 300 "$bin" render --avatar "$avatar" --audio "$check_speech" --batch 8 --quiet \
      --frames-out "$results/check_cpu" --backend ort >>"$results/check.log" 2>&1 &&
    "$bin" frames-diff "$results/check_$backend" "$results/check_cpu" --max-abs 2 \
      --min-within-1 0.999 | tee -a "$results/check.log"; then
    echo "  frames match"
  else
    echo "  FAILED"; tail -5 "$results/check.log"; status=1
  fi
  rm -rf "$results/check_$backend" "$results/check_cpu"

  echo "== render (${seconds} s of speech) at batch $csv"
  for batch in $batches; do
    render_once "b$batch" "$batch"
  done
  # What the defaults bring at the largest batch: the faces as float tensors built on the CPU
  # instead of uint8 frames converted on the GPU, and one model run instead of two overlapping.
  local last="${batches##* }"
  render_once "b${last}_tensors" "$last" --face-input tensors
  render_once "b${last}_one_run" "$last" --model-runs 1
  # Every avatar frame decoded as the walk reaches it (no frame kept, as for an avatar longer
  # than the cache), on the decode threads and on the frames stage alone.
  render_once "b${last}_uncached" "$last" --frame-cache-mb 0
  render_once "b${last}_uncached_one_thread" "$last" --frame-cache-mb 0 --frame-threads 0
  echo "== the avatar's UNet alone (lipsync bench, $iterations runs per batch)"
  if ! timeout 300 "$bin" bench --model "$avatar/unet.onnx" --backend "$backend" \
    --precision "$precision" --batch "$csv" --iterations "$iterations" --warmup 3 \
    --json "$results/bench.json" >"$results/bench.log" 2>&1; then
    echo "  FAILED"; tail -5 "$results/bench.log"; status=1
    rm -f "$results/bench.json"
  fi

  echo
  "$py" "$dir/bench/gpu_render_table.py" --results "$results" --batches "$csv" |
    tee "$results/table.txt"
  echo "run took $SECONDS s; results in $results"
  return $status
}

case "${1:-}" in
  pack) shift; pack "$@" ;;
  run) shift; run "$@" ;;
  *) sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
