"""Export through the same path users take, verified against PyTorch through the C++ engine."""
import re
import subprocess
import sys

import numpy as np
import onnx
from onnx import numpy_helper
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
    assert "batch 1: to PyTorch float64, C++ engine" in captured.err
    assert "batch 3: to PyTorch float64, C++ engine" in captured.err
    m = re.search(r"C\+\+ engine ([0-9.e+-]+), PyTorch float32 ([0-9.e+-]+) .*"
                  r"C\+\+ engine vs PyTorch float32: ([0-9.e+-]+)", captured.out)
    assert m, captured.out
    engine_error, torch_error, diff = (float(g) for g in m.groups())
    assert engine_error <= 2 * torch_error + 1e-4
    assert diff <= 1e-4  # the demo weights are well conditioned


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
    result = export.verify(model, other_export, ["visual_input", "audio_input"], engine_bin,
                           1e-4, [1])
    assert not result.ok
    assert result.engine_error > 1e-2 and result.max_abs_diff > 1e-2


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
                         '"engine_error": null, "expected_error": 0.0001, "bound": 0.0003, '
                         '"output_shape": [1,3,160,160], "ok": false, "tolerance": 0.0001}', 1)
    result = export.verify(small_model(), "unused.onnx", ["a", "b"], engine, 1e-4, [1, 3])
    assert not result.ok
    assert np.isnan(result.engine_error) and np.isnan(result.max_abs_diff)


def test_verify_surfaces_engine_errors(tmp_path):
    from lipsync.engine_cli import EngineError
    engine = fake_engine(tmp_path, "error: input 'a' expects [N,6,160,160]", 2)
    with pytest.raises(EngineError, match="input 'a' expects"):
        export.verify(small_model(), "unused.onnx", ["a", "b"], engine, 1e-4, [1])
    garbage = fake_engine(tmp_path, "not json", 0)
    with pytest.raises(EngineError, match="printed no JSON"):
        export.verify(small_model(), "unused.onnx", ["a", "b"], garbage, 1e-4, [1])


def test_auto_exporter_says_which_exporter_it_used(tmp_path, small_checkpoint, capsys):
    out = tmp_path / "auto.onnx"
    assert export.main(["--checkpoint", small_checkpoint, "--size", "160", "--out", str(out),
                        "--no-verify"]) == 0
    chosen, _ = export.choose_exporter("auto")
    assert f"with the {chosen} exporter" in capsys.readouterr().err
    # PyTorch before 2.9 (Debian's is 1.13) defaults to the TorchScript-based exporter.
    assert chosen == ("dynamo" if export.torch_version() >= (2, 9) else "legacy")


def test_dynamo_exporter_runs_or_is_refused_clearly(tmp_path, small_checkpoint, engine_bin,
                                                    capsys):
    code = export.main(["--checkpoint", small_checkpoint, "--size", "160", "--exporter",
                        "dynamo", "--out", str(tmp_path / "d.onnx"), "--engine", engine_bin])
    err = capsys.readouterr().err
    if export.has_dynamo_exporter():
        assert code == 0, err
    else:
        assert code == 2
        assert f"PyTorch {torch.__version__} has no dynamo exporter" in err


def external_copy(src, folder):
    """`src` re-saved with every tensor in `<name>.data` beside it, as the dynamo exporter does."""
    folder.mkdir()
    path = folder / "m.onnx"
    onnx.save_model(onnx.load(src), str(path), save_as_external_data=True,
                    all_tensors_to_one_file=True, location="m.onnx.data", size_threshold=0)
    return path


def test_external_data_export_verifies_through_the_engine(tmp_path, small_checkpoint, engine_bin,
                                                          other_export):
    from lipsync.checkpoint import load_model
    single = tmp_path / "single.onnx"
    assert export.main(["--checkpoint", small_checkpoint, "--size", "160", "--out", str(single),
                        "--no-verify"]) == 0
    path = external_copy(str(single), tmp_path / "ext")
    assert export.external_files(str(path)) == ["m.onnx.data"]
    model = load_model(small_checkpoint, "ave", 160)
    result = export.verify(model, str(path), ["visual_input", "audio_input"], engine_bin, 1e-4,
                           [1, 3])
    assert result.ok and result.max_abs_diff <= 1e-4


def test_single_file_embeds_the_weights_and_removes_the_data_file(tmp_path, other_export):
    path = external_copy(other_export, tmp_path / "ext")
    assert (tmp_path / "ext" / "m.onnx.data").exists()
    assert export.embed_external_data(str(path)) == ["m.onnx.data"]
    assert not (tmp_path / "ext" / "m.onnx.data").exists()
    assert export.external_files(str(path)) == []
    original = {t.name: numpy_helper.to_array(t) for t in onnx.load(other_export).graph.initializer}
    embedded = onnx.load(str(path), load_external_data=False)
    assert {t.name for t in embedded.graph.initializer} == set(original)
    for t in embedded.graph.initializer:
        assert np.array_equal(numpy_helper.to_array(t), original[t.name]), t.name
    # Nothing left to embed: a second pass changes nothing.
    assert export.embed_external_data(str(path)) == []


def test_single_file_option_writes_one_file(tmp_path, small_checkpoint):
    out = tmp_path / "one.onnx"
    assert export.main(["--checkpoint", small_checkpoint, "--size", "160", "--out", str(out),
                        "--no-verify", "--single-file"]) == 0
    assert export.external_files(str(out)) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one.onnx"]
