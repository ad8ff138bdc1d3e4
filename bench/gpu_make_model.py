"""The GPU benchmark's model, made on the GPU machine with its own PyTorch (bench/gpu_bench.sh):
the demo's seeded weights (demo.pth), exported through lipsync's export path with the
TorchScript-based exporter and verified against the packed lipsync binary (demo.onnx), and the
demo face and audio window for the command-line check.

    python3 bench/gpu_make_model.py --out-dir models --engine bin/lipsync
"""
import argparse
import io
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "python"))
from lipsync import demo, export  # noqa: E402


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
    return export.main(["--checkpoint", pth, "--mode", "ave", "--size", "320", "--out",
                        os.path.join(args.out_dir, "demo.onnx"), "--exporter", "legacy",
                        "--single-file", "--engine", args.engine])


if __name__ == "__main__":
    sys.exit(main())
