"""What the migration tests share: a small avatar whose models exist both as ONNX (for lipsync)
and as TorchScript (for the PyTorch old server) with the same weights, the two servers as
processes, nginx as a weighted gRPC balancer in a temp folder, and request building."""
import json
import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

import cv2
import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "common"))
from tiny_models import TinyAudioEncoder, TinyUNet  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
PROTO_DIR = os.path.join(ROOT, "proto")
MODEL_SIZE = 160
FRAME_W, FRAME_H, FRAMES = 192, 160, 4
RECTS = [[16 + 4 * i, 8 + 2 * i, 144 + 4 * i, 136 + 2 * i] for i in range(FRAMES)]


def _save_twins(model, example, stem, inputs, output):
    """`stem`.pt (TorchScript) and `stem`.onnx (dynamic batch) of one model."""
    model.eval()
    with torch.no_grad():
        torch.jit.trace(model, example).save(stem + ".pt")
        torch.onnx.export(model, example, stem + ".onnx", opset_version=17, input_names=list(inputs),
                          output_names=[output],
                          dynamic_axes={n: {0: "batch"} for n in (*inputs, output)})


def background(i):
    y, x = np.mgrid[0:FRAME_H, 0:FRAME_W]
    img = np.stack([(x * 3 + i * 40) % 256, (y * 2 + 30) % 256, (x + y + i * 9) % 256], axis=-1)
    return img.astype(np.uint8)


def make_avatar(root, name="sanders", seed=0):
    """An avatar folder root/name for both servers; returns the folder."""
    folder = os.path.join(root, name)
    os.makedirs(os.path.join(folder, "frames"), exist_ok=True)
    for i in range(FRAMES):
        assert cv2.imwrite(os.path.join(folder, "frames", f"{i:06d}.png"), background(i))
    with open(os.path.join(folder, "crop_rects.json"), "w") as f:
        json.dump(RECTS, f)
    s = MODEL_SIZE
    _save_twins(TinyUNet(seed, visual_scale=0.5, audio_scale=2.0),
                (torch.rand(1, 6, s, s), torch.rand(1, 32, 16, 16)),
                os.path.join(folder, "unet"), ("visual_input", "audio_input"), "output")
    _save_twins(TinyAudioEncoder(seed + 1), (torch.rand(1, 1, 80, 16),),
                os.path.join(folder, "audio_encoder"), ("mel",), "embedding")
    with open(os.path.join(folder, "avatar.json"), "w") as f:
        json.dump({"format": "lipsync-avatar", "version": 1, "name": name, "fps": 25,
                   "model_size": s, "model": "unet.onnx", "audio_encoder": "audio_encoder.onnx",
                   "frames": "frames", "crop_rects": "crop_rects.json"}, f)
    return folder


def load_stubs(out_dir):
    from grpc_tools import protoc
    os.makedirs(out_dir, exist_ok=True)
    code = protoc.main(["protoc", f"-I{PROTO_DIR}", f"--python_out={out_dir}",
                        f"--grpc_python_out={out_dir}", "monolithic/monolithic.proto"])
    assert code == 0, "protoc failed on monolithic.proto"
    sys.path.insert(0, str(out_dir))
    from monolithic import monolithic_pb2, monolithic_pb2_grpc
    return monolithic_pb2, monolithic_pb2_grpc


# gRPC's standard retry policy for UNAVAILABLE, which a client behind a balancer needs: when
# nginx reloads, its old worker closes idle client connections with GOAWAY, and a call started in
# that instant fails with UNAVAILABLE ("GOAWAY received") without reaching any server.
RETRY_UNAVAILABLE = json.dumps({"methodConfig": [{
    "name": [{"service": "monolithic.MonolithicService"}],
    "retryPolicy": {"maxAttempts": 5, "initialBackoff": "0.05s", "maxBackoff": "0.5s",
                    "backoffMultiplier": 2, "retryableStatusCodes": ["UNAVAILABLE"]}}]})


