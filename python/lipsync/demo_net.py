"""The trained demo model's network: the full 'ave' 320 UNet with most channels zero, a few set
to fixed values and two parts fitted to the demo's data (train_demo.py).

Training every weight of the UNet on two shared CPU cores takes many seconds per frame, far too
slow for set-up, so the layers get these jobs:
  - inc: the face's B, G, R, and two mouth channels, "mouth" (1 on the lips and the line between
    them) and "line" (1 on the line only); down1..down5 carry both down as blurred pyramids;
  - audio_model and fuse_conv: trained by gradient descent so that fuse_conv's first channel is
    the speech's loudness (a narrow copy, NarrowUNet, is trained and copied in);
  - up1..up3 carry the loudness and the pyramids up to up4 unchanged;
  - up4: its first block turns those nine channels into the lips and the opening of the mouth
    opened by that loudness: fixed ReLU units whose output weights are fitted by least squares
    to the target masks (MouthUnits); its second block clamps the masks to [0, 1];
  - up5 and outc rebuild the face: per colour a piecewise-linear logit of the input colour (so
    the final sigmoid gives the face back within a grey level), the colour first moved to the
    lips' colour inside the lips mask and to the opening's colour inside the opening mask.
Every other channel is zero, so the full model computes what the narrow one and the set layers
compute, and lipsync runs it like any other export.
"""
import numpy as np
import torch
from torch import nn

from .demo_avatar import LIPS, OPENING, SKIN
from .model import AudioConvNet, DoubleConvDW, Down, InConvDw, InvertedResidual, Up, build_model

AUDIO_WIDTH, FUSE_WIDTH = 8, 4
LOGIT_KNOTS = 24
# mouth = clamp((R - 2G + 0.17) / 0.12): 2.4 on the lips and 1.4 on the line before the clamp,
# below 0 on skin (-2.5), nose and background. line = clamp((0.22 - G) / 0.06): G is 0.12 on the
# line, 0.27 on the lips, at least 0.31 elsewhere.
MOUTH_OFFSET, MOUTH_RAMP = 0.17, 0.12
LINE_LEVEL, LINE_RAMP = 0.22, 0.06
MASK_DEAD_ZONE = 0.2
BLUR = torch.tensor([[1.0, 2.0, 1.0], [2.0, 4.0, 2.0], [1.0, 2.0, 1.0]]) / 16
# up4's input channels: loudness, then mouth and line at 20, 40, 80 (from up3) and 160 (x2).
FEATURES = ["loudness", "mouth20", "line20", "mouth40", "line40", "mouth80", "line80",
            "mouth160", "line160"]
UP4_INPUTS = [0, 1, 2, 3, 4, 5, 6, 32, 33]  # where they are among the full up4's 64 inputs


class NarrowAudio(nn.Module):
    """AudioConvNet('ave') with `width` channels from conv1 on (conv1's hidden layer is full)."""

    forward = AudioConvNet.forward

    def __init__(self, width):
        super().__init__()
        self.conv1 = InvertedResidual(32, width)
        self.conv2 = InvertedResidual(width, width)
        self.conv3 = nn.Conv2d(width, width, 3, 1, 1)
        self.bn3 = nn.BatchNorm2d(width)
        self.conv4 = InvertedResidual(width, width, residual=True)
        self.conv5 = nn.Conv2d(width, width, 3, 2, 3)
        self.bn5 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU()
        self.conv6 = InvertedResidual(width, width, residual=True)
        self.conv7 = InvertedResidual(width, width, residual=True)


