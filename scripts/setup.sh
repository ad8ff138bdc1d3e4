#!/usr/bin/env bash
# Installs everything lipsync needs on Debian 12: system packages from Debian's archive and the pinned
# ONNX Runtime for C++ (library from the npm package onnxruntime-node, headers from Debian 13's
# libonnxruntime-dev, both verified by SHA-256). Idempotent: a second run only checks.
#
# Set ONNXRUNTIME_ROOT to an ONNX Runtime release (with include/ and lib/) to use it instead of the
# pinned CPU build, e.g. an official GPU release with the CUDA and TensorRT providers.
#
# The Windows build (cross-compiled with MinGW-w64, tested under Wine) takes its ONNX Runtime DLLs
# (with DirectML) from the same npm package and builds protobuf-lite from Debian's source package.
# `--image` also installs what `make image-test` needs to build and run the container image
# without a Docker daemon: buildah (vfs storage, chroot isolation) and debootstrap (CI passes it).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEPS="${LIPSYNC_DEPS_DIR:-$ROOT/.deps}"
ORT_PREFIX="$DEPS/onnxruntime"

ORT_NPM_VERSION="1.30.0"
ORT_NPM_SHA256="6e3390d6b783e7be946fad629292799da28d0b42f84856e50d2c1b0383291e75"
ORT_LIB_SHA256="ffb75a925ba05e47b235bb66e3e3911714a80b328a9c9425539feb204aa32a23"
ORT_HDR_DEB="libonnxruntime-dev_1.21.0+dfsg-1_amd64.deb"
ORT_HDR_SHA256="14f7d959d5deacbcf1504830d4189f91fc67382b399ed9ae9d3aa9c4050ced08"
# Windows x64 DLLs in the npm package, name and SHA-256.
ORT_WIN_DLLS=(
  "onnxruntime.dll 508c362f5673483dd3a086379c392795b2e42d10d5e6f3f90ebd7ac21c97af67"
  "DirectML.dll 234e8898778cdec88d3cb0539508273494082812c968699f3de665a018971625"
  "dxcompiler.dll 593d42df78c7f9cbd97c1374af107cfe20985759f98b77afc1448fe41ee3cc76"
  "dxil.dll cf9a3981263f8ec30c9905d136eeaf4b4573209c602198671b958ec86905dea8"
)
# protobuf-lite for the Windows build: the upstream tarball of Debian 12's protobuf (the version of
# its protoc, which generates the ONNX messages for both builds).
PROTOBUF_SRC_VERSION="3.21.12-3+deb12u1"
PROTOBUF_ORIG="protobuf_3.21.12.orig.tar.gz"
PROTOBUF_ORIG_SHA256="930c2c3b5ecc6c9c12615cf5ad93f1cd6e12d0aba862b572e076259970ac3a53"

APT_PACKAGES=(
  build-essential cmake ninja-build pkg-config git ca-certificates npm
  python3-torch python3-onnx python3-numpy python3-pytest python3-grpcio python3-protobuf
  python3-grpc-tools libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev libonnx-dev
  libopencv-imgproc-dev libopencv-imgcodecs-dev libpng-dev libturbojpeg0-dev libcli11-dev
  libspdlog-dev libfmt-dev
  nlohmann-json3-dev libgtest-dev libcpp-httplib-dev openssl
  libavcodec-dev libavformat-dev libavutil-dev libswresample-dev libswscale-dev libfftw3-dev
  ffmpeg python3-opencv espeak-ng python3-yaml yamllint libyaml-cpp-dev nginx-light libzip-dev libssl-dev
  g++-mingw-w64-x86-64-posix wine64 libstb-dev libboost-context-dev
)
if [ "${1:-}" = "--image" ]; then
  APT_PACKAGES+=(buildah debootstrap curl iproute2)
fi

log() { printf '[setup] %s\n' "$*"; }

sudo_if_needed() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

install_apt_packages() {
  local missing=()
  for p in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  # npm may come from another source (e.g. NodeSource's nodejs); accept any working npm.
  if command -v npm >/dev/null 2>&1; then
    missing=("${missing[@]/npm/}")
  fi
  local need=()
  for p in "${missing[@]}"; do [ -n "$p" ] && need+=("$p"); done
  if [ "${#need[@]}" -eq 0 ]; then
    log "system packages: all present"
    return
  fi
  log "installing system packages: ${need[*]}"
  sudo_if_needed apt-get update -qq
  sudo_if_needed env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    "${need[@]}" >/dev/null
}