def channel(target, retry_unavailable=False):
    import grpc
    options = [("grpc.max_send_message_length", 100 << 20),
               ("grpc.max_receive_message_length", 100 << 20)]
    if retry_unavailable:
        # A call can be retried only while its request is buffered; the default buffer
        # (256 KiB) is smaller than one frame here.
        options += [("grpc.enable_retries", 1), ("grpc.service_config", RETRY_UNAVAILABLE),
                    ("grpc.per_rpc_retry_buffer_size", 64 << 20)]
    return grpc.insecure_channel(target, options=options)


def composite_request(pb, batch, seed, start_frame=0, model_id="sanders"):
    rng = np.random.default_rng(seed)
    visual = rng.random((batch, 6, MODEL_SIZE, MODEL_SIZE), dtype=np.float32)
    audio = (0.3 * rng.standard_normal((batch + 15) * 640)).astype(np.float32)
    return pb.CompositeBatchRequest(model_id=model_id, visual_frames=visual.tobytes(),
                                    raw_audio=audio.tobytes(), batch_size=batch,
                                    start_frame_idx=start_frame, sample_rate=16000)


def request_count(stub, model_id="sanders"):
    from monolithic import monolithic_pb2 as pb
    for m in stub.GetModelStats(pb.GetModelStatsRequest(), timeout=30).models:
        if m.model_id == model_id:
            return m.request_count
    return 0


class Process:
    """A child process whose output goes to a log file; waits for a line matching a pattern."""

    def __init__(self, args, log_path):
        self.log_path = log_path
        self.log = open(log_path, "w")
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT, text=True)

    def wait_for(self, pattern, timeout=120):
        """The first match of `pattern` in the output (blocks until it appears or the process
        ends; the file is re-read as it grows)."""
        deadline = time.monotonic() + timeout
        regex = re.compile(pattern)
        with open(self.log_path) as f:
            text = ""
            while True:
                text += f.read()
                m = regex.search(text)
                if m:
                    return m
                if self.proc.poll() is not None:
                    text += f.read()
                    m = regex.search(text)
                    if m:
                        return m
                    raise AssertionError(f"process ended ({self.proc.returncode}) before "
                                         f"'{pattern}':\n{text[-3000:]}")
                if time.monotonic() > deadline:
                    raise AssertionError(f"no '{pattern}' in {timeout} s:\n{text[-3000:]}")
                time.sleep(0.05)  # polling a log file: no event to wait on

    def output(self):
        with open(self.log_path) as f:
            return f.read()

    def stop(self, sig=signal.SIGTERM, timeout=60):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        return self.proc.returncode


def start_old_server(avatars, log_dir):
    p = Process([sys.executable, os.path.join(HERE, "old_server.py"), "--avatars", avatars,
                 "--stub-dir", tempfile.mkdtemp(dir=log_dir)], os.path.join(log_dir, "old.log"))
    p.port = int(p.wait_for(r"listening on (\d+)").group(1))
    return p


def start_lipsync(binary, avatars, log_dir, name="lipsync", extra=()):
    """`lipsync serve --monolithic` on free ports; .port (gRPC) and .metrics_port (HTTP)."""
    p = Process([binary, "serve", "--model", os.path.join(avatars, "sanders", "unet.onnx"),
                 "--listen", "127.0.0.1:0", "--metrics", "127.0.0.1:0", "--threads", "1",
                 "--max-batch", "1", "--preferred-batch", "1", "--monolithic", "--avatars",
                 avatars, *extra], os.path.join(log_dir, name + ".log"))
    p.port = int(p.wait_for(r"monolithic service on port (\d+)").group(1))
    p.metrics_port = int(p.wait_for(r"metrics on http://\S+ \(port (\d+)\)").group(1))
    return p


