"""`lipsync features` against references written here from the model spec (section 2) in NumPy,
float64, with their own Slaney filterbank: the mel spectrogram (<= 1e-4 on the normalised scale),
decoding and resampling, the encoder windows and the UNet's audio windows (exact), the streaming
path (bit for bit), and the errors for bad input."""
import json
import os
import shutil
import subprocess
import sys
import wave

import numpy as np
import pytest
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "common"))
from cli_util import run_checked  # noqa: E402

BIN = os.environ["LIPSYNC_BIN"]
DEMO = os.path.join(os.environ["LIPSYNC_TEST_DATA_DIR"], "demo")
ENCODER = os.path.join(DEMO, "demo_audio_encoder.onnx")
SPEECH = os.path.join(DEMO, "demo_speech.wav")
MEL_TOLERANCE = 1e-4


# ---- reference implementation of the spec, section 2 steps 2-5 and 6, 8, 9 ----

def hz_to_mel(hz):
    """Slaney: 3 mels per 200 Hz up to 1 kHz (mel 15), then 27 mels per factor 6.4."""
    hz = np.asarray(hz, np.float64)
    return np.where(hz < 1000, hz * 3 / 200, 15 + 27 * np.log(np.maximum(hz, 1e-9) / 1000)
                    / np.log(6.4))


def mel_to_hz(mel):
    mel = np.asarray(mel, np.float64)
    return np.where(mel < 15, mel * 200 / 3, 1000 * 6.4 ** ((mel - 15) / 27))


def slaney_filterbank(rate=16000, n_fft=800, bands=80, fmin=55.0, fmax=7600.0):
    freqs = np.arange(n_fft // 2 + 1) * rate / n_fft
    edges = mel_to_hz(np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), bands + 2))
    bank = np.zeros((bands, freqs.size))
    for b in range(bands):
        left, centre, right = edges[b], edges[b + 1], edges[b + 2]
        rising = (freqs - left) / (centre - left)
        falling = (right - freqs) / (right - centre)
        bank[b] = np.clip(np.minimum(rising, falling), 0, None) * 2.0 / (right - left)
    return bank


FILTERBANK = slaney_filterbank()
HANN = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(800) / 800)  # periodic


def reference_mel(pcm, padding="zero"):
    x = np.asarray(pcm, np.float64)
    y = np.concatenate([x[:1], x[1:] - 0.97 * x[:-1]])
    padded = np.pad(y, 400, mode="constant" if padding == "zero" else "reflect")
    frames = 1 + len(y) // 200
    index = 200 * np.arange(frames)[:, None] + np.arange(800)[None, :]
    magnitude = np.abs(np.fft.rfft(padded[index] * HANN, axis=1)).T  # [401, T]
    db = 20 * np.log10(np.maximum(1e-5, FILTERBANK @ magnitude)) - 20
    return np.clip(8 * (db + 100) / 100 - 4, -4, 4)


def reference_encoder_windows(mel, fps=25):
    frames = mel.shape[1]
    count = int((frames - 16) / 80. * fps) + 2
    windows = []
    for k in range(count):
        start = int(80 * k / fps)
        if start + 16 > frames:
            start = frames - 16
        windows.append(mel[:, start:start + 16])
    return np.stack(windows)[:, None]


def reference_unet_windows(embeddings, edge="zeros"):
    seq = np.concatenate([embeddings[:1], embeddings, embeddings[-1:]])
    out = []
    for i in range(len(seq)):
        rows = []
        for j in range(i - 8, i + 8):
            if 0 <= j < len(seq):
                rows.append(seq[j])
            elif edge == "zeros":
                rows.append(np.zeros_like(seq[0]))
            else:
                rows.append(seq[min(max(j, 0), len(seq) - 1)])
        out.append(np.stack(rows).reshape(32, 16, 16))
    return np.stack(out)


# ---- helpers ----

def run(*args, check=True):
    return run_checked([BIN], [str(a) for a in args], "lipsync", check=check)


def write_wav(path, samples, rate, channels=1):
    data = np.clip(np.round(np.asarray(samples) * 32767), -32768, 32767).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(data.tobytes())
    return path


