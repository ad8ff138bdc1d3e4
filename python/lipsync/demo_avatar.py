"""The demo avatar: a synthetic SyncTalk_2D dataset (frames of a drawn face that moves a little,
with 110-point landmark files) imported into an avatar folder with `lipsync avatar import`.

    python3 -m lipsync.demo_avatar --out-dir models --model models/demo.onnx \
        --encoder models/demo_audio_encoder.onnx [--frames 50] [--width 480 --height 352] \
        [--mouth moving|closed]
writes models/demo_dataset/{full_body_img,landmarks}/ and the avatar folder models/demo_avatar/.
The tests use synthetic_dataset() for their own avatars.
"""
import argparse
import filecmp
import math
import os
import shutil
import subprocess
import sys

import numpy as np

from .demo import log, png_bytes, write_png

LANDMARKS = 110
SKIN, LIPS, OPENING = (140, 170, 220), (70, 70, 170), (40, 30, 60)  # BGR


def face_geometry(index, frames, width, height):
    """Centre, jaw width and mouth opening of the face in frame `index`: a slow sway and nod, and
    a mouth that opens and closes."""
    phase = 2 * math.pi * index / max(frames, 1)
    cx = width * 0.5 + width * 0.04 * math.sin(phase)
    cy = height * 0.45 + height * 0.02 * math.sin(2 * phase)
    jaw = min(width, height) * 0.4
    mouth = 0.3 + 0.7 * abs(math.sin(3 * phase))
    return cx, cy, jaw, mouth


def mouth_masks(index, frames, width, height, mouth=None):
    """The lips and the opening between them in frame `index` as boolean masks: the avatar's own
    mouth (`mouth` None) or one opened by `mouth` (0 closed, 1 wide open)."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    cx, cy, jaw, own = face_geometry(index, frames, width, height)
    mouth = own if mouth is None else mouth
    rx, ry = jaw / 2, jaw * 0.65
    my = cy - ry * 0.55 + ry * 1.45
    lips = ((x - cx) / (rx * 0.35)) ** 2 + ((y - my) / (ry * 0.05 + ry * 0.12 * mouth)) ** 2 <= 1
    inner = ((x - cx) / (rx * 0.25)) ** 2 + ((y - my) / (ry * 0.1 * mouth + 1)) ** 2 <= 1
    return lips, inner


def draw_frame(index, frames, width, height, seed=0, mouth=None):
    """A BGR frame: a textured background and a face (skin oval, eyes, nose, mouth). `mouth`
    None opens and closes the mouth from frame to frame; a number holds it at that opening."""
    rng = np.random.default_rng(seed * 100003 + index)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    img = np.empty((height, width, 3), np.float32)
    img[..., 0] = 90 + 40 * np.sin(x / 23.0)
    img[..., 1] = 110 + 30 * np.cos(y / 17.0)
    img[..., 2] = 70 + 20 * np.sin((x + y) / 31.0)
    cx, cy, jaw, _ = face_geometry(index, frames, width, height)
    rx, ry = jaw / 2, jaw * 0.65
    top = cy - ry * 0.55  # the face is drawn around (cx, cy + ry * 0.1)
    face = ((x - cx) / rx) ** 2 + ((y - (top + ry)) / ry) ** 2 <= 1
    img[face] = SKIN
    for ex in (cx - rx * 0.4, cx + rx * 0.4):
        eye = ((x - ex) / (rx * 0.15)) ** 2 + ((y - (top + ry * 0.7)) / (ry * 0.06)) ** 2 <= 1
        img[eye] = (60, 40, 30)
    nose = (np.abs(x - cx) < rx * 0.06) & (y > top + ry * 0.8) & (y < top + ry * 1.15)
    img[nose] = (120, 150, 200)
    lips, inner = mouth_masks(index, frames, width, height, mouth)
    img[lips] = LIPS
    img[inner] = OPENING
    img += rng.normal(0, 2, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def landmarks(index, frames, width, height):
    """110 integer points: an oval around the face; point 1 and 31 at the jaw's left and right,
    point 52 at the nose, so that the spec's box (x from point 1 to 31, y from point 52 down by
    the same width) covers nose, mouth and chin."""
    cx, cy, jaw, _ = face_geometry(index, frames, width, height)
    rx, ry = jaw / 2, jaw * 0.65
    top = cy - ry * 0.55
    pts = []
    for k in range(LANDMARKS):
        a = 2 * math.pi * k / LANDMARKS
        pts.append((cx + rx * 0.9 * math.cos(a), top + ry + ry * 0.9 * math.sin(a)))
    pts[1] = (cx - rx, top + ry * 1.1)
    pts[31] = (cx + rx, top + ry * 1.1)
    pts[52] = (cx, top + ry * 0.85)
    return [(int(px), int(py)) for px, py in pts]


def synthetic_dataset(out_dir, frames=50, width=480, height=352, seed=0, ext="png", mouth=None):
    """Writes a SyncTalk_2D dataset: full_body_img/<n>.<ext> and landmarks/<n>.lms. PNG needs no
    imaging library; "jpg" uses OpenCV. `mouth` as in draw_frame. Returns the crop boxes the
    landmarks define."""
    img_dir = os.path.join(out_dir, "full_body_img")
    lms_dir = os.path.join(out_dir, "landmarks")
    os.makedirs(img_dir, exist_ok=True)
    os.makedirs(lms_dir, exist_ok=True)
    boxes = []
    for i in range(frames):
        frame = draw_frame(i, frames, width, height, seed, mouth)
        path = os.path.join(img_dir, f"{i}.{ext}")
        if ext == "png":
            write_png(path, frame)
        else:
            import cv2
            assert cv2.imwrite(path, frame), path
        pts = landmarks(i, frames, width, height)
        with open(os.path.join(lms_dir, f"{i}.lms"), "w") as f:
            f.write("".join(f"{px} {py}\n" for px, py in pts))
        boxes.append(crop_box(pts, width, height))
    return boxes


def crop_box(pts, width, height):
    """The face rectangle [x1, y1, x2, y2] that `lipsync avatar import --from synctalk` takes
    from landmarks (spec section 3), within the frame."""
    xmin, xmax, ymin = pts[1][0], pts[31][0], pts[52][1]
    return [max(xmin, 0), max(ymin, 0), min(xmax, width), min(ymin + xmax - xmin, height)]


def lipsync_bin(explicit=None):
    path = explicit or os.environ.get("LIPSYNC_BIN")
    if not path:
        raise SystemExit("the lipsync binary is needed to import the avatar: pass --engine or "
                         "set LIPSYNC_BIN")
    return path


def png_size(path):
    """(width, height) from a PNG file's header, or None."""
    try:
        with open(path, "rb") as f:
            head = f.read(24)
    except OSError:
        return None
    if len(head) < 24 or head[:8] != b"\x89PNG\r\n\x1a\n":
        return None
    return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")


