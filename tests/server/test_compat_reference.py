"""The compatibility services' frames against a reference written here independently of the
server's code: NumPy for the UNet (float64 from tiny.onnx's weights: sigmoid(conv1x1(visual) +
conv1x1(mean(audio)))), OpenCV-Python for the crop, the mask, the paste and the JPEG, the model
package's feature rows for lipsyncsrv and `lipsync features` (the audio module, tested on its own
against a NumPy restatement of the spec) for the monolithic chunk's windows.

A served frame must match its reference within 2 levels; the reference made with the window of
the neighbouring frame must not, so a window paired with the wrong frame fails. The pairing each
service promises (docs/API.md) is written once below: monolithic_window() and package_window()."""
import json
import os
import shutil
import struct
import subprocess
import sys

import cv2
import grpc
import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from grpc_stubs import free_port, generate_stubs

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "common"))
from compositing import paste_face  # noqa: E402

BIN = os.environ["LIPSYNC_BIN"]
DATA = os.environ["LIPSYNC_TEST_DATA_DIR"]
PROTO_DIR = os.environ["LIPSYNC_PROTO_DIR"]
PACKAGE = os.environ["LIPSYNCSRV_PACKAGE"]
UNET = os.path.join(DATA, "tiny.onnx")
ENCODER = os.path.join(DATA, "tiny_audio_encoder.onnx")
CROP, INNER, OFFSET = 328, 320, 4
MASK = (5, 5, 310, 305)  # x, y, w, h of the mouth rectangle in the inner face
TOLERANCE = 2  # levels, after both sides' JPEG
W, H, FRAMES = 192, 128, 5
PACKAGE_FRAMES = 6


def rect_of(i):
    return [40 + 4 * i, 20 + 2 * i, 104 + 4 * i, 84 + 2 * i]


def background(i):
    y, x = np.mgrid[0:H, 0:W]
    img = np.stack([(x * 3 + i * 37) % 256, (y * 2 + 11 * i) % 256, (2 * x + y) % 256], axis=-1)
    return img.astype(np.uint8)


# --- the reference ---------------------------------------------------------------------------

def unet(visual, audio):
    """tiny.onnx in float64: visual [N,6,S,S], audio [N,32,16,16] -> [N,3,S,S]."""
    w = {t.name: numpy_helper.to_array(t).astype(np.float64)
         for t in onnx.load(UNET).graph.initializer}
    v = np.einsum("oc,nchw->nohw", w["w"][:, :, 0, 0], visual) + w["b"][None, :, None, None]
    a = np.einsum("oc,nc->no", w["wa"][:, :, 0, 0], audio.astype(np.float64).mean(axis=(2, 3)))
    return 1.0 / (1.0 + np.exp(-(v + a[:, :, None, None])))


def face_of(output_chw):
    return (output_chw.transpose(1, 2, 0) * 255.0).astype(np.uint8)  # truncation, as upstream


def crop(frame, rect):
    """The 328 crop, the inner 320 face and its masked copy (the model spec's section 3)."""
    x1, y1, x2, y2 = rect
    big = cv2.resize(frame[y1:y2, x1:x2], (CROP, CROP), interpolation=cv2.INTER_CUBIC)
    inner = big[OFFSET:OFFSET + INNER, OFFSET:OFFSET + INNER].copy()
    masked = cv2.rectangle(inner.copy(), MASK, (0, 0, 0), -1)
    return big, inner, masked


def visual_of(frame, rect):
    _, inner, masked = crop(frame, rect)
    return np.concatenate([inner, masked], axis=2).transpose(2, 0, 1).astype(np.float64) / 255.0


def jpeg(image, quality):
    ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return decode(data.tobytes())


def decode(data):
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None, "not a JPEG"
    return image


def levels(a, b):
    return int(np.abs(a.astype(int) - b.astype(int)).max())


def monolithic_window(start, i):
    """The chunk's window for output frame i: the Go clients cut the chunk from video frame
    max(0, start - 8), so it begins lead = min(8, start) frames before the first output frame."""
    return min(8, start) + i


