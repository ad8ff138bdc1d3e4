#!/usr/bin/python3
"""Audio features for one minute of speech (decode + mel + encoder + windows) against the UNet's
time for the same minute (1500 video frames at 25 fps), in one run on one machine.

    bench/audio_features.py [--threads 2] [--runs 10] [--warmup 2] [--models models]

Needs `make build` and the demo models (`make demo` or python3 -m lipsync.demo --out-dir models).
The minute is models/demo_speech.wav looped to 60 s, as 22.05 kHz WAV and as 44.1 kHz AAC (M4A).
Each `lipsync features` run reports its own stage times (decode, mel, encoder with the window
assembly); the process's wall time adds start-up and the encoder's session creation. The UNet's
minute is extrapolated from `lipsync bench` at batch 1: median ms per frame x 1500 (it is not run
for 1500 frames). Each round runs every case once and then the UNet briefly, so that the
machine's load falls on all of them alike. Results: out/perf/audio_features.json and a Markdown
table on stdout.
"""
import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "build", "tools", "lipsync", "lipsync")
MODELS = os.path.join(ROOT, "models")  # --models changes it
FRAMES_PER_MINUTE = 1500


def stats(values):
    v = np.asarray(values, np.float64)
    return {"min": float(v.min()), "median": float(np.median(v)),
            "p90": float(np.percentile(v, 90)), "max": float(v.max()), "runs": len(v)}


def make_minute(tmp):
    speech = os.path.join(MODELS, "demo_speech.wav")
    wav, m4a = os.path.join(tmp, "minute.wav"), os.path.join(tmp, "minute.m4a")
    loop = ["ffmpeg", "-v", "error", "-y", "-stream_loop", "-1", "-i", speech, "-t", "60"]
    subprocess.run(loop + [wav], check=True)
    subprocess.run(loop + ["-ar", "44100", "-c:a", "aac", "-b:a", "128k", m4a], check=True)
    return {"wav 22.05 kHz": wav, "m4a (AAC) 44.1 kHz": m4a}


def features_once(audio, encoder, threads, extra=()):
    """One `lipsync features` run: its own stage times and the process's wall time."""
    folder = os.path.dirname(audio)
    cmd = [BIN, "features", "--audio", audio, "--encoder", encoder,
           "--mel-out", os.path.join(folder, "mel.npy"), "--out", os.path.join(folder, "w.npy"),
           "--threads", str(threads), "--json", *extra]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
    info = json.loads(proc.stdout)
    info["process_ms"] = (time.perf_counter() - t0) * 1000
    info["stages_ms"] = info["decode_ms"] + info["mel_ms"] + info["encode_ms"]
    return info


def unet_once(threads, iterations, tmp):
    """`lipsync bench` at batch 1: the warm samples (ms) of one short run."""
    path = os.path.join(tmp, "unet.json")
    subprocess.run([BIN, "bench", "--model", os.path.join(MODELS, "demo.onnx"), "--batch", "1",
                    "--threads", str(threads), "--iterations", str(iterations), "--warmup", "2",
                    "--json", path], check=True, capture_output=True)
    with open(path) as f:
        report = json.load(f)
    return report["results"][0]["samples_ms"]


def main():
    global MODELS
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--unet-iterations", type=int, default=5,
                        help="warm UNet runs per round")
    parser.add_argument("--models", default=MODELS,
                        help="folder with demo.onnx, demo_audio_encoder.onnx, demo_speech.wav")
    parser.add_argument("--json", default=os.path.join(ROOT, "out", "perf", "audio_features.json"))
    args = parser.parse_args()
    MODELS = os.path.abspath(args.models)
    encoder = os.path.join(MODELS, "demo_audio_encoder.onnx")
    for needed in (BIN, encoder, os.path.join(MODELS, "demo.onnx")):
        if not os.path.exists(needed):
            sys.exit(f"error: {needed} is missing (run `make demo` first)")

    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                if line.startswith("model name")), platform.processor())
    result = {"machine": f"{os.cpu_count()} cores, {cpu}", "date": time.strftime("%Y-%m-%d"),
              "threads": args.threads, "features": {}}
    print(f"machine: {result['machine']}, {args.threads} threads", file=sys.stderr)
    keys = ("decode_ms", "mel_ms", "encode_ms", "stages_ms", "process_ms")
    with tempfile.TemporaryDirectory(prefix="lipsync-audio-bench-") as tmp:
        inputs = make_minute(tmp)
        cases = [(name, path, ()) for name, path in inputs.items()]
        cases.append(("wav 22.05 kHz, streamed in 3200-sample chunks",
                      inputs["wav 22.05 kHz"], ("--chunk", "3200")))
        samples = {name: {k: [] for k in keys} for name, _, _ in cases}
        summaries, unet_ms = {}, []
        # Rounds that alternate every case with a short UNet run, so that the load of other work
        # on the machine falls on all of them alike.
        for round_ in range(args.warmup + args.runs):
            print(f"round {round_ + 1} of {args.warmup + args.runs}"
                  f"{' (warm-up)' if round_ < args.warmup else ''}", file=sys.stderr)
            for name, path, extra in cases:
                info = features_once(path, encoder, args.threads, extra)
                summaries[name] = info
                if round_ >= args.warmup:
                    for k in keys:
                        samples[name][k].append(info[k])
            frames = unet_once(args.threads, args.unet_iterations, tmp)
            if round_ >= args.warmup:
                unet_ms.extend(frames)
    for name, _, _ in cases:
        result["features"][name] = {"timing": {k: stats(v) for k, v in samples[name].items()},
                                    "summary": summaries[name]}
    result["unet_ms_per_frame"] = stats(unet_ms)
    unet_median = result["unet_ms_per_frame"]["median"]
    result["unet_minute_ms_extrapolated"] = unet_median * FRAMES_PER_MINUTE

    os.makedirs(os.path.dirname(args.json), exist_ok=True)
    with open(args.json, "w") as f:
        json.dump(result, f, indent=2)

    minute = result["unet_minute_ms_extrapolated"]
    print("| input | video frames | decode ms | mel ms | encoder + windows ms | all stages ms "
          "(median / p90) | process ms (median) | share of the UNet's minute |")
    print("|---|---|---|---|---|---|---|---|")
    for name, r in result["features"].items():
        t = r["timing"]
        print(f"| {name} | {r['summary']['video_frames']} | {t['decode_ms']['median']:.0f} | "
              f"{t['mel_ms']['median']:.0f} | {t['encode_ms']['median']:.0f} | "
              f"{t['stages_ms']['median']:.0f} / {t['stages_ms']['p90']:.0f} | "
              f"{t['process_ms']['median']:.0f} | "
              f"{100 * t['stages_ms']['median'] / minute:.1f}% |")
    u = result["unet_ms_per_frame"]
    print(f"\nUNet (lipsync bench, batch 1, {u['runs']} warm runs): median {u['median']:.2f} "
          f"ms/frame, p90 {u['p90']:.2f}; extrapolated to {FRAMES_PER_MINUTE} frames: "
          f"{minute / 1000:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