check_sha256() {  # file expected
  local got
  got="$(sha256sum "$1" | cut -d' ' -f1)"
  if [ "$got" != "$2" ]; then
    echo "error: checksum mismatch for $1: expected $2, got $got" >&2
    exit 1
  fi
}

debian_mirror() {
  # The same mirror the machine's own Debian sources use, so no new host is contacted.
  local uri
  uri="$(grep -hoE '^(URIs:|deb) +[a-z]+://[^ ]+/debian/?( |$)' /etc/apt/sources.list \
    /etc/apt/sources.list.d/* 2>/dev/null | head -n1 | awk '{print $2}')"
  echo "${uri:-http://deb.debian.org/debian}"
}

fetch_ort_headers() {
  local cache="$DEPS/cache" aptdir="$DEPS/cache/apt-trixie"
  mkdir -p "$aptdir/lists/partial" "$aptdir/archives/partial"
  if [ ! -f "$cache/$ORT_HDR_DEB" ]; then
    log "downloading ONNX Runtime headers ($ORT_HDR_DEB)"
    echo "deb $(debian_mirror) trixie main" >"$aptdir/sources.list"
    local opts=(-o "Dir::Etc::SourceList=$aptdir/sources.list" -o "Dir::Etc::SourceParts=/dev/null"
      -o "Dir::State::Lists=$aptdir/lists" -o "Dir::Cache=$aptdir" -o "APT::Architecture=amd64"
      -o "Debug::NoLocking=1")
    apt-get "${opts[@]}" update -qq
    (cd "$cache" && apt-get "${opts[@]}" download "libonnxruntime-dev=1.21.0+dfsg-1" 2>/dev/null)
  fi
  check_sha256 "$cache/$ORT_HDR_DEB" "$ORT_HDR_SHA256"
  local tmp="$DEPS/cache/hdr"
  rm -rf "$tmp" && dpkg -x "$cache/$ORT_HDR_DEB" "$tmp"
  mkdir -p "$ORT_PREFIX/include"
  cp -r "$tmp/usr/include/onnxruntime/." "$ORT_PREFIX/include/"
  rm -rf "$tmp"
}

fetch_ort_library() {
  local cache="$DEPS/cache" tgz="onnxruntime-node-$ORT_NPM_VERSION.tgz"
  mkdir -p "$cache" "$ORT_PREFIX/lib"
  if [ ! -f "$cache/$tgz" ]; then
    log "downloading ONNX Runtime $ORT_NPM_VERSION library (npm package onnxruntime-node)"
    # npm pack fetches the tarball without running its install script.
    (cd "$cache" && npm pack --silent "onnxruntime-node@$ORT_NPM_VERSION" >/dev/null)
  fi
  check_sha256 "$cache/$tgz" "$ORT_NPM_SHA256"
  local tmp="$cache/npm-x"
  rm -rf "$tmp" && mkdir -p "$tmp"
  tar -xzf "$cache/$tgz" -C "$tmp" package/bin/napi-v6/linux/x64/libonnxruntime.so.1
  check_sha256 "$tmp/package/bin/napi-v6/linux/x64/libonnxruntime.so.1" "$ORT_LIB_SHA256"
  mv "$tmp/package/bin/napi-v6/linux/x64/libonnxruntime.so.1" "$ORT_PREFIX/lib/"
  ln -sf libonnxruntime.so.1 "$ORT_PREFIX/lib/libonnxruntime.so"
  rm -rf "$tmp"
}

