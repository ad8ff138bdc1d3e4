#!/bin/sh
# Fails when the engine library asks for a media, audio or server library, or when a program that
# only runs the engine loads one: the engine (lipsync_engine, src/CMakeLists.txt) links none of
# FFmpeg, OpenCV, FFTW or gRPC.
# Usage: engine_links.sh LINK_LIBRARIES_FILE BINARY...
#   LINK_LIBRARIES_FILE: lipsync_engine's link libraries, one line, ';'-separated (CMake writes it)
list_file=$1
shift
status=0
libraries=$(tr ';' '\n' <"$list_file")
if [ -z "$libraries" ]; then
  echo "$list_file: no link libraries read" >&2
  exit 2
fi
bad=$(printf '%s\n' "$libraries" | grep -Ei 'opencv|fftw|ffmpeg|avcodec|avformat|grpc' || true)
if [ -n "$bad" ]; then
  echo "lipsync_engine links libraries the engine must not need:" >&2
  printf '  %s\n' $bad >&2
  status=1
fi
for bin in "$@"; do
  needed=$(readelf -d "$bin" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p')
  if [ -z "$needed" ]; then
    echo "$bin: no NEEDED entries read" >&2
    exit 2
  fi
  bad=$(printf '%s\n' "$needed" |
    grep -E '^lib(av(codec|format|util|filter|device)|sw(scale|resample)|opencv_|fftw3|grpc|gpr|absl_)' || true)
  if [ -n "$bad" ]; then
    echo "$bin loads libraries the engine must not need:" >&2
    printf '  %s\n' $bad >&2
    status=1
  fi
done
[ $status -eq 0 ] && echo "the engine links none of FFmpeg, OpenCV, FFTW, gRPC"
exit $status
