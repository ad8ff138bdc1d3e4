#!/usr/bin/env bash
# The GPU benchmark and checks in one run (about 3 minutes on an H200): lipsync's CUDA backend
# (frame and tensor form, float16 and float32, CUDA graph on and off, the fused kernels it chose at
# load against the unfused steps, the audio branch on its own stream or not, host and device
# buffers) against PyTorch on the same weights (eager float32, channels_last float16,
# torch.compile float16) at batch 1 and 32, float16 accuracy of both against float32, the
# gpu-labelled tests, and the lean `lipsync` CLI; printed as one table, with the fused kernel
# chosen per group (its time against the unfused steps) and the kernels per forward pass.
#
# The GPU machine needs only the NVIDIA driver and a Python with a CUDA PyTorch; nothing is built
# there. So the programs are built and packed on a Debian machine (no GPU needed) first; the pack
# (about 20 MB) holds no model: the GPU machine's PyTorch makes the demo model there.
#
#   bench/gpu_bench.sh pack [PACK.tar.xz]     # build (lean, CUDA) and pack programs + libraries
#   # copy PACK.tar.xz to the GPU machine, unpack it, then there:
#   ./gpu_bench.sh run [--iterations N] [--batches 1,32] [--no-compile] [--ncu] [--sanitize]
#
# `run` from a source checkout with no pack beside it builds the pack first, which needs nvcc,
# cmake and the Debian dependencies; without nvcc it stops and says so. Environment: ARCHS (CUDA
# architectures to build, default 90: the H100/H200), PYTHON (the GPU machine's python3 with a
# CUDA PyTorch; default python3).
#
# The fused kernels are checked against the unfused steps when a model loads and never used when
# they differ; the run starts by loading the model that way (the kernel report) and running a few
# forward passes with graphs (--cuda-kernels auto --side-stream, which the rest of the run then
# measures; the library's default is still the unfused steps on one stream). Should that fail, as
# a kernel that faults would make it, the rest of the run measures the unfused steps on one stream,
# the plan of the earlier runs, and the table says so.
set -euo pipefail

HERE="$(dirname "$(readlink -f "$0")")"
ARCHS="${ARCHS:-90}"
GPU_TESTS=(cuda_kernel_tests cuda_fused_tests cuda_model_tests cuda_frames_tests cuda_compat_tests
  cuda_memory_tests cuda_audio_module_tests)

# Shared libraries a binary needs beyond what every Linux with an NVIDIA driver has.
closure() {
  ldd "$@" | awk '/=> \// {print $3}' | sort -u |
    grep -Ev '/(libc|libm|libstdc\+\+|libgcc_s|libpthread|libdl|librt|libcuda|ld-linux[^/]*)\.so' || true
}

