"""The GPU benchmark's model, made on the GPU machine with its own PyTorch (bench/gpu_bench.sh):
the demo's seeded weights (demo.pth), exported through lipsync's export path with the
TorchScript-based exporter and verified against the packed lipsync binary (demo.onnx), the demo
audio encoder made the same way (demo_audio_encoder.onnx, for the encoder's GPU test), and the
demo face and audio window for the command-line check, and the float16 accuracy reference: four
random frames (reference_visual.npy, reference_audio.npy) with PyTorch's float32 output (TF32 off)
PyTorch's own float16 output and the float64 output (stored as float32) on them
(reference_fp32.npy, reference_fp16.npy, reference_fp64.npy), which both benchmarks compare
against.

    python3 bench/gpu_make_model.py --out-dir models --engine bin/lipsync
"""
import argparse
import io
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "python"))
from lipsync import demo, export, export_audio  # noqa: E402
from lipsync.audio_model import random_audio_state_dict  # noqa: E402


def write_npy(path, array):
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(array))
    demo.write_atomic(path, buf.getvalue())


def make_reference(pth, out_dir, frames=4):
    """PyTorch float32 (no TF32) and float16 outputs of the same random frames."""
    import copy

    import torch
    from gpu_torch_bench import MASK_H, MASK_W, MASK_X, MASK_Y  # the mouth rectangle
    from lipsync.checkpoint import load_model

    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    rng = np.random.default_rng(7)
    faces = rng.integers(0, 256, (frames, 320, 320, 3), dtype=np.uint8)
    face = faces.transpose(0, 3, 1, 2).astype(np.float32) / 255.0
    masked = face.copy()
    masked[:, :, MASK_Y:MASK_Y + MASK_H, MASK_X:MASK_X + MASK_W] = 0
    visual = np.concatenate([face, masked], axis=1)
    audio = rng.random((frames, 32, 16, 16), dtype=np.float32)
    model = load_model(pth, "ave", 320).eval()
    outputs = {}
    with torch.inference_mode():
        for name, dtype in (("fp32", torch.float32), ("fp16", torch.float16),
                            ("fp64", torch.float64)):
            m = copy.deepcopy(model).to("cuda", dtype)
            y = m(torch.from_numpy(visual).to("cuda", dtype), torch.from_numpy(audio).to("cuda", dtype))
            outputs[name] = y.cpu().numpy().astype(np.float32)
    write_npy(os.path.join(out_dir, "reference_visual.npy"), visual)
    write_npy(os.path.join(out_dir, "reference_audio.npy"), audio)
    for name, y in outputs.items():
        write_npy(os.path.join(out_dir, f"reference_{name}.npy"), y)
    for a, b in (("fp16", "fp32"), ("fp32", "fp64")):
        d = np.abs(outputs[a] - outputs[b])
        print(f"reference: PyTorch {a} vs {b} on {frames} frames: max abs {d.max():.4g}, "
              f"mean {d.mean():.3g}")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out-dir", required=True)
    p.add_argument("--engine", required=True, help="the lipsync binary that verifies the export")
    args = p.parse_args()
    os.makedirs(args.out_dir, exist_ok=True)
    pth = os.path.join(args.out_dir, "demo.pth")
    demo.write_atomic(pth, demo.state_dict_bytes(demo.random_state_dict("ave", 320, 0)))
    demo.write_png(os.path.join(args.out_dir, "demo_face.png"), demo.synthetic_face(328, 0))
    buf = io.BytesIO()
    np.save(buf, np.random.default_rng(1).random((1, 32, 16, 16), dtype=np.float32))
    demo.write_atomic(os.path.join(args.out_dir, "demo_audio.npy"), buf.getvalue())
    status = export.main(["--checkpoint", pth, "--mode", "ave", "--size", "320", "--out",
                          os.path.join(args.out_dir, "demo.onnx"), "--exporter", "legacy",
                          "--single-file", "--engine", args.engine])
    if status:
        return status
    encoder = os.path.join(args.out_dir, "demo_audio_encoder.pth")
    demo.write_atomic(encoder, demo.state_dict_bytes(random_audio_state_dict(0)))
    status = export_audio.main(["--checkpoint", encoder, "--exporter", "legacy", "--engine",
                                args.engine, "--out",
                                os.path.join(args.out_dir, "demo_audio_encoder.onnx")])
    if status:
        return status
    make_reference(pth, args.out_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
