"""The demo model: a deterministic, seeded random checkpoint in the original key layout, exported
through the same path a real checkpoint takes, plus a synthetic face and audio features.

    python3 -m lipsync.demo --out-dir models [--mode ave --size 320 --seed 0] [--force]
writes models/demo.pth, models/demo.onnx, models/demo_face.png, models/demo_audio.npy, and for the
audio path models/demo_audio_encoder.pth, models/demo_audio_encoder.onnx (seeded encoder weights)
and models/demo_speech.wav (a few seconds of speech from espeak-ng, or a synthetic voice without it).
"""
import argparse
import functools
import io
import math
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import wave
import zlib

import numpy as np
import torch

from .audio_model import build_audio_encoder, random_audio_state_dict
from .checkpoint import CheckpointError, check_state_dict, read_state_dict
from .model import AUDIO_SHAPES, build_model, example_inputs


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def random_state_dict(mode="ave", size=320, seed=0):
    """make_random_state_dict, computed once per (mode, size, seed) in a process; the caller gets
    its own dict (the tensors are shared and must not be changed in place)."""
    return dict(_cached_state_dict(mode, size, seed))


@functools.lru_cache(maxsize=8)
def _cached_state_dict(mode, size, seed):
    return make_random_state_dict(mode, size, seed)


def make_random_state_dict(mode="ave", size=320, seed=0):
    """Weights shaped like a trained model's: He-scaled convolutions, batch-norm scales and shifts
    near identity, and batch-norm running statistics measured on seeded random inputs (as
    training leaves them), so every layer sees activations of about unit scale, the output is
    not saturated, and both inputs visibly move the output (which keeps verification sensitive
    to errors in either branch)."""
    gen = torch.Generator().manual_seed(seed)
    model = build_model(mode, size)
    with torch.no_grad():
        for name, param in model.named_parameters():
            shape = param.shape
            if param.dim() == 4:  # conv weight
                fan_in = shape[1] * shape[2] * shape[3]
                value = torch.randn(shape, generator=gen) * math.sqrt(2.0 / fan_in)
            elif name.endswith("weight"):  # BN scale
                value = 0.8 + 0.4 * torch.rand(shape, generator=gen)
            else:  # BN shift, conv bias
                value = 0.05 * torch.randn(shape, generator=gen)
            param.copy_(value)
        calibrate_batch_norm(model, seed)
    return {k: v.clone() for k, v in model.state_dict().items()}


def calibrate_batch_norm(model, seed, batch=1):
    """Sets every running mean/variance to the statistics of one training-mode pass over seeded
    random inputs. One thread, so the same seed gives the same bytes on a machine whatever the
    caller's thread setting."""
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    for bn in norms:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative average: after one pass, exactly that pass's statistics
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        inputs = example_inputs(model.mode, model.size, batch=batch, seed=10_000 + seed)
        model.train()
        model(*inputs)
        model.eval()
        # The residual stream grows through the decoder; scale the last 1x1 convolution so the
        # logits have unit spread and the sigmoid output stays mostly within (0.05, 0.95).
        seen = {}
        hook = model.outc.conv.register_forward_hook(lambda m, i, o: seen.update(out=o))
        model(*inputs)
        hook.remove()
        spread = float((seen["out"] - model.outc.conv.bias.view(1, -1, 1, 1)).std())
        model.outc.conv.weight.mul_(1.0 / max(spread, 1e-3))
    finally:
        torch.set_num_threads(threads)
        model.eval()
        for bn in norms:
            bn.momentum = 0.1


