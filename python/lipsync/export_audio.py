"""Export the audio encoder checkpoint to ONNX and verify it against PyTorch through the C++ engine.

    python3 -m lipsync.export_audio --checkpoint audio_visual_encoder.pth --out audio_encoder.onnx

The file takes mel windows [N,1,80,16] (dynamic batch N) and gives embeddings [N,512]; `lipsync
features --encoder` and lipsync::AudioEncoder run it.
"""
import argparse
import os
import sys
import tempfile
import time
import warnings

import torch

from . import engine_cli
from .audio_model import WINDOW_SHAPE, load_audio_encoder, mel_like_windows
from .checkpoint import CheckpointError
from .export import has_dynamo_exporter
from .verify import DEFAULT_ERROR_RATIO, Verifier, add_bound_arguments


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def export_onnx(model, out, input_name="mel", output_name="embedding", opset=17,
                exporter="auto"):
    """exporter: auto (the installed PyTorch's default), legacy (TorchScript-based) or dynamo."""
    example = torch.zeros(1, *WINDOW_SHAPE)
    kwargs = {}
    if exporter == "dynamo":
        kwargs["dynamo"] = True
    elif exporter == "legacy" and has_dynamo_exporter():
        kwargs["dynamo"] = False
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer notes about static shapes do not apply
        torch.onnx.export(model, (example,), out, opset_version=opset, input_names=[input_name],
                          output_names=[output_name],
                          dynamic_axes={input_name: {0: "batch"}, output_name: {0: "batch"}},
                          do_constant_folding=True, **kwargs)


def verify(model, onnx_path, engine, tolerance, batches=(1, 5), input_name="mel",
           error_ratio=DEFAULT_ERROR_RATIO):
    """PyTorch (float32 and float64) vs the C++ engine on seeded mel-like windows; returns the
    Verification (lipsync.verify). Raises engine_cli.EngineError if the engine fails."""
    with tempfile.TemporaryDirectory(prefix="lipsync-verify-audio-") as tmp:
        verifier = Verifier(model, onnx_path, engine, tmp, log, tolerance, error_ratio)
        for i, batch in enumerate(batches):
            windows = mel_like_windows(batch, seed=200 + i)
            verifier.batch(f"batch {batch}", [(input_name, windows)])
    return verifier.result


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="lipsync export-audio",
        description="Export the audio encoder (audio_visual_encoder.pth) to ONNX and verify it.")
    parser.add_argument("--checkpoint", required=True, help="encoder state dict (91 entries)")
    parser.add_argument("--out", required=True, help="ONNX file to write")
    parser.add_argument("--opset", type=int, default=17)
    parser.add_argument("--input-name", default="mel")
    parser.add_argument("--output-name", default="embedding")
    parser.add_argument("--verify", dest="verify", action="store_true", default=True)
    parser.add_argument("--no-verify", dest="verify", action="store_false")
    parser.add_argument("--engine", help="path of the lipsync binary used to verify")
    add_bound_arguments(parser)
    parser.add_argument("--exporter", default="auto", choices=("auto", "legacy", "dynamo"),
                        help="PyTorch's ONNX exporter: auto takes the installed PyTorch's default")
    parser.add_argument("--threads", type=int, default=2, help="PyTorch threads")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    engine = None
    if args.verify:
        try:
            engine = engine_cli.find_engine(args.engine)
        except engine_cli.EngineNotFound as e:
            log(f"error: {e} (or pass --no-verify)")
            return 2

    log(f"loading {args.checkpoint}")
    try:
        model = load_audio_encoder(args.checkpoint)
    except CheckpointError as e:
        log(f"error: {e}")
        return 2
    params = sum(p.numel() for p in model.parameters())
    log(f"  {len(model.state_dict())} entries, {params:,} parameters, strict match")

    t0 = time.time()
    log(f"exporting to {args.out} (opset {args.opset}, dynamic batch)")
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    tmp = f"{args.out}.tmp{os.getpid()}.onnx"
    try:
        export_onnx(model, tmp, args.input_name, args.output_name, args.opset,
                    args.exporter)
    except Exception as e:  # the exporter raises many kinds; report them as one failure
        if os.path.exists(tmp):
            os.remove(tmp)
        log(f"error: export failed: {e}")
        return 2
    log(f"  wrote {os.path.getsize(tmp) / 2**20:.1f} MiB in {time.time() - t0:.1f} s")

    if args.verify:
        log(f"verifying against PyTorch float32 and float64 with {engine}")
        try:
            result = verify(model, tmp, engine, args.tolerance, input_name=args.input_name,
                            error_ratio=args.error_ratio)
        except engine_cli.EngineError as e:
            os.remove(tmp)
            log(f"error: cannot verify {args.out}: {e}")
            return 2
        print(result.summary(args.tolerance, args.error_ratio))
        if not result.ok:
            os.remove(tmp)
            log("error: the exported encoder is further from PyTorch float64 than PyTorch "
                "float32's own rounding allows")
            return 1
    os.replace(tmp, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
