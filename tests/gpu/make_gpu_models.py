"""The GPU model test's second model, mini_unet.onnx: the lip-sync interface (visual
[N,6,320,320] + audio [N,32,16,16] -> a sigmoid [N,3,320,320]) through each kind of step the CUDA
backend runs (dense 3x3 convolutions with and without stride, batch norm folded into them, an
inverted-residual block the fused kernel takes, the audio branch's small-image convolution,
nearest and bilinear align-corners resizes with concatenation, a residual add, the sigmoid), in
a few layers with seeded weights at a gain that keeps activations near 1. Unlike the demo
model, whose random weights magnify float16 rounding to tenths at some pixels whatever the input,
float16 here stays within a few of its ulps of float32 at every pixel, so the test can bound each
element.

    python3 tests/gpu/make_gpu_models.py OUT_DIR
Needs only PyTorch (the TorchScript-based exporter), so the GPU machine can run it too.
"""
import os
import sys

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "python"))
from lipsync.export import export_onnx  # noqa: E402


def conv(cin, cout, k=3, stride=1, groups=1, gain=1.2):
    c = nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups)
    with torch.no_grad():
        fan_in = cin // groups * k * k
        c.weight.normal_(0.0, gain / fan_in ** 0.5)
        c.bias.uniform_(-0.1, 0.1)
    return c


def bn(c):
    m = nn.BatchNorm2d(c)
    with torch.no_grad():
        m.weight.uniform_(0.8, 1.2)
        m.bias.uniform_(-0.1, 0.1)
        m.running_mean.uniform_(-0.1, 0.1)
        m.running_var.uniform_(0.8, 1.2)
    return m


class MiniUNet(nn.Module):
    mode, size = "ave", 320  # what lipsync.export asks of a model

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(conv(6, 16, stride=2), bn(16), nn.ReLU())          # 160
        self.expand = nn.Sequential(conv(16, 32, k=1), nn.ReLU())
        self.depthwise = nn.Sequential(conv(32, 32, groups=32), nn.ReLU())
        self.project = conv(32, 16, k=1, gain=0.8)
        self.down = nn.Sequential(conv(16, 32, stride=2), bn(32), nn.ReLU())         # 80
        self.audio = nn.Sequential(conv(32, 32), nn.ReLU())                          # 16
        self.mid = nn.Sequential(conv(64, 32), nn.ReLU())
        self.up = nn.Sequential(conv(48, 16), nn.ReLU())                             # 160
        self.out = conv(16, 3, gain=2.0)                                             # 320

    def forward(self, visual, audio):
        x = self.stem(visual)
        x = x + self.project(self.depthwise(self.expand(x)))
        y = self.down(x)
        a = F.interpolate(self.audio(audio), size=y.shape[2:], mode="nearest")
        y = self.mid(torch.cat([y, a], dim=1))
        y = F.interpolate(y, scale_factor=2, mode="bilinear", align_corners=True)
        y = self.up(torch.cat([y, x], dim=1))
        y = F.interpolate(y, scale_factor=2, mode="bilinear", align_corners=True)
        return torch.sigmoid(self.out(y))


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    torch.manual_seed(0)
    model = MiniUNet().eval()
    path = os.path.join(out, "mini_unet.onnx")
    export_onnx(model, path + ".tmp", ("visual_input", "audio_input"), "output")
    os.replace(path + ".tmp", path)
    print("GPU test model written to", path)


if __name__ == "__main__":
    main()
