#!/usr/bin/env bash
# The whole product on a GPU in one run, one pack: the avatar server (the users' two services and
# live sessions, bench/gpu_server_bench.sh), `lipsync render` end to end at two frame sizes
# (bench/gpu_render_bench.sh), the CUDA backend against PyTorch with the gpu-labelled tests
# (bench/gpu_bench.sh) and a PyTorch 2.x dynamo export checked on every backend
# (bench/gpu_dynamo_check.py). Each part checks before it measures and prints its own table; a
# part that fails is reported and the run goes on. The parts run in that order inside one time
# budget, each skipped (and said so) when too little of it is left.
#
#   bench/gpu_product.sh pack [PACK.tar.xz]   # Debian build machine with nvcc (no GPU needed)
#   # on the GPU machine (needs the NVIDIA driver and a python3 with PyTorch, numpy, onnx):
#   mkdir p && tar -C p -xJf PACK.tar.xz && p/gpu_product.sh run [--budget 540]
#
# The pack holds `lipsync` (serve, render, loadtest, compare-servers, ...), the GPU tests and
# benchmarks, and the shared libraries they need on a machine that has only the GPU driver
# (bench/gpu_pack_libs.py). Environment: ARCHS (CUDA architectures, 90), PACK_LIMIT_MB (60),
# SESSIONS ("1 8 32 64 128"), PYTHON (python3). Results go to results/ (one folder per part).
set -euo pipefail

HERE="$(dirname "$(readlink -f "$0")")"
ARCHS="${ARCHS:-90}"
GPU_TESTS=(cuda_kernel_tests cuda_fused_tests cuda_model_tests cuda_frames_tests cuda_compat_tests
  cuda_memory_tests cuda_audio_module_tests)
# What every Linux with an NVIDIA driver has; every other library comes from the pack, real: the
# programs link only what they call (--as-needed), FFmpeg is static and configured for lipsync's
# formats (scripts/build_ffmpeg_pack.sh), image files go through libpng and TurboJPEG.
SYSTEM_LIBS='^(linux-vdso|ld-linux[^ ]*|libc|libm|libstdc\+\+|libgcc_s|libpthread|libdl|librt|libcuda)\.so'

# Libraries the programs resolve outside DIR other than SYSTEM_LIBS, and ones not found at all.
missing_libs() {
  local dir="$1"
  shift
  local p
  for p in "$@"; do
    LD_LIBRARY_PATH="$dir" ldd "$p" | awk '{name = $1; sub(".*/", "", name); print name, $3}' |
      grep -Ev "$SYSTEM_LIBS" | grep -v " $dir/" || true
  done | sort -u
}