class NarrowUNet(nn.Module):
    """The UNet's layers up to up3, named as in LipSyncUNet, with few channels. Skips: x1 =
    [B, G, R, mouth, line] at 320, x2..x6 = [mouth, line] at 160..10. features() is up4's input."""

    def __init__(self):
        super().__init__()
        self.inc = InConvDw(6, 5)
        self.down1 = Down(5, 2)
        self.down2, self.down3, self.down4, self.down5 = (Down(2, 2) for _ in range(4))
        self.audio_model = NarrowAudio(AUDIO_WIDTH)
        self.fuse_conv = nn.Sequential(DoubleConvDW(2 + AUDIO_WIDTH, FUSE_WIDTH, 1),
                                       DoubleConvDW(FUSE_WIDTH, FUSE_WIDTH, 1))
        self.up1 = Up(FUSE_WIDTH + 2, 3)
        self.up2 = Up(3 + 2, 5)
        self.up3 = Up(5 + 2, 7)

    def trained_parameters(self):
        return list(self.audio_model.parameters()) + list(self.fuse_conv.parameters())

    def encode(self, visual):
        skips = [self.inc(visual)]
        for down in (self.down1, self.down2, self.down3, self.down4, self.down5):
            skips.append(down(skips[-1]))
        return skips

    def fuse(self, x6, audio):
        """[N,FUSE_WIDTH,10,10]; channel 0 is trained to be the loudness."""
        return self.fuse_conv(torch.cat([x6, self.audio_model(audio)], 1))

    def features(self, skips, fused, window=None):
        """up4's input, [N,9,160,160] (FEATURES), or its (y0, y1, x0, x1) window, for which up3
        works on just the pixels the window needs (the same values)."""
        x = self.up2(self.up1(fused, skips[4]), skips[3])
        if window is None:
            return torch.cat([nn.functional.interpolate(self.up3(x, skips[2]), scale_factor=2,
                                                        mode="bilinear", align_corners=True),
                              skips[1]], 1)
        y0, y1, x0, x1 = window
        r0, r1 = _needed(y0, y1)
        c0, c1 = _needed(x0, x1)
        h = self.up3.conv(torch.cat([self.up3.up(x)[:, :, r0:r1, c0:c1],
                                     skips[2][:, :, r0:r1, c0:c1]], 1))
        rows, cols = _UPSAMPLE[y0:y1, r0:r1], _UPSAMPLE[x0:x1, c0:c1]
        h = torch.einsum("yr,ncrs,xs->ncyx", rows, h, cols)  # up4.up, for the window only
        return torch.cat([h, skips[1][:, :, y0:y1, x0:x1]], 1)


def _bilinear_matrix(n_in, n_out):
    """[n_out, n_in]: nn.Upsample(scale_factor=2, mode='bilinear', align_corners=True) along one
    axis, as a matrix."""
    pos = torch.arange(n_out, dtype=torch.float64) * (n_in - 1) / (n_out - 1)
    low = pos.floor().long().clamp(max=n_in - 2)
    frac = pos - low
    m = torch.zeros(n_out, n_in, dtype=torch.float64)
    m[torch.arange(n_out), low] = 1 - frac
    m[torch.arange(n_out), low + 1] += frac
    return m.float()


_UPSAMPLE = _bilinear_matrix(80, 160)


def _needed(a, b):
    """up3's rows (or columns) that up4's rows a..b-1 read, widened by the two that up3's own
    3x3 convolution needs, within the picture."""
    used = torch.nonzero(_UPSAMPLE[a:b].abs().sum(0))[:, 0]
    return max(int(used[0]) - 2, 0), min(int(used[-1]) + 3, 80)


def _identity_bn(bn, shift=None):
    """Eval-mode batch norm that adds `shift` (per channel) and changes nothing else."""
    bn.running_mean.zero_()
    bn.running_var.fill_(1.0 - bn.eps)
    bn.weight.fill_(1.0)
    bn.bias.zero_()
    if shift is not None:
        bn.bias[:len(shift)] = torch.as_tensor(shift, dtype=torch.float32)


def _set_ir(ir, first, project, shift=None, out_shift=None, depthwise=None):
    """Sets an InvertedResidual to project(relu(dw(relu(first @ x + shift)))) + out_shift, with a
    depthwise kernel that passes each used hidden channel through (or `depthwise`)."""
    conv0, bn0, _, dw, bn1, _, conv1, bn2 = ir.conv
    for m in (conv0, dw, conv1):
        m.weight.zero_()
    conv0.weight[:first.shape[0], :first.shape[1], 0, 0] = first
    if depthwise is None:
        dw.weight[:first.shape[0], 0, 1, 1] = 1.0
    else:
        dw.weight[:first.shape[0], 0] = depthwise
    conv1.weight[:project.shape[0], :project.shape[1], 0, 0] = project
    _identity_bn(bn0, shift)
    _identity_bn(bn1)
    _identity_bn(bn2, out_shift)


def _zero_branch(ir):
    """A residual InvertedResidual that adds nothing to its input."""
    for m in ir.conv:
        if isinstance(m, nn.Conv2d):
            m.weight.zero_()
        elif isinstance(m, nn.BatchNorm2d):
            _identity_bn(m)


def _pass_through(up, inputs, cin):
    """An Up block whose output channel j is its (non-negative) input channel inputs[j]."""
    ir, residual = up.conv.double_conv
    first = torch.zeros(len(inputs), cin)
    for j, i in enumerate(inputs):
        first[j, i] = 1.0
    _set_ir(ir, first, torch.eye(len(inputs)))
    _zero_branch(residual)


