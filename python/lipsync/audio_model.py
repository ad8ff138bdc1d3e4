"""The AudioEncoder of SyncTalk_2D's 'ave' mode, written from the model spec (section 2, step 7).

Mel windows [N,1,80,16] -> embeddings [N,512] through 13 conv blocks. Its checkpoint
(`audio_visual_encoder.pth`) is the blocks' state dict: keys `{i}.conv_block.0.{weight,bias}` and
`{i}.conv_block.1.{weight,bias,running_mean,running_var,num_batches_tracked}`, 91 entries.
"""
import math

import torch
from torch import nn
import torch.nn.functional as F

ENTRIES = 91
PARAMETERS = 2_812_672
WINDOW_SHAPE = (1, 80, 16)


class AudioEncoder(nn.Module):
    """Mel window [N,1,80,16] -> [N,512] (13 conv blocks, see the model spec, section 2.7)."""

    BLOCKS = [  # cin, cout, kernel, stride, pad, residual
        (1, 32, 3, 1, 1, False), (32, 32, 3, 1, 1, True), (32, 32, 3, 1, 1, True),
        (32, 64, 3, (3, 1), 1, False), (64, 64, 3, 1, 1, True), (64, 64, 3, 1, 1, True),
        (64, 128, 3, 3, 1, False), (128, 128, 3, 1, 1, True), (128, 128, 3, 1, 1, True),
        (128, 256, 3, (3, 2), 1, False), (256, 256, 3, 1, 1, True),
        (256, 512, 3, 1, 0, False), (512, 512, 1, 1, 0, False)]

    def __init__(self):
        super().__init__()
        for i, (cin, cout, k, s, p, res) in enumerate(self.BLOCKS):
            self.add_module(str(i), _EncoderBlock(cin, cout, k, s, p, res))

    def forward(self, x):
        for block in self.children():
            x = block(x)
        return x.flatten(1)


class _EncoderBlock(nn.Module):
    def __init__(self, cin, cout, k, s, p, residual):
        super().__init__()
        self.conv_block = nn.Sequential(nn.Conv2d(cin, cout, k, s, p), nn.BatchNorm2d(cout))
        self.residual = residual

    def forward(self, x):
        y = self.conv_block(x)
        return F.relu(y + x if self.residual else y)


def build_audio_encoder():
    return AudioEncoder()


def load_audio_encoder(path):
    """Loads `path` strictly into an AudioEncoder in eval mode. Also accepts the state dict of a
    module that holds the blocks as `audio_encoder` (keys `audio_encoder.{i}...`). Raises
    checkpoint.CheckpointError naming missing and unexpected keys and shape mismatches."""
    from .checkpoint import CheckpointError, check_state_dict, read_state_dict
    model = build_audio_encoder()
    state = read_state_dict(path)
    prefix = "audio_encoder."
    if state and all(k.startswith(prefix) for k in state):
        state = {k[len(prefix):]: v for k, v in state.items()}
    try:
        check_state_dict(model, state)
    except CheckpointError as e:
        raise CheckpointError(f"'{path}' (audio encoder): {e}") from None
    model.load_state_dict(state, strict=True)
    return model.eval()


def mel_like_windows(batch, seed=0):
    """Seeded [batch,1,80,16] windows with the look of normalised log-mel speech: a smooth random
    spectral envelope per window that falls with frequency, syllable-like loudness changes over
    the 16 frames, some noise, clipped to [-4, 4] (silence sits at -4)."""
    gen = torch.Generator().manual_seed(seed)
    bands = torch.linspace(0, 1, 80).view(1, 80, 1)
    frames = torch.linspace(0, 1, 16).view(1, 1, 16)
    envelope = torch.zeros(batch, 80, 1)
    for k in range(1, 6):  # a few random cosines over the bands
        amp = torch.randn(batch, 1, 1, generator=gen) / k
        phase = 2 * math.pi * torch.rand(batch, 1, 1, generator=gen)
        envelope = envelope + amp * torch.cos(k * math.pi * bands + phase)
    loud = 1.5 * torch.rand(batch, 1, 1, generator=gen)
    rate = 1 + 4 * torch.rand(batch, 1, 1, generator=gen)
    phase = 2 * math.pi * torch.rand(batch, 1, 1, generator=gen)
    syllables = torch.sin(2 * math.pi * rate * frames + phase).clamp(min=0)
    level = -3.5 + loud + 2.5 * syllables - 1.5 * bands + 0.6 * envelope
    noise = 0.3 * torch.randn(batch, 80, 16, generator=gen)
    return (level + noise).clamp(-4, 4).unsqueeze(1)


def random_audio_state_dict(seed=0):
    """Seeded weights in the checkpoint layout: He-scaled convolutions, batch-norm scales near 1,
    small shifts, and batch-norm running statistics measured on mel-like windows (as training
    leaves them), so every block sees activations of unit scale and the embeddings vary with the
    input instead of dying in the ReLUs."""
    gen = torch.Generator().manual_seed(seed)
    model = build_audio_encoder()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.dim() == 4:
                fan_in = param.shape[1] * param.shape[2] * param.shape[3]
                param.copy_(torch.randn(param.shape, generator=gen) * math.sqrt(2.0 / fan_in))
            elif name.endswith("conv_block.1.weight"):
                param.copy_(0.8 + 0.4 * torch.rand(param.shape, generator=gen))
            else:
                param.copy_(0.05 * torch.randn(param.shape, generator=gen))
        norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
        for bn in norms:
            bn.reset_running_stats()
            bn.momentum = None  # cumulative: after one pass, exactly that pass's statistics
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # the same bytes for the same seed whatever the caller's setting
        try:
            model.train()
            model(mel_like_windows(256, 10_000 + seed))
        finally:
            torch.set_num_threads(threads)
            model.eval()
            for bn in norms:
                bn.momentum = 0.1
    return {k: v.clone() for k, v in model.state_dict().items()}
