"""The demo model: deterministic weights in the original layout, idempotent file creation."""
import os

import numpy as np
import onnx
import torch

from lipsync import demo
from lipsync.checkpoint import load_model
from lipsync.demo import make_random_state_dict, random_state_dict
from lipsync.model import build_model, example_inputs

FILES = ("demo.pth", "demo.onnx", "demo_face.png", "demo_audio.npy", "demo_speech.wav",
         "demo_audio_encoder.pth", "demo_audio_encoder.onnx")


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
    for name in ("demo.pth", "demo_face.png", "demo_audio.npy", "demo_speech.wav",
                 "demo_audio_encoder.pth"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    model = load_model(str(a / "demo.pth"), "ave", 160)
    assert len(model.state_dict()) == 484
    assert np.load(a / "demo_audio.npy").shape == (1, 32, 16, 16)
    graph = onnx.load(str(a / "demo.onnx")).graph
    assert [i.name for i in graph.input] == ["visual_input", "audio_input"]
    assert demo.valid_wav(str(a / "demo_speech.wav"))
    assert demo.valid_audio_encoder_onnx(str(a / "demo_audio_encoder.onnx"))

    # A second run keeps valid files; a corrupt checkpoint is made again, and so is its export.
    stamps = {n: os.stat(a / n).st_mtime_ns for n in FILES}
    assert make(a) == 0
    assert stamps == {n: os.stat(a / n).st_mtime_ns for n in FILES}
    (a / "demo.pth").write_bytes(b"\0" * 100)
    assert make(a) == 0
    assert (a / "demo.pth").read_bytes() == (b / "demo.pth").read_bytes()
    assert os.stat(a / "demo.onnx").st_mtime_ns != stamps["demo.onnx"]
    assert not [n for n in os.listdir(a) if ".tmp" in n]


def test_synthetic_speech_is_deterministic_and_voice_like():
    a, b = demo.synthetic_speech(seed=0), demo.synthetic_speech(seed=0)
    assert a.dtype == np.dtype("<i2") and len(a) == 5 * 16000
    assert a.tobytes() == b.tobytes()
    x = a.astype(np.float64) / 32768
    # Loud syllables and silent pauses: the short-time level varies widely.
    level = np.sqrt(np.mean(x[: len(x) // 400 * 400].reshape(-1, 400) ** 2, axis=1))
    assert level.max() > 0.1 and np.mean(level < 0.01) > 0.1
    # Energy mostly in the voice band (below 4 kHz).
    spectrum = np.abs(np.fft.rfft(x)) ** 2
    freqs = np.fft.rfftfreq(len(x), 1 / 16000)
    assert spectrum[freqs < 4000].sum() > 0.9 * spectrum.sum()
