"""A stand-in for the users' old "monolithic" server (monolithic.MonolithicService), in PyTorch.

It answers the same calls as `lipsync serve --monolithic` over the same avatar folders, so tests
can put both behind one load balancer and compare their frames. The UNet and the audio encoder
run in PyTorch from the twins of the avatar's ONNX files kept beside them (`unet.onnx` ->
`unet.pt` TorchScript or `unet.pth`, a state dict of python/lipsync's model classes); the mel
spectrogram and the audio windows follow the model spec (section 2) in numpy. Every
InferBatchComposite is counted per avatar and reported by GetModelStats and ListModels as
request_count, so tests can check traffic shares.

    python3 tests/migration/old_server.py --avatars DIR [--listen 127.0.0.1:0]
prints "listening on PORT" once it serves, and stops on SIGTERM or SIGINT.
"""
import argparse
import json
import os
import re
import signal
import sys
import threading
import time
from concurrent import futures

import cv2
import grpc
import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "python"))

from lipsync.audio_model import build_audio_encoder  # noqa: E402
from lipsync.model import build_model  # noqa: E402

SAMPLE_RATE = 16000
HOP, N_FFT, BANDS, WINDOW_FRAMES = 200, 800, 80, 16
EXTRA_FRAMES, LEAD = 15, 8  # raw_audio covers (batch + 15) video frames, starting 8 before
MAX_BATCH = 32
CROP_SIZES = {320: (328, 4), 160: (168, 4)}  # model size -> (crop size, inner offset)


def load_stubs(proto_dir, out_dir):
    from grpc_tools import protoc
    os.makedirs(out_dir, exist_ok=True)
    code = protoc.main(["protoc", f"-I{proto_dir}", f"--python_out={out_dir}",
                        f"--grpc_python_out={out_dir}", "monolithic/monolithic.proto"])
    if code != 0:
        raise RuntimeError(f"protoc failed on {proto_dir}/monolithic/monolithic.proto")
    sys.path.insert(0, out_dir)
    from monolithic import monolithic_pb2, monolithic_pb2_grpc
    return monolithic_pb2, monolithic_pb2_grpc


# --- audio (model spec section 2) -----------------------------------------------------------

def _hz_to_mel(hz):
    return hz / (200.0 / 3) if hz < 1000.0 else 15.0 + np.log(hz / 1000.0) / (np.log(6.4) / 27)


def _mel_to_hz(mel):
    return mel * (200.0 / 3) if mel < 15.0 else 1000.0 * np.exp((np.log(6.4) / 27) * (mel - 15.0))


def mel_filterbank():
    """[80, 401] Slaney-scale triangles from 55 to 7600 Hz with Slaney area normalisation."""
    lo, hi = _hz_to_mel(55.0), _hz_to_mel(7600.0)
    edges = [_mel_to_hz(lo + (hi - lo) * i / (BANDS + 1)) for i in range(BANDS + 2)]
    hz = np.arange(N_FFT // 2 + 1) * SAMPLE_RATE / N_FFT
    bank = np.zeros((BANDS, hz.size))
    for b in range(BANDS):
        left, centre, right = edges[b], edges[b + 1], edges[b + 2]
        tri = np.minimum((hz - left) / (centre - left), (right - hz) / (right - centre))
        bank[b] = np.maximum(0.0, tri) * 2.0 / (right - left)
    return bank


FILTERBANK = mel_filterbank()
HANN = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(N_FFT) / N_FFT)  # periodic


