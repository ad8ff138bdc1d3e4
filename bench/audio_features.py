#!/usr/bin/python3
"""Audio features for one minute of speech (decode + mel + encoder + windows) against the UNet's
time for the same minute (1500 video frames at 25 fps), in one run on one machine.

    bench/audio_features.py [--threads 2] [--runs 10] [--warmup 2] [--models models]

Needs `make build` and the demo models (`make demo` or python3 -m lipsync.demo --out-dir models).
The minute is models/demo_speech.wav looped to 60 s, as 22.05 kHz WAV and as 44.1 kHz AAC (M4A).
Each `lipsync features` run reports its own stage times (decode, mel, encoder with the window
assembly); the process's wall time adds start-up and the encoder's session creation. The UNet's
minute is extrapolated from `lipsync bench` at batch 1: median ms per frame x 1500 (it is not run
for 1500 frames). Results: out/perf/audio_features.json and a Markdown table on stdout.
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


def time_features(audio, encoder, threads, runs, warmup, extra=()):
    out = os.path.join(os.path.dirname(audio), "windows.npy")
    mel = os.path.join(os.path.dirname(audio), "mel.npy")
    cmd = [BIN, "features", "--audio", audio, "--encoder", encoder, "--mel-out", mel, "--out", out,
           "--threads", str(threads), "--json", *extra]
    samples = {"decode_ms": [], "mel_ms": [], "encode_ms": [], "stages_ms": [], "process_ms": []}
    info = None
    for i in range(warmup + runs):
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
        wall = (time.perf_counter() - t0) * 1000
        info = json.loads(proc.stdout)
        if i < warmup:
            continue
        for key in ("decode_ms", "mel_ms", "encode_ms"):
            samples[key].append(info[key])
        samples["stages_ms"].append(info["decode_ms"] + info["mel_ms"] + info["encode_ms"])
        samples["process_ms"].append(wall)
    return {k: stats(v) for k, v in samples.items()}, info


def time_unet(threads, iterations, warmup, tmp):
    path = os.path.join(tmp, "unet.json")
    subprocess.run([BIN, "bench", "--model", os.path.join(MODELS, "demo.onnx"), "--batch", "1",
                    "--threads", str(threads), "--iterations", str(iterations), "--warmup",
                    str(warmup), "--json", path], check=True, capture_output=True)
    with open(path) as f:
        return json.load(f)


def main():
    global MODELS
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--unet-iterations", type=int, default=30)
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
    with tempfile.TemporaryDirectory(prefix="lipsync-audio-bench-") as tmp:
        for name, path in make_minute(tmp).items():
            print(f"features: {name} ...", file=sys.stderr)
            timing, info = time_features(path, encoder, args.threads, args.runs, args.warmup)
            result["features"][name] = {"timing": timing, "summary": info}
        print("features: wav, streamed in 200 ms chunks ...", file=sys.stderr)
        wav = os.path.join(tmp, "minute.wav")
        timing, info = time_features(wav, encoder, args.threads, args.runs, args.warmup,
                                     ("--chunk", "3200"))
        result["features"]["wav 22.05 kHz, streamed 3200-sample chunks"] = {
            "timing": timing, "summary": info}
        print("UNet: lipsync bench, batch 1 ...", file=sys.stderr)
        unet = time_unet(args.threads, args.unet_iterations, 3, tmp)
    result["unet_bench"] = unet
    batch1 = next(r for r in unet["results"] if r["batch"] == 1)
    unet_median = batch1["latency_ms"]["median"]
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
    print(f"\nUNet (lipsync bench, batch 1, {batch1.get('iterations', args.unet_iterations)} runs): "
          f"median {unet_median:.2f} ms/frame, p90 {batch1['latency_ms']['p90']:.2f}; extrapolated to "
          f"{FRAMES_PER_MINUTE} frames: {minute / 1000:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
