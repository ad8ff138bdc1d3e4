"""The SyncTalk_2D lip-sync UNet family, written from its published description.

Module and parameter names reproduce the original checkpoints' key layout, so their state dicts
load with strict=True. `build_model(mode, size)` covers the audio modes 'ave', 'hubert', 'wenet' and
the 320 and 160 input sizes.
"""
import torch
from torch import nn
import torch.nn.functional as F

# The encoder that turns mel windows into 'ave' features, kept with the rest of the audio code.
from .audio_model import AudioEncoder, build_audio_encoder  # noqa: F401

AUDIO_SHAPES = {"ave": (32, 16, 16), "hubert": (32, 32, 32), "wenet": (256, 16, 32)}
SIZES = (320, 160)


class InvertedResidual(nn.Module):
    """1x1 expand (x2) -> 3x3 depthwise (stride) -> 1x1 project, each with BN; ReLU after the
    first two. With `residual`, the input is added to the result."""

    def __init__(self, cin, cout, stride=1, residual=False):
        super().__init__()
        hidden = 2 * cin
        self.residual = residual
        self.conv = nn.Sequential(
            nn.Conv2d(cin, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU(inplace=True),
            nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False),
            nn.BatchNorm2d(hidden), nn.ReLU(inplace=True),
            nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        y = self.conv(x)
        return x + y if self.residual else y


class DoubleConvDW(nn.Module):
    def __init__(self, cin, cout, stride=2):
        super().__init__()
        self.double_conv = nn.Sequential(InvertedResidual(cin, cout, stride),
                                         InvertedResidual(cout, cout, 1, residual=True))

    def forward(self, x):
        return self.double_conv(x)


class InConvDw(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.inconv = nn.Sequential(InvertedResidual(cin, cout, 1))

    def forward(self, x):
        return self.inconv(x)


class Down(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.maxpool_conv = nn.Sequential(DoubleConvDW(cin, cout, 2))

    def forward(self, x):
        return self.maxpool_conv(x)


class Up(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.up = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True)
        self.conv = DoubleConvDW(cin, cout, 1)

    def forward(self, x, skip):
        x = self.up(x)
        dy = skip.size(2) - x.size(2)
        dx = skip.size(3) - x.size(3)
        if dx or dy:  # zero for every size this family uses
            x = F.pad(x, [dx // 2, dx - dx // 2, dy // 2, dy - dy // 2])
        return self.conv(torch.cat([x, skip], dim=1))


class OutConv(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 1)

    def forward(self, x):
        return self.conv(x)


class AudioConvNet(nn.Module):
    """The audio branch: [N,C,H,W] features -> [N,512,10,10]."""

    def __init__(self, mode):
        super().__init__()
        if mode == "wenet":
            self.conv1 = InvertedResidual(256, 256, residual=True)
            self.conv2 = InvertedResidual(256, 256, residual=True)
            self.conv3 = nn.Conv2d(256, 256, 3, (1, 2), 1)
            self.bn3 = nn.BatchNorm2d(256)
        else:
            self.conv1 = InvertedResidual(32, 64)
            self.conv2 = InvertedResidual(64, 128)
            self.conv3 = nn.Conv2d(128, 256, 3, 2 if mode == "hubert" else 1, 1)
            self.bn3 = nn.BatchNorm2d(256)
        self.conv4 = InvertedResidual(256, 256, residual=True)
        self.conv5 = nn.Conv2d(256, 512, 3, 2, 3)
        self.bn5 = nn.BatchNorm2d(512)
        self.relu = nn.ReLU()
        self.conv6 = InvertedResidual(512, 512, residual=True)
        self.conv7 = InvertedResidual(512, 512, residual=True)

    def forward(self, x):
        x = self.conv2(self.conv1(x))
        x = self.relu(self.bn3(self.conv3(x)))
        x = self.conv4(x)
        x = self.relu(self.bn5(self.conv5(x)))
        return self.conv7(self.conv6(x))


class LipSyncUNet(nn.Module):
    """Visual [N,6,S,S] + audio -> face [N,3,S,S] in [0,1]."""

    def __init__(self, mode="ave", size=320):
        super().__init__()
        if mode not in AUDIO_SHAPES:
            raise ValueError(f"unknown mode '{mode}' (use {', '.join(AUDIO_SHAPES)})")
        if size not in SIZES:
            raise ValueError(f"unknown size {size} (use 320 or 160)")
        self.mode, self.size = mode, size
        self.audio_model = AudioConvNet(mode)
        self.fuse_conv = nn.Sequential(DoubleConvDW(1024, 512, 1), DoubleConvDW(512, 256, 1))
        if size == 320:
            widths = [32, 32, 64, 128, 256, 512]
            self.inc = InConvDw(6, 32)
            self.down1, self.down2 = Down(32, 32), Down(32, 64)
            self.down3, self.down4, self.down5 = Down(64, 128), Down(128, 256), Down(256, 512)
            self.up1, self.up2, self.up3 = Up(512, 128), Up(256, 64), Up(128, 32)
            self.up4, self.up5 = Up(64, 32), Up(64, 16)
            self.outc = OutConv(16, 3)
        else:
            widths = [32, 64, 128, 256, 512]
            self.inc = InConvDw(6, 32)
            self.down1, self.down2 = Down(32, 64), Down(64, 128)
            self.down3, self.down4 = Down(128, 256), Down(256, 512)
            self.up1, self.up2, self.up3 = Up(512, 128), Up(256, 64), Up(128, 32)
            self.up4 = Up(64, 32)
            self.outc = OutConv(32, 3)
        self.widths = widths

    def forward(self, visual, audio):
        skips = [self.inc(visual)]
        downs = [self.down1, self.down2, self.down3, self.down4]
        if self.size == 320:
            downs.append(self.down5)
        for down in downs:
            skips.append(down(skips[-1]))
        x = torch.cat([skips.pop(), self.audio_model(audio)], dim=1)
        x = self.fuse_conv(x)
        ups = [self.up1, self.up2, self.up3, self.up4] + ([self.up5] if self.size == 320 else [])
        for up in ups:
            x = up(x, skips.pop())
        return torch.sigmoid(self.outc(x))


def build_model(mode="ave", size=320):
    return LipSyncUNet(mode, size)


def example_inputs(mode="ave", size=320, batch=1, seed=0):
    """Seeded random inputs of the right shapes: visual in [0,1), audio features >= 0."""
    gen = torch.Generator().manual_seed(seed)
    visual = torch.rand(batch, 6, size, size, generator=gen)
    audio = torch.rand(batch, *AUDIO_SHAPES[mode], generator=gen)
    return visual, audio
