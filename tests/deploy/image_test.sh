#!/usr/bin/env bash
# The CPU image, built from deploy/docker/Dockerfile and run, without a Docker daemon:
#   1. Debian 12 base images from debootstrap (scripts/image_base.sh, kept between runs);
#   2. `buildah bud` of the Dockerfile, with the binary of this build as prebuilt/ in the context
#      (LIPSYNC_PREBUILT=1: the runtime stage is the users' own, the build stage skips a second
#      `make build`); the build time and the image size are printed;
#   3. the image started with its own ENTRYPOINT and CMD (plus --model and --preload) as its own
#      user, in a network namespace of its own (so the old ports are free), the demo avatar and
#      model mounted read-only; then called: health (HTTP probes, the image's HEALTHCHECK), one
#      KServe v2 ModelInfer, one InferBatchComposite on 50053, one lipsyncsrv call on 50051, one
#      live session; then SIGTERM while a second session streams: /readyz turns 503, the session
#      gets every frame, the server exits 0 within the pod's grace period;
#   4. nothing written to the container's root file system outside /tmp (read-only root possible).
#
#   LIPSYNC_BIN=build/tools/lipsync/lipsync tests/deploy/image_test.sh DEMO_DIR
# DEMO_DIR holds demo.onnx, demo_audio_encoder.onnx, demo_speech.wav and demo_avatar/ (make demo's
# models/, or the test fixtures). Needs root, buildah and debootstrap (scripts/setup.sh --image).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
BIN="$(readlink -f "${LIPSYNC_BIN:?set LIPSYNC_BIN to the built lipsync}")"
IMAGE=localhost/lipsync:cpu
GRACE_S=40  # terminationGracePeriodSeconds of deploy/k8s/deployment.yaml

log() { printf '[image-test %(%H:%M:%S)T] %s\n' -1 "$*"; }
fail() {
  printf '[image-test] FAILED: %s\n' "$*" >&2
  exit 1
}

# --- 3. run and call: in a network namespace of its own (re-entered through unshare) ------------

lipsync_pid_under() {  # the `lipsync` process started under the buildah run process $1
  local pid=$1 child
  for _ in $(seq 8); do
    child="$(ps -o pid= --ppid "$pid" | head -n1 | tr -d ' ')"
    [ -n "$child" ] || return 1
    [ "$(cat "/proc/$child/comm" 2>/dev/null)" = lipsync ] && { echo "$child"; return 0; }
    pid=$child
  done
  return 1
}

