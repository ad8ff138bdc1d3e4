"""The demo model: deterministic weights in the original layout, idempotent file creation."""
import os

import numpy as np
import onnx
import torch

from lipsync import demo
from lipsync.checkpoint import load_model
from lipsync.demo import make_random_state_dict, random_state_dict
from lipsync.model import build_model, example_inputs

FILES = ("demo.pth", "demo.onnx", "demo_face.png", "demo_audio.npy")


def test_demo_weights_are_deterministic():
    a, b = make_random_state_dict("ave", 160, 0), make_random_state_dict("ave", 160, 0)
    c = make_random_state_dict("ave", 160, 1)
    assert demo.state_dict_bytes(a) == demo.state_dict_bytes(b)
    assert demo.state_dict_bytes(a) != demo.state_dict_bytes(c)
    # The caller's thread setting does not change the calibrated statistics.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        d = make_random_state_dict("ave", 160, 0)
    finally:
        torch.set_num_threads(threads)
    assert demo.state_dict_bytes(a) == demo.state_dict_bytes(d)


def test_demo_output_is_in_range_and_follows_both_inputs():
    # Verification can only catch an engine error in a branch whose input moves the output.
    model = build_model()
    model.load_state_dict(random_state_dict())
    model.eval()
    visual, audio = example_inputs(batch=2)
    other_visual, other_audio = example_inputs(batch=2, seed=7)
    with torch.no_grad():
        out = model(visual, audio).numpy()
        by_audio = model(visual, other_audio).numpy()
        by_visual = model(other_visual, audio).numpy()
    assert 0.3 < float(np.mean(out)) < 0.7
    assert float(np.std(out)) > 0.05
    assert float(np.mean((out < 0.01) | (out > 0.99))) < 0.01  # few saturated pixels
    assert float(np.mean(np.abs(by_audio - out))) > 0.01
    assert float(np.mean(np.abs(by_visual - out))) > 0.01


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
