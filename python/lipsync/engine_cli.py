"""Finding and calling the C++ `lipsync` command from Python."""
import json
import os
import subprocess

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class EngineNotFound(Exception):
    pass


class EngineError(Exception):
    """The `lipsync` command failed or printed something other than the expected JSON."""


def find_engine(explicit=None):
    """The `lipsync` binary: --engine, else $LIPSYNC_BIN, else build/tools/lipsync/lipsync."""
    if explicit:
        if os.path.isfile(explicit) and os.access(explicit, os.X_OK):
            return explicit
        raise EngineNotFound(f"C++ engine not found at --engine {explicit}")
    for candidate in (os.environ.get("LIPSYNC_BIN"),
                      os.path.join(REPO, "build", "tools", "lipsync", "lipsync")):
        if candidate and os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    raise EngineNotFound("C++ engine not found; pass --engine PATH (or set LIPSYNC_BIN, or build "
                         "it with `make build`)")


def run_json(cmd, accepted_codes=(0,)):
    """Runs `cmd`, returns its stdout parsed as JSON; EngineError with its stderr otherwise."""
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True)
    except OSError as e:
        raise EngineError(f"cannot run {cmd[0]}: {e}") from None
    if proc.returncode not in accepted_codes:
        msg = proc.stderr.strip() or proc.stdout.strip() or f"exit code {proc.returncode}"
        raise EngineError(f"`lipsync {cmd[1]}` failed: {msg}")
    try:
        return json.loads(proc.stdout)
    except json.JSONDecodeError:
        raise EngineError(f"`lipsync {cmd[1]}` printed no JSON: {proc.stdout[:200]!r}") from None


def check(engine, model, inputs, expected, tolerance, threads=0, reference=None,
          error_ratio=None):
    """Runs `lipsync check`; returns its JSON result. `inputs` maps input names to .npy paths.
    With `reference` (a higher-precision run) the engine is judged by its distance to it against
    `expected`'s own (see `lipsync check --reference`). Exit code 1 (outside the bound) is a
    result, not an error."""
    cmd = [engine, "check", "--model", model, "--expect", expected, "--tolerance",
           str(tolerance), "--json", "--threads", str(threads)]
    if reference is not None:
        cmd += ["--reference", reference]
    if error_ratio is not None:
        cmd += ["--error-ratio", str(error_ratio)]
    for name, path in inputs.items():
        cmd += ["--input", f"{name}={path}"]
    return run_json(cmd, accepted_codes=(0, 1))


def input_names(engine, model):
    """The model's input names in order, as the engine reads them."""
    info = run_json([engine, "info", "--model", model, "--json"])
    return [t["name"] for t in info["inputs"]]
