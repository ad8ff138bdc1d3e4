"""The Python lipsync server's clients, played by Debian's Python grpcio with stubs generated from
proto/lipsyncsrv at test time, against `lipsync serve --lipsyncsrv` on its own port: LoadModel
imports the synthetic model package (its checkpoint exported to ONNX), every RPC answers, the
served face matches PyTorch on the package's checkpoint, and errors come back as success=false.
Also `lipsync avatar import --from lipsyncsrv`."""
import json
import math
import os
import shutil
import subprocess
import time
import wave

import cv2
import numpy as np
import pytest
import torch

from grpc_stubs import generate_stubs, start_on_free_ports

BIN = os.environ["LIPSYNC_BIN"]
DATA = os.environ["LIPSYNC_TEST_DATA_DIR"]
PROTO_DIR = os.environ["LIPSYNC_PROTO_DIR"]
PACKAGE = os.environ["LIPSYNCSRV_PACKAGE"]
FRAMES = 6
CROP, INNER, OFFSET = 328, 320, 4


@pytest.fixture(scope="module")
def pb(tmp_path_factory):
    generate_stubs(PROTO_DIR, tmp_path_factory.mktemp("stubs"), "lipsyncsrv/lipsyncsrv.proto")
    from lipsyncsrv import lipsyncsrv_pb2, lipsyncsrv_pb2_grpc
    return lipsyncsrv_pb2, lipsyncsrv_pb2_grpc


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tmp_path_factory.mktemp("avatars")


@pytest.fixture(scope="module")
def stub(pb, root):
    proc, _, channel = start_on_free_ports(
        lambda port, own: [BIN, "serve", "--model", os.path.join(DATA, "tiny.onnx"),
                           "--listen", f"127.0.0.1:{port}", "--threads", "1",
                           "--max-batch", "1", "--preferred-batch", "1", "--lipsyncsrv",
                           "--avatars", str(root), "--lipsyncsrv-listen", f"127.0.0.1:{own}",
                           "--lipsyncsrv-encoder",
                           os.path.join(DATA, "tiny_audio_encoder.onnx")],
        2, ready=1, options=[("grpc.max_receive_message_length", 16 << 20)])
    yield pb[1].LipSyncServiceStub(channel)
    proc.send_signal(2)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out


@pytest.fixture(scope="module")
def imported(pb, stub):
    """The package imported through LoadModel as model 'pkg' (exported and verified there)."""
    response = stub.LoadModel(pb[0].LoadModelRequest(model_name="pkg", package_path=PACKAGE),
                              timeout=600)
    assert response.success, response.error
    assert response.model_name == "pkg"
    assert "imported package" in response.message and "loaded (6 frames)" in response.message
    assert response.initialization_time_ms > 0
    return "pkg"


def decode(jpeg):
    return cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_UNCHANGED)


def bounds_of(frame):
    return np.load(os.path.join(PACKAGE, "face_bounds", f"{frame}.npy"))


def png_copy(root, name):
    """A copy of avatar `name` whose frames are PNG files of its video as OpenCV decodes it, so
    that the server and the reference below see the same pixels (two video decoders may differ by
    a level, which the random demo weights amplify)."""
    copy = root / (name + "_png")
    shutil.copytree(root / name, copy)
    capture = cv2.VideoCapture(str(copy / "frames.mp4"))
    (copy / "frames").mkdir()
    frames = []
    for i in range(FRAMES):
        ok, image = capture.read()
        assert ok
        cv2.imwrite(str(copy / "frames" / f"{i:06d}.png"), image)
        frames.append(image)
    os.remove(copy / "frames.mp4")
    manifest = json.loads((copy / "avatar.json").read_text())
    manifest["frames"] = "frames"
    (copy / "avatar.json").write_text(json.dumps(manifest))
    return copy.name, frames


