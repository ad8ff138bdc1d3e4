"""Loading SyncTalk_2D checkpoints with strict key matching and errors that say what is wrong."""
import os
import pickle
import zipfile

import torch

from .model import build_model


class CheckpointError(Exception):
    """A checkpoint that cannot be loaded; the message lists what is wrong."""


def read_state_dict(path):
    """Reads a plain state dict (also one wrapped under 'state_dict' or 'model', or saved from
    nn.DataParallel with 'module.' prefixes)."""
    if not os.path.exists(path):
        raise CheckpointError(f"checkpoint '{path}' does not exist")
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint '{path}' is not a file")
    try:
        obj = torch.load(path, map_location="cpu")
    except (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, ValueError,
            OSError) as e:
        raise CheckpointError(
            f"checkpoint '{path}' cannot be read (truncated or not a PyTorch file): {e}") from None
    except (AttributeError, ImportError) as e:
        # A whole pickled model (torch.save(model)) names classes this package does not have.
        raise CheckpointError(
            f"checkpoint '{path}' holds pickled objects rather than a state dict ({e}); save "
            "it with torch.save(model.state_dict())") from None
    if isinstance(obj, dict):
        for key in ("state_dict", "model"):
            if key in obj and isinstance(obj[key], dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"checkpoint '{path}' does not hold a state dict of tensors")
    if obj and all(k.startswith("module.") for k in obj):
        obj = {k[len("module."):]: v for k, v in obj.items()}
    return obj


def check_state_dict(model, state):
    """Raises CheckpointError listing missing keys, unexpected keys and shape mismatches."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    mismatched = [(k, tuple(expected[k].shape), tuple(state[k].shape))
                  for k in expected if k in state and expected[k].shape != state[k].shape]
    if not (missing or unexpected or mismatched):
        return
    lines = []
    if missing:
        lines.append(f"{len(missing)} missing key(s): " + ", ".join(missing[:20]) +
                     (" ..." if len(missing) > 20 else ""))
    if unexpected:
        lines.append(f"{len(unexpected)} unexpected key(s): " + ", ".join(unexpected[:20]) +
                     (" ..." if len(unexpected) > 20 else ""))
    for key, want, got in mismatched[:20]:
        lines.append(f"shape mismatch for {key}: model expects {list(want)}, checkpoint has "
                     f"{list(got)}")
    raise CheckpointError("checkpoint does not match the model:\n  " + "\n  ".join(lines))


def load_model(path, mode="ave", size=320):
    """Builds the model for `mode`/`size` and loads `path` into it strictly, in eval mode."""
    model = build_model(mode, size)
    state = read_state_dict(path)
    try:
        check_state_dict(model, state)
    except CheckpointError as e:
        raise CheckpointError(f"'{path}' (mode {mode}, size {size}): {e}") from None
    model.load_state_dict(state, strict=True)
    return model.eval()


def main(argv=None):
    """`python3 -m lipsync.checkpoint FILE.pth --mode ave --size 320`: does it load strictly?"""
    import argparse
    import sys

    from .model import AUDIO_SHAPES
    parser = argparse.ArgumentParser(description="Check that a checkpoint loads strictly.")
    parser.add_argument("checkpoint")
    parser.add_argument("--mode", default="ave", choices=sorted(AUDIO_SHAPES))
    parser.add_argument("--size", type=int, default=320, choices=(320, 160))
    args = parser.parse_args(argv)
    try:
        model = load_model(args.checkpoint, args.mode, args.size)
    except CheckpointError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    params = sum(p.numel() for p in model.parameters())
    print(f"{args.checkpoint}: loads strictly as mode {args.mode}, size {args.size} "
          f"({len(model.state_dict())} entries, {params:,} parameters)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
