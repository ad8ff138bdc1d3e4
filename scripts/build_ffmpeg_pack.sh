#!/usr/bin/env bash
# Builds the small static FFmpeg that the GPU pack links (bench/gpu_product.sh pack), once, into
# .deps/ffmpeg-pack/<version>-<config hash>/ (include/, lib/*.a, lib/pkgconfig/), and prints that
# folder. The ordinary build keeps Debian's FFmpeg; this one exists because Debian's libavcodec
# names some forty codec, network, hardware and TLS libraries that lipsync never calls, and those
# bring in a hundred more (GLib, cairo, ICU, GnuTLS, ...).
#
# The source is Debian's own package of the version installed here (apt-get source, through a
# private apt configuration with deb-src lines for the machine's own mirrors), so the pack decodes
# and encodes as the ordinary build does. Only what lipsync uses is configured: the file protocol;
# the common audio and video containers and FFmpeg's own decoders for them (speech as WAV, MP3,
# AAC/M4A, FLAC, Ogg, Opus; avatar videos as H.264, HEVC, MPEG-4, VP8/9, MJPEG); H.264 through
# Debian's libx264 and FFmpeg's AAC encoder into MP4, MOV or Matroska; swscale; swresample with
# Debian's libsoxr. About 12 minutes on 2 busy cores.
#
#   scripts/build_ffmpeg_pack.sh        # prints the prefix; a second run only checks
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEPS="${LIPSYNC_DEPS_DIR:-$ROOT/.deps}"
BUILD_PACKAGES=(dpkg-dev nasm libx264-dev libsoxr-dev zlib1g-dev pkg-config)

# shellcheck disable=SC2054  # FFmpeg takes comma-separated component lists
CONFIG=(
  --disable-shared --enable-static --enable-pic --disable-debug --disable-doc --disable-programs
  --disable-everything --disable-autodetect --disable-network --disable-avdevice
  --disable-avfilter --disable-postproc --enable-gpl --enable-libx264 --enable-libsoxr --enable-zlib
  --enable-protocol=file,pipe
  --enable-demuxer=wav,w64,aiff,caf,mp3,aac,flac,ogg,wv,amr,mov,matroska,avi,mpegts
  --enable-decoder=pcm_s16le,pcm_s16be,pcm_s24le,pcm_s24be,pcm_s32le,pcm_s32be,pcm_f32le
  --enable-decoder=pcm_f32be,pcm_f64le,pcm_u8,pcm_alaw,pcm_mulaw,adpcm_ms,adpcm_ima_wav
  --enable-decoder=mp3,mp3float,mp2,mp2float,aac,aac_latm,flac,alac,vorbis,opus,ac3,eac3
  --enable-decoder=wavpack,amrnb,amrwb,h264,hevc,mpeg4,vp8,vp9,mjpeg
  --enable-parser=aac,aac_latm,ac3,flac,h264,hevc,mpegaudio,mpeg4video,opus,vorbis,vp8,vp9,mjpeg
  --enable-encoder=libx264,aac
  --enable-muxer=mp4,mov,ipod,matroska
)

log() { printf '[ffmpeg-pack] %s\n' "$*" >&2; }

install_build_packages() {
  local need=() p
  for p in "${BUILD_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need+=("$p")
  done
  [ "${#need[@]}" -eq 0 ] && return
  log "installing build packages: ${need[*]}"
  local sudo=()
  [ "$(id -u)" -eq 0 ] || sudo=(sudo)
  "${sudo[@]}" apt-get update -qq
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    "${need[@]}" >/dev/null
}

# fetch_source VERSION DIR: Debian's ffmpeg source package VERSION, unpacked (patches applied)
# into DIR, from the machine's own mirrors: its apt sources with each `deb` turned into `deb-src`.
fetch_source() {
  local version="$1" dir="$2" apt="$DEPS/cache/apt-src"
  rm -rf "$apt" && mkdir -p "$apt/parts" "$apt/lists/partial" "$apt/archives/partial"
  local f
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [ -f "$f" ] && sed -n 's/^deb /deb-src /p' "$f"
  done >"$apt/parts/machine.list"
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] && sed 's/^Types:.*/Types: deb-src/' "$f" >"$apt/parts/$(basename "$f")"
  done
  local opts=(-o "Dir::Etc::SourceList=/dev/null" -o "Dir::Etc::SourceParts=$apt/parts"
    -o "Dir::State::Lists=$apt/lists" -o "Dir::Cache=$apt" -o "Debug::NoLocking=1")
  apt-get "${opts[@]}" update -qq
  local download="$DEPS/cache/ffmpeg-src"
  rm -rf "$download" && mkdir -p "$download"
  (cd "$download" && apt-get "${opts[@]}" source --download-only -qq "ffmpeg=$version" 2>/dev/null)
  local dsc
  dsc="$(ls "$download"/ffmpeg_*.dsc)"
  # dpkg-source checks the tarballs against the .dsc, which apt checked against the signed index.
  dpkg-source -x "$dsc" "$dir" >"$download/unpack.log" 2>&1 ||
    { cat "$download/unpack.log" >&2; exit 1; }
  rm -rf "$download" "$apt"
}

main() {
  install_build_packages
  local version
  version="$(dpkg-query -W -f='${source:Version}' libavcodec-dev 2>/dev/null)" ||
    { echo "error: libavcodec-dev is not installed: run scripts/setup.sh first" >&2; exit 1; }
  local hash prefix
  hash="$(printf '%s\n' "$version" "${CONFIG[@]}" | sha256sum | cut -c1-12)"
  prefix="$DEPS/ffmpeg-pack/${version#*:}-$hash"
  if [ -f "$prefix/.done" ]; then
    echo "$prefix"
    return
  fi
  local work="$DEPS/ffmpeg-pack/build-$hash" start=$SECONDS
  rm -rf "$work" "$prefix" && mkdir -p "$work"
  log "fetching Debian's ffmpeg $version source"
  fetch_source "$version" "$work/src"
  log "configuring and building (once; cached in $prefix)"
  (cd "$work/src" && ./configure --prefix="$prefix" "${CONFIG[@]}" >"$work/configure.log" 2>&1) ||
    { tail -30 "$work/configure.log" >&2; exit 1; }
  (cd "$work/src" && make -j "$(nproc)" >"$work/make.log" 2>&1 && make install >>"$work/make.log" 2>&1) ||
    { tail -30 "$work/make.log" >&2; exit 1; }
  # Relocatable pkg-config files: .deps may be reached through another path (a symlink).
  sed -i -e 's|^prefix=.*|prefix=${pcfiledir}/../..|' -e 's|^libdir=.*|libdir=${prefix}/lib|' \
    -e 's|^includedir=.*|includedir=${prefix}/include|' "$prefix"/lib/pkgconfig/*.pc
  rm -rf "$work"
  touch "$prefix/.done"
  log "built in $((SECONDS - start)) s: $prefix"
  echo "$prefix"
}

main "$@"
