"""Models in the forms users' exporters and converters write, for the compatibility tests.

usage: make_compat_models.py OUT_DIR DEMO_MODEL

Writes into OUT_DIR:
  dynamo/model.onnx (+ its external data file): the graph PyTorch 2.11's default exporter wrote for
      a SyncTalk_2D 'ave' 320 UNet (tests/data/dynamo-export), with seeded weights;
  demo_external/demo.onnx + demo.onnx.data: the demo model re-saved with every tensor outside;
  demo_fp16.onnx: the demo model as float16 converters write it (float16 weights and activations,
      float32 inputs and outputs through Cast nodes);
  refuse/<case>/model.onnx: a small conv model whose external data is fine ("ok") or broken in one
      way each (absolute, dotdot, link, linked_dir, missing, short, offset_past_end). The refused
      locations lead to a correct data file outside the model's folder, so a loader that followed
      them would succeed.
"""
import os
import shutil
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURE = os.path.join(HERE, "..", "data", "dynamo-export", "model.onnx")


def external_info(tensor):
    return {e.key: e.value for e in tensor.external_data}


def set_external(tensor, **entries):
    info = external_info(tensor)
    info.update({k: str(v) for k, v in entries.items()})
    del tensor.external_data[:]
    for k, v in info.items():
        tensor.external_data.add(key=k, value=v)


def write_dynamo_fixture(out):
    """Seeded weights for the exporter's graph: normal convolution weights with variance
    0.25 / fan_in, small biases. The graph has its batch norms folded away, so full He scaling
    compounds through the blocks and saturates the sigmoid; a quarter of it keeps most outputs
    in its sensitive range (the test checks that)."""
    os.makedirs(out, exist_ok=True)
    model = onnx.load(FIXTURE, load_external_data=False)
    external = [t for t in model.graph.initializer if t.data_location == TensorProto.EXTERNAL]
    infos = [external_info(t) for t in external]
    size = max(int(i["offset"]) + int(i["length"]) for i in infos)
    data = bytearray(size)
    rng = np.random.default_rng(2026)
    for t, info in zip(external, infos):
        dims = list(t.dims)
        fan_in = int(np.prod(dims[1:])) if len(dims) == 4 else 0
        scale = np.sqrt(0.25 / fan_in) if fan_in else 0.02
        values = (rng.standard_normal(int(np.prod(dims))) * scale).astype(np.float32)
        start = int(info["offset"])
        assert values.nbytes == int(info["length"]), t.name
        data[start:start + values.nbytes] = values.tobytes()
    shutil.copy(FIXTURE, os.path.join(out, "model.onnx"))
    with open(os.path.join(out, infos[0]["location"]), "wb") as f:
        f.write(data)


def write_external_demo(demo, out):
    os.makedirs(out, exist_ok=True)
    model = onnx.load(demo)
    onnx.save_model(model, os.path.join(out, "demo.onnx"), save_as_external_data=True,
                    all_tensors_to_one_file=True, location="demo.onnx.data", size_threshold=0)


def to_float16(model):
    """What float16 converters do with keep_io_types: weights and activations in float16, Cast
    nodes after each float input and before each float output. Resize scales stay float32, as
    ONNX requires."""
    graph = model.graph
    keep_float = set()
    for node in graph.node:
        if node.op_type in ("Resize", "Upsample"):
            keep_float.update(node.input[1:])
    for init in graph.initializer:
        if init.data_type == TensorProto.FLOAT and init.name not in keep_float:
            init.CopyFrom(numpy_helper.from_array(
                numpy_helper.to_array(init).astype(np.float16), init.name))
    for node in graph.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value" and attr.t.data_type == TensorProto.FLOAT and \
                        node.output[0] not in keep_float:
                    attr.t.CopyFrom(numpy_helper.from_array(
                        numpy_helper.to_array(attr.t).astype(np.float16)))
    casts_in = []
    for inp in graph.input:
        half = inp.name + "_fp16"
        for node in graph.node:
            for i, name in enumerate(node.input):
                if name == inp.name:
                    node.input[i] = half
        casts_in.append(helper.make_node("Cast", [inp.name], [half], name="cast_" + half,
                                         to=TensorProto.FLOAT16))
    casts_out = []
    for out in graph.output:
        half = out.name + "_fp16"
        for node in graph.node:
            for i, name in enumerate(node.output):
                if name == out.name:
                    node.output[i] = half
        casts_out.append(helper.make_node("Cast", [half], [out.name], name="cast_" + out.name,
                                          to=TensorProto.FLOAT))
    nodes = casts_in + list(graph.node) + casts_out
    del graph.node[:]
    graph.node.extend(nodes)
    del graph.value_info[:]
    return model


