"""Lists every skip of the last ctest run with its reason, so that none goes unseen: whole tests
that ctest reported as skipped, and single cases skipped inside a test that passed. It reads the
tests' output from ctest's log: pytest's short summary (`SKIPPED [n] file:line: reason`, which
-rs in pytest.ini turns on) and GoogleTest's `file:line: Skipped` message before its
`[  SKIPPED ]` line. ctest runs it after the tests (CTEST_CUSTOM_POST_TEST in the build's
CTestCustom.cmake), so `make test` ends with the list. It never fails the run.

    python3 tests/ctest_skips.py build/Testing/Temporary
reads LastTest.log.tmp there (the log of the run under way, which ctest renames when it ends) or
else LastTest.log.
"""
import os
import re
import sys

TEST_START = re.compile(r"^\d+/\d+ Testing: (.+)$")
PYTEST_SKIP = re.compile(r"^SKIPPED \[\d+\] (.+)$")
GTEST_MESSAGE = re.compile(r"^\S+:\d+: Skipped$")
GTEST_SKIP = re.compile(r"^\[  SKIPPED \] (\S+)")


def skips_in(output):
    """(case, reason) for each skip in one test's output."""
    found, message = [], None
    for line in output.splitlines():
        m = PYTEST_SKIP.match(line)
        if m:
            found.append(("", m.group(1)))
            continue
        if GTEST_MESSAGE.match(line):
            message = []
            continue
        m = GTEST_SKIP.match(line)
        if m:
            if message is not None:  # the summary repeats the name without a message
                found.append((m.group(1), " ".join(message).strip() or "no reason given"))
            message = None
            continue
        if message is not None:
            message.append(line.strip())
    return found


def tests_in(log):
    """(test name, its output) for each test in a LastTest.log."""
    tests, name, lines, inside = [], None, [], False
    for line in log.splitlines():
        m = TEST_START.match(line)
        if m:
            name, lines, inside = m.group(1), [], False
        elif name and line == "Output:":
            inside = None  # the next line is a rule
        elif inside is None:
            inside = True
        elif inside and line == "<end of output>":
            tests.append((name, "\n".join(lines)))
            name, inside = None, False
        elif inside:
            lines.append(line)
    return tests


def main(folder):
    path = os.path.join(folder, "LastTest.log.tmp")
    if not os.path.exists(path):
        path = os.path.join(folder, "LastTest.log")
    try:
        with open(path, errors="replace") as f:
            log = f.read()
    except OSError as e:
        print(f"skip report: cannot read {path}: {e}")
        return 0
    rows = [(test, case, reason) for test, output in tests_in(log)
            for case, reason in skips_in(output)]
    if not rows:
        print("Skips: none.")
        return 0
    print(f"Skips ({len(rows)}), with their reasons:")
    for test, case, reason in sorted(rows):
        label = test if not case or case in test else f"{test} ({case})"
        print(f"  {label}: {reason}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "Testing/Temporary"))
