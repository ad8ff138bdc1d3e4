#!/usr/bin/env python3
"""Fails, naming file:line, where C++ under src/ or tools/ reaches POSIX directly.

Only src/core/platform_posix.cc (and platform_windows.cc, for the Windows CRT's <malloc.h>) may: everything else goes through src/core/platform.h, so that
the product builds with MSVC and MinGW. Looks for POSIX-only headers, calls of POSIX-only
functions (comments and string literals aside) and Linux's /proc and /sys files.

    posix_scan.py REPO_ROOT [FILE...]   (files: scan these instead of src/ and tools/)
"""
import pathlib
import re
import sys

# The Windows side includes the Windows CRT's <malloc.h>; POSIX there would break the MinGW build.
ALLOWED = {"src/core/platform_posix.cc", "src/core/platform_windows.cc"}
SOURCES = (".cc", ".cpp", ".h", ".hpp", ".cu", ".cuh")

HEADERS = re.compile(
    r"#\s*include\s*<("
    r"unistd\.h|fcntl\.h|dirent\.h|dlfcn\.h|pthread\.h|sched\.h|spawn\.h|poll\.h|signal\.h|"
    r"csignal|malloc\.h|termios\.h|netdb\.h|pwd\.h|grp\.h|syslog\.h|libgen\.h|strings\.h|"
    r"execinfo\.h|semaphore\.h|sys/[\w/]+\.h|netinet/[\w/]+\.h|arpa/[\w/]+\.h)>")

CALLS = re.compile(
    r"(?<![\w.>:])(?:::)?("
    r"fork|vfork|exec[lv]p?e?|execvpe|posix_spawnp?|posix_spawn_\w+|posix_spawnattr_\w+|"
    r"pipe2?|poll|select|sigaction|sigprocmask|sigwait|sigtimedwait|sigemptyset|sigaddset|"
    r"signal|kill|raise|waitpid|wait|getpid|getppid|gettid|realpath|setenv|unsetenv|putenv|"
    r"strerror_r|mkstemp|mkdtemp|mmap|munmap|isatty|fileno|dup2?|sysconf|sched_\w+|pthread_\w+|"
    r"getrusage|setpriority|nice|opendir|readdir|closedir|usleep|nanosleep|lstat|fstat|stat|"
    r"mkdir|rmdir|unlink|symlink|readlink|chmod|chown|getuid|geteuid|gethostname|mallopt|"
    r"malloc_trim|dlopen|dlsym|dlclose|dlerror|dladdr|S_IS\w+|WIFEXITED|WEXITSTATUS)\s*\(")
GLOBALS = re.compile(r"(?<![\w.>:])(environ)\b")

LINUX_FILES = re.compile(r'"/(proc|sys)/')


def strip(text, literals=None):
    """The text with comments and the insides of string and character literals blanked (newlines
    kept, so line numbers stay). `literals`, when a list, gets (line, inside) of each literal."""
    out, i, n = [], 0, len(text)

    def keep(start, inside):
        if literals is not None:
            literals.append((text.count("\n", 0, start) + 1, inside))

    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            j = n if j < 0 else j
            out.append(" " * (j - i))
            i = j
        elif text.startswith("/*", i):
            j = text.find("*/", i + 2)
            j = n if j < 0 else j + 2
            out.append(re.sub(r"[^\n]", " ", text[i:j]))
            i = j
        elif text.startswith('R"', i) and (i == 0 or not (text[i - 1].isalnum() or text[i - 1] == "_")):
            d_end = text.find("(", i + 2)
            close = ")" + text[i + 2:d_end] + '"'
            j = text.find(close, d_end)
            j = n if j < 0 else j + len(close)
            keep(i, text[d_end + 1:j - len(close)])
            out.append('"' + re.sub(r"[^\n]", " ", text[i + 1:j - 1]) + '"')
            i = j
        elif c in "\"'":
            j = i + 1
            while j < n and text[j] != c and text[j] != "\n":
                j += 2 if text[j] == "\\" else 1
            keep(i, text[i + 1:min(j, n)])
            out.append(c + " " * (min(j, n) - i - 1) + (c if j < n else ""))
            i = j + 1
        else:
            out.append(c)
            i += 1
    return "".join(out)


def scan(root, rel):
    text = (root / rel).read_text(encoding="utf-8", errors="replace")
    code = strip(text).splitlines()
    problems = []
    for number, (raw, bare) in enumerate(zip(text.splitlines(), code), start=1):
        found = HEADERS.search(raw) if raw.lstrip().startswith("#") else None
        if found:
            problems.append(f"{rel}:{number}: includes <{found.group(1)}>")
        for call in CALLS.finditer(bare):
            problems.append(f"{rel}:{number}: calls {call.group(1)}()")
        for name in GLOBALS.finditer(bare):
            problems.append(f"{rel}:{number}: uses {name.group(1)}")
        if LINUX_FILES.search(raw) and not raw.lstrip().startswith("//"):
            problems.append(f"{rel}:{number}: reads Linux's /{LINUX_FILES.search(raw).group(1)}")
    return problems


def run_scan(name, tops, allowed, scan_file, failure, success):
    """The scanners' command line: REPO_ROOT [FILE...]. Scans FILE... (or every C++ file under
    `tops`) except `allowed`, prints each problem, and exits 1 with `failure` if there is one."""
    root = pathlib.Path(sys.argv[1]).resolve()
    if len(sys.argv) > 2:
        files = [pathlib.Path(f).resolve().relative_to(root).as_posix() for f in sys.argv[2:]]
    else:
        files = sorted(p.relative_to(root).as_posix()
                       for top in tops for p in (root / top).rglob("*")
                       if p.suffix in SOURCES and p.is_file())
    if not files:
        sys.exit(f"{name}: no C++ files found under {' and '.join(t + '/' for t in tops)}")
    problems = [p for rel in files if rel not in allowed for p in scan_file(root, rel)]
    for p in problems:
        print(p)
    if problems:
        print(f"{len(problems)} {failure}", file=sys.stderr)
        sys.exit(1)
    print(f"{name}: {len(files)} files, {success}")


def main():
    run_scan("posix_scan", ("src", "tools"), ALLOWED, scan,
             "POSIX-only uses outside src/core/platform_posix.cc: move them behind "
             "src/core/platform.h",
             "none reaches POSIX outside src/core/platform_posix.cc")


if __name__ == "__main__":
    main()
