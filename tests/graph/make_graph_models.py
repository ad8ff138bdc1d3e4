"""Small ONNX models covering each operator and fusion the graph compiler supports, plus models
it must reject. Written with torch.onnx.export (shape arithmetic and BatchNorm kept, as exporters
emit them without constant folding) and the onnx helper API.

Usage: make_graph_models.py OUT_DIR
"""
import os
import sys

import numpy as np
import onnx
import torch
import torch.nn as nn
import torch.nn.functional as F
from onnx import TensorProto, helper


def bn(c):
    m = nn.BatchNorm2d(c)
    with torch.no_grad():  # non-trivial statistics so that folding is really exercised
        m.weight.uniform_(0.5, 1.5)
        m.bias.uniform_(-0.5, 0.5)
        m.running_mean.uniform_(-0.3, 0.3)
        m.running_var.uniform_(0.5, 2.0)
    return m


class ConvKxK(nn.Module):
    """kxk convs, stride 1/2, pads 1 and 3, grouped, BN, ReLU, sigmoid output."""

    def __init__(self):
        super().__init__()
        self.c1 = nn.Sequential(nn.Conv2d(3, 8, 3, 1, 1, bias=False), bn(8), nn.ReLU())
        self.c2 = nn.Sequential(nn.Conv2d(8, 16, 3, 2, 3), bn(16), nn.ReLU())
        self.c3 = nn.Conv2d(16, 16, 5, 1, 2, groups=4)
        self.c4 = nn.Conv2d(16, 4, 1)

    def forward(self, x):
        return torch.sigmoid(self.c4(self.c3(self.c2(self.c1(x)))))


class InvertedResidual(nn.Module):
    def __init__(self, cin, cout, stride, residual):
        super().__init__()
        hidden = 2 * cin
        self.residual = residual
        self.conv = nn.Sequential(
            nn.Conv2d(cin, hidden, 1, bias=False), bn(hidden), nn.ReLU(),
            nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False), bn(hidden),
            nn.ReLU(),
            nn.Conv2d(hidden, cout, 1, bias=False), bn(cout))

    def forward(self, x):
        return x + self.conv(x) if self.residual else self.conv(x)