def mel_spectrogram(pcm):
    """float32 PCM -> normalised log-mel [80, T], T = 1 + len // 200 (zero-padded, centred)."""
    x = pcm.astype(np.float64)
    y = x - 0.97 * np.concatenate([[0.0], x[:-1]])
    padded = np.pad(y, N_FFT // 2)
    count = 1 + len(x) // HOP
    frames = np.stack([padded[t * HOP:t * HOP + N_FFT] for t in range(count)]) * HANN
    magnitude = np.abs(np.fft.rfft(frames, axis=1))
    db = 20 * np.log10(np.maximum(1e-5, magnitude @ FILTERBANK.T)) - 20
    return np.clip(8 * (db + 100) / 100 - 4, -4, 4).T.astype(np.float32)


def mel_windows(mel, fps=25.0):
    """[W, 1, 80, 16] encoder windows, W = int((T - 16) / 80 * fps) + 2."""
    frames = mel.shape[1]
    count = int((frames - WINDOW_FRAMES) / 80.0 * fps) + 2
    out = np.empty((count, 1, BANDS, WINDOW_FRAMES), np.float32)
    for k in range(count):
        start = min(int(80.0 * k / fps), frames - WINDOW_FRAMES)
        out[k, 0] = mel[:, start:start + WINDOW_FRAMES]
    return out


def frame_windows(embeddings):
    """[W, 512] embeddings -> [W + 2, 32, 16, 16]: frame i reads rows i-8..i+7 of
    [e0] + e + [e_last], zeros outside."""
    count = embeddings.shape[0]
    seq = np.concatenate([embeddings[:1], embeddings, embeddings[-1:]])
    padded = np.concatenate([np.zeros((8, 512), np.float32), seq, np.zeros((8, 512), np.float32)])
    return np.stack([padded[i:i + 16].reshape(32, 16, 16) for i in range(count + 2)])


# --- avatars ----------------------------------------------------------------------------------

class Avatar:
    """One avatar folder (avatar.json, frames/, crop_rects.json) with its PyTorch models."""

    def __init__(self, folder):
        start = time.monotonic()
        with open(os.path.join(folder, "avatar.json")) as f:
            manifest = json.load(f)
        self.size = int(manifest.get("model_size", 320))
        self.crop_size, self.offset = CROP_SIZES[self.size]
        self.unet = self._load(folder, manifest["model"],
                               lambda: build_model("ave", self.size))
        self.encoder = self._load(folder, manifest["audio_encoder"], build_audio_encoder)
        frames_dir = os.path.join(folder, manifest["frames"])
        names = [n for n in os.listdir(frames_dir) if re.search(r"\d+\.(png|jpe?g)$", n)]
        names.sort(key=lambda n: int(re.search(r"(\d+)\.\w+$", n).group(1)))
        self.backgrounds = [cv2.imread(os.path.join(frames_dir, n), cv2.IMREAD_COLOR)
                            for n in names]
        with open(os.path.join(folder, manifest["crop_rects"])) as f:
            self.rects = json.load(f)
        self.load_ms = (time.monotonic() - start) * 1000
        self.requests = 0
        self.inference_ms = 0.0
        self.last_used = 0

    @staticmethod
    def _load(folder, onnx_name, build):
        """The PyTorch twin of an ONNX file: `NAME.pt` (TorchScript, any architecture) or
        `NAME.pth` (a state dict of the project's model class, loaded strictly)."""
        stem = os.path.join(folder, os.path.splitext(onnx_name)[0])
        if os.path.isfile(stem + ".pt"):
            return torch.jit.load(stem + ".pt").eval()
        if os.path.isfile(stem + ".pth"):
            model = build()
            model.load_state_dict(torch.load(stem + ".pth"), strict=True)
            return model.eval()
        raise FileNotFoundError(f"no PyTorch model '{stem}.pt' or '{stem}.pth' beside "
                                f"'{onnx_name}'")

    def audio_input(self, pcm, batch, start_frame):
        # The clients cut the chunk from frame max(0, start - 8): output frame i is its frame
        # lead + i; samples past lead + batch + 11 frames change no window (docs/API.md).
        lead = min(LEAD, start_frame)
        pcm = pcm[:(lead + batch + 11) * 640]
        with torch.no_grad():
            windows = torch.from_numpy(mel_windows(mel_spectrogram(pcm)))
            embeddings = self.encoder(windows).numpy()
        per_frame = frame_windows(embeddings)
        if per_frame.shape[0] < lead + batch:
            raise ValueError(f"raw_audio gives {per_frame.shape[0]} audio windows, fewer than "
                             f"the {lead + batch} needed")
        return torch.from_numpy(np.ascontiguousarray(per_frame[lead:lead + batch]))

    def composite(self, faces, start_frame):
        """faces [N, 3, S, S] in [0, 1] (BGR) -> JPEGs of the avatar frames with them pasted."""
        jpegs = []
        pixels = np.nan_to_num(faces * 255.0, nan=0.0).clip(0, 255).astype(np.uint8)
        for i, face in enumerate(pixels):
            index = (start_frame + i) % len(self.backgrounds)
            x1, y1, x2, y2 = self.rects[index]
            frame = self.backgrounds[index].copy()
            crop = cv2.resize(frame[y1:y2, x1:x2], (self.crop_size, self.crop_size),
                              interpolation=cv2.INTER_CUBIC)
            o, s = self.offset, self.size
            crop[o:o + s, o:o + s] = face.transpose(1, 2, 0)
            frame[y1:y2, x1:x2] = cv2.resize(crop, (x2 - x1, y2 - y1),
                                             interpolation=cv2.INTER_CUBIC)
            ok, data = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, 75])
            if not ok:
                raise RuntimeError("JPEG encoding failed")
            jpegs.append(data.tobytes())
        return jpegs


