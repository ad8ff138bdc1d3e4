"""Export verification judged by PyTorch's own float32 error: an exact export of a badly
conditioned checkpoint passes where a fixed bound on the float32 difference refuses it, an export
with one wrong weight fails, and `lipsync check --reference` prints both distances."""
import contextlib
import io
import json
import re
import subprocess

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

from lipsync import export
from lipsync.checkpoint import load_model
from lipsync.demo import random_state_dict
from lipsync.model import build_model, example_inputs
from lipsync.verify import DepthwiseFloat64, float64_copy

NAMES = ["visual_input", "audio_input"]


def ill_conditioned_state(offset=300.0, gain=30.0):
    """The 160 demo weights made badly conditioned without changing the function they compute:
    the audio branch's two conv + batch-norm pairs get activations `offset / gain` (10) away from
    zero with a spread of about 1 / `gain`, and batch-norm gains `gain` times as large that
    subtract the offset again. float32 keeps about 1e-6 of an activation of 10, which the gain
    turns into errors a thousand times those of the original weights."""
    model = build_model("ave", 160)
    model.load_state_dict(random_state_dict("ave", 160, 0))
    audio = model.audio_model
    with torch.no_grad():
        for conv, bn in ((audio.conv3, audio.bn3), (audio.conv5, audio.bn5)):
            conv.bias.add_(offset)
            bn.running_mean.add_(offset)
            conv.weight.div_(gain)
            conv.bias.div_(gain)
            bn.running_mean.div_(gain)
            bn.running_var.div_(gain * gain)
    return model.state_dict()


def largest_batch_norm_gain(model):
    return max(float((m.weight / torch.sqrt(m.running_var + m.eps)).abs().max())
               for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))


@pytest.mark.parametrize("stride,padding,dilation,bias", [(1, 1, 1, False), (2, 1, 1, True),
                                                          (2, 3, 2, True), ((1, 2), 0, 1, False)])
