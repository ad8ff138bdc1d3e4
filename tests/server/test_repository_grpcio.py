"""`lipsync serve --avatars config.yaml` on a Go server layout written here, driven by Debian's
Python grpcio through the KServe v2 model repository extension (stubs generated from our protos at
test time): preload, index, load with eviction under the host memory budget, unload, errors, the
per-avatar metrics, and start-up errors for a broken config."""
import json
import os
import subprocess
import urllib.request

import cv2
import grpc
import numpy as np
import pytest

from grpc_stubs import free_port, generate_stubs

BIN = os.environ["LIPSYNC_BIN"]
DATA = os.environ["LIPSYNC_TEST_DATA_DIR"]
PROTO_DIR = os.environ["LIPSYNC_PROTO_DIR"]
MODEL = os.path.join(DATA, "tiny.onnx")
ENCODER = os.path.join(DATA, "tiny_audio_encoder.onnx")


@pytest.fixture(scope="module")
def pb(tmp_path_factory):
    generate_stubs(PROTO_DIR, tmp_path_factory.mktemp("stubs"),
                   "kserve/model_repository.proto", "kserve/grpc_predict_v2.proto")
    from kserve import grpc_predict_v2_pb2_grpc, model_repository_pb2
    return model_repository_pb2, grpc_predict_v2_pb2_grpc


def write_go_layout(root, ids, frames=4, size=(48, 64)):
    """The Go server's layout: models_root/<id>/bg/frame_NNNN.png (`size` is height, width),
    rects.json, the UNet."""
    models = []
    rng = np.random.default_rng(1)
    for model_id in ids:
        bg = root / "models" / model_id / "bg"
        bg.mkdir(parents=True)
        for i in range(frames):
            cv2.imwrite(str(bg / f"frame_{i:04d}.png"),
                        rng.integers(0, 256, (*size, 3), dtype=np.uint8))
        (root / "models" / model_id / "rects.json").write_text(
            json.dumps([[8, 4, 40, 36]] * frames))
        models.append(f"  {model_id}:\n    model_path: {MODEL}\n"
                      f"    background_dir: {model_id}/bg\n"
                      f"    crop_rects_path: {model_id}/rects.json\n    preferred_gpu: 0\n")
    config = root / "config.yaml"
    config.write_text("models_root: models\nmax_models: 4\ngpus: [0]\nmodels:\n" + "".join(models))
    return config


def own_bytes(frames, size):
    """What an avatar counts against the host budget besides the audio encoder, which the avatars
    of one server share (the encoder counts once, os.path.getsize(ENCODER))."""
    return os.path.getsize(MODEL) + frames * size[0] * size[1] * 3


def serve_args(config, tmp_path, *extra):
    return [BIN, "serve", "--model", MODEL, "--listen", f"127.0.0.1:{free_port()}",
            "--threads", "1", "--max-batch", "1", "--preferred-batch", "1",
            "--avatars", str(config), "--avatar-encoder", ENCODER,
            "--avatar-cache", str(tmp_path / "cache"), *extra]


def test_repository_over_grpc(pb, tmp_path):
    size = (480, 640)  # frames large enough for the budget's MiB to tell one avatar from two
    config = write_go_layout(tmp_path, ["anna", "bob"], size=size)
    # One avatar fits the budget, two do not (their shared encoder once).
    own, encoder = own_bytes(4, size), os.path.getsize(ENCODER)
    budget_mb = (encoder + own * 3 // 2) // (1 << 20) + 1
    assert encoder + own <= budget_mb << 20 < encoder + 2 * own
    metrics_port = free_port()
    args = serve_args(config, tmp_path, "--preload", "anna", "--avatar-memory-mb", str(budget_mb),
                      "--metrics", f"127.0.0.1:{metrics_port}")
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        channel = grpc.insecure_channel(args[args.index("--listen") + 1])
        grpc.channel_ready_future(channel).result(timeout=60)
        stub = pb[1].GRPCInferenceServiceStub(channel)
        m = pb[0]

        def states():
            index = stub.RepositoryIndex(m.RepositoryIndexRequest())
            return {x.name: (x.state, x.reason) for x in index.models}

        assert states() == {"anna": ("READY", ""), "bob": ("", "")}
        stub.RepositoryModelLoad(m.RepositoryModelLoadRequest(model_name="bob"))
        assert states() == {"anna": ("UNAVAILABLE", "evicted"), "bob": ("READY", "")}
        ready = stub.RepositoryIndex(m.RepositoryIndexRequest(ready=True))
        assert [x.name for x in ready.models] == ["bob"]

        with pytest.raises(grpc.RpcError) as unknown:
            stub.RepositoryModelLoad(m.RepositoryModelLoadRequest(model_name="carol"))
        assert unknown.value.code() == grpc.StatusCode.NOT_FOUND
        assert "unknown model 'carol'" in unknown.value.details()

        stub.RepositoryModelUnload(m.RepositoryModelUnloadRequest(model_name="bob"))
        assert states()["bob"] == ("UNAVAILABLE", "unloaded")

        text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics").read().decode()
        assert 'lipsync_avatar_evictions_total{avatar="anna"} 1\n' in text
        assert 'lipsync_avatar_loads_total{avatar="bob"} 1\n' in text
        assert f'lipsync_avatar_memory_budget_bytes{{kind="host"}} {budget_mb << 20}\n' in text
        assert "lipsync_avatars_loaded 0\n" in text
    finally:
        proc.send_signal(2)
        out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    assert "KServe model repository extension on" in out


@pytest.mark.parametrize("config_text, preload, message", [
    ("models: [\n", None, "is not valid YAML at line"),
    ("models_root: [x]\nmodels: {}\n", None, "'models_root' at line 1, column 14 must be a string"),
    (None, "zed", "preloading 'zed'"),
    (None, "anna,bob", None),  # both load (no budget): starts, then stopped by the test
])
def test_startup_errors(pb, tmp_path, config_text, preload, message):
    config = write_go_layout(tmp_path, ["anna", "bob"])
    if config_text is not None:
        config.write_text(config_text)
    args = serve_args(config, tmp_path, *(["--preload", preload] if preload else []))
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if message is None:
        channel = grpc.insecure_channel(args[args.index("--listen") + 1])
        grpc.channel_ready_future(channel).result(timeout=60)
        stub = pb[1].GRPCInferenceServiceStub(channel)
        index = stub.RepositoryIndex(pb[0].RepositoryIndexRequest(ready=True))
        assert [x.name for x in index.models] == ["anna", "bob"]
        proc.send_signal(2)
    out, _ = proc.communicate(timeout=60)
    if message is None:
        assert proc.returncode == 0, out
    else:
        assert proc.returncode != 0, out
        assert message in out, out
