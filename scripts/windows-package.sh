#!/usr/bin/env bash
# Packs the Windows build into a zip a Windows user unpacks and runs setup.ps1 from:
#   scripts/windows-package.sh build-windows out/lipsync-windows-x64.zip
# lipsync.exe, the DLLs it loads (ONNX Runtime with DirectML, MinGW's thread and OpenMP runtimes),
# the Python package that makes the demo model, setup.ps1 and README-windows.txt.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD="${1:?usage: windows-package.sh BUILD_DIR OUT.zip}"
OUT="${2:?usage: windows-package.sh BUILD_DIR OUT.zip}"
BIN="$BUILD/bin"
[ -f "$BIN/lipsync.exe" ] || { echo "error: $BIN/lipsync.exe not found: run make windows-build" >&2; exit 1; }

STAGE="$(mktemp -d)"
trap 'rm -rf "$STAGE"' EXIT
PKG="$STAGE/lipsync-windows-x64"
mkdir -p "$PKG/python"
# dxcompiler.dll and dxil.dll serve ONNX Runtime's WebGPU provider, which lipsync does not use.
for f in lipsync.exe onnxruntime.dll DirectML.dll libwinpthread-1.dll libgomp-1.dll \
  libgcc_s_seh-1.dll; do
  cp "$BIN/$f" "$PKG/"
done
cp -r "$ROOT/python/lipsync" "$PKG/python/"
find "$PKG/python" -name '__pycache__' -prune -exec rm -rf {} +
cp "$ROOT/deploy/windows/setup.ps1" "$ROOT/deploy/windows/README-windows.txt" "$PKG/"
# Windows line endings for the text files Notepad and PowerShell open.
sed -i 's/$/\r/' "$PKG/README-windows.txt" "$PKG/setup.ps1"

mkdir -p "$(dirname "$OUT")"
OUT_ABS="$(cd "$(dirname "$OUT")" && pwd)/$(basename "$OUT")"
rm -f "$OUT_ABS"
(cd "$STAGE" && python3 - "$OUT_ABS" <<'PY'
import os, sys, zipfile
with zipfile.ZipFile(sys.argv[1], "w", zipfile.ZIP_DEFLATED) as z:
    for base, _, files in os.walk("lipsync-windows-x64"):
        for f in sorted(files):
            z.write(os.path.join(base, f))
PY
)
echo "wrote $OUT ($(du -h "$OUT_ABS" | cut -f1))"
