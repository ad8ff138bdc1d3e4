import pytest
import torch

from lipsync.model import AUDIO_SHAPES, build_model, example_inputs


def test_ave_320_matches_the_original_layout():
    model = build_model("ave", 320)
    state = model.state_dict()
    assert len(state) == 556
    assert sum(p.numel() for p in model.parameters()) == 12_186_935
    # Spot checks of key names and shapes from the checkpoint layout.
    assert state["inc.inconv.0.conv.0.weight"].shape == (12, 6, 1, 1)
    assert state["down1.maxpool_conv.0.double_conv.0.conv.3.weight"].shape == (64, 1, 3, 3)
    assert state["up5.conv.double_conv.1.conv.6.weight"].shape == (16, 32, 1, 1)
    assert state["fuse_conv.0.double_conv.0.conv.0.weight"].shape == (2048, 1024, 1, 1)
    assert state["audio_model.conv3.weight"].shape == (256, 128, 3, 3)
    assert state["audio_model.conv5.weight"].shape == (512, 256, 3, 3)
    assert "audio_model.bn5.num_batches_tracked" in state
    assert state["outc.conv.weight"].shape == (3, 16, 1, 1)
    assert "outc.conv.bias" in state


@pytest.mark.parametrize("mode", sorted(AUDIO_SHAPES))
@pytest.mark.parametrize("size", [320, 160])
def test_every_variant_runs_with_the_right_shapes(mode, size):
    model = build_model(mode, size).eval()
    visual, audio = example_inputs(mode, size, batch=2)
    assert audio.shape[1:] == AUDIO_SHAPES[mode]
    with torch.no_grad():
        out = model(visual, audio)
    assert out.shape == (2, 3, size, size)
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0


def test_hubert_and_ave_share_keys_and_shapes():
    ave, hubert = build_model("ave").state_dict(), build_model("hubert").state_dict()
    assert {k: v.shape for k, v in ave.items()} == {k: v.shape for k, v in hubert.items()}


def test_160_variant_has_no_down5_or_up5():
    keys = build_model("ave", 160).state_dict()
    assert not any(k.startswith(("down5.", "up5.")) for k in keys)
    assert keys["outc.conv.weight"].shape == (3, 32, 1, 1)


def test_unknown_mode_and_size_are_rejected():
    with pytest.raises(ValueError, match="unknown mode 'mfcc'"):
        build_model("mfcc")
    with pytest.raises(ValueError, match="unknown size 256"):
        build_model("ave", 256)
