"""PyTorch on the GPU with the same weights as lipsync's benchmark: eager float32, eager float16,
channels_last float16 and torch.compile float16, in both input forms (float tensors, or BGR
uint8 faces with the mask, scaling and byte conversion done on the GPU in PyTorch) with host
buffers in and out or with everything already on the GPU; then float16 accuracy against float32.
One JSON object per line, as bench/gpu_engine_bench.cc writes them (bench/gpu_table.py reads both).

    python3 bench/gpu_torch_bench.py --checkpoint models/demo.pth --batch 1,8,32 --json t.jsonl
"""
import argparse
import copy
import json
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "python"))
from lipsync.checkpoint import load_model  # noqa: E402

# The 320 model's mouth rectangle (include/lipsync/face.h, FaceLayout).
MASK_X, MASK_Y, MASK_W, MASK_H = 5, 5, 310, 305


def emit(out, record):
    line = json.dumps(record)
    print(line, flush=True)
    if out:
        out.write(line + "\n")
        out.flush()


def faces_to_visual(faces, dtype, channels_last):
    """uint8 [N,S,S,3] BGR on the GPU -> the model's [N,6,S,S] input (face, masked face) / 255."""
    x = faces.permute(0, 3, 1, 2).to(torch.float32) * (1.0 / 255.0)
    masked = x.clone()
    masked[:, :, MASK_Y:MASK_Y + MASK_H, MASK_X:MASK_X + MASK_W] = 0
    v = torch.cat([x, masked], dim=1).to(dtype)
    return v.contiguous(memory_format=torch.channels_last) if channels_last else v


def output_to_bytes(y):
    """[N,3,S,S] in [0,1] -> uint8 [N,S,S,3], x255 clamped and truncated like OutputToImage."""
    return (y.float() * 255.0).clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous()


class Contender:
    def __init__(self, name, model, dtype, channels_last=False, compiled=False):
        self.name, self.dtype, self.channels_last = name, dtype, channels_last
        m = copy.deepcopy(model).to("cuda", dtype)  # Module.to converts in place
        if channels_last:
            m = m.to(memory_format=torch.channels_last)
        self.model = torch.compile(m) if compiled else m

    def tensors(self, visual, audio):
        v = visual.to("cuda", non_blocking=False).to(self.dtype)
        if self.channels_last:
            v = v.contiguous(memory_format=torch.channels_last)
        return self.model(v, audio.to("cuda").to(self.dtype))

    def frames(self, faces, audio):
        v = faces_to_visual(faces.to("cuda"), self.dtype, self.channels_last)
        return output_to_bytes(self.model(v, audio.to("cuda").to(self.dtype)))


def timed(fn, warmup, iterations):
    with torch.inference_mode():
        for _ in range(warmup):
            fn()
        torch.cuda.synchronize()
        samples = []
        for _ in range(iterations):
            t0 = time.perf_counter()
            fn()
            torch.cuda.synchronize()
            samples.append((time.perf_counter() - t0) * 1000.0)
    a = np.asarray(samples)
    return float(np.percentile(a, 50)), float(np.percentile(a, 90))


def make_inputs(batch, seed, size=320):
    rng = np.random.default_rng(seed)
    faces = torch.from_numpy(rng.integers(0, 256, (batch, size, size, 3), dtype=np.uint8))
    audio = torch.from_numpy(rng.random((batch, 32, 16, 16), dtype=np.float32))
    return faces, audio


def speed(contenders, args, out):
    for c in contenders:
        for batch in args.batch:
            faces, audio = make_inputs(batch, 1)
            with torch.inference_mode():
                visual = faces_to_visual(faces.cuda(), torch.float32, False).cpu()
            dev = (faces.cuda(), audio.cuda(), visual.cuda())
            variants = [
                ("frames", "host", lambda: c.frames(faces, audio).cpu()),
                ("frames", "device", lambda: c.frames(dev[0], dev[1])),
                ("tensors", "host", lambda: c.tensors(visual, audio).float().cpu()),
                ("tensors", "device", lambda: c.tensors(dev[2], dev[1])),
            ]
            for form, io, fn in variants:
                t0 = time.perf_counter()
                median, p90 = timed(fn, args.warmup, args.iterations)
                emit(out, {"kind": "speed", "impl": c.name, "form": form, "io": io,
                           "batch": batch, "median_ms": median, "p90_ms": p90,
                           "fps": batch * 1000.0 / median,
                           "wall_s": time.perf_counter() - t0})


def accuracy(model, out, reference):
    """PyTorch float16 against float32 (TF32 off) on the frames gpu_make_model.py saved, which
    gpu_engine_bench compares lipsync against; on fresh random frames without them."""
    if reference:
        visual = torch.from_numpy(np.load(os.path.join(reference, "reference_visual.npy")))
        audio = torch.from_numpy(np.load(os.path.join(reference, "reference_audio.npy")))
    else:
        faces, audio = make_inputs(4, 7)
        visual = faces_to_visual(faces.cuda(), torch.float32, False).cpu()
    tf32 = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    f32 = Contender("pytorch eager fp32", model, torch.float32)
    f16 = Contender("pytorch eager fp16", model, torch.float16)
    with torch.inference_mode():
        ref = f32.tensors(visual, audio).float()
        half = f16.tensors(visual, audio).float()
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = tf32
    ref_b, half_b = output_to_bytes(ref).int(), output_to_bytes(half).int()
    emit(out, {"kind": "accuracy", "impl": "pytorch eager", "precision": "fp16",
               "against": "pytorch eager fp32",
               "max_abs": float((half - ref).abs().max()),
               "uint8_within_1": float(((half_b - ref_b).abs() <= 1).float().mean())})


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--batch", default="1,8,32")
    p.add_argument("--iterations", type=int, default=30)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--no-compile", action="store_true", help="skip torch.compile")
    p.add_argument("--contenders", default="fp32,fp16,fp16cl,compile",
                   help="which of fp32 (eager), fp16 (eager), fp16cl (eager channels_last) and "
                        "compile (torch.compile fp16 channels_last) to time")
    p.add_argument("--json")
    p.add_argument("--reference", help="folder with gpu_make_model.py's reference_*.npy")
    args = p.parse_args()
    args.batch = [int(b) for b in args.batch.split(",")]
    if not torch.cuda.is_available():
        sys.exit("error: this PyTorch sees no CUDA device")
    torch.backends.cudnn.benchmark = True
    out = open(args.json, "w") if args.json else None
    model = load_model(args.checkpoint, "ave", 320)
    accuracy(model, out, args.reference)
    wanted = set(args.contenders.split(","))
    if args.no_compile:
        wanted.discard("compile")
    contenders = []
    if "fp32" in wanted:
        contenders.append(Contender("pytorch eager fp32", model, torch.float32))
    if "fp16" in wanted:
        contenders.append(Contender("pytorch eager fp16", model, torch.float16))
    if "fp16cl" in wanted:
        contenders.append(Contender("pytorch eager fp16 channels_last", model, torch.float16,
                                    channels_last=True))
    if "compile" in wanted:
        contenders.append(Contender("pytorch compile fp16 channels_last", model, torch.float16,
                                    channels_last=True, compiled=True))
    speed(contenders, args, out)


if __name__ == "__main__":
    main()
