"""Small ONNX models for the engine tests, built directly with the onnx package (no PyTorch).

They have the lip-sync model's interface (visual [N,6,S,S] + audio [N,32,16,16] -> [N,3,S,S]) but
a cheap graph, so tests run in milliseconds:
  tiny.onnx        dynamic batch, names visual_input/audio_input -> output
  tiny_fixed.onnx  fixed batch 1, upstream names input/audio -> output
  tiny_fixed3.onnx the same with a fixed batch of 3 (short batches are padded)
  tiny_two_outputs.onnx  tiny.onnx that also returns its pre-sigmoid sum (not a lip-sync UNet)
  null.onnx        dynamic batch, the output is the visual input's first three channels: no
                   arithmetic, so that benchmarks see what everything but the model costs
and an audio encoder's interface (mel windows [N,1,80,16] -> embeddings [N,512]):
  tiny_audio_encoder.onnx         dynamic batch, one dense layer over the whole window + tanh
  tiny_audio_encoder_fixed4.onnx  the same weights with a fixed batch of 4
  tiny_audio_encoder_external/enc.onnx  the same as tiny_audio_encoder.onnx with its weights in
                                        enc.onnx.data beside it (external data)
"""
import argparse
import os

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def save(graph, path, external=False):
    """The graph as an opset 17 model, checked, at `path` (its weights in `path`.data beside it
    when `external`)."""
    model = helper.make_model(graph, producer_name="lipsync-tests",
                              opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    if external:
        onnx.save(model, path, save_as_external_data=True, all_tensors_to_one_file=True,
                  location=os.path.basename(path) + ".data", size_threshold=0)
    else:
        onnx.save(model, path)


def build(path, batch, names, size=320, seed=0, two_outputs=False):
    rng = np.random.default_rng(seed)
    visual, audio, output = names
    n = batch if batch else "N"
    inputs = [
        helper.make_tensor_value_info(visual, TensorProto.FLOAT, [n, 6, size, size]),
        helper.make_tensor_value_info(audio, TensorProto.FLOAT, [n, 32, 16, 16]),
    ]
    outputs = [helper.make_tensor_value_info(output, TensorProto.FLOAT, [n, 3, size, size])]
    if two_outputs:
        outputs.append(helper.make_tensor_value_info("s", TensorProto.FLOAT, [n, 3, size, size]))
    weights = [
        numpy_helper.from_array(rng.normal(0, 0.5, (3, 6, 1, 1)).astype(np.float32), "w"),
        numpy_helper.from_array(rng.normal(0, 0.1, (3,)).astype(np.float32), "b"),
        numpy_helper.from_array(rng.normal(0, 0.5, (3, 32, 1, 1)).astype(np.float32), "wa"),
    ]
    nodes = [
        helper.make_node("Conv", [visual, "w", "b"], ["v"], kernel_shape=[1, 1]),
        helper.make_node("GlobalAveragePool", [audio], ["ap"]),
        helper.make_node("Conv", ["ap", "wa"], ["a"], kernel_shape=[1, 1]),
        helper.make_node("Add", ["v", "a"], ["s"]),
        helper.make_node("Sigmoid", ["s"], [output]),
    ]
    save(helper.make_graph(nodes, "tiny_lipsync", inputs, outputs, weights), path)


def build_null(path, size=320):
    inputs = [
        helper.make_tensor_value_info("visual_input", TensorProto.FLOAT, ["N", 6, size, size]),
        helper.make_tensor_value_info("audio_input", TensorProto.FLOAT, ["N", 32, 16, 16]),
    ]
    outputs = [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["N", 3, size, size])]
    bounds = [numpy_helper.from_array(np.array([v], dtype=np.int64), name)
              for name, v in (("first", 0), ("end", 3), ("axis", 1))]
    nodes = [helper.make_node("Slice", ["visual_input", "first", "end", "axis"], ["output"])]
    save(helper.make_graph(nodes, "null_lipsync", inputs, outputs, bounds), path)


def build_audio_encoder(path, batch, seed=1, external=False):
    rng = np.random.default_rng(seed)
    n = batch if batch else "N"
    inputs = [helper.make_tensor_value_info("mel", TensorProto.FLOAT, [n, 1, 80, 16])]
    outputs = [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, [n, 512])]
    weights = [
        numpy_helper.from_array(rng.normal(0, 0.03, (1280, 512)).astype(np.float32), "w"),
        numpy_helper.from_array(rng.normal(0, 0.1, (512,)).astype(np.float32), "b"),
    ]
    nodes = [
        helper.make_node("Flatten", ["mel"], ["flat"], axis=1),
        helper.make_node("MatMul", ["flat", "w"], ["mm"]),
        helper.make_node("Add", ["mm", "b"], ["pre"]),
        helper.make_node("Tanh", ["pre"], ["embedding"]),
    ]
    save(helper.make_graph(nodes, "tiny_audio_encoder", inputs, outputs, weights), path,
         external=external)


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out-dir", required=True)
    args = parser.parse_args()
    os.makedirs(args.out_dir, exist_ok=True)
    build(os.path.join(args.out_dir, "tiny.onnx"), 0, ("visual_input", "audio_input", "output"))
    build(os.path.join(args.out_dir, "tiny_fixed.onnx"), 1, ("input", "audio", "output"))
    build(os.path.join(args.out_dir, "tiny_fixed3.onnx"), 3, ("input", "audio", "output"))
    build(os.path.join(args.out_dir, "tiny_two_outputs.onnx"), 0,
          ("visual_input", "audio_input", "output"), two_outputs=True)
    build(os.path.join(args.out_dir, "tiny160.onnx"), 0, ("visual_input", "audio_input", "output"),
          size=160)
    build_null(os.path.join(args.out_dir, "null.onnx"))
    build_audio_encoder(os.path.join(args.out_dir, "tiny_audio_encoder.onnx"), 0)
    build_audio_encoder(os.path.join(args.out_dir, "tiny_audio_encoder_fixed4.onnx"), 4)
    os.makedirs(os.path.join(args.out_dir, "tiny_audio_encoder_external"), exist_ok=True)
    build_audio_encoder(os.path.join(args.out_dir, "tiny_audio_encoder_external", "enc.onnx"), 0,
                        external=True)


if __name__ == "__main__":
    main()
