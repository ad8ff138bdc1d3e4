"""The old server's audio path (numpy mel spectrogram, encoder windows, per-frame windows) against
lipsync's (`lipsync features`) on the same speech-like audio: the frames the two servers make can
only be compared if both hear the same thing."""
import os
import subprocess
import wave

import numpy as np
import torch

import migration_util as mu
import old_server

BIN = os.environ["LIPSYNC_BIN"]


def test_mel_and_audio_windows_match_lipsync(tmp_path):
    avatar = mu.make_avatar(str(tmp_path / "avatars"))
    rng = np.random.default_rng(3)
    t = np.arange(int(16000 * 1.3)) / 16000
    speech = 0.3 * np.maximum(0, np.sin(2 * np.pi * 4 * t)) * np.sin(2 * np.pi * 180 * t)
    pcm16 = np.clip((speech + 0.02 * rng.standard_normal(t.size)) * 32767, -32768, 32767)
    wav = tmp_path / "speech.wav"
    with wave.open(str(wav), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(pcm16.astype("<i2").tobytes())
    run = subprocess.run([BIN, "features", "--audio", str(wav), "--encoder",
                          os.path.join(avatar, "audio_encoder.onnx"), "--threads", "1",
                          "--pcm-out", str(tmp_path / "pcm.npy"),
                          "--mel-out", str(tmp_path / "mel.npy"),
                          "--out", str(tmp_path / "windows.npy")],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    pcm = np.load(tmp_path / "pcm.npy").astype(np.float32).reshape(-1)
    mel = old_server.mel_spectrogram(pcm)
    want_mel = np.load(tmp_path / "mel.npy")
    assert mel.shape == want_mel.shape
    # Both compute in double precision and round to float32 at the end.
    print("mel max abs difference", np.abs(mel - want_mel).max())
    assert np.abs(mel - want_mel).max() < 1e-4
    encoder = torch.jit.load(os.path.join(avatar, "audio_encoder.pt")).eval()
    with torch.no_grad():
        embeddings = encoder(torch.from_numpy(old_server.mel_windows(mel))).numpy()
    windows = old_server.frame_windows(embeddings)
    want = np.load(tmp_path / "windows.npy")
    assert windows.shape == want.shape
    # PyTorch and ONNX Runtime sum the encoder's 1280 products in different orders.
    print("window max abs difference", np.abs(windows - want).max())
    assert np.abs(windows - want).max() < 1e-4
