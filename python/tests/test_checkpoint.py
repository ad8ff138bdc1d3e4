import pytest
import torch

from lipsync.checkpoint import CheckpointError, load_model
from lipsync.demo import random_state_dict


def save(tmp_path, state, name="c.pth"):
    path = tmp_path / name
    torch.save(state, path)
    return str(path)


def test_strict_load_of_the_original_layout(tmp_path):
    state = random_state_dict("ave", 320, 3)
    model = load_model(save(tmp_path, state), "ave", 320)
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[key]), key
    assert not model.training


def test_wrapped_and_data_parallel_checkpoints_load(tmp_path):
    state = random_state_dict("ave", 160, 1)
    load_model(save(tmp_path, {"state_dict": state}, "w.pth"), "ave", 160)
    load_model(save(tmp_path, {"module." + k: v for k, v in state.items()}, "m.pth"), "ave", 160)


def test_missing_key_is_named(tmp_path):
    state = random_state_dict("ave", 320, 0)
    del state["up3.conv.double_conv.0.conv.4.running_var"]
    with pytest.raises(CheckpointError, match=r"1 missing key\(s\): "
                       r"up3\.conv\.double_conv\.0\.conv\.4\.running_var"):
        load_model(save(tmp_path, state), "ave", 320)


def test_unexpected_key_is_named(tmp_path):
    state = random_state_dict("ave", 320, 0)
    state["extra.head.weight"] = torch.zeros(3)
    with pytest.raises(CheckpointError, match=r"1 unexpected key\(s\): extra\.head\.weight"):
        load_model(save(tmp_path, state), "ave", 320)


def test_wrong_shape_is_named_with_both_shapes(tmp_path):
    state = random_state_dict("ave", 320, 0)
    state["outc.conv.weight"] = torch.zeros(3, 8, 1, 1)
    with pytest.raises(CheckpointError, match=r"shape mismatch for outc\.conv\.weight: model "
                       r"expects \[3, 16, 1, 1\], checkpoint has \[3, 8, 1, 1\]"):
        load_model(save(tmp_path, state), "ave", 320)


def test_wenet_checkpoint_does_not_load_as_ave(tmp_path):
    path = save(tmp_path, random_state_dict("wenet", 320, 0))
    with pytest.raises(CheckpointError, match="shape mismatch for audio_model.conv1"):
        load_model(path, "ave", 320)


def test_truncated_missing_and_foreign_files(tmp_path):
    path = save(tmp_path, random_state_dict("ave", 160, 0))
    data = open(path, "rb").read()
    truncated = tmp_path / "t.pth"
    truncated.write_bytes(data[: len(data) // 3])
    with pytest.raises(CheckpointError, match="cannot be read"):
        load_model(str(truncated), "ave", 160)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_model(str(tmp_path / "none.pth"), "ave", 160)
    with pytest.raises(CheckpointError, match="does not hold a state dict"):
        load_model(save(tmp_path, [1, 2, 3], "list.pth"), "ave", 160)


def test_foreign_files_and_pickled_models_fail_clearly(tmp_path):
    text = tmp_path / "notes.pth"
    text.write_text("this is not a checkpoint\n")
    with pytest.raises(CheckpointError, match="cannot be read"):
        load_model(str(text), "ave", 160)
    with pytest.raises(CheckpointError, match="is not a file"):
        load_model(str(tmp_path), "ave", 160)
    whole = tmp_path / "whole.pth"
    torch.save(torch.nn.Sequential(torch.nn.Linear(2, 2)), whole)  # a model, not a state dict
    with pytest.raises(CheckpointError, match="does not hold a state dict"):
        load_model(str(whole), "ave", 160)


def run_check(*args):
    import subprocess
    import sys
    return subprocess.run([sys.executable, "-m", "lipsync.checkpoint", *args],
                          capture_output=True, text=True)


def test_check_command_exit_codes(tmp_path):
    good = save(tmp_path, random_state_dict("ave", 320, 0), "good.pth")
    proc = run_check(good)
    assert proc.returncode == 0 and "556 entries, 12,186,935 parameters" in proc.stdout
    truncated = tmp_path / "t.pth"
    truncated.write_bytes(open(good, "rb").read()[:5000])
    proc = run_check(str(truncated))
    assert proc.returncode == 2
    assert "cannot be read (truncated or not a PyTorch file)" in proc.stderr
    assert "Traceback" not in proc.stderr
    proc = run_check(good, "--size", "160")
    assert proc.returncode == 2 and "unexpected key(s): " in proc.stderr
    assert "down5." in proc.stderr and "Traceback" not in proc.stderr