def http_status(url):
    """The HTTP status of a GET, or None when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except (urllib.error.URLError, ConnectionError, OSError):
        return None


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def find_nginx():
    """$LIPSYNC_NGINX when set (None unless it is an executable), else nginx from PATH or sbin."""
    chosen = os.environ.get("LIPSYNC_NGINX")
    if chosen is not None:
        return chosen if os.access(chosen, os.X_OK) else None
    return shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.access(p, os.X_OK)), None)


class Nginx:
    """nginx as a gRPC balancer over weighted upstreams, run by this user from a generated
    config in its own folder (no system service). `set_weights` rewrites the config and reloads;
    a weight of 0 marks the server down."""

    def __init__(self, binary, servers):
        self.binary = binary
        self.servers = servers  # name -> port
        # Its own folder under /tmp, readable by nginx's workers (they switch to an unprivileged
        # user when the master runs as root) and writable for request bodies.
        self.dir = tempfile.mkdtemp(prefix="lipsync-nginx-")
        os.chmod(self.dir, 0o755)
        for d in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
            os.makedirs(os.path.join(self.dir, d))
            os.chmod(os.path.join(self.dir, d), 0o777)
        self.conf = os.path.join(self.dir, "nginx.conf")
        self.port = free_port()
        self.proc = None

    def write_config(self, weights):
        lines = []
        for name, port in self.servers.items():
            w = weights.get(name, 0)
            lines.append(f"    server 127.0.0.1:{port} " + (f"weight={w};" if w else "down;"))
        d = self.dir
        text = f"""worker_processes 1;
daemon off;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 256; }}
http {{
  access_log {d}/access.log;
  client_body_temp_path {d}/body;
  proxy_temp_path {d}/proxy;
  fastcgi_temp_path {d}/fastcgi;
  uwsgi_temp_path {d}/uwsgi;
  scgi_temp_path {d}/scgi;
  client_max_body_size 100m;
  client_body_buffer_size 8m;
  upstream lipsync_migration {{
{chr(10).join(lines)}
  }}
  server {{
    listen 127.0.0.1:{self.port} http2;
    location / {{
      grpc_pass grpc://lipsync_migration;
      grpc_read_timeout 120s;
      grpc_send_timeout 120s;
    }}
  }}
}}
"""
        tmp = self.conf + ".tmp"
        with open(tmp, "w") as f:
            f.write(text)
        os.chmod(tmp, stat.S_IRUSR | stat.S_IWUSR | stat.S_IRGRP | stat.S_IROTH)
        os.replace(tmp, self.conf)

    def _cmd(self, *extra):
        return [self.binary, "-p", self.dir, "-c", self.conf, "-e", f"{self.dir}/error.log",
                *extra]

    def start(self, weights):
        self.write_config(weights)
        check = subprocess.run(self._cmd("-t"), capture_output=True, text=True)
        assert check.returncode == 0, check.stderr
        self.proc = subprocess.Popen(self._cmd(), stdout=subprocess.DEVNULL,
                                     stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while not self.worker_pids():
            assert self.proc.poll() is None, self.error_log()
            assert time.monotonic() < deadline, "nginx started no worker"
            time.sleep(0.05)

    def worker_pids(self):
        path = f"/proc/{self.proc.pid}/task/{self.proc.pid}/children"
        try:
            with open(path) as f:
                return set(int(p) for p in f.read().split())
        except OSError:
            return set()

    def set_weights(self, weights):
        """Rewrites the upstream weights and reloads; returns once the workers of the old
        configuration have exited (their connections drained), so every later call is balanced
        by the new weights."""
        old = self.worker_pids()
        self.write_config(weights)
        reload = subprocess.run(self._cmd("-s", "reload"), capture_output=True, text=True)
        assert reload.returncode == 0, reload.stderr
        deadline = time.monotonic() + 60
        while True:
            now = self.worker_pids()
            if now and not (now & old):
                return
            assert self.proc.poll() is None, self.error_log()
            assert time.monotonic() < deadline, f"old nginx workers {old & now} did not exit"
            time.sleep(0.05)  # no event for a process ending that is not our child

    def error_log(self):
        try:
            with open(os.path.join(self.dir, "error.log")) as f:
                return f.read()[-3000:]
        except OSError:
            return ""

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGQUIT)  # graceful
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)