def test_float64_depthwise_convolution_is_the_convolution(stride, padding, dilation, bias):
    conv = torch.nn.Conv2d(12, 12, 3, stride, padding, dilation, groups=12, bias=bias).double()
    x = torch.randn(2, 12, 17, 14, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want = conv(x)
        got = DepthwiseFloat64(conv)(x)
    assert got.shape == want.shape
    assert float((got - want).abs().max()) < 1e-12


def test_float64_copy_replaces_only_depthwise_convolutions():
    model = build_model("ave", 160).eval()
    model64 = float64_copy(model)
    grouped = sum(isinstance(m, torch.nn.Conv2d) and m.groups > 1 for m in model.modules())
    assert grouped > 0
    assert sum(isinstance(m, DepthwiseFloat64) for m in model64.modules()) == grouped
    assert not any(isinstance(m, torch.nn.Conv2d) and m.groups > 1 for m in model64.modules())
    assert all(p.dtype == torch.float64 for p in model64.parameters())
    assert all(p.dtype == torch.float32 for p in model.parameters())  # the original is kept


SUMMARY = re.compile(r"C\+\+ engine ([0-9.e+-]+), PyTorch float32 ([0-9.e+-]+) .*"
                     r"C\+\+ engine vs PyTorch float32: ([0-9.e+-]+)")


@pytest.fixture(scope="module")
def ill_export(tmp_path_factory, engine_bin):
    """The badly conditioned checkpoint exported and verified the way users do it."""
    folder = tmp_path_factory.mktemp("ill")
    torch.save(ill_conditioned_state(), folder / "ill.pth")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = export.main(["--checkpoint", str(folder / "ill.pth"), "--size", "160",
                            "--out", str(folder / "ill.onnx"), "--engine", engine_bin])
    return code, out.getvalue(), folder


def test_badly_conditioned_checkpoint_exports(ill_export):
    code, stdout, folder = ill_export
    model = load_model(str(folder / "ill.pth"), "ave", 160)
    assert largest_batch_norm_gain(model) > 25
    assert code == 0, stdout
    m = SUMMARY.search(stdout)
    assert m, stdout
    engine_error, torch_error, diff = (float(g) for g in m.groups())
    # PyTorch's own float32 error is large here, and so is the engine's distance to it: a fixed
    # bound of 1e-4 on that distance would refuse this exact export.
    assert torch_error > 1e-4 and diff > 1e-4
    assert engine_error <= 2 * torch_error + 1e-4


def test_one_wrong_weight_still_fails(ill_export, tmp_path, engine_bin):
    code, _, folder = ill_export
    assert code == 0
    # One weight of a middle 1x1 convolution (largest about 0.3) off by 0.05.
    wrong = onnx.load(str(folder / "ill.onnx"))
    convs = [n.input[1] for n in wrong.graph.node if n.op_type == "Conv"]
    target = convs[len(convs) // 2]
    for tensor in wrong.graph.initializer:
        if tensor.name == target:
            weights = numpy_helper.to_array(tensor).copy()
            weights.flat[0] += 0.05
            tensor.CopyFrom(numpy_helper.from_array(weights, target))
    onnx.save(wrong, str(tmp_path / "wrong.onnx"))
    model = load_model(str(folder / "ill.pth"), "ave", 160)
    result = export.verify(model, str(tmp_path / "wrong.onnx"), NAMES, engine_bin, 1e-4, [1])
    assert not result.ok
    assert result.engine_error > 2 * result.torch_error + 1e-4


def test_check_reference_bounds_the_engine_by_the_expected_outputs_error(ill_export, tmp_path,
                                                                        engine_bin):
    _, _, folder = ill_export
    visual, audio = example_inputs("ave", 160, batch=1, seed=3)
    np.save(tmp_path / "v.npy", visual.numpy())
    np.save(tmp_path / "a.npy", audio.numpy())
    check = [engine_bin, "check", "--model", str(folder / "ill.onnx"), "--input",
             f"visual_input={tmp_path / 'v.npy'}", "--input", f"audio_input={tmp_path / 'a.npy'}"]
    subprocess.run(check + ["--save-output", str(tmp_path / "o.npy")], check=True,
                   capture_output=True)
    out = np.load(tmp_path / "o.npy")

    def run(expected, reference, *extra):
        np.save(tmp_path / "e.npy", expected.astype(np.float32))
        np.save(tmp_path / "r.npy", reference.astype(np.float32))
        return subprocess.run(check + ["--expect", str(tmp_path / "e.npy"), "--reference",
                                       str(tmp_path / "r.npy"), *extra],
                              capture_output=True, text=True)

    # Expected 1e-3 from the reference, engine on it: within 2 x 1e-3 + 1e-4.
    proc = run(out + 1e-3, out, "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["ok"] is True
    assert result["engine_error"] == 0.0
    assert result["expected_error"] == pytest.approx(1e-3, rel=1e-2)
    assert result["bound"] == pytest.approx(2 * result["expected_error"] + 1e-4)
    assert result["max_abs_diff"] == pytest.approx(1e-3, rel=1e-2)
    # The engine 5e-3 from the reference, expected 1e-3: outside, and both numbers printed.
    proc = run(out - 4e-3, out - 5e-3)
    assert proc.returncode == 1
    m = re.search(r"engine ([0-9.e+-]+), expected ([0-9.e+-]+) \(bound 2 x", proc.stdout)
    assert m, proc.stdout
    assert float(m.group(1)) == pytest.approx(5e-3, rel=2e-2)
    assert float(m.group(2)) == pytest.approx(1e-3, rel=2e-2)
    assert "MISMATCH" in proc.stdout
    # --error-ratio 6 lets the same figures pass.
    assert run(out - 4e-3, out - 5e-3, "--error-ratio", "6").returncode == 0


def test_check_reference_needs_expect(ill_export, tmp_path, engine_bin):
    _, _, folder = ill_export
    visual, audio = example_inputs("ave", 160, batch=1, seed=3)
    np.save(tmp_path / "v.npy", visual.numpy())
    np.save(tmp_path / "a.npy", audio.numpy())
    np.save(tmp_path / "r.npy", np.zeros((1, 3, 160, 160), np.float32))
    np.save(tmp_path / "bad.npy", np.zeros((1, 3, 8, 8), np.float32))
    base = [engine_bin, "check", "--model", str(folder / "ill.onnx"), "--input",
            str(tmp_path / "v.npy"), "--input", str(tmp_path / "a.npy")]
    proc = subprocess.run(base + ["--reference", str(tmp_path / "r.npy")], capture_output=True,
                          text=True)
    assert proc.returncode == 2 and "--reference needs --expect" in proc.stderr
    proc = subprocess.run(base + ["--expect", str(tmp_path / "r.npy"), "--reference",
                                  str(tmp_path / "bad.npy")], capture_output=True, text=True)
    assert proc.returncode == 2
    assert "reference output" in proc.stderr and "[1,3,8,8]" in proc.stderr
