"""Trains the demo model: the 'ave' 320 UNet that opens the demo avatar's mouth with the speech.

    python3 -m lipsync.train_demo --out-dir models [--seed 0] [--force] [--cache DIR]
reads models/demo_audio_encoder.onnx and models/demo_speech.wav (python3 -m lipsync.demo makes
them) and writes models/demo_trained.pth, its verified export models/demo_trained.onnx and
models/demo_trained.json (what it was made from, and how well it fits). Needs the lipsync binary
($LIPSYNC_BIN or --engine). About two minutes on two cores, one thread. --cache names a second
folder (the tests use make demo's models/) whose trained model is copied when it is current, and
which gets a copy of a model trained here, so that a machine trains it once.

Inputs are built as inference builds them: the demo avatar's frames (lipsync.demo_avatar with the
mouth closed) cut by the rectangles its landmarks give, resized to 328 (bicubic), the centre 320
and its masked copy; the audio windows come from `lipsync features` with the demo encoder. The
target of output frame i is the same face with the mouth opened in proportion to the speech's
loudness around i / 25 s: its lips and the opening between them (lipsync.demo_avatar.mouth_masks),
cut like the frame. Two steps learn from them (demo_net.py says what the other layers do):
  1. the audio branch and fuse_conv, by gradient descent, to give the loudness from the windows;
  2. up4's readout, by least squares, from its units to the two masks of each pair's target.
"""
import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time

import cv2
import numpy as np
import torch

from . import demo_net
from .demo import log, state_dict_bytes, valid_onnx, write_atomic
from .demo_avatar import crop_box, draw_frame, landmarks, lipsync_bin, mouth_masks

FRAMES, WIDTH, HEIGHT = 50, 480, 352  # the demo avatar
FPS, RATE = 25, 16000
CROP, INNER, OFFSET = 328, 320, 4
MASK = (5, 5, 310, 305)  # the masked copy's black rectangle (x, y, w, h), spec section 3
LOUD_STEPS, BATCH = 300, 32
MOUTH_WINDOW = (36, 92, 44, 120)  # up4 rows and columns fitted: the mouth and a margin
OPENING_SCALE = 0.8  # the mouth's opening at full loudness (1: as wide as mouth_masks draws)
RIDGE = 1e-4


def pingpong(t, n=FRAMES):
    """Avatar frame of step t in render's default order (spec: forward, back, forward...)."""
    p = t % (2 * (n - 1))
    return p if p <= n - 1 else 2 * (n - 1) - p


def render_order(count):
    return [pingpong(1 + i) for i in range(count)]  # render starts at frame 1


def avatar_rects():
    return [crop_box(landmarks(k, FRAMES, WIDTH, HEIGHT), WIDTH, HEIGHT) for k in range(FRAMES)]


def face_crop(image, rect, interpolation=cv2.INTER_CUBIC):
    x1, y1, x2, y2 = rect
    crop = cv2.resize(image[y1:y2, x1:x2], (CROP, CROP), interpolation=interpolation)
    return crop[OFFSET:OFFSET + INNER, OFFSET:OFFSET + INNER]


def visual_input(inner):
    """[6,320,320] float32: the 320 face and its masked copy, BGR, /255."""
    masked = cv2.rectangle(inner.copy(), MASK, (0, 0, 0), -1)
    both = np.concatenate([inner, masked], axis=2).transpose(2, 0, 1)
    return both.astype(np.float32) / 255.0


def speech_features(engine, encoder, speech):
    """(windows [frames,32,16,16], 16 kHz mono samples) as `lipsync render` computes them."""
    with tempfile.TemporaryDirectory(prefix="lipsync-train-") as tmp:
        windows, pcm = os.path.join(tmp, "windows.npy"), os.path.join(tmp, "pcm.npy")
        subprocess.run([engine, "features", "--audio", speech, "--encoder", encoder,
                        "--out", windows, "--pcm-out", pcm], check=True, capture_output=True)
        return np.load(windows), np.load(pcm)