def features(tmp_path, audio, *extra, name="f"):
    """Runs `lipsync features`, returns (pcm, mel) as decoded and computed by the C++ code."""
    pcm, mel = tmp_path / f"{name}_pcm.npy", tmp_path / f"{name}_mel.npy"
    run("features", "--audio", audio, "--pcm-out", pcm, "--mel-out", mel, *extra)
    return np.load(pcm), np.load(mel)


def tone(freq, seconds, rate, amp=0.5):
    t = np.arange(int(round(seconds * rate))) / rate
    return amp * np.sin(2 * np.pi * freq * t)


def dominant_frequency(pcm, rate):
    spectrum = np.abs(np.fft.rfft(pcm * np.hanning(len(pcm)), n=8 * len(pcm)))
    return np.argmax(spectrum) * rate / (8 * len(pcm))


# ---- the mel spectrogram ----

SIGNALS = {
    "silence": lambda rate: np.zeros(rate),
    "tone": lambda rate: tone(440, 1.0, rate),
    "quiet_tone": lambda rate: tone(3000, 1.0, rate, amp=0.001),
    "noise": lambda rate: np.random.default_rng(1).normal(0, 0.2, rate),
    "odd_length": lambda rate: np.random.default_rng(2).normal(0, 0.1, rate + 137),
}


