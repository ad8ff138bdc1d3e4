"""The table of bench/gpu_server_bench.sh: one row per measured call pattern, from the JSON files
`lipsync loadtest` and `lipsync compare-servers` wrote into the results folder.

    python3 bench/gpu_server_table.py results/server
"""
import csv
import json
import os
import sys


def load(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def gpu_stats(path):
    """Median utilisation (%) and peak memory (MiB) of an nvidia-smi sampling file."""
    util, mem = [], []
    try:
        with open(path) as f:
            for row in csv.reader(f):
                if len(row) >= 3:
                    util.append(float(row[1]))
                    mem.append(float(row[2]))
    except (OSError, ValueError):
        return None, None
    if not util:
        return None, None
    util.sort()
    return util[len(util) // 2], max(mem)


def main():
    results = sys.argv[1]
    failed = False
    frames = load(os.path.join(results, "frames_monolithic.json"))
    if frames:
        worst = frames.get("worst", {})
        print(f"frames, monolithic float32 against ONNX Runtime CPU (JPEG frames): "
              f"{frames.get('frames_compared', '?')} frames, worst mean abs "
              f"{worst.get('mean_abs', '?')}, worst max abs {worst.get('max_abs', '?')}, "
              f"over tolerance {frames.get('frames_over_tolerance', '?')}")
    memory = load(os.path.join(results, "memory.json"))
    if memory:
        extra = memory["gpu_mib_after"] - memory["gpu_mib_before"]
        per = extra / max(memory["avatars"], 1)
        print(f"{memory['avatars']} avatars loaded in {memory['load_s']} s; GPU memory "
              f"{memory['gpu_mib_before']} -> {memory['gpu_mib_after']} MiB "
              f"({per:.0f} MiB per avatar, the server's own share included)")
    print()
    print(f"{'call':<40} {'frames/s':>10} {'p50 ms':>9} {'p99 ms':>9} {'errors':>7}")
    for name, label in [("overhead_b1", "lipsync.v1 Infer batch 1, 1 client"),
                        ("monolithic_b25_c1", "monolithic batch 25, 1 client"),
                        ("monolithic_b25_c4", "monolithic batch 25, 4 clients"),
                        ("lipsyncsrv_b8_c4", "lipsyncsrv batch 8, 4 clients")]:
        j = load(os.path.join(results, name + ".json"))
        if not j:
            print(f"{label:<40} {'FAILED':>10}")
            failed = True
            continue
        errors = j["requests_total"] - j["requests_ok"]
        failed |= j["requests_ok"] == 0
        lat = j["latency_ms"]
        print(f"{label:<40} {j['frames_per_s']:>10.1f} {lat['median']:>9.2f} {lat['p99']:>9.2f} "
              f"{errors:>7}")
        if errors and j.get("first_error"):
            print(f"  first error: {j['first_error'][:150]}")
        if name == "overhead_b1" and "beyond_engine_ms" in j:
            b = j["beyond_engine_ms"]
            print(f"{'  round trip minus engine time':<40} {'':>10} {b['median']:>9.3f} "
                  f"{b['p99']:>9.3f}")
    print()
    print(f"{'live sessions':>13} {'frames/s':>10} {'p50 ms':>9} {'p99 ms':>9} {'max ms':>9} "
          f"{'kept up':>9} {'failed':>7} {'GPU util %':>11} {'GPU MiB':>9}")
    best = 0
    names = sorted((f for f in os.listdir(results) if f.startswith("sessions_")
                    and f.endswith(".json")), key=lambda f: int(f[9:-5]))
    for f in names:
        n = int(f[9:-5])
        j = load(os.path.join(results, f))
        if not j:
            print(f"{n:>13} {'FAILED':>10}")
            failed = True
            continue
        util, mem = gpu_stats(os.path.join(results, f"gpu_sessions_{n}.csv"))
        lat = j["latency_ms"]
        all_kept = j["kept_up"] == j["sessions"] and j["failed"] == 0
        if all_kept and lat["p99"] <= 150:
            best = max(best, n)
        print(f"{n:>13} {j['frames_per_s']:>10.1f} {lat['median']:>9.1f} {lat['p99']:>9.1f} "
              f"{lat['max']:>9.1f} {str(j['kept_up']) + '/' + str(j['sessions']):>9} "
              f"{j['failed']:>7} {util if util is not None else '-':>11} "
              f"{mem if mem is not None else '-':>9}")
    print(f"largest count with every session kept up and p99 <= 150 ms: {best}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
