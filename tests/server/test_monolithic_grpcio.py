"""The Go monolithic server's clients, played by Debian's Python grpcio with stubs generated from
proto/monolithic at test time, against `lipsync serve --monolithic` on its own port: every RPC,
the JPEG frames decoded with OpenCV, and an error answered as success=false."""
import json
import os
import shutil

import cv2
import numpy as np
import pytest

from grpc_stubs import generate_stubs, start_on_free_ports

BIN = os.environ["LIPSYNC_BIN"]
DATA = os.environ["LIPSYNC_TEST_DATA_DIR"]
PROTO_DIR = os.environ["LIPSYNC_PROTO_DIR"]
W, H, FRAMES = 160, 128, 3
RECT = [40, 24, 104, 88]


@pytest.fixture(scope="module")
def pb(tmp_path_factory):
    generate_stubs(PROTO_DIR, tmp_path_factory.mktemp("stubs"), "monolithic/monolithic.proto")
    from monolithic import monolithic_pb2, monolithic_pb2_grpc
    return monolithic_pb2, monolithic_pb2_grpc


def background(i):
    y, x = np.mgrid[0:H, 0:W]
    img = np.stack([(x * 2 + i * 40) % 256, (y * 2) % 256, (x + y) % 256], axis=-1)
    return img.astype(np.uint8)


@pytest.fixture(scope="module")
def avatars(tmp_path_factory):
    root = tmp_path_factory.mktemp("avatars")
    dir = root / "sanders"
    (dir / "frames").mkdir(parents=True)
    for i in range(FRAMES):
        assert cv2.imwrite(str(dir / "frames" / f"{i:06d}.png"), background(i))
    (dir / "crop_rects.json").write_text(json.dumps([RECT] * FRAMES))
    shutil.copy(os.path.join(DATA, "tiny.onnx"), dir / "unet.onnx")
    shutil.copy(os.path.join(DATA, "tiny_audio_encoder.onnx"), dir / "audio_encoder.onnx")
    (dir / "avatar.json").write_text(json.dumps({
        "format": "lipsync-avatar", "version": 1, "name": "sanders", "fps": 25,
        "model_size": 320, "model": "unet.onnx", "audio_encoder": "audio_encoder.onnx",
        "frames": "frames", "crop_rects": "crop_rects.json"}))
    return root


@pytest.fixture(scope="module")
def stub(pb, avatars):
    proc, _, channel = start_on_free_ports(
        lambda port, own: [BIN, "serve", "--model", os.path.join(DATA, "tiny.onnx"),
                           "--listen", f"127.0.0.1:{port}", "--threads", "1",
                           "--max-batch", "1", "--preferred-batch", "1", "--monolithic",
                           "--avatars", str(avatars), "--monolithic-listen", f"127.0.0.1:{own}"],
        2, ready=1, options=[("grpc.max_send_message_length", 100 << 20),
                             ("grpc.max_receive_message_length", 100 << 20)])
    yield pb[1].MonolithicServiceStub(channel)
    proc.send_signal(2)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out


def request(pb, batch, start=0):
    rng = np.random.default_rng(batch)
    visual = rng.random((batch, 6, 320, 320), dtype=np.float32)
    audio = (0.2 * np.sin(np.arange((batch + 15) * 640) * 0.07)).astype("<f4")
    return pb[0].CompositeBatchRequest(model_id="sanders", visual_frames=visual.astype("<f4").tobytes(),
                                       raw_audio=audio.tobytes(), batch_size=batch,
                                       start_frame_idx=start, sample_rate=16000)


def test_every_rpc(pb, stub):
    health = stub.Health(pb[0].HealthRequest())
    assert health.healthy and health.loaded_models == 0
    models = stub.ListModels(pb[0].ListModelsRequest()).models
    assert [(m.model_id, m.loaded) for m in models] == [("sanders", False)]
    loaded = stub.LoadModel(pb[0].LoadModelRequest(model_id="sanders", preferred_gpu=-1))
    assert loaded.success, loaded.error

    response = stub.InferBatchComposite(request(pb, 2, start=FRAMES - 1))
    assert response.success, response.error
    assert not response.model_loaded
    assert len(response.composited_frames) == 2
    x1, y1, x2, y2 = RECT
    for i, jpeg in enumerate(response.composited_frames):
        frame = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
        assert frame.shape == (H, W, 3)
        expected = background((FRAMES - 1 + i) % FRAMES).astype(int)
        outside = np.ones((H, W), bool)
        outside[max(0, y1 - 16):y2 + 16, max(0, x1 - 16):x2 + 16] = False
        assert np.abs(frame.astype(int) - expected)[outside].mean() < 6
        assert np.abs(frame.astype(int) - expected)[y1:y2, x1:x2].mean() > 10

    stats = stub.GetModelStats(pb[0].GetModelStatsRequest()).models
    assert [(s.model_id, s.request_count) for s in stats] == [("sanders", 1)]
    assert stub.UnloadModel(pb[0].UnloadModelRequest(model_id="sanders")).success
    assert stub.Health(pb[0].HealthRequest()).loaded_models == 0


def test_errors_are_success_false(pb, stub):
    bad = request(pb, 1)
    bad.sample_rate = 4000
    response = stub.InferBatchComposite(bad)  # gRPC status OK: no exception
    assert not response.success
    assert "sample_rate 4000" in response.error
    unknown = request(pb, 1)
    unknown.model_id = "nobody"
    response = stub.InferBatchComposite(unknown)
    assert not response.success and "unknown model 'nobody'" in response.error