def torch_face(image, frame, features):
    """The face PyTorch computes from the package's checkpoint on `image`, cropped and masked as
    the spec says, with the window of `features` rows around `frame`, as a q95 JPEG decodes."""
    from lipsync.checkpoint import load_model
    model = load_model(os.path.join(PACKAGE, "models", "7.pth"), "ave", 320)
    x1, y1, x2, y2 = [int(v) for v in bounds_of(frame)[:4]]
    crop = cv2.resize(image[y1:y2, x1:x2], (CROP, CROP), interpolation=cv2.INTER_CUBIC)
    inner = crop[OFFSET:OFFSET + INNER, OFFSET:OFFSET + INNER].copy()
    masked = cv2.rectangle(inner.copy(), (5, 5, 310, 305), (0, 0, 0), -1)
    visual = np.concatenate([inner, masked], axis=2).transpose(2, 0, 1)[None] / 255.0
    rows = np.zeros((16, 512), np.float32)
    for r in range(16):
        j = frame - 8 + r
        if 0 <= j < len(features):
            rows[r] = features[j]
    audio = rows.reshape(1, 32, 16, 16)
    with torch.no_grad():
        out = model(torch.from_numpy(visual.astype(np.float32)), torch.from_numpy(audio))
    face = (out[0].numpy().transpose(1, 2, 0) * 255.0).astype(np.uint8)
    ok, jpeg = cv2.imencode(".jpg", face, [cv2.IMWRITE_JPEG_QUALITY, 95])
    return decode(jpeg.tobytes())


def test_generate_inference_matches_pytorch(pb, stub, root, imported):
    response = stub.GenerateInference(pb[0].InferenceRequest(model_name=imported, frame_id=2))
    assert response.success, response.error
    assert not response.HasField("error")
    assert not response.auto_loaded  # LoadModel loaded it
    assert (response.model_name, response.frame_id) == (imported, 2)
    assert response.prediction_shape == "320x320x3"
    face = decode(response.prediction_data)
    assert face.shape == (320, 320, 3) and face.dtype == np.uint8
    x1, y1, x2, y2 = [int(v) for v in bounds_of(2)[:4]]
    assert list(response.bounds) == [x1, y1, x2, y2, x2 - x1, y2 - y1]

    # The exported UNet and the whole path against PyTorch on the package's checkpoint.
    name, frames = png_copy(root, imported)
    features = np.load(os.path.join(PACKAGE, "aud_ave.npy"))
    for frame in (0, 2, 5):
        served = stub.GenerateInference(pb[0].InferenceRequest(model_name=name, frame_id=frame))
        assert served.success, served.error
        diff = np.abs(decode(served.prediction_data).astype(int)
                      - torch_face(frames[frame], frame, features).astype(int))
        # ONNX Runtime and PyTorch agree to about 1e-4 (the export's own check): a byte flips at
        # a truncation step here and there, and JPEG spreads it over its block (measured: mean
        # 0.07, max 7). For scale: these random weights turn +-1 noise on the frame into a mean
        # difference of about 1 (max 186), so a wrong input or weight shows far above this bound.
        assert diff.mean() < 0.25 and diff.max() <= 16, (frame, diff.mean(), diff.max())


def test_batch_and_stream_keep_order(pb, stub, imported):
    frames = [5, 0, 9, 3]
    start = time.monotonic()
    batch = stub.GenerateBatchInference(pb[0].BatchInferenceRequest(model_name=imported,
                                                                    frame_ids=frames))
    wall_ms = math.ceil((time.monotonic() - start) * 1000)
    assert [r.frame_id for r in batch.responses] == frames
    assert [r.success for r in batch.responses] == [True, True, False, True]
    assert "frame_id 9 is out of range" in batch.responses[2].error
    assert "(0..5)" in batch.responses[2].error
    # The call's time covers each frame's (they ran together) and lies within the call.
    assert max(r.processing_time_ms for r in batch.responses) <= batch.total_processing_time_ms
    assert batch.total_processing_time_ms <= wall_ms
    singles = {f: stub.GenerateInference(pb[0].InferenceRequest(model_name=imported, frame_id=f))
               for f in (5, 0, 3)}
    for r in batch.responses:
        if r.success:
            d = np.abs(decode(r.prediction_data).astype(int)
                       - decode(singles[r.frame_id].prediction_data).astype(int))
            assert d.max() <= 2, (r.frame_id, d.max())
            assert list(r.bounds) == list(singles[r.frame_id].bounds)

    order = [4, 1, 1, 7, 0, 2, 3]
    answers = list(stub.StreamInference(
        iter([pb[0].InferenceRequest(model_name=imported, frame_id=f) for f in order])))
    assert [a.frame_id for a in answers] == order
    assert [a.success for a in answers] == [f < FRAMES for f in order]
    assert all(decode(a.prediction_data).shape == (320, 320, 3) for a in answers if a.success)


