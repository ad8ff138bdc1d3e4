"""Verifying an exported model against PyTorch by PyTorch's own float32 error.

PyTorch and the C++ engine both compute in float32 with different summation orders, so they
differ by rounding, and a badly conditioned model (large batch-norm gains, as default
initialisation or training can leave) magnifies that rounding far beyond any fixed bound. So the
judge is a float64 PyTorch run of the same inputs: the engine passes when its distance to that
run is at most `error_ratio` times PyTorch float32's own distance to it, plus `tolerance` (an
absolute floor for models whose float32 error is tiny). A wrong export (a wrong weight, a wrong
layer) moves the engine's output away from float64 by far more than rounding does.
"""
import copy
import math
import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import engine_cli

DEFAULT_TOLERANCE = 1e-4
DEFAULT_ERROR_RATIO = 2.0


def add_bound_arguments(parser):
    """--tolerance and --error-ratio: the bound on the engine's distance to PyTorch float64."""
    parser.add_argument("--tolerance", type=float, default=DEFAULT_TOLERANCE,
                        help="absolute part of the bound on the engine's distance to PyTorch "
                        "float64")
    parser.add_argument("--error-ratio", type=float, default=DEFAULT_ERROR_RATIO,
                        help="the engine may be this many times as far from PyTorch float64 "
                        "as PyTorch float32 is")


@dataclass
class Verification:
    """The worst figures over the verified batches (NaN when any is NaN)."""
    engine_error: float = 0.0  # max abs difference, C++ engine vs PyTorch float64
    torch_error: float = 0.0   # max abs difference, PyTorch float32 vs PyTorch float64
    max_abs_diff: float = 0.0  # max abs difference, C++ engine vs PyTorch float32
    ok: bool = True

    def summary(self, tolerance, error_ratio):
        """One line with both distances to float64 and the bound they were judged by."""
        return (f"max abs difference to PyTorch float64: C++ engine {self.engine_error:.3g}, "
                f"PyTorch float32 {self.torch_error:.3g} (bound {error_ratio:g} x "
                f"{self.torch_error:.3g} + {tolerance:g}); C++ engine vs PyTorch float32: "
                f"{self.max_abs_diff:.3g}")


def _worst(a, b):
    # max() would drop a NaN, so it is carried explicitly.
    return float("nan") if math.isnan(a) or math.isnan(b) else max(a, b)


def _number(value):
    return float("nan") if value is None else float(value)  # JSON has no NaN: null


class DepthwiseFloat64(nn.Module):
    """A depthwise convolution (one filter per channel) as a sum of shifted copies of its input,
    each scaled per channel. PyTorch's CPU float64 convolution runs a grouped convolution one group
    at a time, which made the float64 reference of a SyncTalk_2D UNet several times slower than
    the float32 model; the result is the same up to float64 rounding."""

    def __init__(self, conv):
        super().__init__()
        self.weight, self.bias = conv.weight, conv.bias
        self.stride, self.padding, self.dilation = conv.stride, conv.padding, conv.dilation

    def forward(self, x):
        (ph, pw), (sh, sw), (dh, dw) = self.padding, self.stride, self.dilation
        kh, kw = self.weight.shape[2:]
        x = F.pad(x, (pw, pw, ph, ph))
        h = (x.shape[2] - dh * (kh - 1) - 1) // sh + 1
        w = (x.shape[3] - dw * (kw - 1) - 1) // sw + 1
        out = None
        for i in range(kh):
            for j in range(kw):
                patch = x[:, :, i * dh:i * dh + sh * (h - 1) + 1:sh,
                          j * dw:j * dw + sw * (w - 1) + 1:sw]
                scale = self.weight[:, 0, i, j].view(1, -1, 1, 1)
                out = patch * scale if out is None else out.addcmul_(patch, scale)
        return out if self.bias is None else out.add_(self.bias.view(1, -1, 1, 1))


def _is_depthwise(m):
    return (isinstance(m, nn.Conv2d) and m.groups > 1 and m.groups == m.in_channels
            == m.out_channels and m.padding_mode == "zeros" and not isinstance(m.padding, str))


def float64_copy(model):
    """A float64 copy of `model` (the original stays float32), its depthwise convolutions
    computed by DepthwiseFloat64."""
    model64 = copy.deepcopy(model).double().eval()
    for parent in list(model64.modules()):
        for name, child in list(parent.named_children()):
            if _is_depthwise(child):
                setattr(parent, name, DepthwiseFloat64(child))
    return model64


class Verifier:
    """Runs PyTorch (float32 and float64) and the engine on batches of inputs and keeps the worst
    figures. `log` gets one line per batch."""

    def __init__(self, model, onnx_path, engine, tmp, log, tolerance=DEFAULT_TOLERANCE,
                 error_ratio=DEFAULT_ERROR_RATIO):
        self.model = model
        self.model64 = float64_copy(model)
        self.onnx_path = onnx_path
        self.engine = engine
        self.tmp = tmp
        self.log = log
        self.tolerance = tolerance
        self.error_ratio = error_ratio
        self.result = Verification()

    def batch(self, label, inputs):
        """inputs: (name, float32 tensor) pairs in the model's argument order."""
        with torch.no_grad():
            expected = self.model(*(t for _, t in inputs)).numpy()
            reference = self.model64(*(t.double() for _, t in inputs)).numpy()
        paths = {}
        for name, tensor in inputs:
            paths[name] = os.path.join(self.tmp, f"input{len(paths)}_{label}.npy")
            np.save(paths[name], tensor.numpy())
        expected_path = os.path.join(self.tmp, f"expected_{label}.npy")
        reference_path = os.path.join(self.tmp, f"reference_{label}.npy")
        np.save(expected_path, expected)
        # The engine's reader takes float32; rounding float64 to float32 moves it by at most
        # half an ulp, far below the float32 runs' own error.
        np.save(reference_path, reference.astype(np.float32))
        result = engine_cli.check(self.engine, self.onnx_path, paths, expected_path,
                                  self.tolerance, reference=reference_path,
                                  error_ratio=self.error_ratio)
        engine_error = _number(result.get("engine_error"))
        torch_error = _number(result.get("expected_error"))
        diff = _number(result.get("max_abs_diff"))
        ok = bool(result.get("ok"))
        self.log(f"  {label}: to PyTorch float64, C++ engine {engine_error:.3g}, PyTorch float32 "
                 f"{torch_error:.3g} (bound {_number(result.get('bound')):.3g}); C++ engine vs "
                 f"PyTorch float32 {diff:.3g} {'OK' if ok else 'TOO LARGE'}")
        r = self.result
        r.engine_error = _worst(r.engine_error, engine_error)
        r.torch_error = _worst(r.torch_error, torch_error)
        r.max_abs_diff = _worst(r.max_abs_diff, diff)
        r.ok = r.ok and ok
        return ok
