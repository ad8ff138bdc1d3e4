import os
import sys

PYTHON_DIR = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, PYTHON_DIR)
# Subprocesses (python3 -m lipsync.*) find the package too.
os.environ["PYTHONPATH"] = os.pathsep.join(
    p for p in (PYTHON_DIR, os.environ.get("PYTHONPATH")) if p)

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(2)


@pytest.fixture(scope="session")
def engine_bin():
    """The C++ `lipsync` binary; tests that compare against it need LIPSYNC_BIN (make test sets it)."""
    path = os.environ.get("LIPSYNC_BIN")
    if not path:
        pytest.skip("LIPSYNC_BIN is not set, so the C++ engine cannot be called")
    assert os.access(path, os.X_OK), f"LIPSYNC_BIN={path} is not an executable"
    return path


@pytest.fixture(scope="session")
def demo_checkpoint(tmp_path_factory):
    from lipsync.demo import random_state_dict
    path = tmp_path_factory.mktemp("ckpt") / "demo.pth"
    torch.save(random_state_dict("ave", 320, 0), path)
    return str(path)


@pytest.fixture(scope="session")
def small_checkpoint(tmp_path_factory):
    """The 160 demo weights (seed 0): cheaper where the size does not matter."""
    from lipsync.demo import random_state_dict
    path = tmp_path_factory.mktemp("small") / "small.pth"
    torch.save(random_state_dict("ave", 160, 0), path)
    return str(path)


@pytest.fixture(scope="session")
def other_export(tmp_path_factory):
    """An ONNX export of other weights (160, seed 5): verification against seed 0 must fail."""
    from lipsync import export
    from lipsync.demo import random_state_dict
    folder = tmp_path_factory.mktemp("other")
    torch.save(random_state_dict("ave", 160, 5), folder / "other.pth")
    assert export.main(["--checkpoint", str(folder / "other.pth"), "--size", "160",
                        "--out", str(folder / "other.onnx"), "--no-verify"]) == 0
    return str(folder / "other.onnx")