pack() {
  local root out build stage
  root="$(cd "$HERE/.." && pwd)"
  out="$(realpath -m "${1:-$root/out/lipsync-gpu-pack.tar.xz}")"
  build="$root/build-gpu-lean"
  stage="$(mktemp -d)"
  command -v nvcc >/dev/null || [ -x /usr/local/cuda/bin/nvcc ] ||
    { echo "error: packing needs nvcc (the CUDA toolkit) on this machine" >&2; exit 2; }
  cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DLIPSYNC_LEAN=ON \
    -DLIPSYNC_ENABLE_CUDA=ON -DLIPSYNC_CUDA_ARCHITECTURES="$ARCHS" -DLIPSYNC_BUILD_TESTS=ON >/dev/null
  cmake --build "$build" -j "$(nproc)" --target lipsync_cli gpu_engine_bench gpu_kernel_gaps \
    "${GPU_TESTS[@]}"
  mkdir -p "$stage/bin" "$stage/lib" "$stage/bench" "$stage/tests/graph" "$stage/tests/data"
  cp "$build/tools/lipsync/lipsync" "$build/bench/gpu_engine_bench" "$build/bench/gpu_kernel_gaps" \
    "$stage/bin/"
  for t in "${GPU_TESTS[@]}"; do cp "$build/tests/gpu/$t" "$stage/bin/"; done
  strip "$stage"/bin/*
  closure "$stage"/bin/* | while read -r lib; do cp -L "$lib" "$stage/lib/"; done
  cp -r "$root/python" "$stage/python"
  find "$stage/python" -name __pycache__ -prune -exec rm -rf {} +
  cp "$HERE/gpu_bench.sh" "$HERE/gpu_make_model.py" "$HERE/gpu_torch_bench.py" "$HERE/gpu_table.py" \
    "$stage/bench/"
  # What the compatibility test's models are made from (made there when Python has onnx), and the
  # model test's small model (made there with PyTorch).
  cp "$root/tests/graph/make_compat_models.py" "$stage/tests/graph/"
  mkdir -p "$stage/tests/gpu" && cp "$root/tests/gpu/make_gpu_models.py" "$stage/tests/gpu/"
  cp -r "$root/tests/data/dynamo-export" "$stage/tests/data/"
  ln -s bench/gpu_bench.sh "$stage/gpu_bench.sh"
  printf '%s\n' "${GPU_TESTS[@]}" >"$stage/gpu_tests.txt"
  {
    echo "commit $(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)"
    echo "built $(date -u +%F) on $(. /etc/os-release && echo "$PRETTY_NAME"), CUDA archs $ARCHS"
    echo "libraries carried: $(ls "$stage/lib" | wc -l), $(du -sh "$stage/lib" | cut -f1)"
  } >"$stage/BUILD_INFO"
  mkdir -p "$(dirname "$out")"
  tar -C "$stage" -cJf "$out" .
  rm -rf "$stage"
  echo "packed $out ($(du -h "$out" | cut -f1)); on the GPU machine (run's first step makes the model):"
  echo "  mkdir lipsync-gpu && tar -C lipsync-gpu -xJf $(basename "$out") && lipsync-gpu/gpu_bench.sh run"
}

run() {
  local iterations=20 batches="1,32" compile="" ncu=0 sanitize=0 started=$SECONDS
  while [ $# -gt 0 ]; do
    case "$1" in
      --iterations) iterations="$2"; shift 2 ;;
      --batches) batches="$2"; shift 2 ;;
      --no-compile) compile="--no-compile"; shift ;;
      --ncu) ncu=1; shift ;;
      --sanitize) sanitize=1; shift ;;
      *) echo "error: unknown option $1" >&2; exit 2 ;;
    esac
  done
  local dir
  dir="$(cd "$HERE/.." && pwd)"
  if [ ! -f "$dir/gpu_tests.txt" ]; then  # a source checkout: build the pack here first
    if ! command -v nvcc >/dev/null && [ ! -x /usr/local/cuda/bin/nvcc ]; then
      echo "error: no pack here and no nvcc to build one: run 'bench/gpu_bench.sh pack' on a" \
           "Debian build machine and unpack its output on this one" >&2
      exit 2
    fi
    pack "$dir/out/lipsync-gpu-pack.tar.xz"
    rm -rf "$dir/out/lipsync-gpu" && mkdir -p "$dir/out/lipsync-gpu"
    tar -C "$dir/out/lipsync-gpu" -xJf "$dir/out/lipsync-gpu-pack.tar.xz"
    exec "$dir/out/lipsync-gpu/gpu_bench.sh" run --iterations "$iterations" --batches "$batches" \
      $compile $([ "$ncu" = 1 ] && echo --ncu) $([ "$sanitize" = 1 ] && echo --sanitize)
  fi
  local py="${PYTHON:-python3}" results="$dir/results" model="$dir/models/demo.onnx"
  export LD_LIBRARY_PATH="$dir/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  export DEMO_MODEL="$model" COMPAT_MODELS_DIR="$dir/models/compat" GPU_MODELS_DIR="$dir/models/gpu"
  mkdir -p "$results" && rm -f "$results"/*.jsonl
  cat "$dir/BUILD_INFO"
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
  "$py" -c 'import torch; print("PyTorch", torch.__version__, "CUDA", torch.version.cuda)'
  echo "== libraries the programs still miss here (must be empty):"
  ldd "$dir"/bin/* | grep "not found" || echo "  none"

  echo "== the model, made with this machine's PyTorch and checked by the packed lipsync"
  if [ ! -f "$model" ] || [ ! -f "$dir/models/demo_audio_encoder.onnx" ]; then
    "$py" "$dir/bench/gpu_make_model.py" --out-dir "$dir/models" --engine "$dir/bin/lipsync"
  fi
  [ -f "$GPU_MODELS_DIR/mini_unet.onnx" ] ||
    "$py" "$dir/tests/gpu/make_gpu_models.py" "$GPU_MODELS_DIR" ||
    echo "  could not make the model test's mini_unet.onnx; cuda_model_tests will say so"
  local have_compat=0
  if [ -d "$COMPAT_MODELS_DIR" ]; then
    have_compat=1
  elif "$py" -c 'import onnx' 2>/dev/null &&
    "$py" "$dir/tests/graph/make_compat_models.py" "$COMPAT_MODELS_DIR" "$model" >/dev/null; then
    have_compat=1
  fi

  # Each step is recorded as passed or failed and the run goes on, so the table always comes.
  step() {
    local name="$1" start=$SECONDS pass=true
    shift
    "$@" >"$results/$name.log" 2>&1 || pass=false
    tail -3 "$results/$name.log" | sed 's/^/  /'
    echo "{\"kind\":\"test\",\"name\":\"$name\",\"pass\":$pass,\"seconds\":$((SECONDS - start))}" \
      >>"$results/tests.jsonl"
  }

  echo "== the fused kernels chosen at load (each checked against the unfused steps, then timed)"
  local kernels=auto fallback=(--cuda-kernels auto --side-stream) engine_fallback=()
  for precision in fp16 fp32; do
    if "$dir/bin/lipsync" info --model "$model" --backend cuda --precision "$precision" \
      --cuda-kernels auto --side-stream >"$results/kernels_$precision.txt" 2>&1 &&
      "$dir/bin/lipsync" bench --model "$model" --backend cuda --precision "$precision" \
        --cuda-kernels auto --side-stream --cuda-graph --batch 1,3 --iterations 2 --warmup 1 >>"$results/kernels_$precision.txt" 2>&1
    then
      grep -E "^(kernels|side stream|              )" "$results/kernels_$precision.txt" |
        sed "s/^/  $precision /"
    else
      kernels=unfused
      fallback=(--cuda-kernels unfused)
      engine_fallback=(--cuda-kernels unfused --one-stream)
      echo "  WARNING: loading or running the model with fused kernels ($precision) failed; the" \
           "rest of the run measures the unfused steps on one stream:"
      tail -3 "$results/kernels_$precision.txt" | sed 's/^/    /'
    fi
  done
  echo "{\"kind\":\"test\",\"name\":\"model load and run with fused kernels\",\"pass\":$([ $kernels = auto ] && echo true || echo false),\"seconds\":0}" \
    >>"$results/tests.jsonl"

  echo "== gpu tests"
  while read -r t; do
    if [ "$t" = cuda_compat_tests ] && [ "$have_compat" = 0 ]; then
      echo "  $t skipped: its models need the onnx Python package, which this machine lacks"
      continue
    fi
    step "$t" timeout 300 "$dir/bin/$t" --gtest_brief=1
  done <"$dir/gpu_tests.txt"
  if [ "$sanitize" = 1 ] && command -v compute-sanitizer >/dev/null; then
    step "cuda_fused_tests under compute-sanitizer" timeout 600 compute-sanitizer --tool memcheck \
      --error-exitcode 3 "$dir/bin/cuda_fused_tests" --gtest_brief=1
  fi

  echo "== the lean lipsync CLI on the GPU"
  step "lipsync info (cuda)" "$dir/bin/lipsync" info --model "$model" --backend cuda "${fallback[@]}"
  step "lipsync infer (cuda fp16)" "$dir/bin/lipsync" infer --model "$model" --backend cuda \
    --precision fp16 --face "$dir/models/demo_face.png" --audio "$dir/models/demo_audio.npy" \
    --out "$results/face.png" "${fallback[@]}"
  step "lipsync bench (cuda fp16 graph)" "$dir/bin/lipsync" bench --model "$model" --backend cuda \
    --precision fp16 --cuda-graph --batch 1,32 --iterations 20 --warmup 5 "${fallback[@]}"

  echo "== lipsync cuda: checks and speed"
  step gpu_engine_bench "$dir/bin/gpu_engine_bench" --model "$model" --batch "$batches" \
    --iterations "$iterations" --warmup 5 --json "$results/lipsync.jsonl" --reference "$dir/models" \
    "${engine_fallback[@]}"
  echo "== the kernels of a forward pass and the gaps between them (CUPTI)"
  step gpu_kernel_gaps "$dir/bin/gpu_kernel_gaps" --model "$model" --batch "$batches" \
    --iterations 30 --warmup 10 --json "$results/timeline.jsonl"
  echo "== pytorch: accuracy and speed"
  step gpu_torch_bench "$py" "$dir/bench/gpu_torch_bench.py" --checkpoint "$dir/models/demo.pth" \
    --batch "$batches" --iterations "$iterations" $compile --contenders fp32,fp16cl,compile \
    --json "$results/torch.jsonl" --reference "$dir/models"

  local status=0
  echo
  touch "$results/lipsync.jsonl" "$results/torch.jsonl" "$results/timeline.jsonl"
  "$py" "$dir/bench/gpu_table.py" "$results"/tests.jsonl "$results"/lipsync.jsonl \
    "$results"/torch.jsonl "$results"/timeline.jsonl | tee "$results/table.txt" || status=$?
  echo "(the run took $((SECONDS - started)) s; fused kernels: $kernels)" | tee -a "$results/table.txt"

  local ncu_cmd=(ncu --metrics gpu__time_duration.sum --csv --log-file "$results/ncu_b32.csv"
    "$dir/bin/lipsync" bench --model "$model" --backend cuda --precision fp16 --batch 32
    --iterations 1 --warmup 0)
  echo
  echo "Kernel breakdown (Nsight Compute: one load, a first and one warm forward at batch 32;"
  echo "sum gpu__time_duration.sum by kernel name and halve it for one forward):"
  echo "  LD_LIBRARY_PATH=$LD_LIBRARY_PATH ${ncu_cmd[*]}"
  if [ "$ncu" = 1 ] && command -v ncu >/dev/null; then
    timeout 180 "${ncu_cmd[@]}" >"$results/ncu.log" 2>&1 || echo "  ncu failed or timed out (see $results/ncu.log)"
  fi
  return $status
}

case "${1:-}" in
  pack) shift; pack "$@" ;;
  run) shift; run "$@" ;;
  *) sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
