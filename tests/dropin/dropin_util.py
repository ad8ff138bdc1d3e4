"""What the drop-in client tests share: a small 320 avatar whose two models are cheap PyTorch
modules exported to ONNX (the test keeps the modules, so its reference runs the same weights),
`lipsync serve` processes with both compatibility services on their own ports and no --model,
and the gRPC stubs."""
import json
import os
import signal
import socket
import subprocess
import sys

import cv2
import grpc
import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "common"))
from tiny_models import TinyAudioEncoder, TinyUNet  # noqa: E402

BIN = os.environ["LIPSYNC_BIN"]
PROTO_DIR = os.environ["LIPSYNC_PROTO_DIR"]
SIZE = 320
FRAME_W, FRAME_H = 176, 144
FRAMES = 80  # the Go clients' batches reach frame 74 (test_batch_sizes.go: 2 x 25 + 24)


def rect_of(i):
    """A face square that moves a little from frame to frame (x1, y1, x2, y2), half-open."""
    return [40 + i % 7, 24 + i % 5, 136 + i % 7, 120 + i % 5]


def background(i):
    y, x = np.mgrid[0:FRAME_H, 0:FRAME_W]
    img = np.stack([(x * 3 + i * 13) % 256, (y * 5 + 40) % 256, (x * y // 7 + i * 3) % 256], -1)
    return img.astype(np.uint8)


class Models:
    """The avatar's two models as numpy callables for the reference."""

    def __init__(self, seed=0):
        self.unet_module = TinyUNet(seed, visual_scale=0.6, audio_scale=1.5).eval()
        self.encoder_module = TinyAudioEncoder(seed + 1).eval()

    def unet(self, visual, audio):
        with torch.no_grad():
            return self.unet_module(torch.from_numpy(np.array(visual, np.float32)),
                                    torch.from_numpy(np.array(audio, np.float32))).numpy()

    def encode(self, windows):
        with torch.no_grad():
            return self.encoder_module(torch.from_numpy(windows)).numpy()

    def export(self, folder):
        with torch.no_grad():
            torch.onnx.export(self.unet_module, (torch.rand(1, 6, SIZE, SIZE), torch.rand(1, 32, 16, 16)),
                              os.path.join(folder, "unet.onnx"), opset_version=17,
                              input_names=["visual_input", "audio_input"], output_names=["output"],
                              dynamic_axes={n: {0: "n"} for n in ("visual_input", "audio_input", "output")})
            torch.onnx.export(self.encoder_module, (torch.rand(1, 1, 80, 16),),
                              os.path.join(folder, "audio_encoder.onnx"), opset_version=17,
                              input_names=["mel"], output_names=["embedding"],
                              dynamic_axes={"mel": {0: "n"}, "embedding": {0: "n"}})


def make_avatar(root, name, models, frames=FRAMES, features=None, video_with_sound=None):
    """An avatar folder root/name: PNG frames (or, with `video_with_sound` = a WAV path, one MP4
    of the frames with that sound and no audio_features), crop_rects.json, both models, and
    `features` ([rows, 512] float32) as its audio_features when given."""
    folder = os.path.join(root, name)
    os.makedirs(folder, exist_ok=True)
    models.export(folder)
    manifest = {"format": "lipsync-avatar", "version": 1, "name": name, "fps": 25,
                "model_size": SIZE, "model": "unet.onnx", "audio_encoder": "audio_encoder.onnx",
                "crop_rects": "crop_rects.json"}
    if video_with_sound:
        frames_dir = folder + ".png"
        os.makedirs(frames_dir, exist_ok=True)
        for i in range(frames):
            assert cv2.imwrite(os.path.join(frames_dir, f"{i:06d}.png"), background(i))
        subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-framerate", "25", "-i",
                        os.path.join(frames_dir, "%06d.png"), "-i", video_with_sound,
                        "-c:v", "mpeg4", "-q:v", "2", "-c:a", "aac", "-shortest",
                        os.path.join(folder, "frames.mp4")], check=True)
        manifest["frames"] = "frames.mp4"
    else:
        os.makedirs(os.path.join(folder, "frames"), exist_ok=True)
        for i in range(frames):
            assert cv2.imwrite(os.path.join(folder, "frames", f"{i:06d}.png"), background(i))
        manifest["frames"] = "frames"
    with open(os.path.join(folder, "crop_rects.json"), "w") as f:
        json.dump([rect_of(i) for i in range(frames)], f)
    if features is not None:
        np.save(os.path.join(folder, "audio_features.npy"), np.asarray(features, np.float32))
        manifest["audio_features"] = "audio_features.npy"
    with open(os.path.join(folder, "avatar.json"), "w") as f:
        json.dump(manifest, f)
    return folder


def speech(seconds, seed=0, rate=16000):
    """Speech-like float audio: syllable-rate bursts of a voiced tone under a little noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(rate * seconds)) / rate
    envelope = np.maximum(0, np.sin(2 * np.pi * 3.3 * t + seed))
    voice = np.sin(2 * np.pi * (150 + 40 * np.sin(2 * np.pi * 0.7 * t)) * t)
    return (0.4 * envelope * voice + 0.02 * rng.standard_normal(t.size)).astype(np.float32)


def write_wav(path, pcm, rate=16000):
    import wave
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes((np.clip(pcm, -1, 1) * 32767).astype("<i2").tobytes())


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stubs(out_dir):
    """monolithic and lipsyncsrv messages and stubs, generated from the project's protos (Debian's
    protoc with gRPC's Python plugin: grpc_tools' older protoc lacks proto3 `optional`)."""
    subprocess.run(["protoc", f"-I{PROTO_DIR}", f"--python_out={out_dir}",
                    "--plugin=protoc-gen-grpc_python=/usr/bin/grpc_python_plugin",
                    f"--grpc_python_out={out_dir}", "monolithic/monolithic.proto",
                    "lipsyncsrv/lipsyncsrv.proto"], check=True)
    sys.path.insert(0, str(out_dir))
    from lipsyncsrv import lipsyncsrv_pb2, lipsyncsrv_pb2_grpc
    from monolithic import monolithic_pb2, monolithic_pb2_grpc
    return monolithic_pb2, monolithic_pb2_grpc, lipsyncsrv_pb2, lipsyncsrv_pb2_grpc


class Server:
    """`lipsync serve --avatars ROOT` without --model, the Go server's contract on its own port
    (as on 50053) and the Python server's on another (as on 50051), plus `extra` flags."""

    def __init__(self, root, *extra, log=None):
        self.main, self.go_port, self.py_port = free_port(), free_port(), free_port()
        self.log = open(log, "w") if log else subprocess.DEVNULL
        self.proc = subprocess.Popen(
            [BIN, "serve", "--avatars", str(root), "--listen", f"127.0.0.1:{self.main}",
             "--monolithic", "--monolithic-listen", f"127.0.0.1:{self.go_port}",
             "--lipsyncsrv", "--lipsyncsrv-listen", f"127.0.0.1:{self.py_port}",
             "--threads", "1", *extra],
            stdout=self.log, stderr=subprocess.STDOUT)
        options = [("grpc.max_send_message_length", 100 << 20),
                   ("grpc.max_receive_message_length", 100 << 20)]
        self.go = grpc.insecure_channel(f"127.0.0.1:{self.go_port}", options=options)
        self.py = grpc.insecure_channel(f"127.0.0.1:{self.py_port}", options=options)
        for channel in (self.go, self.py):
            try:
                grpc.channel_ready_future(channel).result(timeout=90)
            except grpc.FutureTimeoutError:
                self.stop()
                raise RuntimeError(f"lipsync serve did not start (exit {self.proc.poll()})")

    def alive(self):
        return self.proc.poll() is None

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.log is not subprocess.DEVNULL:
            self.log.close()
        return self.proc.returncode


def decode_jpeg(data):
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None, "not a JPEG"
    return image


def diff(a, b, mask=None):
    """(max, mean) absolute difference of two images, over `mask` when given."""
    d = np.abs(a.astype(np.int32) - b.astype(np.int32))
    if mask is not None:
        d = d[mask]
    return int(d.max()), float(d.mean())


def rect_mask(shape, rect, inside=True, margin=0):
    """Pixels inside the rectangle grown by `margin` (or outside it, with inside=False)."""
    x1, y1, x2, y2 = rect
    m = np.zeros(shape[:2], bool)
    m[max(0, y1 - margin):y2 + margin, max(0, x1 - margin):x2 + margin] = True
    return m if inside else ~m

