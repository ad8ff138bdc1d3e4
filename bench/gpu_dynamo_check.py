"""A PyTorch 2.x export made with the dynamo-based exporter (weights in an external data file),
loaded and checked on every backend this build has: the checkpoint's float64 PyTorch output is the
reference, and each backend must be within a small multiple of PyTorch float32's own distance to
it (plus a floor), on seeded random inputs at batch 2.

    python3 bench/gpu_dynamo_check.py --checkpoint models/demo.pth --engine lipsync \
        --out-dir results/dynamo [--backends ort,cuda,reference]
"""
import argparse
import json
import os
import subprocess
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "python"))
from lipsync.checkpoint import load_model  # noqa: E402
from lipsync.export import export_onnx, external_files  # noqa: E402
from lipsync.model import example_inputs  # noqa: E402


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--engine", required=True)
    p.add_argument("--out-dir", required=True)
    p.add_argument("--backends", default="ort,cuda,reference")
    p.add_argument("--batch", type=int, default=2)
    args = p.parse_args()
    os.makedirs(args.out_dir, exist_ok=True)
    model = load_model(args.checkpoint, "ave", 320)
    onnx_path = os.path.join(args.out_dir, "dynamo.onnx")
    export_onnx(model, onnx_path, ["visual_input", "audio_input"], "output", exporter="dynamo")
    data = external_files(onnx_path)
    print(f"PyTorch {torch.__version__}: dynamo export with external data {data}")
    visual, audio = example_inputs("ave", 320, batch=args.batch, seed=7)
    with torch.no_grad():
        want64 = model.double()(visual.double(), audio.double()).numpy()
        got32 = model.float()(visual, audio).numpy()
    torch_err = float(np.abs(got32 - want64).max())
    paths = {}
    for name, t in (("visual_input", visual), ("audio_input", audio)):
        paths[name] = os.path.join(args.out_dir, name + ".npy")
        np.save(paths[name], t.numpy())
    expected = os.path.join(args.out_dir, "expected_fp64.npy")
    np.save(expected, want64.astype(np.float32))
    bound = max(4 * torch_err, 1e-4)
    print(f"PyTorch float32 against float64: max abs {torch_err:.3g}; bound {bound:.3g}")
    failed = False
    report = {"torch": torch.__version__, "external_data": data, "torch_fp32_err": torch_err,
              "bound": bound, "backends": {}}
    for backend in args.backends.split(","):
        cmd = [args.engine, "check", "--model", onnx_path, "--backend", backend, "--expect",
               expected, "--tolerance", str(bound), "--json"]
        if backend == "cuda":
            cmd += ["--precision", "fp32"]
        for name, path in paths.items():
            cmd += ["--input", f"{name}={path}"]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        try:
            result = json.loads(proc.stdout)
        except ValueError:
            result = {"ok": False, "error": (proc.stderr or proc.stdout).strip()[-300:]}
        ok = bool(result.get("ok"))
        failed |= not ok
        report["backends"][backend] = result
        print(f"  {backend:<10} max abs {result.get('max_abs_diff')} "
              f"{'OK' if ok else 'FAILED ' + str(result.get('error', ''))}")
    with open(os.path.join(args.out_dir, "dynamo.json"), "w") as f:
        json.dump(report, f, indent=2)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
