"""The demo model: deterministic weights in the original layout, idempotent file creation."""
import os

import numpy as np
import onnx
import torch

from lipsync import demo
from lipsync.checkpoint import load_model
from lipsync.demo import random_state_dict
from lipsync.model import build_model, example_inputs

FILES = ("demo.pth", "demo.onnx", "demo_face.png", "demo_audio.npy")


def test_demo_weights_are_deterministic():
    a, b = random_state_dict("ave", 320, 0), random_state_dict("ave", 320, 0)
    c = random_state_dict("ave", 320, 1)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_demo_output_is_not_saturated():
    model = build_model()
    model.load_state_dict(random_state_dict())
    model.eval()
    with torch.no_grad():
        out = model(*example_inputs(batch=2)).numpy()
    assert 0.05 < float(np.mean(out)) < 0.95
    assert float(np.std(out)) > 1e-3
    assert float(np.mean((out < 0.01) | (out > 0.99))) < 0.05  # few saturated pixels


def make(out_dir, *extra):
    return demo.main(["--out-dir", str(out_dir), "--size", "160", "--no-verify", *extra])


def test_demo_cli_same_seed_same_bytes_and_idempotent(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    assert make(a) == 0 and make(b) == 0
    for name in ("demo.pth", "demo_face.png", "demo_audio.npy"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    model = load_model(str(a / "demo.pth"), "ave", 160)
    assert len(model.state_dict()) == 484
    assert np.load(a / "demo_audio.npy").shape == (1, 32, 16, 16)
    graph = onnx.load(str(a / "demo.onnx")).graph
    assert [i.name for i in graph.input] == ["visual_input", "audio_input"]

    # A second run keeps valid files; a corrupt checkpoint is made again, and so is its export.
    stamps = {n: os.stat(a / n).st_mtime_ns for n in FILES}
    assert make(a) == 0
    assert stamps == {n: os.stat(a / n).st_mtime_ns for n in FILES}
    (a / "demo.pth").write_bytes(b"\0" * 100)
    assert make(a) == 0
    assert (a / "demo.pth").read_bytes() == (b / "demo.pth").read_bytes()
    assert os.stat(a / "demo.onnx").st_mtime_ns != stamps["demo.onnx"]
    assert not [n for n in os.listdir(a) if ".tmp" in n]


def test_demo_weights_bytes_follow_the_seed():
    size = 160
    same = [demo.state_dict_bytes(random_state_dict("ave", size, 0)) for _ in range(2)]
    other = demo.state_dict_bytes(random_state_dict("ave", size, 1))
    assert same[0] == same[1] and same[0] != other