def _same_bytes(path, data):
    try:
        with open(path, "rb") as f:
            return f.read() == data
    except OSError:
        return False


def make_demo_avatar(out_dir, model, encoder, engine=None, frames=50, force=False, width=480,
                     height=352, mouth=None):
    """Makes (or keeps, when it is current) models/demo_avatar from a synthetic dataset of
    `frames` frames of width x height; `mouth` as in draw_frame."""
    dataset = os.path.join(out_dir, "demo_dataset")
    avatar = os.path.join(out_dir, "demo_avatar")
    images = os.path.join(dataset, "full_body_img")
    current = (not force and os.path.isfile(os.path.join(avatar, "avatar.json"))
               and png_size(os.path.join(images, "0.png")) == (width, height)
               and len(os.listdir(images)) == frames
               and _same_bytes(os.path.join(images, "0.png"),
                               png_bytes(draw_frame(0, frames, width, height, mouth=mouth)))
               and os.path.isfile(os.path.join(avatar, "unet.onnx"))
               and filecmp.cmp(model, os.path.join(avatar, "unet.onnx"), shallow=False)
               and filecmp.cmp(encoder, os.path.join(avatar, "audio_encoder.onnx"),
                               shallow=False))
    binary = lipsync_bin(engine)
    if current:
        check = subprocess.run([binary, "avatar", "check", "--quick", avatar],
                               capture_output=True, text=True)
        if check.returncode == 0:
            log(f"{avatar} is there and valid; kept (--force remakes it)")
            os.utime(os.path.join(avatar, "avatar.json"))  # make's target: newer than its inputs
            return avatar
    shutil.rmtree(dataset, ignore_errors=True)
    shutil.rmtree(avatar, ignore_errors=True)
    synthetic_dataset(dataset, frames=frames, width=width, height=height, mouth=mouth)
    log(f"wrote the synthetic dataset {dataset} ({frames} frames of {width}x{height})")
    subprocess.run([binary, "avatar", "import", "--from", "synctalk", dataset, "--out", avatar,
                    "--model", model, "--encoder", encoder, "--name", "demo"], check=True)
    return avatar


def main(argv=None):
    parser = argparse.ArgumentParser(description="Make the demo avatar.")
    parser.add_argument("--out-dir", required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--encoder", required=True)
    parser.add_argument("--frames", type=int, default=50)
    parser.add_argument("--width", type=int, default=480, help="frame width in pixels")
    parser.add_argument("--height", type=int, default=352, help="frame height in pixels")
    parser.add_argument("--mouth", choices=("moving", "closed"), default="moving",
                        help="the face's mouth: opening and closing, or closed in every frame "
                             "(the trained demo model opens it with the speech)")
    parser.add_argument("--engine", help="lipsync binary (default: $LIPSYNC_BIN)")
    parser.add_argument("--force", action="store_true")
    args = parser.parse_args(argv)
    if args.width < 64 or args.height < 64:
        parser.error("the frames must be at least 64x64")
    make_demo_avatar(args.out_dir, args.model, args.encoder, args.engine, args.frames, args.force,
                     args.width, args.height, None if args.mouth == "moving" else 0.0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
