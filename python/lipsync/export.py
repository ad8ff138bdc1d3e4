"""Export a SyncTalk_2D checkpoint to ONNX and verify the file against PyTorch through the C++ engine.

    python3 -m lipsync.export --checkpoint 99.pth --mode ave --out 99.onnx
"""
import argparse
import inspect
import os
import sys
import tempfile
import time
import warnings

import torch

from . import engine_cli
from .checkpoint import CheckpointError, load_model
from .model import AUDIO_SHAPES, example_inputs
from .verify import DEFAULT_ERROR_RATIO, Verifier, add_bound_arguments


def log(msg):
    print(msg, file=sys.stderr, flush=True)


class ExportError(Exception):
    pass


def torch_version():
    return tuple(int(p) for p in torch.__version__.split("+")[0].split(".")[:2])


def has_dynamo_exporter():
    """PyTorch's dynamo-based exporter is reached through torch.onnx.export(dynamo=True)."""
    return "dynamo" in inspect.signature(torch.onnx.export).parameters


def choose_exporter(requested):
    """Returns (exporter, why). `auto` takes the dynamo exporter where it is PyTorch's default
    (2.9 and later) and the TorchScript-based ("legacy") one before that."""
    if requested == "legacy":
        return "legacy", "asked for"
    if requested == "dynamo":
        if not has_dynamo_exporter():
            raise ExportError(f"PyTorch {torch.__version__} has no dynamo exporter "
                              "(it needs a PyTorch with torch.onnx.export(dynamo=True)); "
                              "use --exporter legacy")
        return "dynamo", "asked for"
    if has_dynamo_exporter() and torch_version() >= (2, 9):
        return "dynamo", f"the default exporter of PyTorch {torch.__version__}"
    return "legacy", f"PyTorch {torch.__version__}'s default; its dynamo exporter is older " \
        "than 2.9 or absent"


def embed_external_data(path):
    """Rewrites `path` with every tensor inside the file and removes the data files it used.
    Returns the names of the removed files."""
    import onnx
    model = onnx.load(path, load_external_data=False)
    folder = os.path.dirname(os.path.abspath(path))
    locations = set()
    for tensor in model.graph.initializer:
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            locations.update(e.value for e in tensor.external_data if e.key == "location")
    if not locations:
        return []
    onnx.load_external_data_for_model(model, folder)
    if model.ByteSize() >= 2**31:
        raise ExportError(f"{path}: the weights do not fit in one ONNX file (2 GiB protobuf "
                          "limit); keep the external data file")
    onnx.save(model, path)
    for location in locations:
        os.remove(os.path.join(folder, location))
    return sorted(locations)


def export_onnx(model, out, input_names, output_name, opset=17, fixed_batch=None,
                exporter="legacy", single_file=False):
    visual, audio = example_inputs(model.mode, model.size, batch=fixed_batch or 1)
    dynamic = None
    if not fixed_batch:
        dynamic = {name: {0: "batch"} for name in (*input_names, output_name)}
    kwargs = dict(opset_version=opset, input_names=list(input_names), output_names=[output_name],
                  dynamic_axes=dynamic)
    if exporter == "dynamo":
        kwargs["dynamo"] = True
        if "external_data" in inspect.signature(torch.onnx.export).parameters:
            kwargs["external_data"] = not single_file
    else:
        if has_dynamo_exporter():
            kwargs["dynamo"] = False
        kwargs["do_constant_folding"] = True
    with torch.no_grad(), warnings.catch_warnings():
        # Sizes are static for this family, so the tracer's notes about shape-dependent Python
        # values and the exporter's shape-inference notes do not apply.
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (visual, audio), out, **kwargs)
    if single_file:
        embed_external_data(out)


def external_files(path):
    """The external data files an ONNX file refers to (none when its weights are inside)."""
    import onnx
    model = onnx.load(path, load_external_data=False)
    return sorted({e.value for t in model.graph.initializer
                   if t.data_location == onnx.TensorProto.EXTERNAL
                   for e in t.external_data if e.key == "location"})


def verify(model, onnx_path, input_names, engine, tolerance, batches, fixed_batch=None,
           error_ratio=DEFAULT_ERROR_RATIO):
    """PyTorch (float32 and float64) vs the C++ engine on seeded random inputs; returns the
    Verification (lipsync.verify). Raises engine_cli.EngineError if the engine fails."""
    with tempfile.TemporaryDirectory(prefix="lipsync-verify-") as tmp:
        verifier = Verifier(model, onnx_path, engine, tmp, log, tolerance, error_ratio)
        for i, batch in enumerate(batches if not fixed_batch else [fixed_batch]):
            visual, audio = example_inputs(model.mode, model.size, batch=batch, seed=100 + i)
            verifier.batch(f"batch {batch}", list(zip(input_names, (visual, audio))))
    return verifier.result


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
    parser.add_argument("--exporter", default="auto", choices=("auto", "legacy", "dynamo"),
                        help="PyTorch's ONNX exporter: auto picks the installed PyTorch's default")
    parser.add_argument("--single-file", action="store_true",
                        help="keep the weights inside the ONNX file (no .onnx.data beside it)")
    parser.add_argument("--verify", dest="verify", action="store_true", default=True)
    parser.add_argument("--no-verify", dest="verify", action="store_false")
    parser.add_argument("--engine", help="path of the lipsync binary used to verify")
    add_bound_arguments(parser)
    parser.add_argument("--threads", type=int, default=2, help="PyTorch threads")
    args = parser.parse_args(argv)

    names = [n.strip() for n in args.input_names.split(",")]
    if len(names) != 2 or not all(names):
        log("error: --input-names needs two names, visual then audio")
        return 2
    if args.fixed_batch < 0:
        log(f"error: --fixed-batch must be >= 1 (0: dynamic batch), got {args.fixed_batch}")
        return 2
    try:
        exporter, why = choose_exporter(args.exporter)
    except ExportError as e:
        log(f"error: {e}")
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
    log(f"exporting to {args.out} with the {exporter} exporter ({why}; opset {args.opset}, "
        f"{'batch ' + str(args.fixed_batch) if args.fixed_batch else 'dynamic batch'})")
    out_dir = os.path.dirname(os.path.abspath(args.out))
    os.makedirs(out_dir, exist_ok=True)
    try:
        export_onnx(model, args.out, names, args.output_name, args.opset, args.fixed_batch or None,
                    exporter, args.single_file)
    except Exception as e:  # the exporter raises many kinds; report them as one failure
        log(f"error: export failed: {e}")
        return 2
    written = [args.out] + [os.path.join(out_dir, f) for f in external_files(args.out)]
    size = sum(os.path.getsize(f) for f in written)
    log(f"  wrote {size / 2**20:.1f} MiB in {time.time() - t0:.1f} s: "
        f"{', '.join(os.path.basename(f) for f in written)}")

    if not args.verify:
        return 0
    log(f"verifying against PyTorch float32 and float64 with {engine}")
    try:
        result = verify(model, args.out, names, engine, args.tolerance, [1, 3],
                        args.fixed_batch or None, args.error_ratio)
    except engine_cli.EngineError as e:
        log(f"error: cannot verify {args.out}: {e}")
        return 2
    print(result.summary(args.tolerance, args.error_ratio))
    if not result.ok:
        log("error: the exported model is further from PyTorch float64 than PyTorch float32's "
            "own rounding allows")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
