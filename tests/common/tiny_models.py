"""Cheap PyTorch modules with the lip-sync models' interfaces, for the tests that need the same
weights on both sides of a comparison (ONNX for lipsync; PyTorch for a reference or an old
server). The weights are drawn from a seeded generator, so a seed names a model."""
import torch
from torch import nn


class TinyUNet(nn.Module):
    """The UNet's interface (visual [N,6,S,S] + audio [N,32,16,16] -> [N,3,S,S]) with a cheap body:
    per pixel, a 1x1 convolution of the six face channels plus a weighted sum of the 32 audio
    channels' means, through a sigmoid. Every audio row moves every pixel, so frames show which
    rows a server fed it. The random weights are scaled by `visual_scale` and `audio_scale`."""

    def __init__(self, seed, visual_scale, audio_scale):
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.visual = nn.Conv2d(6, 3, 1)
        self.audio = nn.Conv2d(32, 3, 1, bias=False)
        with torch.no_grad():
            self.visual.weight.copy_(torch.randn(3, 6, 1, 1, generator=gen) * visual_scale)
            self.visual.bias.copy_(torch.randn(3, generator=gen) * 0.1)
            self.audio.weight.copy_(torch.randn(3, 32, 1, 1, generator=gen) * audio_scale)

    def forward(self, visual, audio):
        return torch.sigmoid(self.visual(visual) + self.audio(audio.mean(dim=(2, 3), keepdim=True)))


class TinyAudioEncoder(nn.Module):
    """The audio encoder's interface (mel windows [N,1,80,16] -> [N,512]): one dense layer."""

    def __init__(self, seed):
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.dense = nn.Linear(80 * 16, 512)
        with torch.no_grad():
            self.dense.weight.copy_(torch.randn(512, 1280, generator=gen) * 0.03)
            self.dense.bias.copy_(torch.randn(512, generator=gen) * 0.1)

    def forward(self, mel):
        return torch.tanh(self.dense(mel.flatten(1)))