def synthetic_face(size=328, seed=0):
    """A deterministic face-like BGR picture: skin ellipse, eyes, nose, mouth, on a background."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / size
    img = np.empty((size, size, 3), np.float32)
    img[:] = (120, 100, 80)  # background (BGR)
    face = ((x - 0.5) / 0.38) ** 2 + ((y - 0.52) / 0.47) ** 2 <= 1
    img[face] = (140, 170, 220)
    for ex in (0.35, 0.65):
        eye = ((x - ex) / 0.07) ** 2 + ((y - 0.4) / 0.035) ** 2 <= 1
        img[eye] = (60, 40, 30)
    nose = (np.abs(x - 0.5) < 0.03) & (y > 0.45) & (y < 0.6)
    img[nose] = (120, 150, 200)
    mouth = ((x - 0.5) / 0.14) ** 2 + ((y - 0.74) / 0.045) ** 2 <= 1
    img[mouth] = (70, 70, 170)
    img += rng.normal(0, 3, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def png_bytes(bgr):
    """An 8-bit BGR image as PNG bytes (zlib + struct; no imaging library needed)."""
    rgb = bgr[:, :, ::-1]
    h, w, _ = rgb.shape
    raw = b"".join(b"\x00" + rgb[i].tobytes() for i in range(h))

    def chunk(kind, data):
        return (struct.pack(">I", len(data)) + kind + data +
                struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)) +
            chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b""))


def write_png(path, bgr):
    with open(path, "wb") as f:
        f.write(png_bytes(bgr))


def write_atomic(path, data):
    """Writes bytes through a temporary file, so an interrupted run leaves no half-written file."""
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def state_dict_bytes(state):
    """torch.save output in memory: its bytes do not depend on the file name, so the same seed
    gives the same file."""
    buf = io.BytesIO()
    torch.save(state, buf)
    return buf.getvalue()


def valid_checkpoint(path, mode, size):
    try:
        check_state_dict(build_model(mode, size), read_state_dict(path))
        return True
    except CheckpointError:
        return False


def valid_onnx(path, mode, size):
    import onnx
    try:
        model = onnx.load(path)
        onnx.checker.check_model(model)
    except Exception:  # any parse or checker failure means "make it again"
        return False
    inputs = [[d.dim_value for d in i.type.tensor_type.shape.dim] for i in model.graph.input]
    return len(inputs) == 2 and inputs[0][1:] == [6, size, size] and \
        tuple(inputs[1][1:]) == AUDIO_SHAPES[mode]


def valid_png(path, size):
    try:
        with open(path, "rb") as f:
            head = f.read(24)
    except OSError:
        return False
    return head[:8] == b"\x89PNG\r\n\x1a\n" and struct.unpack(">II", head[16:24]) == (size, size)


def valid_npy(path, mode):
    try:
        arr = np.load(path)
    except (OSError, ValueError):
        return False
    return arr.dtype == np.float32 and arr.shape == (1, *AUDIO_SHAPES[mode])


DEMO_SENTENCE = ("The quick brown fox jumps over the lazy dog. Lip sync needs clear speech to "
                 "move the mouth.")


def espeak_speech():
    """The demo sentence spoken by espeak-ng as WAV bytes (22.05 kHz), or None without it."""
    exe = shutil.which("espeak-ng")
    if not exe:
        return None
    with tempfile.TemporaryDirectory(prefix="lipsync-speech-") as tmp:
        path = os.path.join(tmp, "speech.wav")
        proc = subprocess.run([exe, "-s", "150", "-w", path, DEMO_SENTENCE], capture_output=True)
        if proc.returncode != 0 or not os.path.exists(path):
            return None
        with open(path, "rb") as f:
            return f.read()


def synthetic_speech(seconds=5.0, rate=16000, seed=0):
    """A voice-like signal as 16-bit PCM samples: a glottal pulse train with a wandering pitch,
    shaped by three formants that move from syllable to syllable, with pauses between words."""
    rng = np.random.default_rng(seed)
    n = int(seconds * rate)
    t = np.arange(n) / rate
    syllable = 0.22
    count = int(seconds / syllable) + 1
    vowels = np.array([[730, 1090, 2440], [270, 2290, 3010], [300, 870, 2240],
                       [530, 1840, 2480], [570, 840, 2410]], np.float64)
    formants = vowels[rng.integers(0, len(vowels), count)]
    index = np.minimum((t / syllable).astype(int), count - 1)
    pitch = 120 + 20 * np.sin(2 * np.pi * 0.7 * t) + 8 * rng.standard_normal(count)[index]
    phase = 2 * np.pi * np.cumsum(pitch) / rate
    signal = np.zeros(n)
    for h in range(1, 40):  # harmonics weighted by the formant resonances
        freq = h * pitch
        gain = sum(1.0 / (1.0 + ((freq - formants[index, j]) / (80 + 40 * j)) ** 2)
                   for j in range(3))
        signal += gain * np.sin(h * phase) / h
    within = (t % syllable) / syllable
    envelope = np.sin(np.pi * within) ** 0.5
    envelope[(index % 6) == 5] = 0.0  # a pause every sixth syllable
    signal = signal * envelope + 0.01 * rng.standard_normal(n) * envelope
    signal = 0.5 * signal / np.max(np.abs(signal))
    return (signal * 32767).astype("<i2")


def wav_bytes(samples, rate):
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(samples.tobytes())
    return buf.getvalue()


def valid_wav(path):
    try:
        with wave.open(path, "rb") as w:
            return w.getnframes() > w.getframerate()  # at least a second
    except (OSError, EOFError, wave.Error):
        return False


def valid_audio_encoder_onnx(path):
    import onnx
    try:
        model = onnx.load(path)
        onnx.checker.check_model(model)
    except Exception:  # any parse or checker failure means "make it again"
        return False
    inputs = [[d.dim_value for d in i.type.tensor_type.shape.dim] for i in model.graph.input]
    return len(inputs) == 1 and inputs[0][1:] == [1, 80, 16]


def make_audio_files(args):
    """demo_speech.wav, demo_audio_encoder.pth and demo_audio_encoder.onnx; returns an exit code."""
    speech = os.path.join(args.out_dir, "demo_speech.wav")
    pth = os.path.join(args.out_dir, "demo_audio_encoder.pth")
    onnx_path = os.path.join(args.out_dir, "demo_audio_encoder.onnx")

    def keep(path, valid):
        if not args.force and os.path.exists(path) and valid():
            log(f"{path} is there and valid; kept (--force remakes it)")
            return True
        return False

    if not keep(speech, lambda: valid_wav(speech)):
        data = espeak_speech()
        if data is None:
            log("espeak-ng is not available; writing a synthetic voice instead")
            data = wav_bytes(synthetic_speech(seed=args.seed), 16000)
        write_atomic(speech, data)
        log(f"wrote {speech}")
    new_weights = False
    if not keep(pth, lambda: _valid_audio_checkpoint(pth)):
        log(f"making seeded random audio encoder weights (seed {args.seed})")
        write_atomic(pth, state_dict_bytes(random_audio_state_dict(args.seed)))
        log(f"wrote {pth}")
        new_weights = True
    if new_weights or not keep(onnx_path, lambda: valid_audio_encoder_onnx(onnx_path)):
        from . import export_audio  # the same path a real checkpoint takes
        return _export_into_place(export_audio, ["--checkpoint", pth], onnx_path, args)
    return 0


def _export_into_place(exporter, export_args, onnx_path, args):
    """Runs `exporter`'s command line into a temporary file beside `onnx_path` and renames it into
    place: a failed export leaves nothing behind. Returns its exit code."""
    tmp = f"{onnx_path}.tmp{os.getpid()}.onnx"
    export_args = export_args + ["--out", tmp, "--exporter", args.exporter]
    if args.engine:
        export_args += ["--engine", args.engine]
    if args.no_verify:
        export_args.append("--no-verify")
    code = exporter.main(export_args)
    if code:
        if os.path.exists(tmp):
            os.remove(tmp)
        return code
    os.replace(tmp, onnx_path)
    log(f"wrote {onnx_path}")
    return 0


def _valid_audio_checkpoint(path):
    try:
        check_state_dict(build_audio_encoder(), read_state_dict(path))
        return True
    except CheckpointError:
        return False


def main(argv=None):
    parser = argparse.ArgumentParser(description="Make the demo model, face and audio features.")
    parser.add_argument("--out-dir", required=True)
    parser.add_argument("--mode", default="ave", choices=sorted(AUDIO_SHAPES))
    parser.add_argument("--size", type=int, default=320, choices=(320, 160))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--force", action="store_true", help="remake files that exist")
    parser.add_argument("--engine", help="lipsync binary that verifies the export")
    parser.add_argument("--no-verify", action="store_true", help="skip the engine check")
    parser.add_argument("--exporter", default="auto", choices=("auto", "legacy", "dynamo"),
                        help="PyTorch's ONNX exporter for both models (auto: PyTorch's default)")
    args = parser.parse_args(argv)

    os.makedirs(args.out_dir, exist_ok=True)
    pth = os.path.join(args.out_dir, "demo.pth")
    onnx_path = os.path.join(args.out_dir, "demo.onnx")
    face = os.path.join(args.out_dir, "demo_face.png")
    audio = os.path.join(args.out_dir, "demo_audio.npy")
    crop = args.size + 8  # the 328 (or 168) crop around the model's input

    def keep(path, valid):
        if not args.force and os.path.exists(path) and valid():
            log(f"{path} is there and valid; kept (--force remakes it)")
            return True
        return False

    new_weights = False
    if not keep(pth, lambda: valid_checkpoint(pth, args.mode, args.size)):
        log(f"making seeded random weights (mode {args.mode}, size {args.size}, "
            f"seed {args.seed})")
        write_atomic(pth, state_dict_bytes(random_state_dict(args.mode, args.size, args.seed)))
        log(f"wrote {pth}")
        new_weights = True
    if not keep(face, lambda: valid_png(face, crop)):
        write_png(face, synthetic_face(crop, args.seed))
        log(f"wrote {face}")
    if not keep(audio, lambda: valid_npy(audio, args.mode)):
        rng = np.random.default_rng(args.seed + 1)
        buf = io.BytesIO()
        np.save(buf, rng.random((1, *AUDIO_SHAPES[args.mode]), dtype=np.float32))
        write_atomic(audio, buf.getvalue())
        log(f"wrote {audio}")
    if new_weights or not keep(onnx_path, lambda: valid_onnx(onnx_path, args.mode, args.size)):
        from . import export  # the same path a real checkpoint takes
        code = _export_into_place(
            export, ["--checkpoint", pth, "--mode", args.mode, "--size", str(args.size)], onnx_path,
            args)
        if code:
            return code
    code = make_audio_files(args)
    if code:
        return code
    log(f"demo model ready in {args.out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
