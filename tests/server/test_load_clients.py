"""`lipsync loadtest`'s clients of the avatar server (what bench/gpu_server_bench.sh drives on a
GPU): live sessions on several avatars at real time, monolithic InferBatchComposite and lipsyncsrv
GenerateBatchInference built as the users' clients build them, against a real `lipsync serve` on
the test suite's tiny models. Each load's JSON must count every frame it asked for."""
import json
import os
import shutil
import subprocess
import time
import urllib.request
import wave

import cv2
import numpy as np
import pytest

from grpc_stubs import free_port

BIN = os.environ["LIPSYNC_BIN"]
DATA = os.environ["LIPSYNC_TEST_DATA_DIR"]
W, H, FRAMES = 160, 128, 8
RECT = [40, 24, 104, 88]


def make_avatar(root, name):
    d = root / name
    (d / "frames").mkdir(parents=True)
    y, x = np.mgrid[0:H, 0:W]
    for i in range(FRAMES):
        img = np.stack([(x * 2 + i * 30) % 256, (y * 2) % 256, (x + y) % 256], axis=-1)
        assert cv2.imwrite(str(d / "frames" / f"{i:06d}.png"), img.astype(np.uint8))
    (d / "crop_rects.json").write_text(json.dumps([RECT] * FRAMES))
    shutil.copy(os.path.join(DATA, "tiny.onnx"), d / "unet.onnx")
    shutil.copy(os.path.join(DATA, "tiny_audio_encoder.onnx"), d / "audio_encoder.onnx")
    (d / "avatar.json").write_text(json.dumps({
        "format": "lipsync-avatar", "version": 1, "name": name, "fps": 25, "model_size": 320,
        "model": "unet.onnx", "audio_encoder": "audio_encoder.onnx", "frames": "frames",
        "crop_rects": "crop_rects.json"}))


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("avatars")
    for name in ("anna", "bob"):
        make_avatar(root, name)
    ports = {k: free_port() for k in ("grpc", "mono", "srv", "metrics")}
    proc = subprocess.Popen(
        [BIN, "serve", "--model", os.path.join(DATA, "tiny.onnx"), "--threads", "1",
         "--listen", f"127.0.0.1:{ports['grpc']}", "--avatars", str(root), "--preload", "anna,bob",
         "--monolithic", "--monolithic-listen", f"127.0.0.1:{ports['mono']}", "--lipsyncsrv",
         "--lipsyncsrv-listen", f"127.0.0.1:{ports['srv']}",
         "--metrics", f"127.0.0.1:{ports['metrics']}"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 300  # the avatars load before /readyz says 200
    while True:
        assert proc.poll() is None, proc.communicate()[0]
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{ports['metrics']}/readyz", timeout=5)
            break
        except OSError:
            assert time.monotonic() < deadline, "the server never became ready"
            time.sleep(0.2)
    yield ports, root
    proc.send_signal(2)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out


def loadtest(tmp_path, *args):
    out = tmp_path / "load.json"
    proc = subprocess.run([BIN, "loadtest", "--json", str(out), *args], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads(out.read_text())


def test_live_sessions_on_two_avatars_get_every_frame(server, tmp_path):
    ports, root = server
    speech = tmp_path / "speech.wav"
    t = np.arange(int(1.2 * 16000)) / 16000
    pcm = (0.3 * np.sin(2 * np.pi * 150 * t) * np.abs(np.sin(2 * np.pi * 3 * t)) * 32767)
    with wave.open(str(speech), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(pcm.astype("<i2").tobytes())
    j = loadtest(tmp_path, "--api", "sessions", "--target", f"127.0.0.1:{ports['grpc']}",
                 "--models", "anna,bob", "--sessions-per-model", "2", "--audio", str(speech),
                 "--encoder", str(root / "anna" / "audio_encoder.onnx"), "--chunk-ms", "200",
                 "--keep-up-ms", "60000")
    assert j["sessions"] == 4 and j["failed"] == 0 and j["short"] == 0
    # docs/API.md: W + 2 frames for T = 1 + samples / 200 mel frames, W = int((T - 16) / 80 * 25) + 2
    mel = 1 + len(pcm) // 200
    per_session = int((mel - 16) / 80 * 25) + 2 + 2
    assert j["frames"] == j["frames_expected"] == 4 * per_session
    # Every frame's latency is measured, from a chunk sent before the frame arrived.
    assert j["latency_ms"]["min"] >= 0 and j["latency_ms"]["max"] > 0
    assert all(s["frames"] == per_session for s in j["per_session"])
    assert j["kept_up"] == 4


def test_monolithic_load_as_the_go_clients_send_it(server, tmp_path):
    ports, _ = server
    j = loadtest(tmp_path, "--api", "monolithic", "--target", f"127.0.0.1:{ports['mono']}",
                 "--model", "anna", "--batch", "4", "--avatar-frames", str(FRAMES),
                 "--concurrency", "2", "--requests", "4", "--duration", "120")
    assert j["requests_ok"] == j["requests_total"] == 4, j.get("first_error")
    assert j["frames_per_s"] > 0


def test_lipsyncsrv_load_as_the_js_clients_send_it(server, tmp_path):
    ports, _ = server
    j = loadtest(tmp_path, "--api", "lipsyncsrv", "--target", f"127.0.0.1:{ports['srv']}",
                 "--model", "bob", "--batch", "3", "--avatar-frames", str(FRAMES),
                 "--concurrency", "2", "--requests", "4", "--duration", "120")
    assert j["requests_ok"] == j["requests_total"] == 4, j.get("first_error")


def test_a_batch_beyond_the_avatar_is_refused_before_any_call(server):
    ports, _ = server
    proc = subprocess.run([BIN, "loadtest", "--api", "monolithic", "--target",
                           f"127.0.0.1:{ports['mono']}", "--model", "anna", "--batch", "9",
                           "--avatar-frames", str(FRAMES)], capture_output=True, text=True)
    assert proc.returncode != 0
    assert "larger than the avatar's frames" in proc.stderr + proc.stdout