def package_window(features, frame):
    """lipsyncsrv's window for `frame`: feature rows frame-8 .. frame+7, zeros past the ends."""
    rows = np.zeros((16, 512), np.float32)
    for r in range(16):
        j = frame - 8 + r
        if 0 <= j < len(features):
            rows[r] = features[j]
    return rows.reshape(32, 16, 16)


def write_float_wav(path, pcm, rate=16000):
    """32-bit float mono WAV (format 3), so the decoder sees exactly these samples."""
    data = pcm.astype("<f4").tobytes()
    fmt = struct.pack("<HHIIHH", 3, 1, rate, rate * 4, 4, 32)
    with open(path, "wb") as f:
        f.write(b"RIFF" + struct.pack("<I", 4 + 8 + len(fmt) + 8 + len(data)) + b"WAVE")
        f.write(b"fmt " + struct.pack("<I", len(fmt)) + fmt)
        f.write(b"data" + struct.pack("<I", len(data)) + data)


def speech(samples, seed):
    """A different tone every 40 ms plus noise, so that neighbouring frames' windows differ."""
    rng = np.random.default_rng(seed)
    t = np.arange(samples)
    tones = rng.uniform(150, 3000, samples // 640 + 1)[t // 640]
    return (0.4 * np.sin(2 * np.pi * tones * t / 16000)
            + 0.05 * rng.standard_normal(samples)).astype(np.float32)


# --- the server --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def stubs(tmp_path_factory):
    generate_stubs(PROTO_DIR, tmp_path_factory.mktemp("stubs"), "monolithic/monolithic.proto",
                   "lipsyncsrv/lipsyncsrv.proto")
    from lipsyncsrv import lipsyncsrv_pb2, lipsyncsrv_pb2_grpc
    from monolithic import monolithic_pb2, monolithic_pb2_grpc
    return monolithic_pb2, monolithic_pb2_grpc, lipsyncsrv_pb2, lipsyncsrv_pb2_grpc


@pytest.fixture(scope="module")
def avatars(tmp_path_factory):
    """'sanders' (pattern frames) for the monolithic service; 'pkg' (the model package imported
    with the tiny models, its video frames as OpenCV decodes them) for lipsyncsrv."""
    root = tmp_path_factory.mktemp("avatars")
    folder = root / "sanders"
    (folder / "frames").mkdir(parents=True)
    for i in range(FRAMES):
        assert cv2.imwrite(str(folder / "frames" / f"{i:06d}.png"), background(i))
    (folder / "crop_rects.json").write_text(json.dumps([rect_of(i) for i in range(FRAMES)]))
    shutil.copy(UNET, folder / "unet.onnx")
    shutil.copy(ENCODER, folder / "encoder.onnx")
    (folder / "avatar.json").write_text(json.dumps({
        "format": "lipsync-avatar", "version": 1, "name": "sanders", "fps": 25, "model_size": 320,
        "model": "unet.onnx", "audio_encoder": "encoder.onnx", "frames": "frames",
        "crop_rects": "crop_rects.json"}))

    pkg = root / "pkg"
    done = subprocess.run([BIN, "avatar", "import", "--from", "lipsyncsrv", PACKAGE, "--out",
                           str(pkg), "--model", UNET, "--encoder", ENCODER],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    # Two video decoders may differ by a level: serve PNG copies of OpenCV's decoding instead.
    manifest = json.loads((pkg / "avatar.json").read_text())
    capture = cv2.VideoCapture(str(pkg / manifest["frames"]))
    (pkg / "png").mkdir()
    for i in range(PACKAGE_FRAMES):
        ok, image = capture.read()
        assert ok
        cv2.imwrite(str(pkg / "png" / f"{i:06d}.png"), image)
    manifest["frames"] = "png"
    (pkg / "avatar.json").write_text(json.dumps(manifest))
    return root


@pytest.fixture(scope="module")
def channel(avatars):
    port = free_port()
    proc = subprocess.Popen([BIN, "serve", "--model", UNET, "--listen", f"127.0.0.1:{port}",
                             "--threads", "1", "--max-batch", "1", "--preferred-batch", "1",
                             "--monolithic", "--lipsyncsrv", "--avatars", str(avatars)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    channel = grpc.insecure_channel(f"127.0.0.1:{port}", options=[
        ("grpc.max_send_message_length", 100 << 20),
        ("grpc.max_receive_message_length", 100 << 20)])
    grpc.channel_ready_future(channel).result(timeout=60)
    yield channel
    proc.send_signal(2)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out


@pytest.mark.parametrize("start", [FRAMES - 2, 11])  # a chunk from frame 0 (wrapping), and 8 before
def test_monolithic_frames_match_the_reference(stubs, channel, tmp_path, start):
    pb, pb_grpc = stubs[0], stubs[1]
    batch = 3
    frames = [(start + i) % FRAMES for i in range(batch)]
    # What a client sends: the crops of the frames it asks for, and (B + 15) x 40 ms of speech from
    # video frame max(0, start - 8).
    visual = np.stack([visual_of(background(k), rect_of(k)) for k in frames])
    pcm = speech((batch + 15) * 640, seed=start)
    reply = pb_grpc.MonolithicServiceStub(channel).InferBatchComposite(pb.CompositeBatchRequest(
        model_id="sanders", visual_frames=visual.astype("<f4").tobytes(), raw_audio=pcm.tobytes(),
        batch_size=batch, start_frame_idx=start, sample_rate=16000), timeout=120)
    assert reply.success, reply.error
    assert len(reply.composited_frames) == batch

    write_float_wav(tmp_path / "chunk.wav", pcm)
    run = subprocess.run([BIN, "features", "--audio", str(tmp_path / "chunk.wav"), "--encoder",
                          ENCODER, "--out", str(tmp_path / "windows.npy"), "--pcm-out",
                          str(tmp_path / "pcm.npy"), "--threads", "1"],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert np.array_equal(np.load(tmp_path / "pcm.npy").ravel(), pcm), "the WAV was not lossless"
    windows = np.load(tmp_path / "windows.npy")
    assert len(windows) > monolithic_window(start, batch)

    def reference(i, window):
        face = face_of(unet(visual[i:i + 1], windows[window][None])[0])
        return jpeg(paste_face(background(frames[i]), face, rect_of(frames[i]), CROP, OFFSET), 75)

    for i, data in enumerate(reply.composited_frames):
        served = decode(data)
        assert served.shape == (H, W, 3)
        want = monolithic_window(start, i)
        assert levels(served, reference(i, want)) <= TOLERANCE, f"output frame {i}"
        for other in (want - 1, want + 1):
            assert levels(served, reference(i, other)) > TOLERANCE, \
                f"output frame {i} cannot be told from the one with window {other}"


def test_lipsyncsrv_faces_match_the_reference(stubs, channel, avatars):
    pb, pb_grpc = stubs[2], stubs[3]
    stub = pb_grpc.LipSyncServiceStub(channel)
    features = np.load(os.path.join(PACKAGE, "aud_ave.npy"))
    for frame in (0, 3, PACKAGE_FRAMES - 1):
        reply = stub.GenerateInference(pb.InferenceRequest(model_name="pkg", frame_id=frame),
                                       timeout=120)
        assert reply.success, reply.error
        bounds = np.load(os.path.join(PACKAGE, "face_bounds", f"{frame}.npy"))
        rect = [int(v) for v in bounds[:4]]
        assert list(reply.bounds) == [*rect, rect[2] - rect[0], rect[3] - rect[1]]
        image = cv2.imread(str(avatars / "pkg" / "png" / f"{frame:06d}.png"))
        visual = visual_of(image, rect)[None]

        def reference(window_frame):
            audio = package_window(features, window_frame)[None]
            return jpeg(face_of(unet(visual, audio)[0]), 95)

        served = decode(reply.prediction_data)
        assert served.shape == (INNER, INNER, 3)
        assert levels(served, reference(frame)) <= TOLERANCE, f"frame {frame}"
        for other in (frame - 1, frame + 1):
            assert levels(served, reference(other)) > TOLERANCE, \
                f"frame {frame} cannot be told from the one with the window of frame {other}"