@torch.no_grad()
def build_fixed(net):
    """The set layers of the narrow model: inc, down1..5, up1..3."""
    first = torch.zeros(7, 6)
    first[0, 0] = first[1, 1] = first[2, 2] = 1.0
    first[3, 1], first[3, 2] = -2.0 / MOUTH_RAMP, 1.0 / MOUTH_RAMP  # inputs are B, G, R
    first[4] = first[3]
    first[5, 1] = first[6, 1] = -1.0 / LINE_RAMP
    m, g = MOUTH_OFFSET / MOUTH_RAMP, LINE_LEVEL / LINE_RAMP
    project = torch.zeros(5, 7)
    project[0, 0] = project[1, 1] = project[2, 2] = 1.0
    project[3, 3], project[3, 4] = 1.0, -1.0  # relu(a) - relu(a - 1) clamps a to [0, 1]
    project[4, 5], project[4, 6] = 1.0, -1.0
    _set_ir(net.inc.inconv[0], first, project, shift=[0, 0, 0, m, m - 1, g, g - 1])
    for i, down in enumerate((net.down1, net.down2, net.down3, net.down4, net.down5)):
        ir, residual = down.maxpool_conv[0].double_conv
        first = torch.zeros(2, 5 if i == 0 else 2)
        first[0, 3 if i == 0 else 0] = first[1, 4 if i == 0 else 1] = 1.0
        _set_ir(ir, first, torch.eye(2), depthwise=BLUR)
        _zero_branch(residual)
    _pass_through(net.up1, [0, FUSE_WIDTH, FUSE_WIDTH + 1], FUSE_WIDTH + 2)
    _pass_through(net.up2, range(5), 5)
    _pass_through(net.up3, range(7), 7)


def mouth_units(scales, count=120, seed=0):
    """(weights [count,9], biases [count]) of up4's first-block ReLU units over FEATURES: for
    each mouth and line channel, steps at four levels that the loudness raises, lowers or leaves;
    then random mixtures of two channels. `scales` are the channels' largest values. Every unit
    is off where the mouth channels are zero, whatever the loudness (up to 1.25), so nothing is
    drawn away from the mouth."""
    weights, biases = [], []
    for f in range(1, len(FEATURES)):
        for level in (0.1, 0.3, 0.5, 0.7):
            for loud in (0.0, 0.7 * level, -level):
                w = np.zeros(len(FEATURES))
                w[f], w[0] = 1.0 / scales[f], loud
                weights.append(w)
                biases.append(-level)
    rng = np.random.default_rng(seed)
    while len(weights) < count:
        w = np.zeros(len(FEATURES))
        pair = rng.choice(np.arange(1, len(FEATURES)), 2, replace=False)
        w[pair] = rng.random(2) / np.asarray(scales)[pair]
        level = 0.1 + 0.6 * rng.random()
        w[0] = level * rng.uniform(-1.0, 0.7)
        weights.append(w)
        biases.append(-level)
    return (torch.tensor(np.array(weights), dtype=torch.float32),
            torch.tensor(biases, dtype=torch.float32))


def unit_outputs(features, weights, biases):
    """[N,count,H,W]: the units on up4's input [N,9,H,W], as up4's first block computes them."""
    return torch.relu(torch.einsum("uf,nfhw->nuhw", weights, features) + biases.view(1, -1, 1, 1))


def clamp_masks(masks):
    """What up4's second block makes of its first block's masks."""
    d = MASK_DEAD_ZONE
    return torch.clamp((masks - d) / (1.0 - 2.0 * d), 0.0, 1.0)


@torch.no_grad()
def build_up4(full, weights, biases, readout):
    """up4: the units, their readout [2,count] to the lips and opening masks, then the clamp
    clamp((m - d) / (1 - 2d), 0, 1) as the second block's residual branch (it adds that minus m):
    values below d (faint responses) are dropped and the edges a little sharper."""
    ir, residual = full.up4.conv.double_conv
    hidden, cin = ir.conv[0].weight.shape[:2]
    assert weights.shape[0] <= hidden, "up4 has too few hidden channels for the units"
    first = torch.zeros(weights.shape[0], cin)
    first[:, UP4_INPUTS] = weights
    _set_ir(ir, first, readout, shift=biases)
    d = MASK_DEAD_ZONE
    gain = 1.0 / (1.0 - 2.0 * d)
    hidden, cin = residual.conv[0].weight.shape[:2]
    first, project, shift = torch.zeros(8, cin), torch.zeros(2, 8), torch.zeros(8)
    unit = 0
    for m in range(2):
        # relu(m), relu(-m), relu(g(m - d)), relu(g(m - d) - 1): -m + clamp(g(m - d), 0, 1)
        for w, b, out in ((1.0, 0.0, -1.0), (-1.0, 0.0, 1.0), (gain, -gain * d, 1.0),
                          (gain, -gain * d - 1.0, -1.0)):
            first[unit, m], shift[unit], project[m, unit] = w, b, out
            unit += 1
    _set_ir(residual, first, project, shift=shift)


