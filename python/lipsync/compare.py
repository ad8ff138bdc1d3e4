"""PyTorch eager against the C++ engine in one run: first accuracy on the same inputs, then speed.

    python3 -m lipsync.compare --checkpoint 99.pth --onnx 99.onnx --mode ave --batch 1 --threads 2

Both run with the same weights, batch and thread count. The timed runs alternate between the two
(several rounds of each) so that noise on a shared machine falls on both alike; the samples of all
rounds are pooled per implementation.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch

from . import engine_cli
from .checkpoint import CheckpointError, load_model
from .export import verify
from .model import AUDIO_SHAPES
from .torch_bench import TorchRunner, batch_result, report, set_threads, summarize
from .verify import add_bound_arguments


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def cpp_round(engine, onnx_path, batch, threads, iterations, warmup, extra):
    """One `lipsync bench` run; returns its JSON report (with the raw samples)."""
    with tempfile.TemporaryDirectory(prefix="lipsync-compare-") as tmp:
        out = os.path.join(tmp, "bench.json")
        cmd = [engine, "bench", "--model", onnx_path, "--batch", str(batch), "--threads",
               str(threads), "--iterations", str(iterations), "--warmup", str(warmup),
               "--json", out, *extra]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode:
            raise engine_cli.EngineError(
                f"`lipsync bench` failed: {proc.stderr.strip() or proc.stdout.strip()}")
        with open(out) as f:
            rep = json.load(f)
    if not rep.get("results") or "samples_ms" not in rep["results"][0]:
        raise engine_cli.EngineError("`lipsync bench` wrote no per-run samples (samples_ms)")
    return rep


def row(name, batch, samples, baseline_median=None):
    lat = summarize(samples)
    speedup = baseline_median / lat["median"] if baseline_median else 1.0
    return {"implementation": name, "batch": batch, "iterations": len(samples),
            "latency_ms": lat, "fps": batch * 1000.0 / lat["median"], "speedup": speedup}


def main(argv=None):
    parser = argparse.ArgumentParser(prog="lipsync compare", description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--onnx", required=True, help="the checkpoint's export")
    parser.add_argument("--mode", default="ave", choices=sorted(AUDIO_SHAPES))
    parser.add_argument("--size", type=int, default=320, choices=(320, 160))
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--iterations", type=int, default=20, help="timed runs of each, in all")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=4, help="alternations of the two")
    add_bound_arguments(parser)
    parser.add_argument("--engine", help="path of the lipsync binary")
    parser.add_argument("--engine-args", default="", help="extra flags for lipsync bench")
    parser.add_argument("--json")
    args = parser.parse_args(argv)

    t0 = time.perf_counter()
    try:
        engine = engine_cli.find_engine(args.engine)
        model = load_model(args.checkpoint, args.mode, args.size)
    except (engine_cli.EngineNotFound, CheckpointError) as e:
        log(f"error: {e}")
        return 2
    set_threads(args.threads)
    runner = TorchRunner(model)
    torch_create_ms = (time.perf_counter() - t0) * 1000.0
    try:
        return run_comparison(args, engine, runner, torch_create_ms)
    except engine_cli.EngineError as e:
        log(f"error: {e}")
        return 2


def run_comparison(args, engine, runner, torch_create_ms):
    names = engine_cli.input_names(engine, args.onnx)
    log(f"accuracy: PyTorch vs {engine} on the same random inputs, batch {args.batch}")
    accuracy = verify(runner.model, args.onnx, names, engine, args.tolerance, [args.batch],
                      error_ratio=args.error_ratio)
    worst = accuracy.max_abs_diff
    if not accuracy.ok:
        log(f"error: outputs differ beyond PyTorch's own rounding "
            f"({accuracy.summary(args.tolerance, args.error_ratio)}); is the ONNX file an export "
            "of this checkpoint?")
        return 1

    first_ms = runner.run_once(args.batch)
    for _ in range(args.warmup):
        runner.run_once(args.batch)
    per_round = max(1, args.iterations // args.rounds)
    torch_samples, cpp_samples, cpp_reports = [], [], []
    for r in range(args.rounds):
        log(f"round {r + 1}/{args.rounds}: PyTorch, then C++ ({per_round} runs each)")
        torch_samples += [runner.run_once(args.batch) for _ in range(per_round)]
        rep = cpp_round(engine, args.onnx, args.batch, args.threads, per_round, args.warmup,
                        args.engine_args.split())
        cpp_samples += rep["results"][0]["samples_ms"]
        cpp_reports.append(rep)

    base = row("pytorch-eager-cpu", args.batch, torch_samples)
    ours = row(cpp_reports[-1]["implementation"], args.batch, cpp_samples,
               base["latency_ms"]["median"])
    print(f"\nsame weights, batch {args.batch}, {args.threads} threads, {args.rounds} alternating "
          f"rounds, max abs difference {worst:.3g}")
    print(f"{'implementation':24} {'batch':>5} {'runs':>5} {'median ms':>10} {'p90 ms':>9} "
          f"{'p99 ms':>9} {'FPS':>8} {'speedup vs PyTorch':>19}")
    for r in (base, ours):
        lat = r["latency_ms"]
        print(f"{r['implementation']:24} {r['batch']:5d} {r['iterations']:5d} "
              f"{lat['median']:10.2f} {lat['p90']:9.2f} {lat['p99']:9.2f} {r['fps']:8.2f} "
              f"{r['speedup']:18.2f}x")
    if args.json:
        # Each implementation also in the `lipsync bench` schema, over the pooled samples.
        torch_rep = report("pytorch-eager-cpu", args.checkpoint, torch.get_num_threads(),
                           "float32", torch_create_ms,
                           [batch_result(args.batch, first_ms, args.warmup, torch_samples)])
        cpp_rep = dict(cpp_reports[-1])
        cpp_rep["session_create_ms"] = float(np.median(
            [c["session_create_ms"] for c in cpp_reports]))
        cpp_rep["results"] = [batch_result(
            args.batch, float(np.median([c["results"][0]["first_inference_ms"]
                                         for c in cpp_reports])),
            args.warmup, cpp_samples)]
        cpp_rep["peak_rss_mb"] = max(c["peak_rss_mb"] for c in cpp_reports)
        with open(args.json, "w") as f:
            json.dump({"batch": args.batch, "threads": args.threads, "rounds": args.rounds,
                       "max_abs_diff": worst, "results": [base, ours],
                       "reports": [torch_rep, cpp_rep]}, f, indent=2)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
