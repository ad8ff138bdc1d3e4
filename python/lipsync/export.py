"""Export a SyncTalk_2D checkpoint to ONNX and verify the file against PyTorch through the C++ engine.

    python3 -m lipsync.export --checkpoint 99.pth --mode ave --out 99.onnx
"""
import argparse
import math
import os
import sys
import tempfile
import time
import warnings

import numpy as np
import torch

from . import engine_cli
from .checkpoint import CheckpointError, load_model
from .model import AUDIO_SHAPES, example_inputs


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def export_onnx(model, out, input_names, output_name, opset=17, fixed_batch=None):
    visual, audio = example_inputs(model.mode, model.size, batch=fixed_batch or 1)
    dynamic = None
    if not fixed_batch:
        dynamic = {name: {0: "batch"} for name in (*input_names, output_name)}
    with torch.no_grad(), warnings.catch_warnings():
        # Sizes are static for this family, so the tracer's notes about shape-dependent Python
        # values and the exporter's shape-inference notes do not apply.
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (visual, audio), out, opset_version=opset,
                          input_names=list(input_names), output_names=[output_name],
                          dynamic_axes=dynamic, do_constant_folding=True)


def verify(model, onnx_path, input_names, engine, tolerance, batches, fixed_batch=None):
    """PyTorch vs the C++ engine on seeded random inputs; returns the worst max abs difference
    (NaN when any output differs by NaN). Raises engine_cli.EngineError if the engine fails."""
    worst = 0.0
    with tempfile.TemporaryDirectory(prefix="lipsync-verify-") as tmp:
        for i, batch in enumerate(batches if not fixed_batch else [fixed_batch]):
            visual, audio = example_inputs(model.mode, model.size, batch=batch, seed=100 + i)
            with torch.no_grad():
                expected = model(visual, audio).numpy()
            paths = {}
            for name, tensor in zip(input_names, (visual, audio)):
                paths[name] = os.path.join(tmp, f"input{len(paths)}_{batch}.npy")
                np.save(paths[name], tensor.numpy())
            expected_path = os.path.join(tmp, f"expected_{batch}.npy")
            np.save(expected_path, expected)
            result = engine_cli.check(engine, onnx_path, paths, expected_path, tolerance)
            diff = result.get("max_abs_diff")
            diff = float("nan") if diff is None else float(diff)  # JSON has no NaN: null
            mean = result.get("mean_abs_diff")
            log(f"  batch {batch}: max abs difference {diff:.3g} "
                f"(mean {float('nan') if mean is None else mean:.3g}) "
                f"{'OK' if result.get('ok') else 'TOO LARGE'}")
            # max() would drop a NaN, so it is carried explicitly.
            worst = float("nan") if math.isnan(diff) or math.isnan(worst) else max(worst, diff)
    return worst


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="lipsync export", description="Export a SyncTalk_2D checkpoint to ONNX and verify it.")
    parser.add_argument("--checkpoint", required=True, help="state dict saved with torch.save")
    parser.add_argument("--mode", default="ave", choices=sorted(AUDIO_SHAPES),
                        help="audio branch the model was trained with")
    parser.add_argument("--size", type=int, default=320, choices=(320, 160))
    parser.add_argument("--out", required=True, help="ONNX file to write")
    parser.add_argument("--opset", type=int, default=17)
    parser.add_argument("--input-names", default="visual_input,audio_input")
    parser.add_argument("--output-name", default="output")
    parser.add_argument("--fixed-batch", type=int, default=0,
                        help="export with this fixed batch instead of a dynamic one")
    parser.add_argument("--verify", dest="verify", action="store_true", default=True)
    parser.add_argument("--no-verify", dest="verify", action="store_false")
    parser.add_argument("--engine", help="path of the lipsync binary used to verify")
    parser.add_argument("--tolerance", type=float, default=1e-4)
    parser.add_argument("--threads", type=int, default=2, help="PyTorch threads")
    args = parser.parse_args(argv)

    names = [n.strip() for n in args.input_names.split(",")]
    if len(names) != 2 or not all(names):
        log("error: --input-names needs two names, visual then audio")
        return 2
    if args.fixed_batch < 0:
        log(f"error: --fixed-batch must be >= 1 (0: dynamic batch), got {args.fixed_batch}")
        return 2
    torch.set_num_threads(args.threads)
    engine = None
    if args.verify:
        try:
            engine = engine_cli.find_engine(args.engine)
        except engine_cli.EngineNotFound as e:
            log(f"error: {e} (or pass --no-verify)")
            return 2

    log(f"loading {args.checkpoint} (mode {args.mode}, size {args.size})")
    try:
        model = load_model(args.checkpoint, args.mode, args.size)
    except CheckpointError as e:
        log(f"error: {e}")
        return 2
    entries = len(model.state_dict())
    params = sum(p.numel() for p in model.parameters())
    log(f"  {entries} entries, {params:,} parameters, strict match")

    t0 = time.time()
    log(f"exporting to {args.out} (opset {args.opset}, "
        f"{'batch ' + str(args.fixed_batch) if args.fixed_batch else 'dynamic batch'})")
    out_dir = os.path.dirname(os.path.abspath(args.out))
    os.makedirs(out_dir, exist_ok=True)
    try:
        export_onnx(model, args.out, names, args.output_name, args.opset, args.fixed_batch or None)
    except Exception as e:  # the exporter raises many kinds; report them as one failure
        log(f"error: export failed: {e}")
        return 2
    log(f"  wrote {os.path.getsize(args.out) / 2**20:.1f} MiB in {time.time() - t0:.1f} s")

    if not args.verify:
        return 0
    log(f"verifying against PyTorch with {engine}")
    try:
        worst = verify(model, args.out, names, engine, args.tolerance, [1, 3],
                       args.fixed_batch or None)
    except engine_cli.EngineError as e:
        log(f"error: cannot verify {args.out}: {e}")
        return 2
    print(f"max abs difference PyTorch vs C++ engine: {worst:.3g} (tolerance {args.tolerance:g})")
    if not worst <= args.tolerance:  # also true for NaN
        log("error: the exported model does not match PyTorch within the tolerance")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
