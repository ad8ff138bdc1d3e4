# Shell helpers for the benchmarks that start `lipsync serve` (sourced, not run).
# shellcheck shell=bash

# free_port: a TCP port free on 127.0.0.1 now.
free_port() {
  "${PY:-python3}" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# wait_ready PORT PID: until the server's /readyz on PORT answers 200; fails when the server (PID)
# exits first or after five minutes.
wait_ready() {
  local port="$1" pid="$2"
  for _ in $(seq 1 1200); do
    if "${PY:-python3}" -c "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:$port/readyz', timeout=1)" \
      2>/dev/null; then
      return 0
    fi
    kill -0 "$pid" 2>/dev/null || return 1
    sleep 0.25
  done
  return 1
}