def logit_knots(count=LOGIT_KNOTS):
    """(thresholds, slope changes, offset) of a piecewise-linear z(p) = offset +
    sum_j change_j * relu(p - threshold_j) whose sigmoid, truncated to 8 bits as the engine's output
    is, gives back 8-bit input p within one level. Knots are spread evenly in logit space."""
    def logit(p):
        return np.log(p / (1.0 - p))

    half = 0.5 / 255  # aim at the middle of each output level
    z = np.linspace(logit(1.5 / 255), logit(253.5 / 255), count)
    knots = np.unique(np.concatenate([[0.0], 1.0 / (1.0 + np.exp(-z)) - half, [1.0]]))
    values = logit(np.clip(knots + half, half, 1.0 - half))
    slopes = np.diff(values) / np.diff(knots)
    changes = np.diff(np.concatenate([[0.0], slopes]))
    return knots[:-1], changes, values[0]


@torch.no_grad()
def build_head(full):
    """up5 and outc: per colour, a piecewise-linear logit of x1's B, G, R (up5 input channels
    32..34), so the final sigmoid gives the face back, of the colour shifted first: skin to lips
    where up4's lips mask (channel 0) exceeds the face's own mouth (x1 channel 3, input 35), lips
    to the opening inside the opening mask (channel 1). Shifting the input colour blends the drawn
    mouth into the face along the masks' soft edges."""
    ir, residual = full.up5.conv.double_conv
    hidden, cin = ir.conv[0].weight.shape[:2]
    thresholds, changes, offset = logit_knots()
    skin, lips, opening = (torch.tensor(c, dtype=torch.float32) / 255.0
                           for c in (SKIN, LIPS, OPENING))
    first, project, shift = torch.zeros(hidden, cin), torch.zeros(16, hidden), torch.zeros(hidden)
    unit = 0
    for c in range(3):
        for t, a in zip(thresholds, changes):
            first[unit, 32 + c] = 1.0
            first[unit, 0], first[unit, 35] = lips[c] - skin[c], skin[c] - lips[c]
            first[unit, 1] = opening[c] - lips[c]
            shift[unit] = -t
            project[c, unit] = a
            unit += 1
    assert unit <= hidden, "up5 has too few hidden channels for the head"
    _set_ir(ir, first, project, shift=shift, out_shift=[offset] * 3)
    _zero_branch(residual)
    full.outc.conv.weight.zero_()
    full.outc.conv.bias.zero_()
    for c in range(3):
        full.outc.conv.weight[c, c] = 1.0


# The first 1x1 convolution after a concatenation sees two groups of channels: the narrow width
# of the first group, and where the second starts in the full model (the full first group).
CONCAT_INPUTS = {
    "fuse_conv.0.double_conv.0.conv.0.weight": (2, 512),
    "up1.conv.double_conv.0.conv.0.weight": (FUSE_WIDTH, 256),
    "up2.conv.double_conv.0.conv.0.weight": (3, 128),
    "up3.conv.double_conv.0.conv.0.weight": (5, 64),
}


@torch.no_grad()
def full_model(narrow, weights, biases, readout):
    """The 'ave' 320 LipSyncUNet: `narrow`'s channels become the first channels of each of its
    layers, up4, up5 and outc are set, everything else is zero."""
    full = build_model("ave", 320)
    for name, tensor in full.state_dict().items():
        if name.endswith("running_var"):
            tensor.fill_(1.0)
        elif not name.endswith("num_batches_tracked"):
            tensor.zero_()
    target = full.state_dict()
    for name, value in narrow.state_dict().items():
        if name.endswith("num_batches_tracked"):
            continue
        dest = target[name]
        if name in CONCAT_INPUTS:
            first, offset = CONCAT_INPUTS[name]
            rows = value.shape[0]
            dest[:rows, :first] = value[:, :first]
            dest[:rows, offset:offset + value.shape[1] - first] = value[:, first:]
        else:
            dest[tuple(slice(0, n) for n in value.shape)] = value
    build_up4(full, weights, biases, readout)
    build_head(full)
    return full.eval()