def loudness(pcm, frames):
    """Per video frame, the RMS of the 40 ms of speech around it over the 90th percentile of
    those values, clipped to [0, 1]: 0 is silence, 1 loud speech."""
    half = RATE // FPS // 2
    centres = (np.arange(frames) * RATE // FPS).astype(int)
    rms = np.array([np.sqrt(np.mean(np.square(pcm[max(c - half, 0):c + half], dtype=np.float64)))
                    if c < len(pcm) else 0.0 for c in centres])
    return np.clip(rms / max(np.percentile(rms, 90), 1e-9), 0.0, 1.0).astype(np.float32)


def target_opening(loudness):
    return OPENING_SCALE * float(loudness)


def mouth_targets(frame, rect, loudness):
    """[2,160,160]: the lips and the opening of avatar frame `frame` with the mouth opened for
    `loudness`, cut like the face and averaged down to up4's size."""
    masks = mouth_masks(frame, FRAMES, WIDTH, HEIGHT, target_opening(loudness))
    out = [cv2.resize(face_crop(m.astype(np.float32), rect, cv2.INTER_LINEAR), (160, 160),
                      interpolation=cv2.INTER_AREA) for m in masks]
    return np.stack(out)


class Progress:
    def __init__(self, name, steps, every):
        self.name, self.steps, self.every, self.start = name, steps, every, time.time()

    def __call__(self, step, what=""):
        done = step + 1
        if done % self.every and done != self.steps:
            return
        spent = time.time() - self.start
        left = spent / done * (self.steps - done)
        log(f"  {self.name}: {done}/{self.steps}{what}, {spent:.0f} s, about {left:.0f} s left")


def train_loudness(net, x6, windows, loud, rng):
    """The audio branch and fuse_conv by gradient descent: fused channel 0 at every cell to the
    loudness of the window's frame."""
    opt = torch.optim.Adam(net.trained_parameters(), 3e-3)
    progress = Progress("loudness, step", LOUD_STEPS, 50)
    for step in range(LOUD_STEPS):
        idx = rng.integers(0, len(windows), BATCH)
        frames = rng.integers(0, FRAMES, BATCH)
        out = net.fuse(x6[frames], windows[idx])[:, 0]
        loss = torch.mean((out - loud[idx, None, None]) ** 2)
        opt.zero_grad()
        loss.backward()
        opt.step()
        progress(step, f", loss {loss.item():.4f}")


def training_pairs(count, rng):
    """(avatar frame, audio window) pairs: the render's own, and as many more paired at random."""
    order = render_order(count)
    pairs = [(order[i], i) for i in range(count)]
    return pairs + [(int(rng.integers(0, FRAMES)), int(rng.integers(0, count)))
                    for _ in range(count)]


@torch.no_grad()
def fit_mouth(net, skips, windows, loud, rects, rng):
    """up4's readout by least squares (ridge): from its units to the lips and the opening of
    each pair's target, over the mouth window. Returns the units' weights, their biases and the
    readout [2,units]."""
    y0, y1, x0, x1 = MOUTH_WINDOW
    sample = net.features([s[:8] for s in skips], net.fuse(skips[5][:8], windows[:8]))
    weights, biases = demo_net.mouth_units(sample.flatten(2).amax((0, 2)).clamp(min=1e-3).tolist())
    count = weights.shape[0]
    gram = torch.zeros(count, count, dtype=torch.float64)
    moments = torch.zeros(count, 2, dtype=torch.float64)
    pairs = training_pairs(len(windows), rng)
    chunks = range(0, len(pairs), 16)
    progress = Progress("mouth, pairs in chunks of 16", len(chunks), 5)
    for step, j in enumerate(chunks):
        frames, idx = zip(*pairs[j:j + 16])
        features = net.features([s[list(frames)] for s in skips],
                                net.fuse(skips[5][list(frames)], windows[list(idx)]), MOUTH_WINDOW)
        units = demo_net.unit_outputs(features, weights, biases)
        units = units.permute(0, 2, 3, 1).reshape(-1, count).double()
        target = np.stack([mouth_targets(k, rects[k], loud[i]) for k, i in zip(frames, idx)])
        target = torch.from_numpy(target[:, :, y0:y1, x0:x1]).permute(0, 2, 3, 1).reshape(-1, 2)
        gram += units.T @ units
        moments += units.T @ target.double()
        progress(step)
    ridge = RIDGE * gram.diagonal().mean() * torch.eye(count, dtype=torch.float64)
    return weights, biases, torch.linalg.solve(gram + ridge, moments).T.float()


def mouth_box():
    """(y0, y1, x0, x1) of MOUTH_WINDOW in the 320 face."""
    return tuple(2 * v for v in MOUTH_WINDOW)


@torch.no_grad()
def evaluate(net, full, skips, visual, windows, loud, rects, units):
    """What the trained model does on the render's pairs: how the opening's area follows the
    loudness, and the full model's faces against the target faces inside and outside the mouth
    for the loudest, the quietest and a middle frame."""
    order = render_order(len(windows))
    area = []
    for j in range(0, len(order), 16):
        frames = order[j:j + 16]
        features = net.features([s[frames] for s in skips],
                                net.fuse(skips[5][frames], windows[j:j + 16]), MOUTH_WINDOW)
        weights, biases, readout = units
        masks = torch.einsum("cu,nuhw->nchw", readout,
                             demo_net.unit_outputs(features, weights, biases))
        area += demo_net.clamp_masks(masks)[:, 1].sum((1, 2)).tolist()
    stats = {"opening_area_vs_loudness_r": float(np.corrcoef(area, loud.numpy())[0, 1])}
    picks = [int(np.argmax(loud)), int(np.argmin(loud)), int(np.argsort(loud)[len(loud) // 2])]
    frames = [order[i] for i in picks]
    out = full(visual[frames], windows[picks]).numpy().transpose(0, 2, 3, 1)
    faces = (out * 255).astype(np.uint8)  # truncation, as the engine's paste
    y0, y1, x0, x1 = mouth_box()
    inside, outside = [], []
    for face, k, i in zip(faces, frames, picks):
        target = face_crop(draw_frame(k, FRAMES, WIDTH, HEIGHT, mouth=target_opening(loud[i])),
                           rects[k])
        diff = np.abs(face.astype(np.int16) - target.astype(np.int16)).mean(axis=2)
        inside.append(float(diff[y0:y1, x0:x1].mean()))
        diff[y0:y1, x0:x1] = 0
        outside.append(float(diff.sum() / (diff.size - (y1 - y0) * (x1 - x0))))
    stats["checked_loudness"] = [float(loud[i]) for i in picks]
    stats["face_vs_target_mouth_mad"] = inside
    stats["face_vs_target_elsewhere_mad"] = outside
    return stats


def sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def read_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


TRAINED = ("demo_trained.pth", "demo_trained.onnx", "demo_trained.json")


def is_current(folder, stamp):
    """Whether `folder` holds a trained model made from `stamp`'s inputs and code."""
    pth, onnx_path, info_path = (os.path.join(folder, f) for f in TRAINED)
    info = read_json(info_path) or {}
    return (info.get("stamp") == stamp and os.path.isfile(pth)
            and valid_onnx(onnx_path, "ave", 320))


def copy_trained(src, dst):
    """Copies the trained model's files, each through a temporary file; the .json (the stamp)
    goes last, so an interrupted copy is never taken for a current model."""
    os.makedirs(dst, exist_ok=True)
    for name in TRAINED:
        with open(os.path.join(src, name), "rb") as f:
            write_atomic(os.path.join(dst, name), f.read())


def train(engine, encoder, speech, seed):
    """The trained full model and what evaluate() says of it."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    rects = avatar_rects()
    faces = [face_crop(draw_frame(k, FRAMES, WIDTH, HEIGHT, mouth=0.0), rects[k])
             for k in range(FRAMES)]
    visual = torch.from_numpy(np.stack([visual_input(f) for f in faces]))
    windows, pcm = speech_features(engine, encoder, speech)
    windows = torch.from_numpy(windows)
    loud = torch.from_numpy(loudness(pcm, len(windows)))
    log(f"  {FRAMES} avatar frames, {len(windows)} audio windows from {speech}")
    net = demo_net.NarrowUNet()
    demo_net.build_fixed(net)
    net.eval()  # batch norm as fixed scales and shifts throughout
    with torch.no_grad():
        skips = net.encode(visual)
    train_loudness(net, skips[5], windows, loud, rng)
    units = fit_mouth(net, skips, windows, loud, rects, rng)
    full = demo_net.full_model(net, *units)
    return full, evaluate(net, full, skips, visual, windows, loud, rects, units)


def main(argv=None):
    parser = argparse.ArgumentParser(description="Train the demo model on the demo avatar.")
    parser.add_argument("--out-dir", required=True,
                        help="folder with demo_audio_encoder.onnx and demo_speech.wav")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--engine", help="lipsync binary (default: $LIPSYNC_BIN)")
    parser.add_argument("--force", action="store_true", help="train again even if current")
    parser.add_argument("--cache", help="folder to take a current trained model from, and to "
                        "store one trained here in (the tests use models/)")
    args = parser.parse_args(argv)

    encoder = os.path.join(args.out_dir, "demo_audio_encoder.onnx")
    speech = os.path.join(args.out_dir, "demo_speech.wav")
    for path in (encoder, speech):
        if not os.path.isfile(path):
            log(f"error: {path} is missing (python3 -m lipsync.demo --out-dir {args.out_dir} "
                "makes it)")
            return 2
    engine = lipsync_bin(args.engine)
    pth = os.path.join(args.out_dir, "demo_trained.pth")
    onnx_path = os.path.join(args.out_dir, "demo_trained.onnx")
    info_path = os.path.join(args.out_dir, "demo_trained.json")
    # The inputs and the code that makes the model: a change to any of them trains again.
    code = [os.path.join(os.path.dirname(__file__), f)
            for f in ("train_demo.py", "demo_net.py", "demo_avatar.py")]
    stamp = {"seed": args.seed}
    stamp.update({os.path.basename(f): sha256(f) for f in [encoder, speech, *code]})
    if not args.force and is_current(args.out_dir, stamp):
        log(f"{onnx_path} is there and current; kept (--force trains again)")
        os.utime(onnx_path)  # so that make sees it as newer than the code it was checked against
        return 0
    if not args.force and args.cache and is_current(args.cache, stamp):
        copy_trained(args.cache, args.out_dir)
        log(f"{onnx_path}: copied the current trained model from {args.cache} (--force trains "
            "again)")
        return 0

    # One thread: on two cores shared with other work, PyTorch's second thread mostly waits for
    # the first (a training step took about 5x longer with two threads than with one).
    torch.set_num_threads(1)
    start = time.time()
    log("training the demo model (once; about two minutes on two cores, more when they are busy)")
    full, stats = train(engine, encoder, speech, args.seed)
    log(f"  trained in {time.time() - start:.0f} s: opening area vs loudness r = "
        f"{stats['opening_area_vs_loudness_r']:.3f}; faces vs targets, mean absolute "
        f"difference in the mouth {np.round(stats['face_vs_target_mouth_mad'], 1).tolist()}, "
        f"elsewhere {np.round(stats['face_vs_target_elsewhere_mad'], 1).tolist()} grey levels")
    write_atomic(pth, state_dict_bytes(full.state_dict()))
    log(f"wrote {pth}")

    from . import export  # the same path a real checkpoint takes
    tmp = f"{onnx_path}.tmp{os.getpid()}.onnx"
    code = export.main(["--checkpoint", pth, "--out", tmp, "--engine", engine, "--threads", "1"])
    if code:
        if os.path.exists(tmp):
            os.remove(tmp)
        return code
    os.replace(tmp, onnx_path)
    stats["seconds"] = round(time.time() - start, 1)
    write_atomic(info_path, json.dumps({"stamp": stamp, "results": stats}, indent=1).encode())
    log(f"wrote {onnx_path} ({stats['seconds']:.0f} s in all)")
    if args.cache and os.path.realpath(args.cache) != os.path.realpath(args.out_dir):
        copy_trained(args.out_dir, args.cache)
        log(f"kept a copy in {args.cache}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
