"""The synthetic SyncTalk_2D dataset behind the demo avatar and the avatar tests."""
import os

import numpy as np

from lipsync.demo_avatar import LANDMARKS, png_size, synthetic_dataset


def read_lms(path):
    with open(path) as f:
        return [tuple(int(v) for v in line.split()) for line in f.read().splitlines()]


def test_dataset_pairs_frames_with_landmarks_and_boxes_fit(tmp_path):
    boxes = synthetic_dataset(str(tmp_path), frames=6, width=200, height=150)
    assert sorted(os.listdir(tmp_path / "full_body_img")) == [f"{i}.png" for i in range(6)]
    assert sorted(os.listdir(tmp_path / "landmarks")) == [f"{i}.lms" for i in range(6)]
    for i, box in enumerate(boxes):
        pts = read_lms(tmp_path / "landmarks" / f"{i}.lms")
        assert len(pts) == LANDMARKS and all(len(p) == 2 for p in pts)
        # The spec's box: x from point 1 to point 31, y from point 52 down by the same width.
        side = pts[31][0] - pts[1][0]
        assert box == [pts[1][0], pts[52][1], pts[31][0], pts[52][1] + side]
        assert 0 <= box[0] < box[2] <= 200 and 0 <= box[1] < box[3] <= 150


def test_frames_move_and_are_deterministic(tmp_path):
    a = synthetic_dataset(str(tmp_path / "a"), frames=4, width=120, height=96)
    b = synthetic_dataset(str(tmp_path / "b"), frames=4, width=120, height=96)
    assert a == b
    first = (tmp_path / "a" / "full_body_img" / "0.png").read_bytes()
    assert first == (tmp_path / "b" / "full_body_img" / "0.png").read_bytes()
    assert first != (tmp_path / "a" / "full_body_img" / "2.png").read_bytes()
    assert len({tuple(box) for box in a}) > 1  # the face moves


def test_png_size_reads_the_header(tmp_path):
    # make_demo_avatar keeps an avatar only when its dataset has the asked frame size.
    synthetic_dataset(str(tmp_path), frames=1, width=130, height=70)
    assert png_size(str(tmp_path / "full_body_img" / "0.png")) == (130, 70)
    (tmp_path / "junk.png").write_bytes(b"not a png at all, but long enough")
    assert png_size(str(tmp_path / "junk.png")) is None
    assert png_size(str(tmp_path / "missing.png")) is None
