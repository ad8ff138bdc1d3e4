"""A small synthetic model package of the Python lipsync server, for the import and lipsyncsrv
service tests:

  package_info.json
  models/7.pth               a seeded random UNet checkpoint ('ave', 320) in the original layout
                             (the demo model's weights); --no-checkpoint leaves models/ out
  aud_ave.npy                seeded audio features, float32 [frames + 2, 512]
  face_regions_320.mp4       the 320x320 crops, one video frame per frame id
  masked_regions_320.mp4     the same with the mouth region blacked out
  face_bounds/<n>.npy        int64 [xmin, ymin, xmax, ymax, width, height] of frame n
  video.mp4                  the full frames (160x128, MPEG-4 part 2)

    python3 make_lipsyncsrv_package.py --out DIR [--frames 6] [--no-checkpoint]
"""
import argparse
import json
import os
import shutil
import sys

import cv2
import numpy as np

W, H = 160, 128
CROP, INNER, OFFSET = 328, 320, 4


def rect_of(i):
    """The face square of frame i: [xmin, ymin, xmax, ymax], moving a little from frame to frame."""
    return [40 + 3 * i, 20 + i, 104 + 3 * i, 84 + i]


def frame(i):
    y, x = np.mgrid[0:H, 0:W]
    img = np.stack([(x * 3 + i * 29) % 256, (y * 2 + i * 7) % 256, (x + 2 * y) % 256], axis=-1)
    return img.astype(np.uint8)


def write_video(path, images):
    h, w = images[0].shape[:2]
    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"mp4v"), 25, (w, h))
    if not writer.isOpened():
        sys.exit(f"cannot write {path}")
    for img in images:
        writer.write(img)
    writer.release()


def checkpoint(path, seed):
    import torch
    from lipsync.demo import random_state_dict
    torch.save(random_state_dict("ave", 320, seed), path)


def make_package(out, frames=6, with_checkpoint=True, seed=0):
    tmp = out + f".tmp{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(os.path.join(tmp, "face_bounds"))
    images = [frame(i) for i in range(frames)]
    crops, masked = [], []
    for i, img in enumerate(images):
        x1, y1, x2, y2 = rect_of(i)
        np.save(os.path.join(tmp, "face_bounds", f"{i}.npy"),
                np.array([x1, y1, x2, y2, x2 - x1, y2 - y1], np.int64))
        crop = cv2.resize(img[y1:y2, x1:x2], (CROP, CROP), interpolation=cv2.INTER_CUBIC)
        inner = crop[OFFSET:OFFSET + INNER, OFFSET:OFFSET + INNER].copy()
        crops.append(inner)
        masked.append(cv2.rectangle(inner.copy(), (5, 5, 310, 305), (0, 0, 0), -1))
    write_video(os.path.join(tmp, "video.mp4"), images)
    write_video(os.path.join(tmp, "face_regions_320.mp4"), crops)
    write_video(os.path.join(tmp, "masked_regions_320.mp4"), masked)
    rng = np.random.default_rng(seed)
    np.save(os.path.join(tmp, "aud_ave.npy"),
            rng.normal(0, 1, (frames + 2, 512)).astype(np.float32))
    with open(os.path.join(tmp, "package_info.json"), "w") as f:
        json.dump({"name": "synthetic", "frames": frames, "fps": 25, "image_size": 320}, f)
    if with_checkpoint:
        os.makedirs(os.path.join(tmp, "models"))
        checkpoint(os.path.join(tmp, "models", "7.pth"), seed)
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True)
    parser.add_argument("--frames", type=int, default=6)
    parser.add_argument("--no-checkpoint", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    make_package(args.out, args.frames, not args.no_checkpoint, args.seed)


if __name__ == "__main__":
    main()
