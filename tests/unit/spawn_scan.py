#!/usr/bin/env python3
"""Fails, naming file:line, where the library (C++ under src/) starts a program of its own.

Starting programs is the platform layer's (src/core/platform*) to implement and the program's
(tools/) to decide: the library only calls what a program gives it, such as a CheckpointExporter.
Outside the platform layer, src/ may not call RunAndWait, RunInPlace or DefaultPython, nor name a
Python interpreter (python, python3, python.exe) or PYTHONPATH in a string literal. Comments are
not read.

    spawn_scan.py REPO_ROOT [FILE...]   (files: scan these instead of src/)
"""
import pathlib
import re
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from posix_scan import run_scan, strip  # noqa: E402

PLATFORM = {"src/core/platform.h", "src/core/platform_posix.cc", "src/core/platform_windows.cc"}

CALLS = re.compile(r"(?<![\w.>])(?:(?:lipsync::)?platform::)?(RunAndWait|RunInPlace|DefaultPython)"
                   r"\s*\(")
PYTHON = re.compile(r"(?<![\w-])(python[\d.]*(?:\.exe)?|PYTHONPATH)(?![\w])")


def scan(root, rel):
    text = (root / rel).read_text(encoding="utf-8", errors="replace")
    literals = []
    code = strip(text, literals).splitlines()
    problems = []
    for number, bare in enumerate(code, start=1):
        for call in CALLS.finditer(bare):
            problems.append(f"{rel}:{number}: calls {call.group(1)}()")
    for number, inside in literals:
        found = PYTHON.search(inside)
        if found:
            problems.append(f"{rel}:{number}: names {found.group(1)} in a string")
    return problems


def main():
    run_scan("spawn_scan", ("src",), PLATFORM, scan,
             "places where the library starts a program: a program (tools/) decides that and "
             "passes the library a hook instead",
             "none under src/ starts a program outside the platform layer")


if __name__ == "__main__":
    main()