http_get() { curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:9090$1" || true; }

json_field() { python3 -c "import json,sys; print(json.load(open(sys.argv[1]))$2)" "$1"; }

serve_phase() {
  local work=$1 demo=$2
  ip link set lo up
  export CONTAINERS_STORAGE_CONF="$work/../storage.conf"
  CONTAINER="$(buildah from --pull=never "$IMAGE")"
  local c=$CONTAINER
  trap 'buildah rm "$CONTAINER" >/dev/null 2>&1 || true' EXIT
  # What `docker run IMAGE ARGS` runs: the image's ENTRYPOINT, then ARGS in place of its CMD (here
  # the CMD itself plus a model for KServe and a preload, which /readyz waits for).
  local -a args health
  local user
  buildah inspect --type image "$IMAGE" >"$work/image.json"
  image_config() {  # a field of the image's Docker config, one list item per line
    python3 -c 'import json,sys; v=json.load(open(sys.argv[1]))["Docker"]["config"]
for k in sys.argv[2].split("."): v=v[k]
print("\n".join(v) if isinstance(v, list) else v)' "$work/image.json" "$1"
  }
  mapfile -t args < <(image_config Entrypoint; image_config Cmd)
  args+=(--model /models/demo.onnx --preload demo --threads 2)
  user="$(image_config User)"
  mapfile -t health < <(image_config Healthcheck.Test)
  [ "${health[0]}" = CMD-SHELL ] || fail "unexpected HEALTHCHECK: ${health[*]}"
  log "image user $user; runs: ${args[*]}"

  mkdir -p "$work/tmp" && chown "${user%%:*}" "$work/tmp"
  local mounts=(-v "$demo/demo_avatar:/avatars/demo:ro" -v "$demo:/models:ro" -v "$work/tmp:/tmp")
  touch "$work/started"
  buildah run --isolation chroot "${mounts[@]}" "$c" -- "${args[@]}" >"$work/server.log" 2>&1 &
  local runner=$! pid=""
  local deadline=$((SECONDS + 300))
  until [ "$(http_get /readyz)" = 200 ]; do
    kill -0 "$runner" 2>/dev/null || { cat "$work/server.log"; fail "the server exited at start"; }
    [ $SECONDS -lt $deadline ] || { cat "$work/server.log"; fail "not ready after 300 s"; }
    sleep 0.5
  done
  pid="$(lipsync_pid_under "$runner")" || fail "no lipsync process under buildah run"
  local uid
  uid="$(awk '/^Uid:/ {print $2}' "/proc/$pid/status")"
  log "ready: pid $pid, uid $uid"
  [ "$uid" != 0 ] || fail "the server runs as root: the image's USER must not be 0"
  [ "$uid" = "${user%%:*}" ] || fail "the server runs as uid $uid, not as the image's USER $user"

  log "call 1: health"
  [ "$(http_get /healthz)" = 200 ] || fail "/healthz"
  buildah run --isolation chroot "$c" -- sh -c "${health[1]}" >/dev/null ||
    fail "the image's HEALTHCHECK failed"
  log "  /healthz 200, /readyz 200, HEALTHCHECK (${health[1]}) passed"

  log "call 2: KServe v2 ModelInfer on 50061"
  "$BIN" loadtest --target 127.0.0.1:50061 --api kserve --requests 1 --json "$work/kserve.json" ||
    fail "KServe ModelInfer"
  [ "$(json_field "$work/kserve.json" '["requests_ok"]')" = 1 ] || fail "KServe: not OK"

  local frames
  frames="$(python3 -c 'import json,sys; print(len(json.load(open(sys.argv[1]))))' \
    "$demo/demo_avatar/crop_rects.json")"
  log "call 3: monolithic InferBatchComposite (batch 4) on 50053"
  "$BIN" loadtest --target 127.0.0.1:50053 --api monolithic --model demo --batch 4 \
    --avatar-frames "$frames" --requests 1 --json "$work/monolithic.json" ||
    fail "InferBatchComposite"
  [ "$(json_field "$work/monolithic.json" '["requests_ok"]')" = 1 ] || fail "InferBatchComposite"

  log "call 3b: lipsyncsrv GenerateBatchInference on 50051"
  "$BIN" loadtest --target 127.0.0.1:50051 --api lipsyncsrv --model demo --batch 4 \
    --avatar-frames "$frames" --requests 1 --json "$work/lipsyncsrv.json" || fail "lipsyncsrv"
  [ "$(json_field "$work/lipsyncsrv.json" '["requests_ok"]')" = 1 ] || fail "lipsyncsrv"

  local session=("$BIN" loadtest --target 127.0.0.1:50061 --api sessions --models demo
    --audio "$demo/demo_speech.wav" --encoder "$demo/demo_audio_encoder.onnx" --keep-up-ms 60000)
  log "call 4: live session (the demo speech at real time) on 50061"
  "${session[@]}" --json "$work/session.json" || fail "live session"

  log "  server memory after the calls: peak $(awk '/^VmHWM/ {print $2 / 1024 " MiB"}' \
    "/proc/$pid/status"), now $(awk '/^VmRSS/ {print $2 / 1024 " MiB"}' "/proc/$pid/status")"

  # The held session: the demo speech's first 0.8 s (about 20 frames), so that it ends well within
  # the drain timeout even where the demo UNet runs a few frames a second.
  python3 - "$demo/demo_speech.wav" "$work/short.wav" <<'PY'
import sys, wave
with wave.open(sys.argv[1]) as src, wave.open(sys.argv[2], "wb") as dst:
    dst.setparams(src.getparams())
    dst.writeframes(src.readframes(int(src.getframerate() * 0.8)))
PY
  log "drain: SIGTERM while a second session streams"
  session[9]="$work/short.wav"
  "${session[@]}" --json "$work/drain.json" >"$work/drain.out" 2>&1 &
  local client=$!
  deadline=$((SECONDS + 60))
  until curl -s http://127.0.0.1:9090/metrics | grep -qE '^lipsync_sessions_open [1-9]'; do
    [ $SECONDS -lt $deadline ] || fail "the second session never opened"
    sleep 0.1
  done
  local t0=$SECONDS
  kill -TERM "$pid"
  until [ "$(http_get /readyz)" = 503 ]; do
    kill -0 "$pid" 2>/dev/null || fail "the server exited before /readyz was seen at 503"
    sleep 0.1
  done
  log "  /readyz 503 while the session streams"
  wait "$client" || { cat "$work/drain.out"; fail "the session in flight failed during the drain"; }
  local rc=0
  wait "$runner" || rc=$?
  local took=$((SECONDS - t0))
  cat "$work/drain.out"
  log "  server exited $rc, ${took} s after SIGTERM (grace period ${GRACE_S} s)"
  sed -n '/received SIGTERM/,$p' "$work/server.log"
  [ "$rc" = 0 ] || { cat "$work/server.log"; fail "the server exited $rc after SIGTERM"; }
  [ "$took" -lt "$GRACE_S" ] || fail "the drain took ${took} s, past the grace period"
  [ "$(json_field "$work/drain.json" '["frames"]')" = \
    "$(json_field "$work/drain.json" '["frames_expected"]')" ] || fail "the drained session lost frames"
  if ! grep -q 'draining' "$work/server.log" || ! grep -q 'stopped' "$work/server.log"; then
    fail "no drain in the server's log"
  fi

  # Read-only root: the server wrote nothing outside /tmp (buildah run's own mount points aside).
  local root written
  root="$(buildah mount "$c")"
  written="$(cd "$root" && find . -xdev -newer "$work/started" ! -type d \
    ! -path './tmp/*' ! -path './run/*' ! -path './dev/*' ! -path './proc/*' ! -path './sys/*' \
    ! -path ./etc/hosts ! -path ./etc/resolv.conf ! -path ./etc/hostname)"
  buildah umount "$c" >/dev/null
  [ -z "$written" ] || fail "the server wrote to its root file system: $written"
  log "  nothing written outside /tmp: a read-only root file system is possible"
}

if [ "${1:-}" = --serve-phase ]; then
  shift
  serve_phase "$@"
  exit 0
fi

# --- 1, 2: base images, context, build ------------------------------------------------------------

DEMO="$(readlink -f "${1:?usage: image_test.sh DEMO_DIR}")"
for f in demo.onnx demo_audio_encoder.onnx demo_speech.wav demo_avatar/avatar.json; do
  [ -f "$DEMO/$f" ] || fail "$DEMO/$f is missing (make demo, or the demo fixtures)"
done
T_START=$SECONDS
bash "$ROOT/scripts/image_base.sh"
# shellcheck source=/dev/null
source <(bash "$ROOT/scripts/image_base.sh" --env)
DIR="$(dirname "$CONTAINERS_STORAGE_CONF")"
WORK="$DIR/test.$$"
rm -rf "$WORK" && mkdir -p "$WORK"
trap 'rm -rf "$WORK"' EXIT
T_BASE=$((SECONDS - T_START))

# The build context: the sources as a clean checkout has them (tracked and new files, nothing that
# git ignores), and prebuilt/: this build's binary and the ONNX Runtime it links.
CTX="$WORK/context"
mkdir -p "$CTX/prebuilt"
(cd "$ROOT" && git ls-files -z -co --exclude-standard | while IFS= read -r -d '' f; do
  [ -f "$f" ] && [ "${f%%/*}" != .deps ] && printf '%s\0' "$f"
done | tar --null -T - -cf -) | tar -C "$CTX" -xf -
install -m 755 "$BIN" "$CTX/prebuilt/lipsync"
ORT_LIB="$(ldd "$BIN" | awk '$1 ~ /^libonnxruntime\.so/ {print $3}')"
[ -f "$ORT_LIB" ] || fail "$BIN links no ONNX Runtime that ldd can find"
mkdir -p "$CTX/prebuilt/onnxruntime-lib"
cp -a "$(dirname "$(readlink -f "$ORT_LIB")")/." "$CTX/prebuilt/onnxruntime-lib/"

log "buildah bud -f deploy/docker/Dockerfile --build-arg LIPSYNC_PREBUILT=1 (context $(du -sh "$CTX" | cut -f1))"
OLD_ID="$(buildah images -q "$IMAGE" 2>/dev/null || true)"
T0=$SECONDS
# No --layers: with vfs storage every cached layer is a full copy of the file system, which costs
# more time and disk than the one apt-get it would save on a CI machine that builds once.
buildah bud --pull=never --isolation chroot --format docker \
  --build-arg LIPSYNC_PREBUILT=1 -f "$CTX/deploy/docker/Dockerfile" -t "$IMAGE" "$CTX"
T_BUILD=$((SECONDS - T0))
if [ -n "$OLD_ID" ] && [ "$OLD_ID" != "$(buildah images -q "$IMAGE")" ]; then
  buildah rmi "$OLD_ID" >/dev/null 2>&1 || true  # the previous run's image, now untagged
fi
SIZE="$(buildah images --format '{{.Size}}' "$IMAGE")"
BASE_SIZE="$(buildah images --format '{{.Size}}' docker.io/library/debian:12-slim)"
log "image build: ${T_BUILD} s (base images: ${T_BASE} s)"
log "image size: $SIZE (debian:12-slim: $BASE_SIZE)"

# The CUDA image as far as it goes here: buildah parses all of Dockerfile.cuda, and its first stage
# is NVIDIA's CUDA image, which no registry here serves, so no step runs. Any other failure (a
# syntax error, a missing build context) fails the test.
mkdir -p "$WORK/onnxruntime-stand-in"
CUDA_OUT="$(buildah bud --pull=never --isolation chroot --format docker \
  --build-context onnxruntime="$WORK/onnxruntime-stand-in" \
  -f "$CTX/deploy/docker/Dockerfile.cuda" -t localhost/lipsync:cuda "$CTX" 2>&1)" &&
  fail "Dockerfile.cuda built without NVIDIA's images?"
FIRST_FROM="$(grep -m1 -oE '^ARG CUDA_DEVEL_IMAGE=.*' "$CTX/deploy/docker/Dockerfile.cuda")"
if ! grep -q "STEP 1/1: FROM nvidia/cuda:.* AS cuda-devel" <<<"$CUDA_OUT" ||
  ! grep -q "nvidia/cuda:.*image not known" <<<"$CUDA_OUT"; then
  echo "$CUDA_OUT" >&2
  fail "Dockerfile.cuda failed before its NVIDIA base image"
fi
log "Dockerfile.cuda: parsed; stops at its first step, FROM the CUDA devel image (${FIRST_FROM#ARG }), absent here: no step ran"

# --- 3, 4: run it ---------------------------------------------------------------------------------
T0=$SECONDS
unshare --net --fork -- bash "${BASH_SOURCE[0]}" --serve-phase "$WORK" "$DEMO"
log "image run and calls: $((SECONDS - T0)) s; whole image test: $((SECONDS - T_START)) s"
echo "image build: ${T_BUILD} s; image size: $SIZE"
