"""The trained demo model's network (lipsync.demo_net): the full UNet computes what the narrow
model and the set layers compute, and the set layers do what they are for."""
import numpy as np
import torch

from lipsync import demo_net, train_demo


def narrow_net(seed=0, move_all=False):
    """The narrow model with its set layers and randomly moved trained ones (or all moved)."""
    torch.manual_seed(seed)
    net = demo_net.NarrowUNet()
    demo_net.build_fixed(net)
    with torch.no_grad():
        for p in net.parameters() if move_all else net.trained_parameters():
            p.add_(0.3 * torch.randn_like(p))
    return net.eval()


def avatar_faces(frames):
    rects = train_demo.avatar_rects()
    faces = [train_demo.face_crop(train_demo.draw_frame(k, train_demo.FRAMES, train_demo.WIDTH,
                                                        train_demo.HEIGHT, mouth=0.0), rects[k])
             for k in frames]
    return faces, torch.from_numpy(np.stack([train_demo.visual_input(f) for f in faces]))


def test_logit_knots_give_every_level_back():
    thresholds, changes, offset = demo_net.logit_knots()
    p = np.arange(256) / 255.0
    z = offset + np.maximum(p[:, None] - thresholds[None, :], 0) @ changes
    out = np.floor(255.0 / (1.0 + np.exp(-z)))
    assert np.abs(out - np.arange(256)).max() <= 1


def test_windowed_features_are_those_of_the_whole_picture():
    net = narrow_net(move_all=True)  # up3 mixing neighbours, unlike its set pass-through
    _, visual = avatar_faces([3, 20])
    audio = torch.rand(2, 32, 16, 16)
    with torch.no_grad():
        skips = net.encode(visual)
        fused = net.fuse(skips[5], audio)
        whole = net.features(skips, fused)
        for window in (train_demo.MOUTH_WINDOW, (0, 40, 100, 160)):
            y0, y1, x0, x1 = window
            part = net.features(skips, fused, window)
            assert torch.allclose(part, whole[:, :, y0:y1, x0:x1], atol=1e-5)


def test_full_model_computes_the_narrow_model_and_the_units():
    net = narrow_net(1)
    _, visual = avatar_faces([7])
    audio = torch.rand(1, 32, 16, 16)
    with torch.no_grad():
        skips = net.encode(visual)
        features = net.features(skips, net.fuse(skips[5], audio))
        weights, biases = demo_net.mouth_units(features.flatten(2).amax((0, 2)).tolist())
        readout = 0.1 * torch.rand(2, weights.shape[0])
        masks = demo_net.clamp_masks(torch.einsum(
            "cu,nuhw->nchw", readout, demo_net.unit_outputs(features, weights, biases)))
        full = demo_net.full_model(net, weights, biases, readout)
        seen = {}
        full.up4.conv.register_forward_hook(lambda m, i, o: seen.update(input=i[0]))
        full.up4.register_forward_hook(lambda m, i, o: seen.update(output=o))
        full(visual, audio)
    assert masks.amax() == 1 and ((masks > 0) & (masks < 1)).any()  # clamped and in between
    assert torch.allclose(seen["input"][:, demo_net.UP4_INPUTS], features, atol=1e-5)
    assert torch.allclose(seen["output"][:, :2], masks, atol=1e-4)
    assert seen["output"][:, 2:].abs().max() == 0


def test_without_masks_the_face_comes_back_outside_the_mouth():
    net = narrow_net(2)
    faces, visual = avatar_faces([0, 31])
    weights, biases = demo_net.mouth_units([1.0] * len(demo_net.FEATURES))
    full = demo_net.full_model(net, weights, biases, torch.zeros(2, weights.shape[0]))
    with torch.no_grad():
        out = full(visual, torch.rand(2, 32, 16, 16)).numpy().transpose(0, 2, 3, 1)
    diff = np.abs((out * 255).astype(np.uint8).astype(int) - np.stack(faces).astype(int))
    y0, y1, x0, x1 = train_demo.mouth_box()
    diff[:, y0:y1, x0:x1] = 0
    assert diff.max() <= 1