@pytest.mark.parametrize("padding", ["zero", "reflect"])
@pytest.mark.parametrize("signal", sorted(SIGNALS))
def test_mel_matches_the_reference_at_16khz(tmp_path, signal, padding):
    samples = SIGNALS[signal](16000)
    path = write_wav(tmp_path / "in.wav", samples, 16000)
    pcm, mel = features(tmp_path, path, "--padding", padding)
    # At 16 kHz the decoded PCM is the WAV's 16-bit samples exactly.
    expected_pcm = np.clip(np.round(samples * 32767), -32768, 32767) / 32768
    np.testing.assert_allclose(pcm, expected_pcm, atol=1e-7, rtol=0)
    ref = reference_mel(pcm, padding)
    assert mel.dtype == np.float32 and mel.shape == ref.shape == (80, 1 + len(samples) // 200)
    assert np.max(np.abs(mel - ref)) <= MEL_TOLERANCE
    if signal == "silence":
        assert np.all(mel == -4)


@pytest.mark.parametrize("padding", ["zero", "reflect"])
@pytest.mark.parametrize("rate", [8000, 22050, 44100, 48000])
def test_mel_of_resampled_input_matches_the_reference(tmp_path, rate, padding):
    rng = np.random.default_rng(rate)
    samples = 0.3 * tone(300, 1.3, rate) + rng.normal(0, 0.05, int(round(1.3 * rate)))
    path = write_wav(tmp_path / "in.wav", samples, rate)
    pcm, mel = features(tmp_path, path, "--padding", padding)
    assert abs(len(pcm) - len(samples) * 16000 / rate) <= 1
    assert np.max(np.abs(mel - reference_mel(pcm, padding))) <= MEL_TOLERANCE


@pytest.mark.parametrize("rate", [8000, 22050, 44100, 48000])
def test_resampler_keeps_frequency_and_length(tmp_path, rate):
    samples = tone(1234.5, 1.7, rate)
    pcm, _ = features(tmp_path, write_wav(tmp_path / "tone.wav", samples, rate))
    assert abs(len(pcm) - round(len(samples) * 16000 / rate)) <= 1
    assert dominant_frequency(pcm, 16000) == pytest.approx(1234.5, rel=2e-3)
    # Away from the ends the resampled tone is the tone itself at 16 kHz.
    t = np.arange(len(pcm)) / 16000
    middle = slice(800, len(pcm) - 800)
    assert np.max(np.abs(pcm[middle] - 0.5 * np.sin(2 * np.pi * 1234.5 * t[middle]))) < 0.01


def test_stereo_is_the_mean_of_the_channels(tmp_path):
    left, right = tone(440, 1.0, 16000, 0.4), tone(660, 1.0, 16000, 0.2)
    interleaved = np.stack([left, right], axis=1).reshape(-1)
    pcm, _ = features(tmp_path, write_wav(tmp_path / "st.wav", interleaved, 16000, channels=2))
    q = lambda s: np.round(s * 32767) / 32768  # noqa: E731
    np.testing.assert_allclose(pcm, (q(left) + q(right)) / 2, atol=1e-6)


@pytest.mark.parametrize("ext,codec", [("flac", ["-c:a", "flac"]),
                                       ("mp3", ["-c:a", "libmp3lame", "-b:a", "128k"]),
                                       ("m4a", ["-c:a", "aac", "-b:a", "128k"]),
                                       ("mp4", ["-c:v", "mpeg4", "-c:a", "aac", "-shortest"])])
def test_compressed_and_video_files_decode(tmp_path, ext, codec):
    assert shutil.which("ffmpeg"), "the ffmpeg command is not installed: run scripts/setup.sh"
    samples = tone(523.25, 2.0, 44100, 0.4)
    wav = write_wav(tmp_path / "src.wav", samples, 44100)
    out = tmp_path / f"enc.{ext}"
    video = ["-f", "lavfi", "-i", "color=c=gray:s=64x64:r=25:d=2"] if ext == "mp4" else []
    subprocess.run(["ffmpeg", "-v", "error", "-y", *video, "-i", str(wav), *codec, str(out)],
                   check=True)
    pcm, mel = features(tmp_path, out)
    assert abs(len(pcm) / 16000 - 2.0) < 0.06  # encoder padding of a frame at most
    assert dominant_frequency(pcm, 16000) == pytest.approx(523.25, rel=2e-3)
    assert np.max(np.abs(mel - reference_mel(pcm))) <= MEL_TOLERANCE
    if ext == "flac":  # lossless: the same PCM as the WAV's
        wav_pcm, _ = features(tmp_path, wav, name="w")
        np.testing.assert_allclose(pcm, wav_pcm, atol=1e-6)


# ---- windows, encoder, stream (the demo encoder) ----

@pytest.fixture(scope="module")
def speech(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("speech")
    out = {}
    for edge in ("zeros", "repeat"):
        path = tmp / f"windows_{edge}.npy"
        run("features", "--audio", SPEECH, "--encoder", ENCODER, "--mel-out", tmp / "mel.npy",
            "--pcm-out", tmp / "pcm.npy", "--out", path, "--edge", edge, "--threads", "2")
        out[edge] = np.load(path)
    out["mel"], out["pcm"], out["dir"] = np.load(tmp / "mel.npy"), np.load(tmp / "pcm.npy"), tmp
    return out


def test_speech_mel_matches_the_reference(speech):
    assert np.max(np.abs(speech["mel"] - reference_mel(speech["pcm"]))) <= MEL_TOLERANCE


def test_windows_and_edge_rows_match_the_reference(speech):
    mel = speech["mel"]
    windows = reference_encoder_windows(mel)
    path = speech["dir"] / "enc_windows.npy"
    np.save(path, windows)
    # The encoder's embeddings of the reference windows, by the C++ engine in one batch.
    emb_path = speech["dir"] / "emb.npy"
    run("check", "--model", ENCODER, "--input", f"mel={path}", "--save-output", emb_path,
        "--max-batch", len(windows), "--threads", "2")
    embeddings = np.load(emb_path)
    assert embeddings.shape == (len(windows), 512)
    for edge in ("zeros", "repeat"):
        got = speech[edge]
        want = reference_unet_windows(embeddings, edge)
        assert got.shape == want.shape == (len(windows) + 2, 32, 16, 16)
        # Exact: the rows are copies of the same engine's embeddings (the engine's results do
        # not depend on how the windows are split into batches).
        assert np.array_equal(got, want)
    # The first frames' leading rows are zeros with the default edge rule and e0 with repeat.
    assert np.all(speech["zeros"][0, :16] == 0)
    assert np.array_equal(speech["repeat"][0, :2].reshape(-1), embeddings[0])


def test_encoder_onnx_matches_pytorch_on_speech(speech):
    from lipsync.audio_model import load_audio_encoder
    model = load_audio_encoder(os.path.join(DEMO, "demo_audio_encoder.pth"))
    windows = reference_encoder_windows(speech["mel"]).astype(np.float32)
    with torch.no_grad():
        torch_embeddings = model(torch.from_numpy(windows)).numpy()
    want = reference_unet_windows(torch_embeddings)
    assert np.max(np.abs(speech["zeros"] - want)) <= 1e-4
    assert np.abs(torch_embeddings).mean() > 0.05  # lively, so the comparison means something


@pytest.mark.parametrize("chunk", [["1"], ["7"], ["160"], ["3200"], ["4000", "--chunk-seed", "3"]])
def test_streaming_equals_whole_signal_bit_for_bit(speech, tmp_path, chunk):
    out = tmp_path / "streamed.npy"
    run("features", "--audio", SPEECH, "--encoder", ENCODER, "--out", out, "--chunk", *chunk,
        "--threads", "2")
    streamed = np.load(out)
    assert streamed.shape == speech["zeros"].shape
    assert streamed.tobytes() == speech["zeros"].tobytes()


def test_summary_json(speech):
    info = json.loads(run("features", "--audio", SPEECH, "--mel-out",
                          speech["dir"] / "m2.npy", "--json").stdout)
    assert info["samples"] == len(speech["pcm"])
    assert info["mel_frames"] == speech["mel"].shape[1]
    assert info["video_frames"] == len(speech["zeros"])


# ---- bad input ----

def assert_fails(tmp_path, audio, *extra, match, names=None):
    """The command fails with exit code 2, a message with `match` (or one of them) naming
    `names` (default: the audio file), and leaves no output or temporary file."""
    outs = [tmp_path / "bad_mel.npy", tmp_path / "bad_windows.npy"]
    proc = run("features", "--audio", audio, "--mel-out", outs[0], *extra, check=False)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    matches = match if isinstance(match, tuple) else (match,)
    assert any(m in proc.stderr for m in matches), proc.stderr
    assert str(names or audio) in proc.stderr, proc.stderr
    assert not any(p.exists() for p in outs), "a failed run left an output file"
    assert not [p for p in os.listdir(tmp_path) if ".tmp" in p]


def test_bad_input_errors(tmp_path):
    assert_fails(tmp_path, tmp_path / "missing.wav", match="not found")
    (tmp_path / "notes.txt").write_text("these are words, not audio\n" * 50)
    # FFmpeg reads any text as a 'tty' video; either way the file is named as not audio.
    assert_fails(tmp_path, tmp_path / "notes.txt",
                 match=("cannot be read as audio", "has no audio stream"))
    (tmp_path / "noise.bin").write_bytes(np.random.default_rng(0).bytes(5000))
    assert_fails(tmp_path, tmp_path / "noise.bin",
                 match=("cannot be read as audio", "has no audio stream"))
    empty = write_wav(tmp_path / "empty.wav", np.zeros(0), 16000)
    assert_fails(tmp_path, empty, match="no audio samples")
    full = write_wav(tmp_path / "full.wav", tone(440, 2.0, 16000), 16000)
    data = full.read_bytes()
    (tmp_path / "cut.wav").write_bytes(data[:int(len(data) * 0.6)])
    assert_fails(tmp_path, tmp_path / "cut.wav", match="truncated")
    short = write_wav(tmp_path / "short.wav", tone(440, 0.1, 16000), 16000)
    assert_fails(tmp_path, short, "--encoder", ENCODER, "--out", tmp_path / "bad_windows.npy",
                 match="too short")
    unet = os.path.join(DEMO, "demo.onnx")
    assert_fails(tmp_path, full, "--encoder", unet, "--out", tmp_path / "bad_windows.npy",
                 match="not an audio encoder", names=unet)
    assert_fails(tmp_path, full, "--out", tmp_path / "bad_windows.npy", match="--out needs",
                 names="--encoder")
    if shutil.which("ffmpeg"):
        mp3 = tmp_path / "full.mp3"
        subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(full), str(mp3)], check=True)
        data = mp3.read_bytes()
        (tmp_path / "cut.mp3").write_bytes(data[:len(data) // 2])
        assert_fails(tmp_path, tmp_path / "cut.mp3", match="truncated")