# check_pack DIR: every program in DIR/bin finds each library in DIR/lib or SYSTEM_LIBS, binds
# every symbol at load (LD_BIND_NOW) and starts, with the pack's libraries alone on the path.
check_pack() {
  local dir="$1" missing p
  missing="$(missing_libs "$dir/lib" "$dir"/bin/*)"
  if [ -n "$missing" ]; then
    echo "error: the pack misses these libraries:" >&2
    echo "$missing" >&2
    return 1
  fi
  for p in "$dir"/bin/*; do
    if readelf -dW "$p" | grep -E "NEEDED.*lib(avcodec|avformat|avutil|swscale|swresample)"; then
      echo "error: $(basename "$p") links the system's FFmpeg, not the static one" >&2
      return 1
    fi
    if LD_LIBRARY_PATH="$dir/lib" ldd -r "$p" 2>&1 | grep -E "undefined|version"; then
      echo "error: $(basename "$p"): the packed libraries leave the symbols above unresolved" >&2
      return 1
    fi
    local probe=(--help)
    case "$(basename "$p")" in
      lipsync) probe=(--version) ;;
      cuda_*) probe=(--gtest_list_tests) ;;
    esac
    if ! env -u LD_PRELOAD LD_BIND_NOW=1 LD_LIBRARY_PATH="$dir/lib" "$p" "${probe[@]}" >/dev/null; then
      echo "error: $(basename "$p") does not start with the packed libraries" >&2
      return 1
    fi
  done
}

pack() {
  local root out build stage limit="${PACK_LIMIT_MB:-60}"
  root="$(cd "$HERE/.." && pwd)"
  out="$(realpath -m "${1:-$root/out/lipsync-gpu-product.tar.xz}")"
  build="$root/build-gpu-product"
  command -v nvcc >/dev/null || [ -x /usr/local/cuda/bin/nvcc ] ||
    { echo "error: packing needs nvcc (the CUDA toolkit) on this machine" >&2; exit 2; }
  local launcher=()
  if command -v ccache >/dev/null; then
    launcher=(-DCMAKE_C_COMPILER_LAUNCHER=ccache -DCMAKE_CXX_COMPILER_LAUNCHER=ccache
      -DCMAKE_CUDA_COMPILER_LAUNCHER=ccache)
  fi
  local ffmpeg ffmpeg_start=$SECONDS
  ffmpeg="$(bash "$root/scripts/build_ffmpeg_pack.sh")"
  echo "static FFmpeg: $ffmpeg ($((SECONDS - ffmpeg_start)) s)"
  # A fresh configure: pkg-config's results are cached, and a cache made without the static
  # FFmpeg (or with another one) would link the system's.
  rm -f "$build/CMakeCache.txt"
  cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DLIPSYNC_ENABLE_CUDA=ON \
    -DLIPSYNC_CUDA_ARCHITECTURES="$ARCHS" -DLIPSYNC_BUILD_TESTS=ON -DLIPSYNC_FFMPEG_PREFIX="$ffmpeg" \
    -DCMAKE_EXE_LINKER_FLAGS=-Wl,--as-needed "${launcher[@]}" >/dev/null
  cmake --build "$build" -j "$(nproc)" --target lipsync_cli gpu_engine_bench gpu_kernel_gaps \
    "${GPU_TESTS[@]}"
  stage="$(mktemp -d)"
  trap 'rm -rf "$stage"' RETURN
  mkdir -p "$stage/bin" "$stage/bench" "$stage/tests/graph" "$stage/tests/data"
  cp "$build/tools/lipsync/lipsync" "$build/bench/gpu_engine_bench" "$build/bench/gpu_kernel_gaps" \
    "$stage/bin/"
  local t
  for t in "${GPU_TESTS[@]}"; do cp "$build/tests/gpu/$t" "$stage/bin/"; done
  strip "$stage"/bin/*
  python3 "$HERE/gpu_pack_libs.py" --out "$stage/lib" --manifest "$stage/LIBRARIES" \
    "$stage"/bin/*
  check_pack "$stage"
  cp -r "$root/python" "$stage/python"
  find "$stage/python" -name __pycache__ -prune -exec rm -rf {} +
  cp "$HERE"/gpu_*.sh "$HERE"/gpu_*.py "$HERE/serve_helpers.sh" "$stage/bench/"
  cp "$root/tests/graph/make_compat_models.py" "$stage/tests/graph/"
  cp -r "$root/tests/data/dynamo-export" "$stage/tests/data/"
  local s
  for s in gpu_product.sh gpu_bench.sh gpu_render_bench.sh gpu_server_bench.sh; do
    ln -s "bench/$s" "$stage/$s"
  done
  printf '%s\n' "${GPU_TESTS[@]}" >"$stage/gpu_tests.txt"
  cat >"$stage/lipsync" <<'EOF'
#!/bin/sh
here="$(dirname "$(readlink -f "$0")")"
LD_LIBRARY_PATH="$here/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" exec "$here/bin/lipsync" "$@"
EOF
  chmod +x "$stage/lipsync"
  {
    echo "commit $(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)"
    echo "built $(date -u +%F) on $(. /etc/os-release && echo "$PRETTY_NAME"), CUDA archs $ARCHS"
    echo "FFmpeg $(basename "$ffmpeg") static (scripts/build_ffmpeg_pack.sh)"
    echo "libraries carried: $(find "$stage/lib" -type f | wc -l) ($(du -sh "$stage/lib" | cut -f1))," \
      "each the real library (LIBRARIES lists them)"
  } >"$stage/BUILD_INFO"
  mkdir -p "$(dirname "$out")"
  tar -C "$stage" -cf - . | xz -9 -T"$(nproc)" >"$out.tmp"
  mv "$out.tmp" "$out"
  local bytes
  bytes="$(stat -c %s "$out")"
  echo "packed $out: $((bytes / 1000000)) MB ($bytes bytes; limit $limit MB)"
  if [ "$bytes" -gt $((limit * 1000000)) ]; then
    echo "error: the pack is over $limit MB" >&2
    exit 1
  fi
}

run() {
  local budget=540
  while [ $# -gt 0 ]; do
    case "$1" in
      --budget) budget="$2"; shift 2 ;;
      *) echo "error: unknown option $1" >&2; exit 2 ;;
    esac
  done
  local dir
  dir="$(cd "$HERE/.." && pwd)"
  [ -f "$dir/BUILD_INFO" ] || { echo "error: run works in an unpacked pack" >&2; exit 2; }
  local py="${PYTHON:-python3}" results="$dir/results" start=$SECONDS status=0
  mkdir -p "$results"
  cat "$dir/BUILD_INFO"
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 || true
  echo "$(nproc) CPU cores; budget $budget s"
  # part NAME ESTIMATE COMMAND...: runs COMMAND in its own copy of the pack (each part makes its
  # own models), limited to what is left of the budget; skipped when less than ESTIMATE is left.
  part() {
    local name="$1" estimate="$2"
    shift 2
    local left=$((budget - (SECONDS - start)))
    if [ "$left" -lt "$estimate" ]; then
      echo "== $name: SKIPPED, $left s of the budget left (needs about $estimate)"
      echo "$name skipped" >>"$results/parts.txt"
      return
    fi
    echo "== $name (up to $left s)"
    local work="$dir/parts/$name" t0=$SECONDS
    rm -rf "$work" && mkdir -p "$work"
    cp -a "$dir/bin" "$dir/lib" "$dir/python" "$dir/bench" "$dir/tests" "$dir/lipsync" \
      "$dir/BUILD_INFO" "$dir/gpu_tests.txt" "$work/"
    if (cd "$work" && timeout "$left" "$@") >"$results/$name.log" 2>&1; then
      echo "$name passed in $((SECONDS - t0)) s" >>"$results/parts.txt"
    else
      echo "$name FAILED (exit $?) after $((SECONDS - t0)) s" >>"$results/parts.txt"
      status=1
    fi
    tail -40 "$results/$name.log"
    [ -d "$work/results" ] && cp -r "$work/results" "$results/$name"
    find "$results/$name" -name '*.mp4' -delete 2>/dev/null || true
    rm -rf "$work"
  }
  part server 150 bench/gpu_server_bench.sh run --seconds 8 --sessions "${SESSIONS:-1 8 32 64 128}"
  part render-480x352 60 env BATCHES="1 8 25" bench/gpu_render_bench.sh run --seconds 20 \
    --iterations 20
  part kernels 120 bench/gpu_bench.sh run --iterations 20
  part render-1280x720 60 env BATCHES="8 25" bench/gpu_render_bench.sh run --seconds 10 \
    --iterations 10 --frame-size 1280x720
  part dynamo 40 sh -c "export PYTHONPATH=python; '$py' -m lipsync.demo --out-dir models --engine ./lipsync --exporter legacy \
    >/dev/null && '$py' bench/gpu_dynamo_check.py --checkpoint models/demo.pth --engine ./lipsync \
    --out-dir results/dynamo"
  echo
  echo "== parts"
  cat "$results/parts.txt"
  echo "run took $((SECONDS - start)) s; results in $results"
  return $status
}

case "${1:-}" in
  pack) shift; pack "$@" ;;
  run) shift; run "$@" ;;
  *) sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