class Depthwise(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = InvertedResidual(6, 8, 2, False)
        self.b = InvertedResidual(8, 8, 1, True)

    def forward(self, x):
        return self.b(self.a(x))


class UpPadConcat(nn.Module):
    """The UNet's Up block: bilinear x2 align_corners, pad to the skip's size, concat."""

    def __init__(self, nearest=False, down_pad=0, align_corners=True):
        super().__init__()
        self.nearest = nearest
        self.align_corners = align_corners
        # down_pad 0 on odd sizes: the upsampled tensor is smaller than the skip (a real zero
        # pad); down_pad 1 on odd sizes: larger (a negative pad, i.e. a crop).
        self.down = nn.Conv2d(4, 8, 3, 2, down_pad)
        self.fuse = InvertedResidual(12, 6, 1, False)

    def forward(self, x):
        skip = x
        y = F.relu(self.down(x))
        if self.nearest:
            y = F.interpolate(y, scale_factor=2, mode="nearest")
        else:
            y = F.interpolate(y, scale_factor=2, mode="bilinear", align_corners=self.align_corners)
        dy = skip.size()[2] - y.size()[2]
        dx = skip.size()[3] - y.size()[3]
        y = F.pad(y, [dx // 2, dx - dx // 2, dy // 2, dy - dy // 2])
        return self.fuse(torch.cat([y, skip], dim=1))


class AudioBranch(nn.Module):
    """The audio encoder shapes of the 'hubert' (conv3 stride 2) and 'wenet' (stride (1,2))
    variants, with conv5 k3 s2 p3, and a concat of two inputs."""

    def __init__(self, cin, conv3_stride):
        super().__init__()
        self.conv1 = InvertedResidual(cin, 16, 1, cin == 16)
        self.conv3 = nn.Conv2d(16, 24, 3, conv3_stride, 1)
        self.bn3 = bn(24)
        self.conv4 = InvertedResidual(24, 24, 1, True)
        self.conv5 = nn.Conv2d(24, 32, 3, 2, 3)
        self.bn5 = bn(32)

    def forward(self, a):
        x = self.conv1(a)
        x = F.relu(self.bn3(self.conv3(x)))
        x = self.conv4(x)
        return F.relu(self.bn5(self.conv5(x)))


class TwoInputs(nn.Module):
    def __init__(self):
        super().__init__()
        self.visual = nn.Conv2d(6, 32, 3, 4, 1)
        self.audio = AudioBranch(32, 2)
        self.out = nn.Conv2d(64, 3, 1)

    def forward(self, v, a):
        return torch.sigmoid(self.out(torch.cat([self.visual(v), self.audio(a)], dim=1)))


class TwoOutputs(nn.Module):
    """An output that other layers also read (its conv must stay unfused), a second output
    after a BatchNorm-free residual, and a third output that is the input itself."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 6, 3, 1, 1)
        self.b = nn.Conv2d(6, 6, 1)

    def forward(self, x):
        first = F.relu(self.a(x))
        return first, torch.sigmoid(first + self.b(first)), x


class ConvUpConv(nn.Module):
    """conv -> nearest x2 -> conv; exported at opset 9 it uses the old Upsample operator. With
    another mode and scale: bilinear without align_corners, as PyTorch's default is (half_pixel
    coordinates at opset 11 and later, asymmetric ones in opset 9's Upsample)."""

    def __init__(self, mode="nearest", scale=2):
        super().__init__()
        self.mode = mode
        self.scale = scale
        self.a = nn.Conv2d(3, 4, 3, 1, 1)
        self.b = nn.Conv2d(4, 2, 3, 1, 1)

    def forward(self, x):
        extra = {} if self.mode == "nearest" else {"align_corners": False}
        y = F.interpolate(F.relu(self.a(x)), scale_factor=self.scale, mode=self.mode, **extra)
        return self.b(y)


class MaxPoolModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.c = nn.Conv2d(3, 4, 3, 1, 1)

    def forward(self, x):
        return F.max_pool2d(self.c(x), 2)


class FrameModel(nn.Module):
    """The lip-sync interface in miniature, for the frame form: visual [N,6,S,S] and audio
    [N,32,16,16] in, a sigmoid [N,3,S,S] out whose values spread over (0, 1)."""

    def __init__(self, size):
        super().__init__()
        self.scale = size // 16
        self.visual = nn.Conv2d(6, 8, 3, 1, 1)
        self.audio = nn.Conv2d(32, 8, 1)
        self.out = nn.Conv2d(16, 3, 3, 1, 1)
        with torch.no_grad():
            self.out.weight.mul_(6.0)

    def forward(self, v, a):
        x = F.relu(self.visual(v))
        y = F.interpolate(F.relu(self.audio(a)), scale_factor=self.scale, mode="nearest")
        return torch.sigmoid(self.out(torch.cat([x, y], dim=1)))


def export(model, args, names, path, outs=("output",), opset=17):
    model.eval()
    dynamic = {n: {0: "batch"} for n in names + list(outs)}
    torch.onnx.export(model, args, path, input_names=names, output_names=list(outs),
                      opset_version=opset, dynamic_axes=dynamic, do_constant_folding=False)


def standalone_ops_model(path):
    """BatchNorm with no conv before it, Add of a per-channel constant, Add+Relu of two
    activations, a non-zero Pad, Identity, Concat of three; fixed batch 2."""
    c = 4
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, c, 5, 7])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3 * c, 7, 9])
    inits = [
        helper.make_tensor("scale", TensorProto.FLOAT, [c], [1.5, 0.5, 2.0, 1.0]),
        helper.make_tensor("bias", TensorProto.FLOAT, [c], [0.1, -0.2, 0.3, 0.0]),
        helper.make_tensor("mean", TensorProto.FLOAT, [c], [0.2, 0.1, -0.1, 0.0]),
        helper.make_tensor("var", TensorProto.FLOAT, [c], [1.0, 2.0, 0.5, 1.5]),
        helper.make_tensor("k", TensorProto.FLOAT, [c, 1, 1], [0.5, -0.5, 0.25, 1.0]),
        helper.make_tensor("pads", TensorProto.INT64, [8], [0, 0, 1, 1, 0, 0, 1, 1]),
        helper.make_tensor("padval", TensorProto.FLOAT, [], [0.75]),
    ]
    nodes = [
        helper.make_node("BatchNormalization", ["x", "scale", "bias", "mean", "var"], ["b"],
                         name="bn_alone", epsilon=1e-3),
        helper.make_node("Add", ["b", "k"], ["bk"], name="add_const"),
        helper.make_node("Add", ["bk", "x"], ["s"], name="add_two"),
        helper.make_node("Relu", ["s"], ["r"], name="relu_after_add"),
        helper.make_node("Identity", ["r"], ["ri"], name="identity"),
        helper.make_node("Sigmoid", ["x"], ["sx"], name="sigmoid_alone"),
        helper.make_node("Concat", ["ri", "sx", "b"], ["cat"], name="concat3", axis=1),
        helper.make_node("Pad", ["cat", "pads", "padval"], ["y"], name="pad_value", mode="constant"),
    ]
    graph = helper.make_graph(nodes, "standalone", [x], [y], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, path)


