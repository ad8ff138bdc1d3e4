#!/usr/bin/env python3
"""`lipsync render` throughput against `lipsync bench` for the same model, batch and threads,
alternated round by round in one run, with render's per-stage times; and render's peak memory for
a short and a long speech (it should not grow with the length).

    bench/render_vs_bench.py [--rounds 3] [--batches 1,4] [--threads 2] [--seconds 20]
                             [--variant 'LABEL=RENDER FLAGS' ...]
needs `make demo` (models/demo.onnx, models/demo_avatar, models/demo_speech.wav). Writes
out/perf/render_vs_bench.json and prints the tables of docs/PERFORMANCE.md.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))


def run_json(cmd):
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{proc.stderr}")
    return proc


def long_speech(speech, seconds, out):
    """The demo speech repeated to `seconds` (ffmpeg's stream loop), as 16 kHz WAV."""
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-stream_loop", "-1", "-i", speech, "-t",
                    str(seconds), "-ar", "16000", "-ac", "1", out], check=True)
    return out


def bench_fps(binary, model, batch, threads, duration):
    with tempfile.NamedTemporaryFile(suffix=".json") as f:
        run_json([binary, "bench", "--model", model, "--batch", str(batch), "--threads",
                  str(threads), "--duration", str(duration), "--warmup", "3", "--json", f.name])
        result = json.load(open(f.name))["results"][0]
    return result["fps"], result["latency_ms"]


def render(binary, avatar, model, audio, batch, threads, out, flags=()):
    # --model: the same file as bench's (the demo avatar's own UNet is the trained demo model).
    proc = run_json([binary, "render", "--avatar", avatar, "--model", model, "--audio", audio,
                     "--out", out, "--batch", str(batch), "--threads", str(threads), "--json",
                     "--quiet", *flags])
    return json.loads(proc.stdout)


def parse_variants(specs):
    """'LABEL=FLAGS' strings -> [(label, [flag, ...])]; none given: render's defaults."""
    variants = []
    for spec in specs or ["default="]:
        label, _, flags = spec.partition("=")
        variants.append((label, flags.split()))
    return variants


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bin", default=os.path.join(ROOT, "build/tools/lipsync/lipsync"))
    parser.add_argument("--models", default=os.path.join(ROOT, "models"))
    parser.add_argument("--batches", default="1,4")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--variant", action="append",
                        help="LABEL=FLAGS: a render configuration to measure (repeatable), e.g. "
                             "'nice10=--background-nice 10'; default: render's defaults")
    parser.add_argument("--seconds", type=float, default=20.0, help="speech per render")
    parser.add_argument("--bench-duration", type=float, default=15.0)
    parser.add_argument("--long-seconds", type=float, default=120.0,
                        help="speech for the memory check (0: skip it)")
    parser.add_argument("--json", default=os.path.join(ROOT, "out/perf/render_vs_bench.json"))
    args = parser.parse_args()

    model = os.path.join(args.models, "demo.onnx")
    avatar = os.path.join(args.models, "demo_avatar")
    speech = os.path.join(args.models, "demo_speech.wav")
    os.makedirs(os.path.dirname(args.json), exist_ok=True)
    work = tempfile.mkdtemp(prefix="lipsync_render_bench_")
    audio = long_speech(speech, args.seconds, os.path.join(work, "speech.wav"))
    out = os.path.join(work, "out.mp4")
    batches = [int(b) for b in args.batches.split(",")]
    variants = parse_variants(args.variant)

    rows = {(b, n): {"bench": [], "render": [], "stages": [], "cpu_ms": []}
            for b in batches for n, _ in variants}
    for r in range(args.rounds):
        for b in batches:
            fps, _ = bench_fps(args.bin, model, b, args.threads, args.bench_duration)
            for n, flags in variants:
                summary = render(args.bin, avatar, model, audio, b, args.threads, out, flags)
                row = rows[(b, n)]
                row["bench"].append(fps)
                row["render"].append(summary["fps"])
                row["stages"].append(summary["stages"])
                row["cpu_ms"].append(1000 * summary["cpu_s"] / summary["frames"])
                print(f"round {r + 1} batch {b} {n}: bench {fps:.2f} frames/s, render "
                      f"{summary['fps']:.2f} frames/s ({summary['frames']} frames, "
                      f"{row['cpu_ms'][-1]:.1f} CPU ms/frame)", flush=True)

    report = {"threads": args.threads, "variants": dict(variants), "rounds": args.rounds, "speech_seconds": args.seconds,
              "batches": []}
    print("\n| batch | render variant | bench frames/s (median, min..max) | render frames/s "
          "(median, min..max) | render / bench | same-round ratios (median, min..max) | "
          "render CPU ms/frame |")
    print("|---|---|---|---|---|---|---|")
    keys = ("busy_ms_per_frame", "cpu_ms_per_frame", "starved_s", "blocked_s")
    for (b, n), row in rows.items():
        bench, rend = row["bench"], row["render"]
        ratio = statistics.median(rend) / statistics.median(bench)
        # Each round's render against the bench run just before it: robust to slow drifts of
        # the machine's speed that span several rounds.
        rounds = [r / b_ for r, b_ in zip(rend, bench)]
        print(f"| {b} | {n} | {statistics.median(bench):.2f} ({min(bench):.2f}..{max(bench):.2f})"
              f" | {statistics.median(rend):.2f} ({min(rend):.2f}..{max(rend):.2f}) | "
              f"{100 * ratio:.1f}% | {100 * statistics.median(rounds):.1f}% "
              f"({100 * min(rounds):.1f}..{100 * max(rounds):.1f}%) | "
              f"{statistics.median(row['cpu_ms']):.1f} |")
        stages = {}
        for round_stages in row["stages"]:
            for s in round_stages:
                stages.setdefault(s["name"], []).append(s)
        report["batches"].append({
            "batch": b, "variant": n, "bench_fps": bench, "render_fps": rend,
            "ratio_of_medians": ratio, "round_ratios": rounds, "render_cpu_ms_per_frame": row["cpu_ms"],
            "stages": {name: {k: statistics.median(x[k] for x in v) for k in keys}
                       for name, v in stages.items()}})
    print("\nrender stages, medians over the rounds: wall ms per frame busy (includes waiting for "
          "a core), the stage thread's CPU ms per frame, seconds starved for input and blocked "
          "on output:")
    print("| batch | variant | stage | busy ms/frame | CPU ms/frame | starved s | blocked s |")
    print("|---|---|---|---|---|---|---|")
    for entry in report["batches"]:
        for name, s in entry["stages"].items():
            print(f"| {entry['batch']} | {entry['variant']} | {name} | "
                  f"{s['busy_ms_per_frame']:.2f} | {s['cpu_ms_per_frame']:.2f} | "
                  f"{s['starved_s']:.2f} | {s['blocked_s']:.2f} |")

    if args.long_seconds > 0:
        memory = []
        for seconds in (args.seconds, args.long_seconds):
            wav = long_speech(speech, seconds, os.path.join(work, f"speech_{int(seconds)}.wav"))
            summary = render(args.bin, avatar, model, wav, batches[-1], args.threads, out, variants[0][1])
            memory.append({"speech_seconds": seconds, "frames": summary["frames"],
                           "peak_rss_mb": summary["peak_rss_mb"]})
        report["memory"] = memory
        print("\n| speech s | frames | peak RSS MiB |\n|---|---|---|")
        for m in memory:
            print(f"| {m['speech_seconds']:.0f} | {m['frames']} | {m['peak_rss_mb']:.0f} |")
    with open(args.json, "w") as f:
        json.dump(report, f, indent=2)
    print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
