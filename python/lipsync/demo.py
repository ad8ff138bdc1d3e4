"""The demo model: a deterministic, seeded random checkpoint in the original key layout, exported
through the same path a real checkpoint takes, plus a synthetic face and audio features.

    python3 -m lipsync.demo --out-dir models [--mode ave --size 320 --seed 0] [--force]
writes models/demo.pth, models/demo.onnx, models/demo_face.png, models/demo_audio.npy.
"""
import argparse
import math
import os
import sys
import zlib
import struct

import numpy as np
import torch

from .model import AUDIO_SHAPES, build_model


def random_state_dict(mode="ave", size=320, seed=0):
    """Weights a trained model could have: He-scaled convolutions and batch-norm statistics near
    identity, so activations stay in range and the output is not saturated."""
    gen = torch.Generator().manual_seed(seed)
    model = build_model(mode, size)
    state = {}
    for name, tensor in model.state_dict().items():
        shape = tensor.shape
        if name.endswith("num_batches_tracked"):
            value = torch.tensor(1000, dtype=torch.long)
        elif name.endswith("running_mean"):
            value = 0.05 * torch.randn(shape, generator=gen)
        elif name.endswith("running_var"):
            value = 1.0 + 0.2 * torch.rand(shape, generator=gen)
        elif tensor.dim() == 4:  # conv weight
            fan_in = shape[1] * shape[2] * shape[3]
            value = torch.randn(shape, generator=gen) * math.sqrt(1.0 / fan_in)
        elif name.endswith("weight"):  # BN scale
            value = 0.8 + 0.4 * torch.rand(shape, generator=gen)
        else:  # BN shift, conv bias
            value = 0.05 * torch.randn(shape, generator=gen)
        state[name] = value.to(tensor.dtype)
    return state


def synthetic_face(size=328, seed=0):
    """A deterministic face-like BGR picture: skin ellipse, eyes, nose, mouth, on a background."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / size
    img = np.empty((size, size, 3), np.float32)
    img[:] = (120, 100, 80)  # background (BGR)
    face = ((x - 0.5) / 0.38) ** 2 + ((y - 0.52) / 0.47) ** 2 <= 1
    img[face] = (140, 170, 220)
    for ex in (0.35, 0.65):
        eye = ((x - ex) / 0.07) ** 2 + ((y - 0.4) / 0.035) ** 2 <= 1
        img[eye] = (60, 40, 30)
    nose = (np.abs(x - 0.5) < 0.03) & (y > 0.45) & (y < 0.6)
    img[nose] = (120, 150, 200)
    mouth = ((x - 0.5) / 0.14) ** 2 + ((y - 0.74) / 0.045) ** 2 <= 1
    img[mouth] = (70, 70, 170)
    img += rng.normal(0, 3, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def write_png(path, bgr):
    """Writes an 8-bit BGR image as PNG (zlib + struct; no imaging library needed)."""
    rgb = bgr[:, :, ::-1]
    h, w, _ = rgb.shape
    raw = b"".join(b"\x00" + rgb[i].tobytes() for i in range(h))

    def chunk(kind, data):
        return (struct.pack(">I", len(data)) + kind + data +
                struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n")
        f.write(chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)))
        f.write(chunk(b"IDAT", zlib.compress(raw, 6)))
        f.write(chunk(b"IEND", b""))


def main(argv=None):
    parser = argparse.ArgumentParser(description="Make the demo model, face and audio features.")
    parser.add_argument("--out-dir", required=True)
    parser.add_argument("--mode", default="ave", choices=sorted(AUDIO_SHAPES))
    parser.add_argument("--size", type=int, default=320, choices=(320, 160))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--force", action="store_true", help="remake files that exist")
    parser.add_argument("--no-verify", action="store_true", help="skip the engine check")
    args = parser.parse_args(argv)

    os.makedirs(args.out_dir, exist_ok=True)
    pth = os.path.join(args.out_dir, "demo.pth")
    onnx_path = os.path.join(args.out_dir, "demo.onnx")
    face = os.path.join(args.out_dir, "demo_face.png")
    audio = os.path.join(args.out_dir, "demo_audio.npy")

    if args.force or not os.path.exists(pth):
        torch.save(random_state_dict(args.mode, args.size, args.seed), pth)
        print(f"wrote {pth}", file=sys.stderr)
    if args.force or not os.path.exists(face):
        crop = args.size + 8
        write_png(face, synthetic_face(crop, args.seed))
        print(f"wrote {face}", file=sys.stderr)
    if args.force or not os.path.exists(audio):
        rng = np.random.default_rng(args.seed + 1)
        np.save(audio, rng.random(AUDIO_SHAPES[args.mode], dtype=np.float32))
        print(f"wrote {audio}", file=sys.stderr)
    if args.force or not os.path.exists(onnx_path):
        from . import export  # the same path a real checkpoint takes
        export_args = ["--checkpoint", pth, "--mode", args.mode, "--size", str(args.size),
                       "--out", onnx_path]
        if args.no_verify:
            export_args.append("--no-verify")
        code = export.main(export_args)
        if code:
            if os.path.exists(onnx_path):
                os.remove(onnx_path)
            return code
    print(f"demo model ready in {args.out_dir}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