def conv_bn_model(path):
    """Conv -> BatchNorm -> Relu, then a bias-free 1x1 Conv -> BatchNorm -> residual Add ->
    Sigmoid, kept as separate nodes (torch's exporter folds BatchNorm itself in eval mode)."""
    g = torch.Generator().manual_seed(1)

    def t(name, shape, lo=-0.5, hi=0.5):
        values = (torch.rand(shape, generator=g) * (hi - lo) + lo).flatten().tolist()
        return helper.make_tensor(name, TensorProto.FLOAT, list(shape), values)

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 9, 11])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 8, 9, 11])
    inits = [t("w1", (8, 3, 3, 3)), t("b1", (8,)), t("w2", (8, 8, 1, 1))]
    for i in (1, 2):
        inits += [t(f"g{i}", (8,), 0.5, 1.5), t(f"beta{i}", (8,)), t(f"m{i}", (8,)),
                  t(f"v{i}", (8,), 0.5, 2.0)]
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1],
                         kernel_shape=[3, 3]),
        helper.make_node("BatchNormalization", ["c1", "g1", "beta1", "m1", "v1"], ["n1"],
                         name="bn1", epsilon=1e-5),
        helper.make_node("Relu", ["n1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "w2"], ["c2"], name="conv2"),
        helper.make_node("BatchNormalization", ["c2", "g2", "beta2", "m2", "v2"], ["n2"],
                         name="bn2", epsilon=1e-5),
        helper.make_node("Add", ["r1", "n2"], ["s"], name="residual"),
        helper.make_node("Sigmoid", ["s"], ["y"], name="sigmoid"),
    ]
    graph = helper.make_graph(nodes, "conv_bn", [x], [y], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)


def softmax_model(path):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 4, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3, 4, 4])
    nodes = [helper.make_node("Relu", ["x"], ["r"], name="first_relu"),
             helper.make_node("Softmax", ["r"], ["y"], name="the_softmax", axis=1)]
    graph = helper.make_graph(nodes, "softmax", [x], [y])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)


def passthrough_model(path):
    """Outputs the input itself beside its Relu: ONNX Runtime leaves such an output's buffer."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 4, 5])
    r = helper.make_tensor_value_info("r", TensorProto.FLOAT, ["N", 3, 4, 5])
    nodes = [helper.make_node("Relu", ["x"], ["r"], name="relu")]
    graph = helper.make_graph(nodes, "passthrough", [x], [r, x])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)


def shapeless_output_model(path):
    """An output declared without a shape that ONNX Runtime cannot infer either (opset 9's Concat
    takes no negative axis, so its inference gives up; its kernel still runs)."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 4, 5])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    nodes = [helper.make_node("Relu", ["x"], ["r"], name="relu"),
             helper.make_node("Concat", ["r", "x"], ["y"], name="concat", axis=-3)]
    graph = helper.make_graph(nodes, "shapeless", [x], [y])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 9)]), path)


