"""The shared libraries a packed program needs on a machine that has only the GPU driver
(bench/gpu_render_bench.sh pack): copies the program's library closure into a folder, except the
ones every Linux has (libc, libm, libstdc++, libgcc_s, the loader, the driver's libcuda), and puts
a small placeholder in place of each library named with --placeholder.

FFmpeg's libraries name dozens of codec, network and hardware libraries (x265, AV1, SVG, TLS,
VA-API, ...) that render does not use but that the loader must find, and those bring in a hundred
more. A placeholder has the same soname and defines every symbol (with its version) that the
carried files take from the real library, so loading and binding succeed; its functions return 0
and its data are zeroes. So a placeholder only fits a library whose calls on the program's path
take 0 as "not there": on render's path (audio through FFmpeg's own decoders, H.264 through
libx264, AAC through FFmpeg's own encoder) FFmpeg only asks libaom, libvpx and libx265 for their
capabilities when it lists its codecs (0: none) and libopenmpt whether it knows the input's format
(0: no). libgme answers that question with a string that FFmpeg reads, so it is carried.

    python3 bench/gpu_pack_libs.py --out LIBDIR [--placeholder SONAME ... --] PROGRAM...
"""
import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile

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


def dynamic_symbols(path):
    """(name, version or None, default version?, type, size, defined?) of each dynamic symbol."""
    out = []
    for line in run("readelf", "--dyn-syms", "-W", path).splitlines():
        f = line.split()
        if len(f) < 8 or not f[0].rstrip(":").isdigit():
            continue
        size, kind, bind, ndx, full = f[2], f[3], f[4], f[6], f[7]
        if bind == "LOCAL" or not full:
            continue
        name, _, version = full.partition("@")
        default = version.startswith("@")
        version = version.lstrip("@") or None
        size = int(size, 0) if size.startswith("0x") else int(size)
        out.append((name, version, default, kind, size, ndx != "UND"))
    return out


def version_names(path):
    """The version nodes a library defines (without its base node, the soname)."""
    text = run("readelf", "-V", "-W", path)
    section = text.split(".gnu.version_d", 1)
    if len(section) < 2:
        return []
    section = section[1].split(".gnu.version_r", 1)[0]
    names = re.findall(r"Rev: \d+\s+Flags: (\S+)\s+Index: \d+\s+Cnt: \d+\s+Name: (\S+)", section)
    return [name for flags, name in names if "BASE" not in flags]


def placeholder(real, soname, wanted, out_dir):
    """Writes out_dir/soname: defines every symbol (each of its versions) of `real` whose name
    some carried file imports. Returns how many it defines."""
    symbols = [s for s in dynamic_symbols(real) if s[5] and s[0] in wanted]
    nodes = version_names(real)
    asm = [".text", "lipsync_placeholder_zero:", "  xor %eax, %eax", "  ret"]
    for i, (name, version, default, kind, size, _) in enumerate(symbols):
        label = f"lipsync_placeholder_{i}" if version else name
        size = max(size, 1)
        if kind == "TLS":
            asm += ['.section .tbss,"awT",@nobits', ".balign 16", f".type {label}, @tls_object"]
        elif kind == "OBJECT":
            asm += [".data", ".balign 16", f".type {label}, @object"]
        else:  # functions return 0
            asm += [".text", f".globl {label}", f".type {label}, @function", f"{label}:",
                    "  jmp lipsync_placeholder_zero"]
        if kind in ("TLS", "OBJECT"):
            asm += [f".globl {label}", f".size {label}, {size}", f"{label}:", f"  .zero {size}"]
        if version:
            asm.append(f".symver {label}, {name}{'@@' if default else '@'}{version}")
    with tempfile.TemporaryDirectory(prefix="lipsync-placeholder-") as tmp:
        source = os.path.join(tmp, "placeholder.s")
        script = os.path.join(tmp, "versions.map")
        with open(source, "w") as f:
            f.write("\n".join(asm) + "\n")
        with open(script, "w") as f:
            f.write("".join(f"{node} {{ }};\n" for node in nodes))
        cmd = ["cc", "-shared", "-nostdlib", f"-Wl,-soname,{soname}", "-o",
               os.path.join(out_dir, soname), source]
        if nodes:
            cmd.insert(3, f"-Wl,--version-script={script}")
        subprocess.run(cmd, check=True)
    return len(symbols)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True, help="folder for the libraries")
    p.add_argument("--placeholder", nargs="*", default=[], help="sonames to replace")
    p.add_argument("programs", nargs="+")
    args = p.parse_args()
    os.makedirs(args.out, exist_ok=True)
    where = locations(args.programs)
    stand_in = set(args.placeholder)
    carried, todo, seen = [], list(args.programs), set()
    while todo:  # the closure, stopping at placeholders and at what every Linux has
        path = todo.pop()
        for soname in needed(path):
            if soname in seen or SYSTEM.match(soname) or soname in stand_in:
                continue
            seen.add(soname)
            if soname not in where:
                sys.exit(f"error: {path} needs {soname}, which is not on this machine")
            carried.append(soname)
            todo.append(where[soname])
    for soname in carried:
        shutil.copy(where[soname], os.path.join(args.out, soname))
    # What the carried files and the programs take from other libraries.
    wanted = set()
    for path in [*args.programs, *(where[s] for s in carried)]:
        wanted |= {s[0] for s in dynamic_symbols(path) if not s[5]}
    used = sorted(s for s in stand_in if s in where and any(
        s in needed(path) for path in [*args.programs, *(where[c] for c in carried)]))
    for soname in used:
        count = placeholder(where[soname], soname, wanted, args.out)
        print(f"placeholder {soname} ({count} symbols)")
    print(f"{len(carried)} libraries carried, {len(used)} placeholders")


if __name__ == "__main__":
    main()