def small_conv_model():
    rng = np.random.default_rng(3)
    w = numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "w")
    b = numpy_helper.from_array(rng.standard_normal(4).astype(np.float32), "b")
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4, 8, 8])
    node = helper.make_node("Conv", ["x", "w", "b"], ["y"], name="conv", pads=[1, 1, 1, 1])
    graph = helper.make_graph([node], "small_conv", [x], [y], initializer=[w, b])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def write_refusals(out):
    """One folder per case; `outside/weights.bin` is a correct data file outside all of them."""
    outside = os.path.join(out, "outside")
    os.makedirs(outside, exist_ok=True)
    ok_dir = os.path.join(out, "ok")
    os.makedirs(ok_dir, exist_ok=True)
    onnx.save_model(small_conv_model(), os.path.join(ok_dir, "model.onnx"),
                    save_as_external_data=True, all_tensors_to_one_file=True,
                    location="weights.bin", size_threshold=0)
    shutil.copy(os.path.join(ok_dir, "weights.bin"), os.path.join(outside, "weights.bin"))
    data_size = os.path.getsize(os.path.join(ok_dir, "weights.bin"))
    template = onnx.load(os.path.join(ok_dir, "model.onnx"), load_external_data=False)

    def case(name, location=None, offset=None, data=True, prepare=None):
        folder = os.path.join(out, name)
        os.makedirs(folder, exist_ok=True)
        model = onnx.ModelProto()
        model.CopyFrom(template)
        weight = next(t for t in model.graph.initializer if t.name == "w")
        if location is not None:
            for t in model.graph.initializer:
                set_external(t, location=location)
        if offset is not None:
            set_external(weight, offset=offset)
        onnx.save(model, os.path.join(folder, "model.onnx"))
        if data:
            shutil.copy(os.path.join(ok_dir, "weights.bin"), os.path.join(folder, "weights.bin"))
        if prepare:
            prepare(folder)

    def link(folder, name, target):
        path = os.path.join(folder, name)
        if os.path.lexists(path):
            os.remove(path)
        os.symlink(target, path)

    def truncate(folder):
        with open(os.path.join(folder, "weights.bin"), "r+b") as f:
            f.truncate(data_size // 2)

    case("absolute", location=os.path.join(os.path.abspath(outside), "weights.bin"), data=False)
    case("dotdot", location="../outside/weights.bin", data=False)
    case("link", location="link.bin", data=False,
         prepare=lambda f: link(f, "link.bin", "../outside/weights.bin"))
    case("linked_dir", location="sub/weights.bin", data=False,
         prepare=lambda f: link(f, "sub", os.path.abspath(outside)))
    case("missing", location="nothere.bin", data=False)
    case("short", prepare=truncate)
    case("offset_past_end", offset=data_size + 64)


def main():
    out, demo = sys.argv[1], sys.argv[2]
    # onnx appends to an existing external data file, so every run starts from an empty folder.
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(out)
    write_dynamo_fixture(os.path.join(out, "dynamo"))
    write_external_demo(demo, os.path.join(out, "demo_external"))
    onnx.save(to_float16(onnx.load(demo)), os.path.join(out, "demo_fp16.onnx"))
    write_refusals(os.path.join(out, "refuse"))
    print("compatibility test models written to", out)


if __name__ == "__main__":
    main()
