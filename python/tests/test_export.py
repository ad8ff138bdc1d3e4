"""Export through the same path users take, verified against PyTorch through the C++ engine."""
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


@pytest.mark.parametrize("mode,size", [("hubert", 160), ("wenet", 160), ("ave", 160)])
def test_other_variants_export_and_match(tmp_path, engine_bin, mode, size):
    ckpt = tmp_path / "c.pth"
    torch.save(random_state_dict(mode, size, 2), ckpt)
    code = export.main(["--checkpoint", str(ckpt), "--mode", mode, "--size", str(size),
                        "--out", str(tmp_path / "m.onnx"), "--engine", engine_bin])
    assert code == 0


def test_engine_catches_a_wrong_export(small_checkpoint, other_export, engine_bin):
    # A model exported from other weights must fail verification against this checkpoint.
    from lipsync.checkpoint import load_model
    model = load_model(small_checkpoint, "ave", 160)
    worst = export.verify(model, other_export, ["visual_input", "audio_input"], engine_bin,
                          1e-4, [1])
    assert worst > 1e-2


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


def test_export_without_engine_says_so(tmp_path, demo_checkpoint):
    proc = subprocess.run(PY + ["lipsync.export", "--checkpoint", demo_checkpoint, "--out",
                                str(tmp_path / "x.onnx"), "--engine", str(tmp_path / "nope")],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert "C++ engine not found" in proc.stderr and "--engine" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "x.onnx").exists()  # it stops before exporting


def fake_engine(tmp_path, stdout, code):
    """A stand-in for `lipsync` that prints `stdout` and exits with `code`."""
    path = tmp_path / "fake_lipsync"
    path.write_text(f"#!/bin/sh\ncat <<'END'\n{stdout}\nEND\nexit {code}\n")
    path.chmod(0o755)
    return str(path)


def small_model():
    from lipsync.model import build_model
    model = build_model("ave", 160)
    model.load_state_dict(random_state_dict("ave", 160, 0))
    return model.eval()


def test_verify_reports_nan_as_failure(tmp_path):
    # The engine prints NaN as JSON null; a NaN must never pass as a small difference.
    engine = fake_engine(tmp_path, '{"max_abs_diff": null, "mean_abs_diff": null, '
                         '"output_shape": [1,3,160,160], "ok": false, "tolerance": 0.0001}', 1)
    worst = export.verify(small_model(), "unused.onnx", ["a", "b"], engine, 1e-4, [1, 3])
    assert np.isnan(worst)


def test_verify_surfaces_engine_errors(tmp_path):
    from lipsync.engine_cli import EngineError
    engine = fake_engine(tmp_path, "error: input 'a' expects [N,6,160,160]", 2)
    with pytest.raises(EngineError, match="input 'a' expects"):
        export.verify(small_model(), "unused.onnx", ["a", "b"], engine, 1e-4, [1])
    garbage = fake_engine(tmp_path, "not json", 0)
    with pytest.raises(EngineError, match="printed no JSON"):
        export.verify(small_model(), "unused.onnx", ["a", "b"], garbage, 1e-4, [1])