install_onnxruntime() {
  if [ -n "${ONNXRUNTIME_ROOT:-}" ]; then
    [ -f "$ONNXRUNTIME_ROOT/include/onnxruntime_cxx_api.h" ] ||
      [ -f "$ONNXRUNTIME_ROOT/include/onnxruntime/onnxruntime_cxx_api.h" ] || {
      echo "error: ONNXRUNTIME_ROOT=$ONNXRUNTIME_ROOT has no include/onnxruntime_cxx_api.h" >&2
      exit 1
    }
    log "using ONNX Runtime from ONNXRUNTIME_ROOT=$ONNXRUNTIME_ROOT"
    return
  fi
  local stamp="$ORT_PREFIX/.stamp-$ORT_NPM_VERSION"
  if [ -f "$stamp" ]; then
    log "ONNX Runtime $ORT_NPM_VERSION: present in $ORT_PREFIX"
    return
  fi
  fetch_ort_headers
  fetch_ort_library
  touch "$stamp"
  log "ONNX Runtime $ORT_NPM_VERSION installed in $ORT_PREFIX"
}

# The Windows build's ONNX Runtime: the DLLs of the npm package, beside the Linux headers (the same
# API; the Windows build defines the MSVC annotations they use).
install_onnxruntime_windows() {
  local win="$DEPS/onnxruntime-win" stamp="$DEPS/onnxruntime-win/.stamp-$ORT_NPM_VERSION"
  [ -f "$stamp" ] && { log "ONNX Runtime $ORT_NPM_VERSION for Windows: present in $win"; return; }
  local cache="$DEPS/cache" tgz="onnxruntime-node-$ORT_NPM_VERSION.tgz" tmp="$DEPS/cache/npm-w"
  mkdir -p "$cache"
  [ -f "$cache/$tgz" ] ||
    (cd "$cache" && npm pack --silent "onnxruntime-node@$ORT_NPM_VERSION" >/dev/null)
  check_sha256 "$cache/$tgz" "$ORT_NPM_SHA256"
  rm -rf "$tmp" && mkdir -p "$tmp" "$win/bin"
  tar -xzf "$cache/$tgz" -C "$tmp" package/bin/napi-v6/win32/x64
  local entry name sum
  for entry in "${ORT_WIN_DLLS[@]}"; do
    read -r name sum <<<"$entry"
    check_sha256 "$tmp/package/bin/napi-v6/win32/x64/$name" "$sum"
    mv "$tmp/package/bin/napi-v6/win32/x64/$name" "$win/bin/"
  done
  rm -rf "$tmp"
  touch "$stamp"
  log "ONNX Runtime $ORT_NPM_VERSION for Windows installed in $win"
}

# protobuf's upstream source from Debian's source package (apt-get source with a private list of
# the machine's own mirror, like the headers above).
fetch_protobuf_source() {
  local cache="$DEPS/cache" src="$DEPS/protobuf-src" aptdir="$DEPS/cache/apt-src"
  [ -f "$src/CMakeLists.txt" ] && { log "protobuf source: present in $src"; return; }
  if [ ! -f "$cache/$PROTOBUF_ORIG" ]; then
    log "downloading protobuf source ($PROTOBUF_ORIG)"
    mkdir -p "$aptdir/lists/partial" "$aptdir/archives/partial"
    echo "deb-src $(debian_mirror) bookworm main" >"$aptdir/sources.list"
    local opts=(-o "Dir::Etc::SourceList=$aptdir/sources.list" -o "Dir::Etc::SourceParts=/dev/null"
      -o "Dir::State::Lists=$aptdir/lists" -o "Dir::Cache=$aptdir" -o "Debug::NoLocking=1")
    apt-get "${opts[@]}" update -qq
    (cd "$cache" && apt-get "${opts[@]}" source --download-only "protobuf=$PROTOBUF_SRC_VERSION" \
      >/dev/null 2>&1)
  fi
  check_sha256 "$cache/$PROTOBUF_ORIG" "$PROTOBUF_ORIG_SHA256"
  rm -rf "$src" "$src.tmp" && mkdir -p "$src.tmp"
  tar -xzf "$cache/$PROTOBUF_ORIG" -C "$src.tmp" --strip-components=1
  mv "$src.tmp" "$src"
  log "protobuf source unpacked in $src"
}

# The deployment tests look packages up in apt's lists, which a fresh container may lack.
ensure_apt_lists() {
  if compgen -G "/var/lib/apt/lists/*_Packages*" >/dev/null; then return; fi
  log "apt has no package lists: apt-get update"
  sudo_if_needed apt-get update -qq
}

install_apt_packages
ensure_apt_lists
install_onnxruntime
install_onnxruntime_windows
fetch_protobuf_source
