"""Export through the same path users take, verified against PyTorch through the C++ engine."""
import json
import subprocess
import sys

import numpy as np
import onnx
import pytest
import torch

from lipsync import export
from lipsync.demo import random_state_dict

PY = [sys.executable, "-m"]


def test_export_names_opset_and_dynamic_batch(tmp_path, demo_checkpoint):
    out = tmp_path / "m.onnx"
    assert export.main(["--checkpoint", demo_checkpoint, "--out", str(out), "--no-verify",
                        "--input-names", "input,audio", "--output-name", "face"]) == 0
    model = onnx.load(str(out))
    assert [i.name for i in model.graph.input] == ["input", "audio"]
    assert [o.name for o in model.graph.output] == ["face"]
    assert [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")] == [17]
    dims = model.graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param and not dims[0].dim_value  # symbolic batch
    assert [d.dim_value for d in dims[1:]] == [6, 320, 320]


def test_export_fixed_batch(tmp_path, demo_checkpoint):
    out = tmp_path / "fixed.onnx"
    assert export.main(["--checkpoint", demo_checkpoint, "--out", str(out), "--no-verify",
                        "--fixed-batch", "2"]) == 0
    dims = onnx.load(str(out)).graph.input[1].type.tensor_type.shape.dim
    assert [d.dim_value for d in dims] == [2, 32, 16, 16]


def test_export_verifies_against_the_engine(tmp_path, demo_checkpoint, engine_bin, capsys):
    out = tmp_path / "v.onnx"
    code = export.main(["--checkpoint", demo_checkpoint, "--out", str(out),
                        "--engine", engine_bin])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "batch 1: max abs difference" in captured.err
    assert "batch 3: max abs difference" in captured.err
    diff = float(captured.out.split("max abs difference PyTorch vs C++ engine:")[1].split()[0])
    assert diff <= 1e-4


@pytest.mark.parametrize("mode,size", [("hubert", 320), ("wenet", 160), ("ave", 160)])
def test_other_variants_export_and_match(tmp_path, engine_bin, mode, size):
    ckpt = tmp_path / "c.pth"
    torch.save(random_state_dict(mode, size, 2), ckpt)
    code = export.main(["--checkpoint", str(ckpt), "--mode", mode, "--size", str(size),
                        "--out", str(tmp_path / "m.onnx"), "--engine", engine_bin])
    assert code == 0


def test_engine_catches_a_wrong_export(tmp_path, demo_checkpoint, engine_bin):
    # A model exported from other weights must fail verification against this checkpoint.
    other = tmp_path / "other.pth"
    torch.save(random_state_dict("ave", 320, 99), other)
    onnx_path = tmp_path / "other.onnx"
    assert export.main(["--checkpoint", str(other), "--out", str(onnx_path), "--no-verify"]) == 0
    from lipsync.checkpoint import load_model
    model = load_model(demo_checkpoint)
    worst = export.verify(model, str(onnx_path), ["visual_input", "audio_input"], engine_bin,
                          1e-4, [1])
    assert worst > 1e-3


def test_export_cli_errors(tmp_path, demo_checkpoint):
    bad = tmp_path / "bad.pth"
    state = random_state_dict("ave", 320, 0)
    del state["inc.inconv.0.conv.0.weight"]
    torch.save(state, bad)
    proc = subprocess.run(PY + ["lipsync.export", "--checkpoint", str(bad), "--out",
                                str(tmp_path / "x.onnx"), "--no-verify"],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert "missing key(s): inc.inconv.0.conv.0.weight" in proc.stderr
    assert "Traceback" not in proc.stderr

    proc = subprocess.run(PY + ["lipsync.export", "--checkpoint", str(tmp_path / "none.pth"),
                                "--out", str(tmp_path / "x.onnx"), "--no-verify"],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "does not exist" in proc.stderr


def test_missing_engine_is_explained(monkeypatch):
    from lipsync import engine_cli
    monkeypatch.setenv("LIPSYNC_BIN", "")
    monkeypatch.setattr(engine_cli, "REPO", "/nonexistent")
    with pytest.raises(engine_cli.EngineNotFound, match="C\\+\\+ engine not found"):
        engine_cli.find_engine("/nonexistent/lipsync")


def test_demo_is_deterministic():
    a, b = random_state_dict("ave", 320, 0), random_state_dict("ave", 320, 0)
    c = random_state_dict("ave", 320, 1)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_demo_output_is_not_saturated(tmp_path):
    from lipsync.model import build_model, example_inputs
    model = build_model()
    model.load_state_dict(random_state_dict())
    model.eval()
    with torch.no_grad():
        out = model(*example_inputs(batch=2)).numpy()
    assert 0.05 < float(np.mean(out)) < 0.95
    assert float(np.std(out)) > 1e-3