def write_wav(path, seconds=1.0, rate=16000):
    t = np.arange(int(seconds * rate)) / rate
    pcm = (0.3 * np.sin(2 * np.pi * 220 * t) * np.sin(2 * np.pi * 3 * t) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.tobytes())


def test_audio_override_with_an_audio_file(pb, stub, root, imported):
    write_wav(root / imported / "speech.wav")
    plain = stub.GenerateInference(pb[0].InferenceRequest(model_name=imported, frame_id=3))
    spoken = stub.GenerateInference(pb[0].InferenceRequest(model_name=imported, frame_id=3,
                                                           audio_override="speech.wav"))
    assert plain.success and spoken.success, spoken.error
    assert np.abs(decode(plain.prediction_data).astype(int)
                  - decode(spoken.prediction_data).astype(int)).mean() > 1.0
    outside = stub.GenerateInference(pb[0].InferenceRequest(
        model_name=imported, frame_id=3, audio_override="../../etc/passwd"))
    assert not outside.success and "outside the avatar folder" in outside.error


def test_errors_are_success_false(pb, stub, root, imported, tmp_path):
    unknown = stub.GenerateInference(pb[0].InferenceRequest(model_name="nobody", frame_id=0))
    assert not unknown.success and "unknown model 'nobody'" in unknown.error
    assert unknown.HasField("error")
    out_of_range = stub.GenerateInference(pb[0].InferenceRequest(model_name=imported, frame_id=6))
    assert not out_of_range.success and "(0..5)" in out_of_range.error

    bad_path = stub.LoadModel(pb[0].LoadModelRequest(model_name="x",
                                                     package_path=str(tmp_path / "none")))
    assert not bad_path.success and "not found" in bad_path.error
    broken = tmp_path / "broken"
    shutil.copytree(PACKAGE, broken)
    os.remove(broken / "video.mp4")
    shutil.rmtree(broken / "face_bounds")
    corrupt = stub.LoadModel(pb[0].LoadModelRequest(model_name="y", package_path=str(broken)))
    assert not corrupt.success
    assert "video.mp4" in corrupt.error and "face_bounds/" in corrupt.error
    zipped = tmp_path / "package.zip"
    zipped.write_bytes(b"PK\x03\x04" + b"\0" * 32)
    refused = stub.LoadModel(pb[0].LoadModelRequest(model_name="z", package_path=str(zipped)))
    assert not refused.success and "zip archive" in refused.error
    assert not any((root / name).exists() for name in ("x", "y", "z"))
    again = stub.LoadModel(pb[0].LoadModelRequest(model_name=imported, package_path=PACKAGE))
    assert again.success and "exists already" in again.message


def test_cli_import(tmp_path):
    out = tmp_path / "anna"
    done = subprocess.run([BIN, "avatar", "import", "--from", "lipsyncsrv", PACKAGE, "--out",
                           str(out), "--model", os.path.join(DATA, "tiny.onnx"), "--encoder",
                           os.path.join(DATA, "tiny_audio_encoder.onnx")],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    manifest = json.loads((out / "avatar.json").read_text())
    assert manifest["audio_features"] == "audio_features.npy"
    assert json.loads((out / "crop_rects.json").read_text()) == \
        [[int(v) for v in bounds_of(i)[:4]] for i in range(FRAMES)]
    check = subprocess.run([BIN, "avatar", "check", str(out), "--json"], capture_output=True,
                           text=True)
    assert check.returncode == 0, check.stderr
    assert json.loads(check.stdout)["frames"] == FRAMES

    broken = tmp_path / "broken"
    shutil.copytree(PACKAGE, broken)
    os.remove(broken / "aud_ave.npy")
    os.remove(broken / "masked_regions_320.mp4")
    failed = subprocess.run([BIN, "avatar", "import", "--from", "lipsyncsrv", str(broken), "--out",
                             str(tmp_path / "none"), "--encoder",
                             os.path.join(DATA, "tiny_audio_encoder.onnx")],
                            capture_output=True, text=True)
    assert failed.returncode != 0
    assert "aud_ave.npy" in failed.stderr and "masked_regions_320.mp4" in failed.stderr
    assert not (tmp_path / "none").exists()
