"""Finding and calling the C++ `lipsync` command from Python."""
import json
import os
import subprocess

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class EngineNotFound(Exception):
    pass


def find_engine(explicit=None):
    """The `lipsync` binary: --engine, else $LIPSYNC_BIN, else build/tools/lipsync/lipsync."""
    for candidate in (explicit, os.environ.get("LIPSYNC_BIN"),
                      os.path.join(REPO, "build", "tools", "lipsync", "lipsync")):
        if candidate and os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    raise EngineNotFound("C++ engine not found: build it (make build), or pass --engine PATH, "
                         "or set LIPSYNC_BIN")


def check(engine, model, inputs, expected, tolerance, threads=0):
    """Runs `lipsync check`; returns its JSON result. `inputs` maps input names to .npy paths."""
    cmd = [engine, "check", "--model", model, "--expect", expected, "--tolerance",
           str(tolerance), "--json", "--threads", str(threads)]
    for name, path in inputs.items():
        cmd += ["--input", f"{name}={path}"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode not in (0, 1):
        raise RuntimeError(f"lipsync check failed: {proc.stderr.strip() or proc.stdout.strip()}")
    return json.loads(proc.stdout)
