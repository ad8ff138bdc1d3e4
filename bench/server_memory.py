"""Resident memory and threads of `lipsync serve --avatars` (no --model): N copies of an avatar
preloaded and idle, the peak while a batch of B frames (InferBatchComposite) runs on each avatar
in turn, and the memory at rest once the server has given its idle memory back.

    /usr/bin/python3 bench/server_memory.py --bin build/tools/lipsync/lipsync \
        --avatar models/demo_avatar [--count 8] [--batch 32] [--budget-mb 0] [--json out.json] \
        [--serve-arg=--avatar-frames --serve-arg=encoded]
"""
import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import grpc
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "server"))
from grpc_stubs import free_port, generate_stubs  # noqa: E402

PROTO_DIR = os.path.join(os.path.dirname(__file__), "..", "proto")
MIB = 1 << 20


def status_value(pid, key):
    """A number of /proc/PID/status (sizes in kB)."""
    text = open(f"/proc/{pid}/status").read()
    return int(re.search(rf"{key}:\s+(\d+)", text).group(1))


def status_mib(pid, key):
    return status_value(pid, key) / 1024


def at_rest_mib(pid):
    """VmRSS once idle: the server gives its pool's cached blocks and its heap's free memory back
    after a second without frames; the median of three samples a second apart."""
    time.sleep(3)
    samples = []
    for _ in range(3):
        samples.append(status_mib(pid, "VmRSS"))
        time.sleep(1)
    return sorted(samples)[1]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--bin", required=True)
    parser.add_argument("--avatar", required=True)
    parser.add_argument("--count", type=int, default=8)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--budget-mb", type=int, default=0, help="--avatar-memory-mb (0: none)")
    parser.add_argument("--json")
    parser.add_argument("--serve-arg", action="append", default=[],
                        help="a further argument of lipsync serve (repeat for each)")
    args = parser.parse_args()

    work = tempfile.mkdtemp(prefix="lipsync-server-memory-")
    try:
        generate_stubs(PROTO_DIR, work, "monolithic/monolithic.proto")
        from monolithic import monolithic_pb2 as pb, monolithic_pb2_grpc as pbg
        ids = [f"a{i}" for i in range(args.count)]
        for name in ids:
            shutil.copytree(args.avatar, os.path.join(work, "avatars", name))
        address = f"127.0.0.1:{free_port()}"
        proc = subprocess.Popen(
            [args.bin, "serve", "--listen", address, "--avatars", os.path.join(work, "avatars"),
             "--monolithic", "--threads", str(args.threads), "--max-avatars", str(args.count),
             "--avatar-memory-mb", str(args.budget_mb), "--preload", ",".join(ids),
             "--log-level", "warn"] + args.serve_arg)
        try:
            channel = grpc.insecure_channel(address, options=[
                ("grpc.max_send_message_length", 256 * MIB),
                ("grpc.max_receive_message_length", 256 * MIB)])
            grpc.channel_ready_future(channel).result(timeout=600)  # after the preloads
            stub = pbg.MonolithicServiceStub(channel)
            result = {"avatars": args.count, "batch": args.batch, "budget_mib": args.budget_mb,
                      "started_peak_mib": status_mib(proc.pid, "VmHWM"),
                      "idle_mib": at_rest_mib(proc.pid),
                      "idle_threads": status_value(proc.pid, "Threads")}
            rng = np.random.default_rng(0)
            visual = rng.random((args.batch, 6, 320, 320), dtype=np.float32).tobytes()
            audio = (0.2 * np.sin(np.arange((args.batch + 15) * 640) * 0.07)).astype("<f4")
            seconds = []
            for name in ids:
                start = time.monotonic()
                response = stub.InferBatchComposite(pb.CompositeBatchRequest(
                    model_id=name, visual_frames=visual, raw_audio=audio.tobytes(),
                    batch_size=args.batch))
                if not response.success:
                    raise SystemExit(f"{name}: {response.error}")
                seconds.append(time.monotonic() - start)
            result["peak_mib"] = status_mib(proc.pid, "VmHWM")
            result["at_rest_mib"] = at_rest_mib(proc.pid)
            result["request_seconds"] = seconds
        finally:
            proc.send_signal(2)
            proc.wait(timeout=120)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"{args.count} avatars loaded and idle: {result['idle_mib']:.0f} MiB resident, "
          f"{result['idle_threads']} threads; "
          f"peak during batch-{args.batch} requests on each in turn: {result['peak_mib']:.0f} "
          f"MiB; at rest afterwards: {result['at_rest_mib']:.0f} MiB; request seconds, median "
          f"{statistics.median(result['request_seconds']):.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
