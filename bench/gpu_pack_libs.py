"""The shared libraries a packed program needs on a machine that has only the GPU driver
(bench/gpu_product.sh pack): copies the programs' whole library closure, each library the real
file this machine's loader resolves, into a folder, except the ones every Linux has (libc, libm,
libstdc++, libgcc_s, the loader, the driver's libcuda), and writes a manifest: each library's
size, the Debian package it comes from and the file that needs it.

The closure stays small because the programs are linked with --as-needed and against small
libraries: FFmpeg static and configured for lipsync's formats only (scripts/build_ffmpeg_pack.sh),
image files through libpng and TurboJPEG rather than OpenCV's codecs.

    python3 bench/gpu_pack_libs.py --out LIBDIR [--manifest FILE] PROGRAM...
"""
import argparse
import os
import re
import shutil
import subprocess
import sys

# Not carried: what every Linux has, and the driver's own library.
SYSTEM = re.compile(r"^(linux-vdso|ld-linux[^ ]*|libc|libm|libstdc\+\+|libgcc_s|libpthread|libdl|"
                    r"librt|libcuda)\.so")


def run(*cmd):
    return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout


def needed(path):
    return re.findall(r"\(NEEDED\)\s+Shared library: \[([^]]+)\]", run("readelf", "-dW", path))


def locations(programs):
    """soname -> path, as the loader resolves them on this machine."""
    found = {}
    for program in programs:
        for line in run("ldd", program).splitlines():
            m = re.match(r"\s*(\S+) => (/\S+)", line)
            if m:
                found.setdefault(m.group(1), m.group(2))
    return found


def origin(path):
    """The Debian package that installed `path`, or the .deps folder it came from (ONNX
    Runtime, scripts/setup.sh)."""
    for candidate in (path, os.path.realpath(path)):
        result = subprocess.run(["dpkg", "-S", candidate], capture_output=True, text=True)
        if result.returncode == 0:
            return result.stdout.split(":")[0]
    folder = os.path.dirname(path)
    return ".deps/" + folder.split("/.deps/", 1)[1] if "/.deps/" in folder else folder


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True, help="folder for the libraries")
    p.add_argument("--manifest", help="file for the list of libraries carried")
    p.add_argument("programs", nargs="+")
    args = p.parse_args()
    os.makedirs(args.out, exist_ok=True)
    # lipsync first, so that the manifest names it as what needs the libraries it shares.
    programs = sorted(args.programs, key=lambda p: os.path.basename(p) != "lipsync")
    where = locations(programs)
    carried, needed_by, todo, seen = [], {}, list(programs), set()
    while todo:  # the closure, stopping at what every Linux has
        path = todo.pop(0)
        for soname in needed(path):
            if soname in seen or SYSTEM.match(soname):
                continue
            seen.add(soname)
            if soname not in where:
                sys.exit(f"error: {path} needs {soname}, which is not on this machine")
            carried.append(soname)
            needed_by[soname] = os.path.basename(path)
            todo.append(where[soname])
    rows = []
    for soname in carried:
        shutil.copy(where[soname], os.path.join(args.out, soname))
        size = os.path.getsize(where[soname])
        rows.append((size, soname, origin(where[soname]), needed_by[soname]))
    if args.manifest:
        with open(args.manifest, "w") as f:
            f.write(f"{'library':<50} {'KB':>6}  {'from':<24} needed by\n")
            for size, soname, package, by in sorted(rows, reverse=True):
                f.write(f"{soname:<50} {size // 1024:>6}  {package:<24} {by}\n")
    total = sum(r[0] for r in rows)
    print(f"{len(carried)} libraries carried ({total / 1e6:.1f} MB), no placeholders")


if __name__ == "__main__":
    main()
