"""The audio encoder: checkpoint layout, strict loading, export verified through the C++ engine."""
import re
import subprocess
import sys

import numpy as np
import onnx
import pytest
import torch

from lipsync import export_audio
from lipsync.audio_model import (ENTRIES, PARAMETERS, build_audio_encoder, load_audio_encoder,
                                 mel_like_windows, random_audio_state_dict)
from lipsync.checkpoint import CheckpointError

PY = [sys.executable, "-m"]


@pytest.fixture(scope="module")
def encoder_checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("audio") / "audio_visual_encoder.pth"
    torch.save(random_audio_state_dict(0), path)
    return str(path)


def test_layout_matches_the_checkpoint_spec():
    enc = build_audio_encoder().eval()
    state = enc.state_dict()
    assert len(state) == ENTRIES == 91
    assert sum(p.numel() for p in enc.parameters()) == PARAMETERS == 2_812_672
    for i in range(13):
        for key in ("conv_block.0.weight", "conv_block.0.bias", "conv_block.1.weight",
                    "conv_block.1.bias", "conv_block.1.running_mean", "conv_block.1.running_var",
                    "conv_block.1.num_batches_tracked"):
            assert f"{i}.{key}" in state
    assert state["3.conv_block.0.weight"].shape == (64, 32, 3, 3)
    assert state["12.conv_block.0.weight"].shape == (512, 512, 1, 1)
    # The shapes through the blocks, as the spec lists them.
    x = torch.zeros(2, 1, 80, 16)
    seen = []
    with torch.no_grad():
        for block in enc.children():
            x = block(x)
            seen.append(tuple(x.shape[1:]))
    assert seen[0] == (32, 80, 16) and seen[3] == (64, 27, 16) and seen[6] == (128, 9, 6)
    assert seen[9] == (256, 3, 3) and seen[12] == (512, 1, 1)


def test_strict_loading_names_what_is_wrong(tmp_path, encoder_checkpoint):
    state = random_audio_state_dict(0)
    missing = dict(state)
    del missing["4.conv_block.1.running_var"]
    torch.save(missing, tmp_path / "missing.pth")
    with pytest.raises(CheckpointError, match=r"1 missing key\(s\): 4.conv_block.1.running_var"):
        load_audio_encoder(str(tmp_path / "missing.pth"))

    extra = dict(state, **{"13.conv_block.0.weight": torch.zeros(1)})
    torch.save(extra, tmp_path / "extra.pth")
    with pytest.raises(CheckpointError, match=r"unexpected key\(s\): 13.conv_block.0.weight"):
        load_audio_encoder(str(tmp_path / "extra.pth"))

    shaped = dict(state, **{"0.conv_block.0.weight": torch.zeros(32, 1, 5, 5)})
    torch.save(shaped, tmp_path / "shape.pth")
    with pytest.raises(CheckpointError, match=r"shape mismatch for 0.conv_block.0.weight: model "
                                              r"expects \[32, 1, 3, 3\], checkpoint has "
                                              r"\[32, 1, 5, 5\]"):
        load_audio_encoder(str(tmp_path / "shape.pth"))

    with pytest.raises(CheckpointError, match="does not exist"):
        load_audio_encoder(str(tmp_path / "none.pth"))
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot be read"):
        load_audio_encoder(str(tmp_path / "junk.pth"))

    # The blocks saved from a module that holds them as `audio_encoder` load too.
    prefixed = {f"audio_encoder.{k}": v for k, v in state.items()}
    torch.save(prefixed, tmp_path / "prefixed.pth")
    a = load_audio_encoder(str(tmp_path / "prefixed.pth"))
    b = load_audio_encoder(encoder_checkpoint)
    x = mel_like_windows(2, 3)
    with torch.no_grad():
        assert torch.equal(a(x), b(x))


