#!/usr/bin/env bash
# Runs a Windows program under Wine for the Windows build's tests: a private, writable prefix
# (WINEPREFIX, default build-windows/wineprefix) made on first use, no Wine debug output, and the
# program's exit status passed through.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export WINEPREFIX="${WINEPREFIX:-$ROOT/build-windows/wineprefix}"
export WINEDEBUG="${WINEDEBUG:--all}"
export WINEARCH=win64
# No display: keep Wine from looking for one, and from offering to install Mono or Gecko.
export DISPLAY=
export WINEDLLOVERRIDES="${WINEDLLOVERRIDES:-mscoree,mshtml=}"
WINE="$(command -v wine64 || command -v wine || true)"
[ -x /usr/lib/wine/wine64 ] && WINE=/usr/lib/wine/wine64
if [ -z "$WINE" ]; then
  echo "error: Wine is not installed (Debian: apt-get install wine64)" >&2
  exit 127
fi
mkdir -p "$WINEPREFIX"
if [ ! -f "$WINEPREFIX/system.reg" ]; then
  # The first start makes the prefix (tens of seconds); a lock keeps parallel tests from racing it.
  exec 9>"$WINEPREFIX.lock"
  flock 9
  [ -f "$WINEPREFIX/system.reg" ] || "$WINE" wineboot --init >/dev/null 2>&1 || true
  flock -u 9
fi
exec "$WINE" "$@"
