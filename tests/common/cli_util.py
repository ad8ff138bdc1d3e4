"""Test helpers shared across test folders: running the `lipsync` command (natively or through
Wine) and checking its exit status, and reading a PNG's size."""
import struct
import subprocess


def run_checked(command, args, name, check=True, timeout=600, cwd=None, encoding=None):
    """Runs `command` (a list: the program and what comes before `args`) with `args` and returns
    the finished process. With `check`, a non-zero exit fails the test with `name`, the arguments
    and both outputs. `encoding` None decodes the outputs in the locale's encoding; given, bytes
    it cannot decode are replaced."""
    proc = subprocess.run([*command, *args], capture_output=True, text=True, timeout=timeout,
                          cwd=cwd, encoding=encoding, errors="replace" if encoding else None)
    if check and proc.returncode != 0:
        raise AssertionError(f"{name} {' '.join(args)} failed ({proc.returncode}):\n"
                             f"{proc.stdout}\n{proc.stderr}")
    return proc


def png_size(path):
    """(width, height) from a PNG file's header."""
    with open(path, "rb") as f:
        head = f.read(24)
    assert head[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG file"
    return struct.unpack(">II", head[16:24])