def test_demo_weights_give_lively_embeddings():
    enc = build_audio_encoder().eval()
    enc.load_state_dict(random_audio_state_dict(0))
    with torch.no_grad():
        out = enc(mel_like_windows(64, 77))
    assert out.shape == (64, 512)
    assert torch.isfinite(out).all()
    # Not dead (all zero after the last ReLU) and not constant across windows.
    assert (out > 0).float().mean() > 0.2
    assert out.std(dim=0).mean() > 0.1


def test_export_names_opset_dynamic_batch_and_verification(tmp_path, encoder_checkpoint,
                                                           engine_bin, capsys):
    out = tmp_path / "audio_encoder.onnx"
    code = export_audio.main(["--checkpoint", encoder_checkpoint, "--out", str(out),
                              "--engine", engine_bin])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    # Both distances to PyTorch float64 are printed; this well-conditioned encoder is well
    # inside the default bound (2x PyTorch float32's, plus 1e-4).
    m = re.search(r"C\+\+ engine ([0-9.e+-]+), PyTorch float32 ([0-9.e+-]+)", captured.out)
    assert m, captured.out
    assert float(m.group(1)) <= 2 * float(m.group(2)) + 1e-4
    model = onnx.load(str(out))
    assert [i.name for i in model.graph.input] == ["mel"]
    assert [o.name for o in model.graph.output] == ["embedding"]
    assert [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")] == [17]
    dims = model.graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param and not dims[0].dim_value
    assert [d.dim_value for d in dims[1:]] == [1, 80, 16]
    assert [d.dim_value for d in model.graph.output[0].type.tensor_type.shape.dim[1:]] == [512]


def test_verification_catches_other_weights(tmp_path, engine_bin):
    other = tmp_path / "other.pth"
    torch.save(random_audio_state_dict(5), other)
    assert export_audio.main(["--checkpoint", str(other), "--out", str(tmp_path / "o.onnx"),
                              "--no-verify"]) == 0
    model = build_audio_encoder().eval()
    model.load_state_dict(random_audio_state_dict(0))
    result = export_audio.verify(model, str(tmp_path / "o.onnx"), engine_bin, 1e-4, [2])
    assert not result.ok
    assert result.engine_error > 1e-2 and result.max_abs_diff > 1e-2


def test_export_audio_command_errors(tmp_path, engine_bin):
    proc = subprocess.run([engine_bin, "export-audio", "--checkpoint", str(tmp_path / "no.pth"),
                           "--out", str(tmp_path / "x.onnx"), "--no-verify"],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert "does not exist" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "x.onnx").exists()

    from lipsync.demo import random_state_dict
    torch.save(random_state_dict("ave", 160, 0), tmp_path / "unet.pth")  # the wrong model
    proc = subprocess.run([engine_bin, "export-audio", "--checkpoint", str(tmp_path / "unet.pth"),
                           "--out", str(tmp_path / "x.onnx"), "--no-verify"],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert "91 missing key(s)" in proc.stderr and "unexpected key(s)" in proc.stderr
    assert not (tmp_path / "x.onnx").exists()


@pytest.mark.parametrize("exporter", ["auto", "legacy", "dynamo"])
def test_exporter_choice_reaches_torch(tmp_path, monkeypatch, exporter):
    # auto leaves the choice to PyTorch; legacy asks for the TorchScript-based exporter where
    # PyTorch also has the dynamo one; dynamo asks for it.
    seen = {}
    monkeypatch.setattr(torch.onnx, "export", lambda *args, **kwargs: seen.update(kwargs))
    monkeypatch.setattr(export_audio, "has_dynamo_exporter", lambda: True)
    export_audio.export_onnx(build_audio_encoder().eval(), str(tmp_path / "a.onnx"),
                             exporter=exporter)
    assert seen.get("dynamo") == {"auto": None, "legacy": False, "dynamo": True}[exporter]
    assert seen["dynamic_axes"] == {"mel": {0: "batch"}, "embedding": {0: "batch"}}
