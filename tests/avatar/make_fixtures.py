"""Fixtures for the avatar, frame and render tests, written into the build's testdata/avatar:

  tiny_encoder.onnx   an audio encoder with the real interface ([N,1,80,16] -> [N,512]) and a
                      cheap graph
  dataset/            a synthetic SyncTalk_2D dataset (12 frames, 160x120, PNG)
  frames_ref/         the OpenCV-Python reference of the frame pipeline (spec section 3) on one
                      frame and several rectangles: the frame, the rectangles, fake model outputs,
                      and what cropping, masking and pasting must give
"""
import argparse
import json
import os
import shutil

import cv2
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from lipsync.demo_avatar import synthetic_dataset


def tiny_encoder(path, seed=0):
    rng = np.random.default_rng(seed)
    inputs = [helper.make_tensor_value_info("mel", TensorProto.FLOAT, ["N", 1, 80, 16])]
    outputs = [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["N", 512])]
    weights = [
        numpy_helper.from_array(rng.normal(0, 0.3, (64, 512)).astype(np.float32), "w"),
        numpy_helper.from_array(np.array([-1, 64], np.int64), "shape"),
    ]
    nodes = [
        helper.make_node("AveragePool", ["mel"], ["pooled"], kernel_shape=[5, 4], strides=[5, 4]),
        helper.make_node("Reshape", ["pooled", "shape"], ["flat"]),
        helper.make_node("MatMul", ["flat", "w"], ["mixed"]),
        helper.make_node("Tanh", ["mixed"], ["embedding"]),
    ]
    graph = helper.make_graph(nodes, "tiny_audio_encoder", inputs, outputs, weights)
    model = helper.make_model(graph, producer_name="lipsync-tests",
                              opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, path)


# The reference pipeline, written out with OpenCV as the spec states it.
CROP, INNER, OFFSET = 328, 320, 4
MASK = (5, 5, 310, 305)  # x, y, w, h in the inner image


def reference_crop(frame, rect):
    x1, y1, x2, y2 = rect
    crop = cv2.resize(frame[y1:y2, x1:x2], (CROP, CROP), interpolation=cv2.INTER_CUBIC)
    inner = crop[OFFSET:OFFSET + INNER, OFFSET:OFFSET + INNER].copy()
    masked = inner.copy()
    masked = cv2.rectangle(masked, MASK, (0, 0, 0), -1)  # the (x, y, w, h) form, as upstream
    return crop, inner, masked


def reference_paste(frame, rect, crop, output_chw):
    x1, y1, x2, y2 = rect
    face = (output_chw.transpose(1, 2, 0) * 255.0).astype(np.uint8)  # truncation, as upstream
    crop = crop.copy()
    crop[OFFSET:OFFSET + INNER, OFFSET:OFFSET + INNER] = face
    out = frame.copy()
    out[y1:y2, x1:x2] = cv2.resize(crop, (x2 - x1, y2 - y1), interpolation=cv2.INTER_CUBIC)
    return out


def frames_reference(out_dir, seed=3):
    os.makedirs(out_dir, exist_ok=True)
    rng = np.random.default_rng(seed)
    h, w = 360, 480
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    frame = np.stack([128 + 100 * np.sin(x / 7.0 + c) * np.cos(y / 11.0) for c in range(3)], -1)
    frame = np.clip(frame + rng.normal(0, 12, frame.shape), 0, 255).astype(np.uint8)
    # Upscaled, downscaled (the whole frame), exactly 320 and 328 square, non-square (as clipped
    # at an edge), in the corners, tiny.
    rects = [[40, 30, 190, 180], [0, 0, 480, 360], [10, 5, 330, 325], [50, 0, 378, 328],
             [300, 200, 480, 360], [0, 250, 90, 360], [200, 20, 207, 27], [100, 300, 400, 360]]
    cv2.imwrite(os.path.join(out_dir, "frame.png"), frame)
    with open(os.path.join(out_dir, "rects.json"), "w") as f:
        json.dump(rects, f)
    for i, rect in enumerate(rects):
        crop, inner, masked = reference_crop(frame, rect)
        output = rng.random((3, INNER, INNER), dtype=np.float32)
        # Values on and next to the k/255 steps, where truncation and rounding differ.
        output[0, :8, :] = (np.arange(8 * INNER).reshape(8, INNER) % 256) / 255.0
        np.save(os.path.join(out_dir, f"output_{i}.npy"), output)
        cv2.imwrite(os.path.join(out_dir, f"inner_{i}.png"), inner)
        cv2.imwrite(os.path.join(out_dir, f"masked_{i}.png"), masked)
        cv2.imwrite(os.path.join(out_dir, f"pasted_{i}.png"),
                    reference_paste(frame, rect, crop, output))


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out-dir", required=True)
    args = parser.parse_args()
    os.makedirs(args.out_dir, exist_ok=True)
    tiny_encoder(os.path.join(args.out_dir, "tiny_encoder.onnx"))
    # Made afresh each time (it takes a moment), so that it follows the generator.
    dataset = os.path.join(args.out_dir, "dataset")
    tmp = dataset + f".tmp{os.getpid()}"
    synthetic_dataset(tmp, frames=12, width=160, height=120)
    shutil.rmtree(dataset, ignore_errors=True)
    os.replace(tmp, dataset)
    frames_reference(os.path.join(args.out_dir, "frames_ref"))


if __name__ == "__main__":
    main()