class FaceValues(nn.Module):
    """A frame-form model whose output is exact: a 1x1 convolution of the visual input plus a
    zero-weight 1x1 convolution of the audio, upsampled (so that both inputs are used). With
    weights picking channels 0-2 the output is the face itself; with zero weights it is the bias,
    whatever the faces."""

    def __init__(self, weight, bias, size=320):
        super().__init__()
        self.scale = size // 16
        self.visual = nn.Conv2d(6, 3, 1)
        self.audio = nn.Conv2d(32, 3, 1, bias=False)
        with torch.no_grad():
            self.visual.weight.copy_(torch.tensor(weight, dtype=torch.float32).view(3, 6, 1, 1))
            self.visual.bias.copy_(torch.tensor(bias, dtype=torch.float32))
            self.audio.weight.zero_()

    def forward(self, v, a):
        y = F.interpolate(self.audio(a), scale_factor=self.scale, mode="nearest")
        return self.visual(v) + y


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    torch.manual_seed(0)
    export(ConvKxK(), (torch.rand(1, 3, 19, 23),), ["x"], os.path.join(out, "conv_kxk.onnx"))
    export(Depthwise(), (torch.rand(1, 6, 16, 16),), ["x"], os.path.join(out, "depthwise.onnx"))
    export(UpPadConcat(), (torch.rand(1, 4, 17, 15),), ["x"], os.path.join(out, "up_pad_concat.onnx"))
    export(UpPadConcat(down_pad=1), (torch.rand(1, 4, 16, 16),), ["x"],
           os.path.join(out, "up_concat.onnx"))
    export(UpPadConcat(nearest=True, down_pad=1), (torch.rand(1, 4, 17, 15),), ["x"],
           os.path.join(out, "up_nearest.onnx"))
    export(AudioBranch(32, 2), (torch.rand(1, 32, 32, 32),), ["audio"],
           os.path.join(out, "audio_hubert.onnx"))
    export(AudioBranch(16, (1, 2)), (torch.rand(1, 16, 16, 32),), ["audio"],
           os.path.join(out, "audio_wenet.onnx"))
    export(TwoInputs(), (torch.rand(1, 6, 40, 40), torch.rand(1, 32, 32, 32)),
           ["visual", "audio"], os.path.join(out, "two_inputs.onnx"))
    export(TwoOutputs(), (torch.rand(1, 3, 12, 10),), ["x"], os.path.join(out, "two_outputs.onnx"),
           outs=("first", "second", "echo"))
    export(ConvUpConv(), (torch.rand(1, 3, 7, 9),), ["x"], os.path.join(out, "upsample_opset9.onnx"),
           opset=9)
    export(UpPadConcat(align_corners=False), (torch.rand(1, 4, 17, 15),), ["x"],
           os.path.join(out, "up_half_pixel.onnx"))
    export(ConvUpConv("bilinear", 1.5), (torch.rand(1, 3, 7, 9),), ["x"],
           os.path.join(out, "bilinear_by_1_5.onnx"))
    export(ConvUpConv("bilinear"), (torch.rand(1, 3, 7, 9),), ["x"],
           os.path.join(out, "bilinear_opset9.onnx"), opset=9)
    export(MaxPoolModel(), (torch.rand(1, 3, 8, 8),), ["x"], os.path.join(out, "maxpool.onnx"))
    for size in (320, 160):
        export(FrameModel(size), (torch.rand(1, 6, size, size), torch.rand(1, 32, 16, 16)),
               ["visual_input", "audio_input"], os.path.join(out, f"frames{size}.onnx"))
    standalone_ops_model(os.path.join(out, "standalone_ops.onnx"))
    softmax_model(os.path.join(out, "softmax.onnx"))
    conv_bn_model(os.path.join(out, "conv_bn.onnx"))
    passthrough_model(os.path.join(out, "passthrough.onnx"))
    shapeless_output_model(os.path.join(out, "shapeless_output.onnx"))
    frame_inputs = (torch.rand(1, 6, 320, 320), torch.rand(1, 32, 16, 16))
    export(FaceValues(np.eye(3, 6), [0, 0, 0]), frame_inputs, ["visual_input", "audio_input"],
           os.path.join(out, "face_identity.onnx"))
    # 1 - 2^-24, 1 and the smallest positive float: the byte conversion's boundaries.
    boundaries = [np.nextafter(np.float32(1), np.float32(0)), 1.0,
                  np.nextafter(np.float32(0), np.float32(1))]
    export(FaceValues(np.zeros((3, 6)), boundaries), frame_inputs,
           ["visual_input", "audio_input"], os.path.join(out, "face_constant.onnx"))
    print("graph test models written to", out)


if __name__ == "__main__":
    main()
