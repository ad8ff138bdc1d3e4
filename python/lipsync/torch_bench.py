"""PyTorch eager baseline with the same protocol and JSON schema as `lipsync bench`.

    python3 -m lipsync.torch_bench --checkpoint 99.pth --mode ave --batch 1,4 --threads 2 --json t.json
"""
import argparse
import datetime
import json
import resource
import socket
import sys
import time

import numpy as np
import torch

from .checkpoint import CheckpointError, load_model
from .demo import random_state_dict
from .model import AUDIO_SHAPES, build_model, example_inputs


def summarize(samples):
    a = np.asarray(samples, dtype=np.float64)
    return {"min": float(a.min()), "median": float(np.percentile(a, 50)), "mean": float(a.mean()),
            "p90": float(np.percentile(a, 90)), "p95": float(np.percentile(a, 95)),
            "p99": float(np.percentile(a, 99)), "max": float(a.max())}


def peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


class TorchRunner:
    """The model on one device and dtype, with inputs per batch size made once."""

    def __init__(self, model, device="cpu", dtype=torch.float32):
        self.model = model.to(device=device, dtype=dtype).eval()
        self.device, self.dtype = device, dtype
        self.inputs = {}

    def sync(self):
        if self.device.startswith("cuda"):
            torch.cuda.synchronize()

    def run_once(self, batch):
        if batch not in self.inputs:
            v, a = example_inputs(self.model.mode, self.model.size, batch)
            self.inputs[batch] = (v.to(self.device, self.dtype), a.to(self.device, self.dtype))
        with torch.inference_mode():
            t0 = time.perf_counter()
            self.model(*self.inputs[batch])
            self.sync()
            return (time.perf_counter() - t0) * 1000.0


def bench_batch(runner, batch, warmup, iterations=0, duration=10.0):
    first = runner.run_once(batch)
    for _ in range(warmup):
        runner.run_once(batch)
    samples = []
    start = time.perf_counter()
    while True:
        if iterations > 0 and len(samples) >= iterations:
            break
        if iterations <= 0 and time.perf_counter() - start >= duration and len(samples) >= 3:
            break
        samples.append(runner.run_once(batch))
    return batch_result(batch, first, warmup, samples, time.perf_counter() - start)


def batch_result(batch, first_ms, warmup, samples, total_s=None):
    """One entry of the report's `results`; throughput over the wall time when it is known,
    else over the summed latencies."""
    lat = summarize(samples)
    total_s = total_s if total_s else sum(samples) / 1000.0
    return {"batch": batch, "first_inference_ms": first_ms, "warmup": warmup,
            "iterations": len(samples), "latency_ms": lat,
            "ms_per_frame": lat["median"] / batch, "fps": batch * 1000.0 / lat["median"],
            "throughput_fps": batch * len(samples) / total_s, "samples_ms": list(samples)}


def set_threads(threads):
    """Intra-op and inter-op threads; 0 keeps PyTorch's defaults. PyTorch accepts the inter-op
    count only before its first parallel work, so a later call keeps what is already set."""
    if threads <= 0:
        return
    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(threads)
    except RuntimeError:
        pass


def make_model(args):
    if args.checkpoint:
        return load_model(args.checkpoint, args.mode, args.size)
    model = build_model(args.mode, args.size)
    model.load_state_dict(random_state_dict(args.mode, args.size, 0))
    return model.eval()


def report(implementation, model_name, threads, precision, create_ms, results, device="cpu"):
    return {"implementation": implementation, "model": model_name, "backend": "pytorch",
            "provider": device, "threads": threads, "precision": precision,
            "session_create_ms": create_ms,
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "host": socket.gethostname(), "results": results, "peak_rss_mb": peak_rss_mb()}


def print_table(rep):
    print(f"{'implementation':26} {'batch':>5} {'first':>9} {'min':>9} {'median':>9} {'p90':>9} "
          f"{'p99':>9} {'max':>9} {'ms/frame':>9} {'FPS':>9}")
    for r in rep["results"]:
        lat = r["latency_ms"]
        print(f"{rep['implementation']:26} {r['batch']:5d} {r['first_inference_ms']:9.2f} "
              f"{lat['min']:9.2f} {lat['median']:9.2f} {lat['p90']:9.2f} {lat['p99']:9.2f} "
              f"{lat['max']:9.2f} {r['ms_per_frame']:9.2f} {r['fps']:9.1f}")


def main(argv=None):
    parser = argparse.ArgumentParser(description="PyTorch eager benchmark (lipsync bench protocol)")
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--checkpoint")
    src.add_argument("--demo", action="store_true", help="the demo model's random weights")
    parser.add_argument("--mode", default="ave", choices=sorted(AUDIO_SHAPES))
    parser.add_argument("--size", type=int, default=320, choices=(320, 160))
    parser.add_argument("--batch", default="1")
    parser.add_argument("--iterations", type=int, default=0, help="timed runs per batch "
                        "(default: run for --duration seconds)")
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="0: PyTorch's default")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=("float32", "float16"))
    parser.add_argument("--json")
    args = parser.parse_args(argv)

    set_threads(args.threads)
    try:
        batches = [int(b) for b in args.batch.split(",")]
    except ValueError:
        print(f"error: --batch must be a comma-separated list of integers, got '{args.batch}'",
              file=sys.stderr)
        return 2
    if not batches or min(batches) < 1:
        print(f"error: batch sizes must be >= 1, got '{args.batch}'", file=sys.stderr)
        return 2
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("error: --device cuda but this PyTorch sees no CUDA device", file=sys.stderr)
        return 2
    if args.dtype == "float16" and args.device == "cpu":
        print("error: float16 needs --device cuda (PyTorch CPU convolutions are float32)",
              file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    try:
        model = make_model(args)
    except CheckpointError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    dtype = torch.float16 if args.dtype == "float16" else torch.float32
    runner = TorchRunner(model, args.device, dtype)
    create_ms = (time.perf_counter() - t0) * 1000.0
    results = []
    for batch in batches:
        print(f"  batch {batch} ...", file=sys.stderr, flush=True)
        results.append(bench_batch(runner, batch, args.warmup, args.iterations, args.duration))
    rep = report(f"pytorch-eager-{args.device}", args.checkpoint or "demo weights",
                 torch.get_num_threads(), args.dtype, create_ms, results, args.device)
    print_table(rep)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rep, f, indent=2)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