class OldServer:
    def __init__(self, pb, root):
        self.pb, self.root = pb, root
        self.avatars = {}
        self.lock = threading.Lock()

    def _avatar(self, model_id):
        """(avatar, loaded by this call)"""
        with self.lock:
            if model_id in self.avatars:
                return self.avatars[model_id], False
            folder = os.path.join(self.root, model_id)
            if not re.fullmatch(r"[A-Za-z0-9_.-]+", model_id) or not os.path.isdir(folder):
                raise KeyError(f"model '{model_id}' not found")
            self.avatars[model_id] = Avatar(folder)
            return self.avatars[model_id], True

    def InferBatchComposite(self, request, context):
        start = time.monotonic()
        reply = self.pb.CompositeBatchResponse(gpu_id=-1)
        try:
            batch = request.batch_size
            if not 1 <= batch <= MAX_BATCH:
                raise ValueError(f"batch_size {batch} is outside 1..{MAX_BATCH}")
            if request.sample_rate not in (0, SAMPLE_RATE):  # the clients leave it unset
                raise ValueError(f"sample_rate {request.sample_rate} is not supported")
            samples = (batch + EXTRA_FRAMES) * 640
            if len(request.raw_audio) != samples * 4:
                raise ValueError(f"raw_audio holds {len(request.raw_audio)} bytes, needs "
                                 f"{samples * 4}")
            avatar, loaded = self._avatar(request.model_id)
            s = avatar.size
            if len(request.visual_frames) != batch * 6 * s * s * 4:
                raise ValueError(f"visual_frames holds {len(request.visual_frames)} bytes, needs "
                                 f"{batch * 6 * s * s * 4}")
            reply.model_loaded = loaded
            if loaded:
                reply.model_load_time_ms = avatar.load_ms
            t0 = time.monotonic()
            audio = avatar.audio_input(np.frombuffer(request.raw_audio, "<f4"), batch,
                                       request.start_frame_idx)
            t1 = time.monotonic()
            visual = torch.from_numpy(
                np.frombuffer(request.visual_frames, "<f4").reshape(batch, 6, s, s).copy())
            with torch.no_grad():
                faces = avatar.unet(visual, audio).numpy()
            t2 = time.monotonic()
            reply.composited_frames.extend(avatar.composite(faces, request.start_frame_idx))
            t3 = time.monotonic()
            reply.audio_processing_ms = (t1 - t0) * 1000
            reply.inference_time_ms = (t2 - t1) * 1000
            reply.composite_time_ms = (t3 - t2) * 1000
            reply.success = True
            with self.lock:
                avatar.requests += 1
                avatar.inference_ms += (t2 - t1) * 1000
                avatar.last_used = int(time.time())
        except Exception as e:  # every failure is an answer, as the old server gives it
            del reply.composited_frames[:]
            reply.success, reply.error = False, str(e)
        reply.total_time_ms = (time.monotonic() - start) * 1000
        return reply

    def _loaded(self):
        with self.lock:
            return dict(self.avatars)

    def GetModelStats(self, request, context):
        reply = self.pb.GetModelStatsResponse()
        for model_id, a in sorted(self._loaded().items()):
            reply.models.add(model_id=model_id, loaded=True, gpu_id=-1, request_count=a.requests,
                             total_inference_ms=int(a.inference_ms),
                             avg_inference_ms=a.inference_ms / max(1, a.requests),
                             last_used_timestamp=a.last_used)
        return reply

    def ListModels(self, request, context):
        reply = self.pb.ListModelsResponse()
        loaded = self._loaded()
        folders = {n for n in os.listdir(self.root)
                   if os.path.isfile(os.path.join(self.root, n, "avatar.json"))}
        for model_id in sorted(folders | set(loaded)):
            a = loaded.get(model_id)
            reply.models.add(model_id=model_id, loaded=a is not None, gpu_id=-1,
                             request_count=a.requests if a else 0,
                             avg_inference_ms=a.inference_ms / max(1, a.requests) if a else 0.0)
        return reply

    def LoadModel(self, request, context):
        start = time.monotonic()
        try:
            self._avatar(request.model_id)
            return self.pb.LoadModelResponse(success=True, gpu_id=-1,
                                             load_time_ms=(time.monotonic() - start) * 1000)
        except Exception as e:
            return self.pb.LoadModelResponse(success=False, error=str(e), gpu_id=-1)

    def UnloadModel(self, request, context):
        with self.lock:
            if self.avatars.pop(request.model_id, None) is None:
                return self.pb.UnloadModelResponse(success=False,
                                                   error=f"model '{request.model_id}' not loaded")
        return self.pb.UnloadModelResponse(success=True)

    def Health(self, request, context):
        return self.pb.HealthResponse(healthy=True, loaded_models=len(self._loaded()),
                                      max_models=0)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--avatars", required=True, help="folder of avatar folders")
    parser.add_argument("--listen", default="127.0.0.1:0", help="host:port (port 0: any)")
    parser.add_argument("--proto-dir", default=os.path.join(ROOT, "proto"))
    parser.add_argument("--stub-dir", default=None, help="where to generate the gRPC stubs")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    import tempfile
    stub_dir = args.stub_dir or tempfile.mkdtemp(prefix="old_server_stubs_")
    pb, pb_grpc = load_stubs(args.proto_dir, stub_dir)
    limit = 100 << 20
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=args.workers),
                         options=[("grpc.max_send_message_length", limit),
                                  ("grpc.max_receive_message_length", limit)])
    pb_grpc.add_MonolithicServiceServicer_to_server(OldServer(pb, args.avatars), server)
    port = server.add_insecure_port(args.listen)
    if port == 0:
        print(f"cannot listen on {args.listen}", file=sys.stderr)
        return 1
    server.start()
    print(f"listening on {port}", flush=True)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    server.stop(grace=10).wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
